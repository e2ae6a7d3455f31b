"""Pack a training corpus small enough to travel to a lent GPU, with the wheels it needs there.

    python -m pipelines.device_bundle --data CORPUS/lfw.lmdb CORPUS/cfp.lmdb CORPUS/celeba.lmdb --out .device/lightcnn

A lent GPU machine (docs/training.md, "Training on a lent GPU") receives the repository and
at most 64 MiB in all, and can fetch nothing. The bundle holds, per source LMDB:
``corpus/<name>.rec`` + ``.idx`` (InsightFace RecordIO, :mod:`lightface.data.to_recordio`:
gray WebP, the 144 training crops stored at ``--size`` 128) and
``corpus/<name>.teacher_<teacher>.npy`` (the teacher embeddings, float16, row i = sample i);
``wheels/`` (the Python packages that machine lacks, at the versions installed here:
:data:`DEVICE_WHEELS`); ``bundle.json`` (what is inside). ``python -m pipelines.device_train``
unpacks it there. An existing ``--out`` must be a bundle: its ``corpus/`` is replaced, and its
``wheels/`` too unless ``--no-wheels`` (which keeps the wheels there and lists them). The
command prints the bundle's size beside the repository's files that travel with every call
(tracked, and untracked ones git does not ignore) and fails when together they would not travel.
"""
import argparse
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Set

import numpy as np

from pipelines._cli import DefaultsHelpFormatter, run_cli
from pipelines.device_train import refuse_wheel_conflicts

ROOT = Path(__file__).resolve().parents[1]
#: what one call to the device may carry: the repository's files that travel plus the carried paths
TRAVEL_LIMIT = 64 << 20
#: packages the lent GPU's image lacks (it has torch, numpy, scipy, OpenCV, PyYAML; docs/training.md), and
#: typing-extensions, which it has at a version nobody checked (pydantic needs >= 4.16; the site installed
#: there comes first on the path)
DEVICE_WHEELS = ("lmdb", "albumentations", "albucore", "pydantic", "pydantic_core", "annotated-types",
                 "typing-inspection", "simsimd", "stringzilla", "typing-extensions")
#: what those wheels need that the device's image holds (KINDS.md of the device tool)
DEVICE_IMAGE = ("numpy", "scipy", "pyyaml", "opencv-python-headless")
#: the device's Python and platforms (pip download --python-version / --platform)
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_28_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def travelling_files(repo: Path = ROOT) -> Set[Path]:
    """The files of the checkout ``repo`` that every device call sends: tracked ones, untracked ones git does
    not ignore, and those under ``shared/`` (resolved paths).

    Raises:
        RuntimeError: ``repo`` is not a git checkout (or git is missing).
    """
    try:
        names = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               check=True, capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        raise RuntimeError(f"{repo} is not a git checkout ({detail.decode(errors='replace').strip() or err}): what a "
                           "device call carries cannot be sized; run this from the repository's git clone, the "
                           "working tree the device tool sends") from None
    files = {(repo / n).resolve() for n in names if n}
    files |= {f.resolve() for f in (repo / "shared").rglob("*")} if (repo / "shared").is_dir() else set()
    return {f for f in files if f.is_file()}


def tracked_bytes(repo: Path = ROOT) -> int:
    """Size of the files of ``repo`` that travel with every device call (:func:`travelling_files`: tracked
    files and untracked ones git does not ignore), besides the carried paths."""
    return sum(f.stat().st_size for f in travelling_files(repo))


def carried_bytes(paths: Iterable[Path], repo: Path = ROOT) -> int:
    """Size of the files under the carried ``paths`` (files or folders) that do not travel anyway
    (:func:`travelling_files`)."""
    files = {f.resolve() for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*"))}
    return sum(f.stat().st_size for f in files - travelling_files(repo) if f.is_file())


def folder_bytes(path: Path) -> int:
    """Size of the files under the folder ``path`` (0 when there is no such folder)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def download_wheels(out: Path) -> List[str]:
    """``pip download`` the :data:`DEVICE_WHEELS` at this environment's versions for the device into the folder
    ``out``, which they replace (an earlier version of a wheel left beside them would stop the device's
    install); returns their names."""
    pins = [f"{name}=={metadata.version(name)}" for name in DEVICE_WHEELS]
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           DEVICE_PYTHON, "--implementation", "cp", "-d", str(partial), "-q"]
    for plat in DEVICE_PLATFORMS:
        cmd += ["--platform", plat]
    subprocess.run(cmd + pins, check=True)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return sorted(p.name for p in out.glob("*.whl"))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.device_bundle", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="training LMDBs (one per source) with teacher embeddings")
    p.add_argument("--out", required=True, help="bundle folder (inside the repository, ignored by git, named in carry)")
    p.add_argument("--teacher", default="dlib", help="teacher whose embeddings travel ('none': no distillation)")
    p.add_argument("--size", type=int, default=128, help="stored side of the crops (the whole crop, resized)")
    p.add_argument("--quality", type=int, default=60, help="WebP quality (1-100)")
    p.add_argument("--no-wheels", action="store_true",
                   help="do not download the device's wheels (no network here): keep those already in --out/wheels")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(args: argparse.Namespace) -> Dict:
    from lightface.data.to_recordio import lmdb_to_recordio
    from lightface.distill.teacher import load_teacher_embeddings

    out = Path(args.out)
    corpus = out / "corpus"
    names = [Path(d).name.split(".")[0] for d in args.data]
    if len(set(names)) != len(names):
        raise ValueError(f"--data LMDBs need distinct names (their stems name the bundle's files): {names}")
    teacher = None if args.teacher == "none" else args.teacher
    # fail before the slow export when a teacher's embeddings are missing or incomplete, outside a checkout, or
    # when --out is not a bundle or keeps two versions of a wheel
    teachers = {d: load_teacher_embeddings(d, teacher) for d in args.data} if teacher else {}
    repo = tracked_bytes()
    foreign = sorted(e.name for e in out.iterdir() if e.name not in ("corpus", "wheels", "wheels.partial")) \
        if out.is_dir() else []
    if foreign and not (out / "bundle.json").is_file():
        raise FileExistsError(f"--out {out} holds {', '.join(foreign[:3])} and is not a device bundle "
                              "(no bundle.json): name a new or empty folder (inside the repository, ignored by git)")
    wheels = sorted(p.name for p in (out / "wheels").glob("*.whl")) if args.no_wheels else None
    refuse_wheel_conflicts(wheels or (), str(out / "wheels"),
                           "run without --no-wheels (it replaces them) or keep one of each")
    (out / "bundle.json").unlink(missing_ok=True)
    shutil.rmtree(corpus, ignore_errors=True)  # an earlier bundle's sources would travel and count
    sources = []
    for data, name in zip(args.data, names):
        info = lmdb_to_recordio(data, corpus / f"{name}.rec", color="gray", encoding="webp", quality=args.quality,
                                size=args.size, progress=not args.no_progress)
        entry = {"name": name, "rec": f"corpus/{name}.rec", "count": info["count"],
                 "num_classes": info["num_classes"], "from": str(data)}
        if teacher:
            path = corpus / f"{name}.teacher_{teacher}.npy"
            np.save(path, teachers[data].astype(np.float16))
            entry["teacher"] = f"corpus/{path.name}"
        sources.append(entry)
    if wheels is None:
        wheels = download_wheels(out / "wheels")
    manifest = {"sources": sources, "teacher": teacher, "image": {"size": args.size, "color": "gray",
                "encoding": "webp", "quality": args.quality}, "wheels": wheels, "python": DEVICE_PYTHON}
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    bundle = carried_bytes([out])
    print(json.dumps({"bundle": str(out), "bundle_mib": round(bundle / 2**20, 2), "repo_mib": round(repo / 2**20, 2),
                      "travel_limit_mib": TRAVEL_LIMIT >> 20, "sources": sources}, indent=2))
    if bundle + repo > TRAVEL_LIMIT:
        remedy = ("move the shipped weights the run does not need out of lightface/weights for the call "
                  "(docs/training.md, 'Training on a lent GPU'), or lower --quality or --size") if repo > bundle else \
            "lower --quality or --size (or move shipped weights the run does not need out of lightface/weights)"
        raise RuntimeError(f"the bundle ({bundle / 2**20:.1f} MiB) and the repository's files ({repo / 2**20:.1f} MiB: "
                           "tracked, and untracked ones git does not ignore) exceed the "
                           f"{TRAVEL_LIMIT >> 20} MiB a device call carries; {remedy}")
    return manifest


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
