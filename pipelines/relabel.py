"""Semantic bootstrapping: relabel a noisy corpus with a trained Light CNN, merge duplicate
identities across sources and drop outliers.

    python -m pipelines.relabel --data NOISY_LMDB --weights runs/NAME/best.pt --threshold 0.7 --out RELABELED_LMDB
    python -m pipelines.relabel --data lfw.lmdb cfp.lmdb celeba.lmdb --embeddings dlib --out CLEAN_LMDB
    python -m pipelines.relabel --data lfw.lmdb cfp.lmdb celeba.lmdb --weights runs/NAME/best.pt --embeddings model --out R1
    python -m pipelines.relabel --data lfw.lmdb cfp.lmdb celeba.lmdb --embeddings model --merge-threshold 0.7 --out CLEAN

With --weights, a sample is kept when the model's prediction agrees with its label,
switched to the predicted class when that prediction's probability reaches --threshold,
and dropped otherwise. With --embeddings (model: the model's 256-d features, the shipped
recogniser's without --weights; dlib: the
teacher embeddings stored beside each LMDB; or a .npy with one row per sample), classes of
different sources that are each other's best centroid match with cosine >= --merge-threshold
are merged, and samples whose cosine to the rest of their class is below
--outlier-threshold are dropped (after the prediction step when both are given: one
bootstrapping round). Several --data LMDBs are stacked in order, as train_lightcnn stacks
them. OUT gets the new LMDB plus relabel_report.json (counts), relabel_changes.csv (every
relabelled / dropped sample), cleanup_merged.csv and cleanup_dropped.csv. Train on OUT
and relabel again for the paper's 1R / 2R rounds (docs/noisy_labels.md).

Exit status: 0 on success, 1 on a missing input, a bad setting or nothing left to write.
"""
import argparse
import json
import logging
import sys

from pipelines._argtypes import _number, fraction, non_negative_int, positive_int
from pipelines._cli import DefaultsHelpFormatter, run_cli

log = logging.getLogger("pipelines.relabel")

#: a cosine similarity, in [-1, 1]
cosine = _number(float, "a cosine in [-1, 1]", lambda v: -1 <= v <= 1)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.relabel",
        description="Relabel a noisy LMDB with a trained Light CNN (keep / relabel / drop).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, nargs="+",
                   help="the noisy LMDB(s) the model was trained on (several: one per source, in training order)")
    p.add_argument("--weights", default=None,
                   help="Light CNN checkpoint with a classifier over the (stacked) classes of --data, or a shipped "
                        "model's name (recognition, lightcnn29v2_3src_rc15: an embedder, with --no-relabel); "
                        "optional with --embeddings dlib or a .npy (clean-up only); unset with --embeddings model: "
                        "the shipped recogniser's features")
    p.add_argument("--out", required=True,
                   help="the LMDB to write (with relabel_report.json, relabel_changes.csv, cleanup_*.csv)")
    p.add_argument("--threshold", type=fraction, default=0.7,
                   help="probability in (0, 1] the --weights model's prediction needs to switch a disagreeing label")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass")
    p.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--resize", type=int, default=None, help="evaluation resize; None: the checkpoint's training --resize, else 144")
    p.add_argument("--crop", type=int, default=None, help="evaluation centre crop; None: the checkpoint's training --crop, else 128")
    p.add_argument("--no-relabel", dest="relabel", action="store_false",
                   help="skip the prediction step (use --weights only for --embeddings model)")
    g = p.add_argument_group("clean-up: merge duplicate identities across sources, drop outliers")
    g.add_argument("--embeddings", default=None,
                   help="model (the --weights model's 256-d features; without --weights the shipped recogniser's), "
                        "dlib (DATA/teacher_dlib.npy beside each LMDB: the teacher as oracle) or a .npy with one row "
                        "per stacked sample; unset: no clean-up")
    g.add_argument("--merge-threshold", type=cosine, default=0.8,
                   help="centroid cosine at which mutual best matches of different sources are merged (calibrated for "
                        "dlib; the shipped recogniser's features (--embeddings model) need about 0.7: "
                        "docs/noisy_labels.md)")
    g.add_argument("--outlier-threshold", type=cosine, default=0.3,
                   help="samples whose cosine to the rest of their class is below this are dropped")
    g.add_argument("--min-class-size", type=positive_int, default=3,
                   help="classes smaller than this keep all their samples")
    g.add_argument("--no-merge", dest="merge", action="store_false", help="do not merge classes")
    g.add_argument("--no-drop", dest="drop", action="store_false", help="do not drop outliers")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out dataset")
    return p


def main(args: argparse.Namespace) -> dict:
    """Relabel per the parsed arguments; returns the report dict."""
    from lightface.apps.relabel import relabel_lmdb

    if args.weights is None and args.threshold != get_args_parser().get_default("threshold"):
        log.warning("--threshold %s is not used: it applies to the prediction step, which needs --weights",
                    args.threshold)
    report = relabel_lmdb(args.data, args.weights, args.out, threshold=args.threshold, batch_size=args.batch_size,
                          workers=args.workers, device=args.device, resize=args.resize, crop=args.crop,
                          overwrite=args.overwrite, embeddings=args.embeddings, relabel=args.relabel,
                          merge=args.merge, drop=args.drop, merge_threshold=args.merge_threshold,
                          outlier_threshold=args.outlier_threshold, min_class_size=args.min_class_size)
    log.info("relabel totals: %s -> %s", json.dumps(report["totals"]), args.out)
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
