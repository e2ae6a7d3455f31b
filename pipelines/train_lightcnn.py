"""Train a Light CNN on an LMDB of face crops (the original recipe by default).

    python -m pipelines.train_lightcnn --data TRAIN_LMDB --arch lightcnn9 --out runs/NAME [options]
    torchrun --nproc_per_node 4 -m pipelines.train_lightcnn --data TRAIN_LMDB --out runs/NAME
    python -m pipelines.train_lightcnn --config runs/NAME/config.yaml --resume

Every flag is a field of lightface.engine.lightcnn_trainer.TrainConfig and may also come
from a YAML file (--config; keys are the flag names with underscores); flags given on the
command line override it. The run folder layout, --resume, the deadline and the NaN
guard are those of the one training engine (docs/training.md).
"""
import argparse
import logging
import sys

from lightface.engine.lightcnn_trainer import TrainConfig, train
from pipelines._cli import options_from_args, run_cli, trainer_parser

log = logging.getLogger("pipelines.train_lightcnn")


def get_args_parser() -> argparse.ArgumentParser:
    return trainer_parser("python -m pipelines.train_lightcnn", __doc__, TrainConfig)


def main(args: argparse.Namespace) -> dict:
    """Run training from parsed arguments; returns the summary of :func:`lightface.engine.lightcnn_trainer.train`."""
    summary = train(options_from_args(TrainConfig, args))
    log.info("finished: %s", summary)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
