"""Train the wavelet-domain face super-resolution GAN (Wavelet-SRNet generator, Light CNN identity loss).

    python -m pipelines.train_super_resolution --data HR_LMDB --scale 8 --identity-weights LIGHTCNN --out runs/NAME
    torchrun --nproc_per_node 4 -m pipelines.train_super_resolution --data ... --out ...
    python -m pipelines.train_super_resolution --config runs/NAME/config.yaml --resume

Every flag is a field of lightface.engine.sr_trainer.SRTrainConfig and may also come from
``--config run.yaml`` (keys = flag names with underscores). The run folder (last.pt,
best.pt, model.pt, config.yaml, metrics.jsonl, samples/), --resume, the deadline and the
NaN guard are those of the one training engine (docs/training.md).
"""
import argparse
import sys

from lightface.engine.sr_trainer import SRTrainConfig, train_super_resolution
from pipelines._cli import options_from_args, run_cli, trainer_parser

#: GAN options this trainer does not support (BEGAN): not in --help; a value is refused, null is read back
UNSUPPORTED = ("began_gamma", "began_lambda_k")


def get_args_parser() -> argparse.ArgumentParser:
    return trainer_parser("python -m pipelines.train_super_resolution", __doc__, SRTrainConfig, hidden=UNSUPPORTED)


def main(args: argparse.Namespace) -> dict:
    """Train from parsed arguments; returns the summary of :func:`train_super_resolution`."""
    return train_super_resolution(options_from_args(SRTrainConfig, args))


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
