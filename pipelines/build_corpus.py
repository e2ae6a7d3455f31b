"""Build the multi-source training corpus (LFW + CFP + CelebA from ../shared/data) as LMDBs.

    python -m pipelines.build_corpus --data ../shared/data --out ~/lightface_corpus [--workers 2]

Writes OUT/lists/<source>.txt and <source>_5pt.txt (what was taken, with LFW fold 2 and
its CFP namesakes left out for validation) and OUT/<source>.lmdb, one LMDB per source
(144x144 colour lightcnn_train crops, JPEG q95). Re-running resumes unfinished builds and
keeps finished ones; a finished LMDB built with other options is refused unless --overwrite.
Then: python -m pipelines.train_lightcnn --data OUT/lfw.lmdb OUT/cfp.lmdb OUT/celeba.lmdb ...
(see docs/model_zoo.md).
"""
import argparse
import json
import sys

from lightface.data.corpus import SOURCES, build_corpus
from lightface.data.lmdb_format import ENCODINGS
from pipelines._cli import RERUN_HINT, DefaultsHelpFormatter, run_cli


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.build_corpus", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="the shared data folder (lfw_train/, cfp_train/, celeba_ids/)")
    p.add_argument("--out", required=True, help="output folder for the list files and the per-source LMDBs")
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES), help="sources to build")
    p.add_argument("--color", choices=("gray", "rgb"), default="rgb", help="stored colour (the trainer converts to gray)")
    p.add_argument("--encoding", choices=ENCODINGS, default="jpeg", help="stored image encoding")
    p.add_argument("--quality", type=int, default=95, help="JPEG / WebP quality (1-100)")
    p.add_argument("--antialias", action="store_true",
                   help="blur faces larger than the crop (most CFP photos) to its resolution before the warp, as "
                        "FaceEmbedder cuts faces from photos, instead of point-sampling them (off: how the shipped "
                        "recognisers' corpora were built)")
    p.add_argument("--workers", type=int, default=0, help="parallel decode/align/encode processes")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild LMDBs that are complete but were built with other options or lists (else refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(args: argparse.Namespace) -> dict:
    """Build the corpus; returns ``{source: build summary}`` (a failed build raises)."""
    summaries = build_corpus(args.data, args.out, args.sources, color=args.color, encoding=args.encoding,
                             quality=args.quality, workers=args.workers, progress=not args.no_progress,
                             antialias=args.antialias, overwrite=args.overwrite)
    print(json.dumps(summaries, indent=2, default=str))
    failed = [name for name, s in summaries.items() if not s.get("ok")]
    if failed:
        raise RuntimeError(f"building {', '.join(failed)} failed; see the build reports in {args.out}")
    return summaries


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
