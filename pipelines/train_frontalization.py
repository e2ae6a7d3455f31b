"""Train TP-GAN face frontalization on a pose-tagged LMDB.

    python -m pipelines.train_frontalization --data cfp.lmdb --identity-weights lightcnn.pth --out runs/tpgan
    torchrun --nproc_per_node 8 -m pipelines.train_frontalization --config runs/tpgan/config.yaml --resume

Every flag is a field of lightface.engine.frontal_trainer.FrontalTrainConfig and may also
come from ``--config run.yaml`` (keys = flag names with underscores). The run folder
(last.pt, best.pt, model.pt, config.yaml, metrics.jsonl, samples/), --resume, the
deadline and the NaN guard are those of the one training engine (docs/training.md).
"""
import argparse
import sys

from lightface.engine.frontal_trainer import FrontalTrainConfig, train_frontalization
from pipelines._cli import options_from_args, run_cli, trainer_parser


def get_args_parser() -> argparse.ArgumentParser:
    return trainer_parser("python -m pipelines.train_frontalization", __doc__, FrontalTrainConfig)


def main(args: argparse.Namespace) -> dict:
    """Train from parsed arguments; returns the summary of :func:`train_frontalization`."""
    return train_frontalization(options_from_args(FrontalTrainConfig, args))


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
