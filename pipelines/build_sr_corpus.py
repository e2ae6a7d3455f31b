"""Build the colour HR face corpus for super-resolution (CFP frontals + CelebA crops) as LMDBs.

    python -m pipelines.build_sr_corpus --data ../shared/data --out ~/lightface_sr [--workers 2]
    python -m pipelines.build_sr_corpus --data ../shared/data --out ~/lightface_sr --val-only   # val.lmdb alone

Writes OUT/lists/ (what was taken: <source>.txt and <source>_5pt.txt, val.txt), one LMDB
per training source (OUT/cfp.lmdb: frontal photos of cfp/ and cfp_train/, their 30 CFP
fiducials mapped to 5 points; OUT/celeba.lmdb: celeba_ids/ crops) and OUT/val.lmdb (the
held-out identities of both). Every face is a 128x128 RGB crop aligned to the Light CNN
template (--template ffhq: the wider FFHQ / CelebA-HQ framing), PNG-encoded; faces the
alignment would enlarge more than --max-upscale are left out (blurry ground truth).
celeba_hq/ is never read: it is for validation only. Re-running keeps finished LMDBs and
resumes unfinished ones; a finished LMDB built with other options (or lists) is refused
unless --overwrite. --val-only builds OUT/val.lmdb alone (the held-out faces that
benchmarks.sr_quality / sr_robustness score; the same faces as a full build's, which keeps
it). Then:

    python -m pipelines.train_super_resolution --data OUT/cfp.lmdb OUT/celeba.lmdb --val-data OUT/val.lmdb ...
"""
import argparse
import json
import sys
from typing import Any, Dict, Optional

from lightface.data.lmdb_format import ENCODINGS
from lightface.data.sr_corpus import SR_SOURCES, build_sr_corpus
from pipelines._argtypes import non_negative_int
from pipelines._cli import RERUN_HINT, DefaultsHelpFormatter, run_cli


def _upscale(text: str) -> Optional[float]:
    if text.lower() in ("none", "off"):
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 or 'none', got {text!r}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.build_sr_corpus", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="the shared data folder (cfp/, cfp_train/, celeba_ids/)")
    p.add_argument("--out", required=True, help="output folder for the list files and the LMDBs")
    p.add_argument("--sources", nargs="+", choices=SR_SOURCES, default=list(SR_SOURCES), help="training sources")
    p.add_argument("--val-ids", type=non_negative_int, default=10,
                   help="identities per source held out in OUT/val.lmdb (CFP: the last ids of cfp/; CelebA: seeded)")
    p.add_argument("--max-upscale", type=_upscale, default=1.25,
                   help="leave out faces the alignment enlarges more than this ('none' keeps all)")
    p.add_argument("--encoding", choices=ENCODINGS, default="png", help="stored image encoding")
    p.add_argument("--quality", type=int, default=95, help="JPEG / WebP quality (1-100) for --encoding jpeg / webp")
    p.add_argument("--template", choices=("lightcnn", "ffhq", "arcface"), default="lightcnn",
                   help="crop framing: the Light CNN template the models are used on, or another (ffhq: the wider "
                        "FFHQ / CelebA-HQ framing) for a corpus that teaches other framings too")
    p.add_argument("--antialias", action="store_true",
                   help="blur faces larger than the crop to its resolution before the warp instead of point-sampling "
                        "them (most CFP frontal faces are shrunk; off: how the shipped models' corpora were built)")
    p.add_argument("--val-only", action="store_true",
                   help="build only OUT/val.lmdb, the held-out faces the SR benchmarks score (benchmarks.sr_quality / "
                        "sr_robustness --heldout), not the training LMDBs; a later full build keeps it")
    p.add_argument("--workers", type=non_negative_int, default=0, help="parallel decode/align/encode processes")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild LMDBs that are complete but were built with other options or lists (else refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """Build the corpus per the parsed arguments; prints and returns the per-source summaries.

    Raises:
        RuntimeError: a source left no face to build, or its LMDB did not complete.
    """
    summaries = build_sr_corpus(args.data, args.out, args.sources, val_ids=args.val_ids, max_upscale=args.max_upscale,
                                encoding=args.encoding, quality=args.quality, workers=args.workers,
                                template=args.template,
                                progress=not args.no_progress, antialias=args.antialias,
                                overwrite=args.overwrite, val_only=args.val_only)
    print(json.dumps(summaries, indent=2, default=str))
    failed = [name for name, summary in summaries.items() if not summary.get("ok")]
    if failed:
        raise RuntimeError(f"{', '.join(failed)}: not built (see the summary above and the log); the same command "
                           f"keeps the finished LMDBs and resumes the others")
    return summaries


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
