"""Paired significance test of two recognisers on the same faces (exact McNemar test).

    python -m pipelines.compare_recognisers A B [--detector DET.onnx] [--data ../shared/data] [--out cmp.json]
    python -m pipelines.compare_recognisers shipped RUN/last.pt --detector det_500m.onnx --out cmp.json

A and B are Light CNN checkpoints, shipped recognisers' names, or the word "shipped" for the
shipped default recogniser (FaceEmbedder() without weights); each embeds with its model card's
flip fusion unless --flip / --no-flip sets it for both, and each is scored on faces cropped as it
was trained (--align-method auto: the original Light CNN recipe for an official release, the
least-squares fit otherwise) unless --align-method sets one method for both. Both embed the same development-protocol faces
(lightface.eval.dev_protocols): lfw_hard rank-1 identification of LFW fold-2 people per
capture condition (clean, side_light, occlusion) and pooled, and the 600 lfw_dev pairs,
where each model decides at its own accuracy-maximising threshold on the set. Each row
gives both accuracies, the items right only with B and only with A, and the exact
two-sided McNemar p-value (lightface.eval.paired).
"""
import argparse
import json
import sys
from typing import Optional

from lightface.eval.dev_protocols import crop_embedder
from lightface.eval.paired import compare_recognisers, format_comparison
from lightface.utils.atomic_write import write_text_atomic
from pipelines._argtypes import json_file
from pipelines._cli import DefaultsHelpFormatter, run_cli
from pipelines.extract_embeddings import add_align_method_argument, add_flip_argument

SHIPPED = "shipped"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.compare_recognisers", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("a", metavar="A", help=f"recogniser A: a Light CNN checkpoint, a shipped recogniser's name, or '{SHIPPED}' (the shipped default)")
    p.add_argument("b", metavar="B", help=f"recogniser B: a Light CNN checkpoint, a shipped recogniser's name, or '{SHIPPED}' (the shipped default)")
    p.add_argument("--data", default="../shared/data", help="the shared data folder (holding lfw_train/)")
    p.add_argument("--detector", default=None,
                   help="align the LFW photos from this face detector's landmarks (a detector .onnx such as "
                        "det_500m.onnx, an InsightFace pack, or 'yunet'), as FaceEmbedder(aligned=False) does on whole "
                        "photos, instead of the given landmarks")
    p.add_argument("--out", type=json_file, default=None,
                   help="also write the results as JSON here (atomically; checked before any model loads)")
    add_flip_argument(p, " for both recognisers")
    add_align_method_argument(p, " for both recognisers (auto: each its own)")
    return p


def _check_spec(spec: str, which: str) -> None:
    """Raise unless ``spec`` is 'shipped', a file or a shipped recogniser's name (checked for both recognisers
    before either is loaded; :func:`lightface.models.pretrained.resolve_weights`: a typo lists the close names)."""
    from lightface.models.pretrained import WeightsNotFoundError, resolve_weights

    if spec != SHIPPED:
        try:
            resolve_weights(spec, "recognition", f"recogniser {which}:")
        except WeightsNotFoundError as err:
            raise WeightsNotFoundError(f"{err}, or '{SHIPPED}' for the shipped default") from None


def _recogniser(spec: str, flip: Optional[bool] = None, align_method: str = "auto"):
    """A FaceEmbedder for a command-line recogniser: a checkpoint path, a shipped recogniser's name, or
    'shipped' (the default one); ``flip``: see ``--flip`` (None: each model card's setting); ``align_method``:
    see ``--align-method`` ("auto": by the weights)."""
    from lightface import FaceEmbedder

    return FaceEmbedder(None if spec == SHIPPED else spec, flip=flip, align_method=align_method)


def _describe(spec: str, embedder) -> str:
    """``spec (weights name, flip fusion on|off, align_method M)`` for the report header."""
    return (f"{spec} ({embedder.weights_info.name}, flip fusion {'on' if embedder.flip else 'off'}, "
            f"align_method {embedder.align_method})")


def main(args: argparse.Namespace) -> dict:
    """Compare A and B; prints the table, writes --out; returns ``{"a", "b", "flip_a", "flip_b", "align_method_a",
    "align_method_b", "detector", "data", "results"}``."""
    _check_spec(args.a, "A")
    _check_spec(args.b, "B")
    rec_a, rec_b = (_recogniser(spec, args.flip, args.align_method) for spec in (args.a, args.b))
    embed_a, embed_b = crop_embedder(rec_a), crop_embedder(rec_b)
    detector = None
    if args.detector:
        from lightface.data.detect import FaceDetector

        detector = FaceDetector(args.detector, device="cpu")
    results = compare_recognisers(embed_a, embed_b, args.data, detector=detector,
                                  align_methods=(rec_a.align_method, rec_b.align_method))
    report = {"a": args.a, "b": args.b, "flip_a": rec_a.flip, "flip_b": rec_b.flip,
              "align_method_a": rec_a.align_method, "align_method_b": rec_b.align_method, "detector": args.detector,
              "data": str(args.data), "results": results}
    print(f"A: {_describe(args.a, rec_a)}\nB: {_describe(args.b, rec_b)}\n"
          f"alignment: {args.detector or 'the given LFW landmarks'}\n")
    print(format_comparison(results))
    if args.out:
        write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
