"""Paired significance test of two recognisers on the same faces (exact McNemar test).

    python -m pipelines.compare_recognisers A B [--detector DET.onnx] [--data ../shared/data] [--out cmp.json]
    python -m pipelines.compare_recognisers shipped RUN/last.pt --detector det_500m.onnx --out cmp.json

A and B are Light CNN checkpoints, or the word "shipped" for the shipped default recogniser
(FaceEmbedder() without weights). Both embed the same development-protocol faces
(lightface.eval.dev_protocols): lfw_hard rank-1 identification of LFW fold-2 people per
capture condition (clean, side_light, occlusion) and pooled, and the 600 lfw_dev pairs,
where each model decides at its own accuracy-maximising threshold on the set. Each row
gives both accuracies, the items right only with B and only with A, and the exact
two-sided McNemar p-value (lightface.eval.paired).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from lightface.eval.dev_protocols import crop_embedder
from lightface.eval.paired import compare_recognisers, format_comparison
from lightface.utils.atomic_write import write_text_atomic
from pipelines._cli import DefaultsHelpFormatter, run_cli
from pipelines.extract_embeddings import add_flip_argument

SHIPPED = "shipped"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.compare_recognisers", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("a", metavar="A", help=f"recogniser A: a Light CNN checkpoint, or '{SHIPPED}' (the shipped default)")
    p.add_argument("b", metavar="B", help=f"recogniser B: a Light CNN checkpoint, or '{SHIPPED}' (the shipped default)")
    p.add_argument("--data", default="../shared/data", help="the shared data folder (holding lfw_train/)")
    p.add_argument("--detector", default=None,
                   help="align the LFW photos from this face detector's landmarks (a detector .onnx such as "
                        "det_500m.onnx, an InsightFace pack, or 'yunet'), as FaceEmbedder(aligned=False) does on whole "
                        "photos, instead of the given landmarks")
    p.add_argument("--out", default=None, help="also write the results as JSON here (atomically)")
    add_flip_argument(p, " for both recognisers")
    return p


def _recogniser(spec: str, which: str, flip: Optional[bool] = None):
    """A FaceEmbedder for a command-line recogniser: a checkpoint path or 'shipped' (``flip``: see ``--flip``)."""
    from lightface import FaceEmbedder

    if spec == SHIPPED:
        return FaceEmbedder(flip=flip)
    if not Path(spec).is_file():
        raise FileNotFoundError(f"recogniser {which}: checkpoint {spec} not found; pass a Light CNN checkpoint "
                                f"(e.g. RUN/last.pt) or '{SHIPPED}' for the shipped default recogniser")
    return FaceEmbedder(spec, flip=flip)


def main(args: argparse.Namespace) -> dict:
    """Compare A and B; prints the table, writes --out; returns ``{"a", "b", "detector", "data", "results"}``."""
    embed_a = crop_embedder(_recogniser(args.a, "A", args.flip))
    embed_b = crop_embedder(_recogniser(args.b, "B", args.flip))
    detector = None
    if args.detector:
        from lightface.data.detect import FaceDetector

        detector = FaceDetector(args.detector, device="cpu")
    results = compare_recognisers(embed_a, embed_b, args.data, detector=detector)
    report = {"a": args.a, "b": args.b, "detector": args.detector, "data": str(args.data), "results": results}
    print(f"A: {args.a}\nB: {args.b}\nalignment: {args.detector or 'the given LFW landmarks'}\n")
    print(format_comparison(results))
    if args.out:
        write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
