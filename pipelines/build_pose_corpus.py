"""Build the pose-tagged frontalization corpus (CFP + turned LFW / CelebA photos from ../shared/data) as one LMDB.

    python -m pipelines.build_pose_corpus --data ../shared/data --out ~/lightface_pose [--workers 2]
    python -m pipelines.train_frontalization --data ~/lightface_pose/pose128 ...

Writes OUT/tree (Images/<source>_<id>/{frontal,profile}/ symlinks and pose_5pt.txt),
OUT/lookalikes.json (LFW / CelebA people dropped as look-alikes of held-out or already kept
people, by the shipped recogniser) and OUT/pose<size> (128x128 colour ``lightcnn`` crops,
WebP q90). LFW fold 2 and every CFP name stay out; ``cfp/`` is never read as training data.
Re-running reuses the look-alike check and resumes or keeps the build (lightface.data.pose_corpus).
"""
import argparse
import json
import logging
import sys

from lightface.data.lmdb_format import ENCODINGS
from lightface.data.pose_corpus import POSE_SOURCES, build_pose_corpus
from lightface.embed import FaceEmbedder
from pipelines._cli import RERUN_HINT, DefaultsHelpFormatter, run_cli

log = logging.getLogger("pipelines.build_pose_corpus")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.build_pose_corpus", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="the shared data folder (cfp_train/, cfp/, lfw_train/, "
                                                            "celeba_ids/)")
    p.add_argument("--out", required=True, help="output folder (tree/, lookalikes.json, pose<size>/)")
    p.add_argument("--sources", nargs="+", choices=POSE_SOURCES, default=list(POSE_SOURCES), help="sources to take")
    p.add_argument("--frontal-max", type=float, default=0.10,
                   help="|yaw offset| (nose from the midline, in eye-to-mouth distances) below which an LFW / "
                        "CelebA photo is frontal")
    p.add_argument("--turned-min", type=float, default=0.20,
                   help="|yaw offset| above which an LFW / CelebA photo is a training input (photos in between "
                        "are left out)")
    p.add_argument("--no-lookalikes", action="store_true",
                   help="skip the recogniser's look-alike check: LFW / CelebA people who are held-out cfp/ people may "
                        "then enter the corpus (warned; the summary says lookalike_check: false)")
    p.add_argument("--heldout-cosine", type=float, default=0.6,
                   help="drop an LFW / CelebA person this close to a held-out cfp/ person")
    p.add_argument("--train-cosine", type=float, default=0.8,
                   help="drop an LFW / CelebA person this close to a person kept before it (another label of "
                        "the same celebrity)")
    p.add_argument("--weights", default=None, help="recogniser of the look-alike check (default: the shipped one)")
    p.add_argument("--size", type=int, default=128, help="crop side (the lightcnn template scaled to it)")
    p.add_argument("--color", choices=("gray", "rgb"), default="rgb", help="stored colour")
    p.add_argument("--encoding", choices=ENCODINGS, default="webp", help="stored image encoding")
    p.add_argument("--quality", type=int, default=90, help="JPEG / WebP quality (1-100)")
    p.add_argument("--antialias", action="store_true",
                   help="blur faces larger than the crop to its resolution before the warp, as Frontalizer cuts "
                        "faces from photos, instead of point-sampling them (off: how the shipped frontalizer's "
                        "corpus was built)")
    p.add_argument("--workers", type=int, default=0, help="parallel decode/align/encode processes")
    p.add_argument("--overwrite", action="store_true", help="replace a complete pose LMDB built from other people, "
                                                           "photos or options (else refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(args: argparse.Namespace) -> dict:
    """Build the corpus; returns the build summary (a failed build raises)."""
    embedder = None if args.no_lookalikes else FaceEmbedder(weights=args.weights, device="cpu")
    if args.no_lookalikes and any(s != "cfp" for s in args.sources):
        log.warning("--no-lookalikes: the %s people are not checked against the held-out cfp/ people, so some of "
                    "them may be in the corpus (CelebA and LFW hold the same celebrities): "
                    "benchmarks.frontal_quality on cfp/ is then no longer held-out for a frontalizer trained on it",
                    "/".join(s for s in args.sources if s != "cfp"))
    summary = build_pose_corpus(args.data, args.out, args.sources, frontal_max=args.frontal_max,
                                turned_min=args.turned_min, embedder=embedder, heldout_cosine=args.heldout_cosine,
                                train_cosine=args.train_cosine, size=args.size, color=args.color,
                                encoding=args.encoding, quality=args.quality, workers=args.workers,
                                overwrite=args.overwrite, progress=not args.no_progress, antialias=args.antialias)
    summary["lookalike_check"] = embedder is not None
    print(json.dumps(summary, indent=2, default=str))
    if not summary.get("ok"):
        raise RuntimeError(f"building the pose corpus failed; see {summary.get('report')}")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
