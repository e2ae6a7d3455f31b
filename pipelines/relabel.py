"""Semantic bootstrapping: relabel a noisy LMDB with a Light CNN trained on it.

    python -m pipelines.relabel --data NOISY_LMDB --weights runs/NAME/best.pt --threshold 0.7 --out RELABELED_LMDB

A sample is kept when the model's prediction agrees with its label, switched to the
predicted class when that prediction's probability reaches --threshold, and dropped
otherwise. OUT gets the new LMDB plus relabel_report.json (counts) and
relabel_changes.csv (every relabelled / dropped sample). Train on OUT and relabel again
for the paper's 1R / 2R rounds (docs/noisy_labels.md).
"""
import argparse
import json
import logging
import sys

from pipelines._argtypes import non_negative_int, positive_int
from pipelines._cli import parse_with_config

log = logging.getLogger("pipelines.relabel")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.relabel",
        description="Relabel a noisy LMDB with a trained Light CNN (keep / relabel / drop).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="the noisy LMDB the model was trained on")
    p.add_argument("--weights", required=True, help="Light CNN checkpoint with a classifier over the classes of --data")
    p.add_argument("--out", required=True, help="the relabelled LMDB to write (with relabel_report.json, relabel_changes.csv)")
    p.add_argument("--threshold", type=float, default=0.7, help="probability needed to switch a disagreeing label")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass")
    p.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--resize", type=int, default=None, help="evaluation resize; None: the checkpoint's training --resize, else 144")
    p.add_argument("--crop", type=int, default=None, help="evaluation centre crop; None: the checkpoint's training --crop, else 128")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out dataset")
    return p


def main(args: argparse.Namespace) -> dict:
    """Relabel per the parsed arguments; returns the report dict."""
    from lightface.apps.relabel import relabel_lmdb

    report = relabel_lmdb(args.data, args.weights, args.out, threshold=args.threshold, batch_size=args.batch_size,
                          workers=args.workers, device=args.device, resize=args.resize, crop=args.crop,
                          overwrite=args.overwrite)
    log.info("relabel counts: %s -> %s", json.dumps(report["counts"]), args.out)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main(parse_with_config(get_args_parser()))
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        log.error("%s", err)
        sys.exit(1)
