"""Build the multi-source training corpus (LFW + CFP + CelebA from ../shared/data) as LMDBs.

    python -m pipelines.build_corpus --data ../shared/data --out ~/lightface_corpus [--workers 2]

Writes OUT/lists/<source>.txt and <source>_5pt.txt (what was taken, with LFW fold 2 and
its CFP namesakes left out for validation) and OUT/<source>.lmdb, one LMDB per source
(144x144 colour lightcnn_train crops, JPEG q95). Re-running resumes or keeps finished
builds. Then: python -m pipelines.train_lightcnn --data OUT/lfw.lmdb OUT/cfp.lmdb OUT/celeba.lmdb ...
(see docs/model_zoo.md).
"""
import argparse
import json
import logging
import sys
from typing import List, Optional

from lightface.data.corpus import SOURCES, build_corpus

log = logging.getLogger("pipelines.build_corpus")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.build_corpus", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="the shared data folder (lfw_train/, cfp_train/, celeba_ids/)")
    p.add_argument("--out", required=True, help="output folder for the list files and the per-source LMDBs")
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES), help="sources to build")
    p.add_argument("--color", choices=("gray", "rgb"), default="rgb", help="stored colour (the trainer converts to gray)")
    p.add_argument("--encoding", choices=("raw", "png", "jpeg"), default="jpeg", help="stored image encoding")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--workers", type=int, default=0, help="parallel decode/align/encode processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        summaries = build_corpus(args.data, args.out, args.sources, color=args.color, encoding=args.encoding,
                                 quality=args.quality, workers=args.workers, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 1
    print(json.dumps(summaries, indent=2, default=str))
    return 0 if all(s.get("ok") for s in summaries.values()) else 1


def cli(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
