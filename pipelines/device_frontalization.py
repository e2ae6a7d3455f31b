"""Train the TP-GAN frontalizer on a lent GPU in one call and send the generator back.

    # here: the pose LMDB as one archive, checked against what a call carries
    python -m pipelines.device_frontalization --pack POSE_LMDB --archive .device/pose.tgz
    # there, in the repository's copy (docs/frontalization.md, "On a lent GPU"); the flags
    # after -- are those of python -m pipelines.train_frontalization (--data is the archive's LMDB):
    python3 -m pipelines.device_frontalization --data-archive .device/pose.tgz --out $OUT --minutes 8 -- \\
        --width 24 --d-width 32 --batch-size 64 ...
    # here, from the files it sent back:
    python -m pipelines.device_frontalization --collect FILES_AT --checkpoint runs/tpgan_gpu/model.pt

A call carries at most 64 MiB (the repository's files included: tracked, and untracked ones
git does not ignore). An LMDB keeps at least one 4 KiB page per face, so ``--pack`` sends it
as a gzipped tar, which drops that padding (the 10,463 faces of ``pipelines.build_pose_corpus``
at WebP quality 75: 37 MiB as an LMDB, 28 MiB packed); it prints what the call would carry and fails when that is over
the limit. A call returns at most 8 files of 16 MiB each, and only what is in ``$OUT`` when
it ends, so:

0. ``--data-archive`` is unpacked into ``--work`` (once: a later call on the same machine
   reuses it) and its LMDB becomes the trainer's ``--data``;
1. the wheels of a device bundle (``--wheels``, default ``.device/lightcnn/wheels``) are
   installed when ``lmdb`` or ``albumentations`` is missing;
2. ``train_frontalization`` runs in ``--work`` (its training checkpoints hold G, D and their
   optimisers: far over a returned file), with ``--max-minutes`` set to the minutes left less
   ``--reserve-seconds`` for the export (a budget that leaves under 10 s trains nothing and
   fails), once the generator's float16 parts are known to come back (at most 3 of 15 MiB
   beside the run's 5 other files: ``--width`` 40 at most, with feature 256 and noise 100;
   a wider one is refused before training);
3. the generator (its EMA weights when the run keeps them) goes to ``--out`` as float16
   parts (``generator.partK.pt``) under 16 MiB, beside ``summary.json`` (architecture,
   constructor arguments, the run's summary), ``metrics.jsonl``, ``config.yaml``,
   ``curves.png`` and the last sample grid (a tensor over 15 MiB is cut across parts). A run
   that breaks still returns the generator of its last checkpoint with the error in
   ``summary.json`` (only ``summary.json`` when there is none yet) and the command fails; a
   SIGTERM returns the generator of the step reached and exits with status 143.

``--collect`` joins the parts into one checkpoint (the run's ``config.yaml`` kept as its training config:
the ``--mirror`` direction) that ``Frontalizer(weights=...)``,
``pipelines.frontalize --weights``, ``benchmarks.frontal_quality --weights`` and
``release_model --checkpoint`` load. ``--device cpu`` runs the same steps (the tests do).
"""
import argparse
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, List

from pipelines._cli import DefaultsHelpFormatter, run_cli
from pipelines.device_bundle import TRAVEL_LIMIT, carried_bytes, download_wheels, folder_bytes, tracked_bytes
from pipelines.device_train import (RUN_FILES, add_call_arguments, check_budget, check_returnable, ensure_packages,
                                    join_parts, read_summary, refuse_wheel_conflicts, run_or_collect,
                                    train_and_return)

#: the name of the marker an unpacked archive's folder gets once its LMDB is complete
UNPACKED = ".unpacked"
#: what a diverged run's error advises (in place of the trainer's --resume)
ADVICE = ("Lower the trainer's --lr, --lr-d or --lambda-adv (after --), then call again: a lent machine keeps "
          "nothing to resume from")


def pack(args: argparse.Namespace) -> Dict[str, Any]:
    """``--pack LMDB --archive PATH``: the LMDB folder as a gzipped tar (written atomically), the device's
    wheels in ``--wheels`` when it holds none (unless ``--no-wheels``), and what a device call would carry:
    the repository's files (:func:`~pipelines.device_bundle.tracked_bytes`), the archive and the wheels.

    Raises:
        FileNotFoundError: ``--pack`` is not an LMDB folder.
        RuntimeError: not a git checkout, two versions of one package among the wheels, or the call would
            carry more than the device takes (the archive is kept).
    """
    lmdb_dir, archive = Path(args.pack), Path(args.archive)
    if not (lmdb_dir / "data.mdb").is_file():
        raise FileNotFoundError(f"--pack {lmdb_dir}: not an LMDB folder (no data.mdb); build one with "
                                "python -m pipelines.build_pose_corpus")
    tracked_bytes()  # before the archive: outside a git checkout nothing can be sized
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(lmdb_dir, arcname=lmdb_dir.name)
    os.replace(partial, archive)
    wheels = Path(args.wheels)
    if not args.no_wheels and not any(wheels.glob("*.whl")):
        download_wheels(wheels)
    refuse_wheel_conflicts(wheels.glob("*.whl"), f"--wheels {wheels}",
                           "empty it and run --pack again (it downloads this environment's versions)")
    sizes = {"archive": carried_bytes([archive]), "repo": tracked_bytes(), "wheels": carried_bytes([wheels])}
    result = {"archive": str(archive), "lmdb": lmdb_dir.name, "lmdb_mib": round(folder_bytes(lmdb_dir) / 2**20, 2),
              **{f"{k}_mib": round(v / 2**20, 2) for k, v in sizes.items()},
              "carry_mib": round(sum(sizes.values()) / 2**20, 2), "travel_limit_mib": TRAVEL_LIMIT >> 20}
    if sum(sizes.values()) > TRAVEL_LIMIT:
        raise RuntimeError(
            f"the archive ({sizes['archive'] / 2**20:.1f} MiB), the wheels ({sizes['wheels'] / 2**20:.1f} MiB) and "
            f"the repository's files ({sizes['repo'] / 2**20:.1f} MiB: tracked, and untracked ones git does not "
            f"ignore) exceed the {TRAVEL_LIMIT >> 20} MiB a device call carries: rebuild the LMDB at a lower WebP "
            "quality (build_pose_corpus --quality), or move the shipped weights the run does not need (the "
            "super-resolvers, rc13, and the frontalizer unless --finetune names it) out of lightface/weights for "
            "the call (docs/frontalization.md, 'On a lent GPU')")
    return result


def unpack_archive(archive: Path, work: Path) -> Path:
    """The LMDB folder of ``archive`` (from :func:`pack`), unpacked into ``work/data`` unless an earlier call
    finished unpacking the same archive (name and size) there; returns its path.

    Raises:
        FileNotFoundError: no such archive.
        ValueError: the archive holds no single LMDB folder.
    """
    if not archive.is_file():
        raise FileNotFoundError(f"--data-archive {archive}: no such file (carry it; make it with --pack)")
    dest, stamp = work / "data", {"archive": archive.name, "bytes": archive.stat().st_size}
    marker = dest / UNPACKED
    done = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
    if {k: done.get(k) for k in stamp} != stamp:
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(archive, "r:gz") as tar:
            tops = {Path(name).parts[0] for name in tar.getnames() if name not in ("", ".")}
            if len(tops) != 1 or f"{next(iter(tops))}/data.mdb" not in tar.getnames():
                raise ValueError(f"--data-archive {archive}: holds {sorted(tops)}, not one LMDB folder; make it with "
                                 "python -m pipelines.device_frontalization --pack LMDB --archive PATH")
            tar.extractall(dest, filter="data")
        done = {**stamp, "lmdb": next(iter(tops))}
        marker.write_text(json.dumps(done) + "\n", encoding="utf-8")
    return dest / done["lmdb"]


def _with_data(trainer_args: List[str], archive: Any, work: Path) -> List[str]:
    """The trainer's flags, with ``--data`` the unpacked archive's LMDB when ``--data-archive`` is given."""
    if archive is None:
        return trainer_args
    if any(a == "--data" or a.startswith("--data=") for a in trainer_args):
        raise ValueError("give the data once: --data-archive (this command's) or --data (the trainer's), not both")
    return [*trainer_args, "--data", str(unpack_archive(Path(archive), work))]


def train_on_device(args: argparse.Namespace) -> Dict[str, Any]:
    """Steps 1-3 of the module docstring; returns (and writes to ``--out``) the summary."""
    t0 = time.monotonic()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    installed = ensure_packages(Path(args.wheels), work / "site")
    import torch

    from lightface.data.lmdb_format import read_metadata
    from lightface.engine.frontal_trainer import ARCH, FrontalTrainConfig, generator_kwargs, train_frontalization
    from lightface.models import get_model
    from pipelines._cli import options_from_args, parse_with_config
    from pipelines.train_frontalization import get_args_parser as trainer_parser

    run_dir = work / "run"
    trainer_args = _with_data([a for a in args.trainer_args if a != "--"], args.data_archive, work)
    left = check_budget(args, t0, "installing the wheels and unpacking the data")
    argv = [*trainer_args, "--out", str(run_dir), "--overwrite", "--device", args.device,
            "--max-minutes", f"{left / 60:.4f}"]
    cfg = options_from_args(FrontalTrainConfig, parse_with_config(trainer_parser(), argv))
    # the classifier of --lambda-ce has a row per training person (at most --train-identities, or the data's people)
    classes = (cfg.train_identities or read_metadata(cfg.data)["num_classes"]) if cfg.lambda_ce > 0 else 0
    with torch.device("meta"):
        check_returnable(get_model(ARCH, **generator_kwargs(cfg, classes)), 2 + len(RUN_FILES),
                         "train a narrower generator (--width after --; docs/frontalization.md, 'On a lent GPU')")
    return train_and_return(lambda: train_frontalization(cfg), run_dir, out,
                            {"wheels_installed": installed, "device": args.device}, t0, "generator", drop=(),
                            last_of=("samples/*.png",), advice=ADVICE)


def collect(args: argparse.Namespace) -> Dict[str, Any]:
    """Join the returned parts of ``--collect`` into the generator checkpoint ``--checkpoint``, with the run's
    ``config.yaml`` as its training config (the direction it mirrored faces to, which ``Frontalizer`` and
    ``release_model`` read)."""
    from lightface.engine.config import load_config
    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint

    src = Path(args.collect)
    info = read_summary(src)
    arch, kwargs = info["network"]["arch"], info["network"]["model_kwargs"]
    model = get_model(arch, **kwargs)
    model.load_state_dict(join_parts(src, info["parts"]))
    config = load_config(src / "config.yaml") if (src / "config.yaml").is_file() else None
    extra = {"config": config} if config is not None else {}
    path = save_model_checkpoint(args.checkpoint, model, arch, kwargs, device_run=info, **extra)
    return {"checkpoint": str(path), "arch": arch, "step": info["run"].get("step")}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.device_frontalization", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    add_call_arguments(p, "wheels and the run")
    p.add_argument("--wheels", default=".device/lightcnn/wheels",
                   help="wheels to install when lmdb / albumentations are missing (pipelines.device_bundle's)")
    p.add_argument("--data-archive", default=None, metavar="TGZ",
                   help="a pose LMDB packed by --pack: unpacked into --work and passed to the trainer as --data")
    p.add_argument("--pack", default=None, metavar="LMDB",
                   help="here, before the call: pack this pose LMDB into --archive and print what the call carries")
    p.add_argument("--archive", default=".device/pose.tgz", help="with --pack: the archive to write")
    p.add_argument("--no-wheels", action="store_true",
                   help="with --pack: do not download the device's wheels into an empty --wheels")
    p.add_argument("trainer_args", nargs=argparse.REMAINDER,
                   help="after --: the flags of python -m pipelines.train_frontalization (--data, the recipe); "
                        "--out, --device and --max-minutes are set from this command's")
    return p


def main(args: argparse.Namespace) -> Dict[str, Any]:
    if args.pack:
        result = pack(args)
        print(json.dumps(result, indent=2))
        return result
    return run_or_collect(args, train_on_device, collect)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
