"""Score a recogniser (or the distillation teacher) on the development protocols of the model card.

    python -m pipelines.evaluate_dev [--weights CKPT] [--data ../shared/data] [--out dev.json]
    python -m pipelines.evaluate_dev --teacher dlib          # the teacher, same protocols
    python -m pipelines.evaluate_dev --export-lfw-dev DEV    # DEV/pairs.txt for train_lightcnn --val-pairs
    python -m pipelines.evaluate_dev --calibrate-threshold --detector det_500m.onnx   # the model card's threshold

Protocols (lightface.eval.dev_protocols): LFW View-2 fold 2 pairs (people left out of the
training corpus) and the 35 held-out CFP people (frontal-profile verification and rank-1
of profiles against the frontal gallery), and rank-1 identification of LFW fold-2 people
under hard side lighting and occlusion (lfw_hard). Without --weights the shipped default runs.
Faces are cropped as the recogniser was trained (--align-method auto: the original Light CNN
recipe for an official release, the least-squares fit otherwise; the report's align_method).
"""
import argparse
import json
import sys

import numpy as np

from lightface.eval.dev_protocols import (PROTOCOLS, calibrate_threshold, crop_embedder, export_lfw_dev,
                                          run_dev_protocols)
from lightface.utils.atomic_write import write_text_atomic
from pipelines._argtypes import json_file, refuse_flags
from pipelines._cli import DefaultsHelpFormatter, run_cli
from pipelines.extract_embeddings import add_align_method_argument, add_flip_argument


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.evaluate_dev", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--weights", default=None, help="Light CNN checkpoint (default: the shipped recogniser)")
    p.add_argument("--teacher", default=None, choices=("dlib",), help="score the distillation teacher instead")
    p.add_argument("--data", default="../shared/data", help="the shared data folder")
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS), help="protocols to run")
    p.add_argument("--detector", default=None,
                   help="align the LFW photos from this face detector's landmarks (a detector .onnx such as "
                        "det_500m.onnx, an InsightFace pack, or 'yunet'), as FaceEmbedder(aligned=False) does on whole "
                        "photos, instead of the given landmarks")
    add_flip_argument(p)
    add_align_method_argument(p, " for every protocol")
    p.add_argument("--calibrate-threshold", action="store_true",
                   help="instead of the protocols: the verification threshold for aligned crops and whole photos alike "
                        "(LFW fold-2 pairs aligned from the given landmarks and from --detector's, pooled), with its "
                        "cross-validated accuracy on each path; the model card's 'threshold'")
    p.add_argument("--out", type=json_file, default=None,
                   help="write the results as JSON here (checked before any model loads)")
    p.add_argument("--export-lfw-dev", metavar="DIR", default=None,
                   help="only write the LFW fold-2 pair crops and DIR/pairs.txt (for train_lightcnn --val-pairs) and exit; "
                        "cropped by --align-method (auto: similarity, the crops of lightface corpora; eyes for a corpus "
                        "built with build_lmdb --align-method eyes)")
    return p


def _embedder(args):
    """The protocols' embed function for ``args``, and what produced the numbers (for the report): ``weights``,
    ``weights_sha256``, ``flip`` (or ``teacher``), and ``align_method``, how the protocols crop the faces: the
    recogniser's (``FaceEmbedder.align_method``, ``--align-method auto`` resolved by the weights); for the teacher
    ``--align-method``, ``auto`` meaning ``similarity``."""
    if args.teacher:
        from lightface.distill.teacher import TEACHERS

        try:
            teacher = TEACHERS[args.teacher]()
        except ImportError as err:
            raise RuntimeError(str(err)) from err
        method = "similarity" if args.align_method == "auto" else args.align_method
        return (lambda crops: np.stack([teacher.embed(c) for c in crops])), {"teacher": args.teacher,
                                                                              "align_method": method}
    from lightface import FaceEmbedder

    embedder = FaceEmbedder(args.weights, align_method=args.align_method)
    info = {"weights": str(args.weights) if args.weights else embedder.weights_info.name,
            "weights_sha256": embedder.weights_info.sha256,
            "flip": embedder.flip if args.flip is None else args.flip, "align_method": embedder.align_method}
    return crop_embedder(embedder, flip=args.flip), info


def main(args: argparse.Namespace) -> dict:
    """Run the protocols; returns their results (also printed as JSON, and written to --out), with what produced
    them: ``weights``, ``weights_sha256`` and ``flip`` (or ``teacher``), ``align_method``, ``detector``, ``data``."""
    if args.teacher:
        refuse_flags(args, get_args_parser(), ("weights", "flip"),
                     "set the recogniser, which --teacher replaces (the teacher embeds as it is); drop them, or drop "
                     "--teacher")
    if args.export_lfw_dev:
        method = "similarity" if args.align_method == "auto" else args.align_method  # the crops of lightface corpora
        path = export_lfw_dev(args.data, args.export_lfw_dev, align_method=method)
        print(f"wrote {path} (validate with: python -m pipelines.train_lightcnn ... --val-pairs {path})")
        return {"pairs": str(path)}
    if args.calibrate_threshold and not args.detector:
        raise ValueError("--calibrate-threshold needs --detector (e.g. ../shared/models/det_500m.onnx): it fits the "
                         "threshold to faces aligned from the given landmarks and from a detector's")
    detector = None
    if args.detector:
        from lightface.data.detect import FaceDetector

        detector = FaceDetector(args.detector, device="cpu")
    embed, info = _embedder(args)
    if args.calibrate_threshold:
        results = {"threshold_calibration": calibrate_threshold(embed, args.data, detector,
                                                                align_method=info["align_method"])}
    else:
        results = run_dev_protocols(embed, args.data, args.protocols, detector=detector,
                                    align_method=info["align_method"])
    results.update(info, detector=args.detector, detector_backend=detector.backend if detector else None,
                   data=str(args.data))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
