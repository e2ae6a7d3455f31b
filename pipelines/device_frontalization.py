"""Train the TP-GAN frontalizer on a lent GPU in one call and send the generator back.

    # there, in the repository's copy (docs/frontalization.md, "On a lent GPU"); the flags
    # after -- are those of python -m pipelines.train_frontalization:
    python3 -m pipelines.device_frontalization --out $OUT --minutes 8 -- \\
        --data .device/cfp_train128_webp --width 24 --d-width 32 --batch-size 64 ...
    # here, from the files it sent back:
    python -m pipelines.device_frontalization --collect FILES_AT --checkpoint runs/tpgan_gpu/model.pt

A call returns at most 8 files of 16 MiB each, and only what is in ``$OUT`` when it ends, so:

1. the wheels of a device bundle (``--wheels``, default ``.device/lightcnn/wheels``) are
   installed when ``lmdb`` or ``albumentations`` is missing;
2. ``train_frontalization`` runs in ``--work`` (its training checkpoints hold G, D and their
   optimisers: far over a returned file), with ``--max-minutes`` set to the minutes left less
   ``--reserve-seconds`` for the export;
3. the generator (its EMA weights when the run keeps them) goes to ``--out`` as float16
   parts (``generator.partK.pt``) under 16 MiB, beside ``summary.json`` (architecture,
   constructor arguments, the run's summary), ``metrics.jsonl``, ``config.yaml``,
   ``curves.png`` and the last sample grid. A run that breaks still returns the generator of
   its last checkpoint with the error in ``summary.json`` and the command fails; a SIGTERM
   returns the generator of the step reached and exits with status 143.

``--collect`` joins the parts into one checkpoint that ``Frontalizer(weights=...)``,
``pipelines.frontalize --weights``, ``benchmarks.frontal_quality --weights`` and
``release_model --checkpoint`` load. ``--device cpu`` runs the same steps (the tests do).
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict

from pipelines._cli import run_cli
from pipelines.device_train import add_call_arguments, ensure_packages, join_parts, run_or_collect, train_and_return


def train_on_device(args: argparse.Namespace) -> Dict[str, Any]:
    """Steps 1-3 of the module docstring; returns (and writes to ``--out``) the summary."""
    t0 = time.monotonic()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    installed = ensure_packages(Path(args.wheels), work / "site")
    from lightface.engine.frontal_trainer import FrontalTrainConfig, train_frontalization
    from pipelines._cli import options_from_args, parse_with_config
    from pipelines.train_frontalization import get_args_parser as trainer_parser

    run_dir = work / "run"
    left = args.minutes * 60 - (time.monotonic() - t0) - args.reserve_seconds
    trainer_args = [a for a in args.trainer_args if a != "--"]
    argv = [*trainer_args, "--out", str(run_dir), "--overwrite", "--device", args.device,
            "--max-minutes", f"{max(left, 30) / 60:.4f}"]
    cfg = options_from_args(FrontalTrainConfig, parse_with_config(trainer_parser(), argv))
    return train_and_return(lambda: train_frontalization(cfg), run_dir, out,
                            {"wheels_installed": installed, "device": args.device}, t0, "generator", drop=(),
                            last_of=("samples/*.png",))


def collect(args: argparse.Namespace) -> Dict[str, Any]:
    """Join the returned parts of ``--collect`` into the generator checkpoint ``--checkpoint``."""
    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint

    src = Path(args.collect)
    info = json.loads((src / "summary.json").read_text())
    arch, kwargs = info["network"]["arch"], info["network"]["model_kwargs"]
    model = get_model(arch, **kwargs)
    model.load_state_dict(join_parts(src, info["parts"]))
    path = save_model_checkpoint(args.checkpoint, model, arch, kwargs, device_run=info)
    return {"checkpoint": str(path), "arch": arch, "step": info["run"].get("step")}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.device_frontalization", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_call_arguments(p, "wheels and the run")
    p.add_argument("--wheels", default=".device/lightcnn/wheels",
                   help="wheels to install when lmdb / albumentations are missing (pipelines.device_bundle's)")
    p.add_argument("trainer_args", nargs=argparse.REMAINDER,
                   help="after --: the flags of python -m pipelines.train_frontalization (--data, the recipe); "
                        "--out, --device and --max-minutes are set from this command's")
    return p


def main(args: argparse.Namespace) -> Dict[str, Any]:
    return run_or_collect(args, train_on_device, collect)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
