"""Pack a training corpus small enough to travel to a lent GPU, with the wheels it needs there.

    python -m pipelines.device_bundle --data CORPUS/lfw.lmdb CORPUS/cfp.lmdb CORPUS/celeba.lmdb --out .device/lightcnn

A lent GPU machine (docs/training.md, "Training on a lent GPU") receives the repository and
at most 64 MiB in all, and can fetch nothing. The bundle holds, per source LMDB:
``corpus/<name>.rec`` + ``.idx`` (InsightFace RecordIO, :mod:`lightface.data.to_recordio`:
gray WebP, the 144 training crops stored at ``--size`` 128) and
``corpus/<name>.teacher_<teacher>.npy`` (the teacher embeddings, float16, row i = sample i);
``wheels/`` (the Python packages that machine lacks, at the versions installed here:
:data:`DEVICE_WHEELS`); ``bundle.json`` (what is inside). ``python -m pipelines.device_train``
unpacks it there. The command prints the bundle's size beside the repository's tracked files
and fails when together they would not travel.
"""
import argparse
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List

import numpy as np

from pipelines._cli import DefaultsHelpFormatter, run_cli

ROOT = Path(__file__).resolve().parents[1]
#: what one call to the device may carry: the repository's tracked files plus the bundle
TRAVEL_LIMIT = 64 << 20
#: packages the lent GPU's image lacks (it has torch, numpy, scipy, OpenCV, PyYAML; docs/training.md)
DEVICE_WHEELS = ("lmdb", "albumentations", "albucore", "pydantic", "pydantic_core", "annotated-types",
                 "typing-inspection", "simsimd", "stringzilla")
#: the device's Python and platforms (pip download --python-version / --platform)
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_28_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def tracked_bytes(repo: Path = ROOT) -> int:
    """Size of the repository's tracked files (what travels besides carried paths)."""
    names = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], check=True, capture_output=True).stdout
    return sum((repo / n).stat().st_size for n in names.decode().split("\0") if n and (repo / n).is_file())


def folder_bytes(path: Path) -> int:
    """Size of the files under the folder ``path`` (0 when there is no such folder)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def download_wheels(out: Path) -> List[str]:
    """``pip download`` the :data:`DEVICE_WHEELS` at this environment's versions for the device."""
    pins = [f"{name}=={metadata.version(name)}" for name in DEVICE_WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           DEVICE_PYTHON, "--implementation", "cp", "-d", str(out), "-q"]
    for plat in DEVICE_PLATFORMS:
        cmd += ["--platform", plat]
    subprocess.run(cmd + pins, check=True)
    return sorted(p.name for p in out.glob("*.whl"))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.device_bundle", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="training LMDBs (one per source) with teacher embeddings")
    p.add_argument("--out", required=True, help="bundle folder (inside the repository, ignored by git, named in carry)")
    p.add_argument("--teacher", default="dlib", help="teacher whose embeddings travel ('none': no distillation)")
    p.add_argument("--size", type=int, default=128, help="stored side of the crops (the whole crop, resized)")
    p.add_argument("--quality", type=int, default=60, help="WebP quality (1-100)")
    p.add_argument("--no-wheels", action="store_true", help="do not download the device's wheels (no network here)")
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
    # fail before the slow export when a teacher's embeddings are missing or incomplete
    teachers = {d: load_teacher_embeddings(d, teacher) for d in args.data} if teacher else {}
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
    wheels = [] if args.no_wheels else download_wheels(out / "wheels")
    manifest = {"sources": sources, "teacher": teacher, "image": {"size": args.size, "color": "gray",
                "encoding": "webp", "quality": args.quality}, "wheels": wheels, "python": DEVICE_PYTHON}
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    bundle = folder_bytes(out)
    repo = tracked_bytes()
    print(json.dumps({"bundle": str(out), "bundle_mib": round(bundle / 2**20, 2), "repo_tracked_mib":
                      round(repo / 2**20, 2), "travel_limit_mib": TRAVEL_LIMIT >> 20, "sources": sources}, indent=2))
    if bundle + repo > TRAVEL_LIMIT:
        raise RuntimeError(f"the bundle ({bundle / 2**20:.1f} MiB) and the repository's tracked files "
                           f"({repo / 2**20:.1f} MiB) exceed the {TRAVEL_LIMIT >> 20} MiB a device call carries; "
                           "lower --quality or --size")
    return manifest


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
