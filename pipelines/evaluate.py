"""Face verification evaluation of a Light CNN on a pair list.

    python -m pipelines.evaluate --pairs lfw/pairs.txt --images lfw/images --landmarks lfw/landmarks_5pt.txt
    python -m pipelines.evaluate --weights LightCNN_29Layers_V2_checkpoint.pth.tar \\
        --pairs lfw/pairs.txt --images lfw/images --landmarks lfw/landmarks_5pt.txt \\
        --out report.json --plot roc.png

Images are aligned with the given 5-point landmarks (``--landmarks``: ``relpath x1 y1 ... x5
y5`` lines), or detected and aligned (``--detector``), or, with neither, are taken to be
Light CNN crops already. Pair lists: LFW ``pairs.txt`` (View 2; its 10 folds are used),
``label path_a path_b`` files, or a CFP ``Protocol`` folder (``--pairs-format cfp-ff|cfp-fp``).
Images that fail (unreadable, no landmarks, no face) are reported and their pairs skipped.
Without ``--weights`` the recogniser shipped with lightface is evaluated (the report names
it: ``weights``, ``weights_sha256``, and its model-card ``shipped_threshold``).
The report holds 10-fold accuracy (mean/std), TAR@FAR, ROC AUC, EER and ``threshold``,
the accuracy-maximising cosine threshold (use it as ``FaceEmbedder(threshold=...)``).
Exit status 1 with a one-line message when no pair could be scored or an input is
unusable; 2 for a bad command line.
"""
import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List

import numpy as np

from lightface.utils.atomic_write import write_text_atomic
from pipelines._argtypes import int_at_least, json_file, plot_file
from pipelines._cli import DefaultsHelpFormatter
from pipelines.extract_embeddings import (add_detector_size_arguments, add_embedder_arguments, detector_options,
                                          embedder_from_args)

logger = logging.getLogger("pipelines.evaluate")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.evaluate", add_help=add_help,
                                description="Verification accuracy / ROC of a Light CNN on face pairs",
                                formatter_class=DefaultsHelpFormatter)
    add_embedder_arguments(p)
    p.add_argument("--pairs", required=True, help="pair list: LFW pairs.txt, 'label path_a path_b' file, or CFP Protocol folder")
    p.add_argument("--pairs-format", default="auto", choices=["auto", "lfw", "labels", "cfp-ff", "cfp-fp"],
                   help="pair-list format (auto: folder = CFP FF, integer header = LFW, else labels)")
    p.add_argument("--images", required=True, help="root folder the pair list's image paths are relative to")
    p.add_argument("--ext", default=".jpg", help="image extension for LFW pair lists")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--landmarks", default=None, help="5-point landmarks file ('relpath x1 y1 ... x5 y5' per line)")
    how.add_argument("--detector", default=None,
                     help="detect and align faces: InsightFace pack name, detector .onnx, a YuNet .onnx, or 'yunet' "
                          "(shipped); a pack that cannot be loaded (offline) falls back to the shipped YuNet")
    add_detector_size_arguments(p)
    p.add_argument("--out", type=json_file, default="report.json",
                   help="JSON report path (checked before any image is embedded)")
    p.add_argument("--plot", type=plot_file, default=None, help="ROC plot path: .png, .pdf, .svg ... (none when omitted)")
    p.add_argument("--folds", type=int_at_least(2), default=10,
                   help="cross-validation folds when the pair list has none (each one's threshold is fitted on "
                        "the others)")
    return p


def _crops_from_landmarks(root: Path, paths: List[str], table: Dict[str, np.ndarray], failed: Dict[str, str], embedder):
    """The Light CNN crops of ``paths`` from their landmarks, cut as ``embedder`` cuts whole photos
    (:meth:`~lightface.FaceEmbedder.align`: the alignment its weights were trained on)."""
    from lightface.data.io import read_image

    crops, kept = [], []
    for rel in paths:
        key = rel.replace("\\", "/")
        if key not in table:
            failed[rel] = f"{rel}: no landmarks in the landmarks file"
            continue
        try:
            crops.append(embedder.align(read_image(root / rel), table[key])[0])
        except ValueError as err:  # ImageReadError, degenerate landmarks
            failed[rel] = f"{rel}: {err}"
            continue
        kept.append(rel)
    return crops, kept


def main(args: argparse.Namespace) -> Dict[str, object]:
    """Run the evaluation; writes ``args.out`` (and ``args.plot``) and returns the report dict."""
    from tqdm.auto import tqdm

    from lightface.data.sources import read_landmarks_file
    from lightface.embed import similarity
    from lightface.eval.verification import plot_roc, read_pairs, verification_metrics

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    pairs = read_pairs(args.pairs, args.pairs_format, args.ext)
    root = Path(args.images)
    if not root.is_dir():
        raise FileNotFoundError(f"--images folder not found: {root}")
    embedder = embedder_from_args(args, args.detector)
    table = read_landmarks_file(args.landmarks) if args.landmarks else None
    paths = pairs.paths
    index = {p: i for i, p in enumerate(paths)}
    emb = np.full((len(paths), 256), np.nan, np.float32)
    failed: Dict[str, str] = {}
    with tqdm(total=len(paths), desc="embedding", unit="img") as bar:
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start:start + args.batch_size]
            if table is not None:
                inputs, kept = _crops_from_landmarks(root, chunk, table, failed, embedder)
                aligned = True
            else:
                inputs, kept = [root / p for p in chunk], chunk
                aligned = args.detector is None
            if inputs:
                res = embedder.try_embed(inputs, aligned=aligned, batch_size=args.batch_size)
                for i, rel in enumerate(kept):
                    if i in res.errors:
                        failed[rel] = res.errors[i]
                    else:
                        emb[index[rel]] = res.embeddings[i]
            bar.update(len(chunk))
    ia = np.array([index[p] for p in pairs.a])
    ib = np.array([index[p] for p in pairs.b])
    scores = similarity(emb[ia], emb[ib])
    ok = np.isfinite(scores)
    if failed:
        logger.warning("%d images failed; %d of %d pairs skipped: %s", len(failed), int((~ok).sum()), len(pairs),
                       "; ".join(list(failed.values())[:5]))
    if not ok.any():
        raise RuntimeError(f"no pair could be scored: {len(failed)} of {len(paths)} images failed"
                           + (": " + "; ".join(list(failed.values())[:3]) if failed else ""))
    folds = pairs.folds[ok] if pairs.folds is not None else None
    metrics = verification_metrics(scores[ok], pairs.labels[ok], folds=folds, n_folds=args.folds)
    report = {
        **metrics,
        "weights": str(args.weights) if args.weights is not None else embedder.weights_info.name,
        "weights_sha256": embedder.weights_info.sha256,
        "shipped_threshold": (embedder.pretrained.thresholds(embedder.flip)[0]
                              if embedder.pretrained is not None else None),
        "arch": embedder.weights_info.arch,  # also for an exported .onnx / TorchScript file (from its card)
        "pairs": str(args.pairs),
        "alignment": "landmarks" if table is not None else ("detector" if args.detector else "pre-aligned"),
        "align_method": embedder.align_method if table is not None or args.detector else None,
        # the detector asked for and the one that ran (a pack that cannot load falls back to YuNet): the
        # threshold above holds for faces aligned this way
        "detector": args.detector,
        "detector_backend": getattr(embedder.detector, "backend", None) if args.detector else None,
        "detector_fallback": getattr(embedder.detector, "fallback_reason", None) if args.detector else None,
        "detector_options": detector_options(args) if args.detector else None,
        "flip": embedder.flip,
        "n_images": len(paths),
        "failed_images": failed,
        "skipped_pairs": int((~ok).sum()),
    }
    out = write_text_atomic(args.out, json.dumps(report, indent=2))
    if args.plot:
        plot_roc(scores[ok], pairs.labels[ok], args.plot, title=f"{report['arch']} on {Path(args.pairs).name}", metrics=metrics)
    tar = ", ".join(f"TAR@FAR={k}: {v:.4f}" for k, v in metrics["tar_at_far"].items() if v is not None)
    logger.info("accuracy %.4f +- %.4f, AUC %.4f, EER %.4f, threshold %.4f%s -> %s", metrics["accuracy_mean"],
                metrics["accuracy_std"], metrics["auc"], metrics["eer"], metrics["threshold"], f", {tar}" if tar else "", out)
    return report


if __name__ == "__main__":
    import sys

    from pipelines._cli import run_cli

    sys.exit(run_cli(main, get_args_parser))
