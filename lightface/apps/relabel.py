"""Semantic bootstrapping of a noisy LMDB with a trained Light CNN (the application behind
``python -m pipelines.relabel``; the keep / relabel / drop rule itself is
:func:`lightface.data.relabel.relabel_decisions`).

It sits in the application layer because it combines every layer below it: a model
checkpoint (models), the Light CNN evaluation transforms (data), batched prediction (eval)
and a device (engine).
"""
import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from ..data.lmdb_dataset import LMDBDataset
from ..data.recognition import SampleTransformDataset, lightcnn_transforms
from ..data.relabel import ACTION_NAMES, DROP, KEEP, RELABEL, check_distinct_output, copy_with_labels, relabel_decisions
from ..engine.distributed import resolve_device
from ..eval.predict import predict
from ..models.checkpoint import build_from_checkpoint
from ..models.lightcnn import LightCNN
from ..utils.checkpoint_io import load_checkpoint

__all__ = ["relabel_lmdb"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def relabel_lmdb(
    data: PathLike,
    weights: PathLike,
    out: PathLike,
    threshold: float = 0.7,
    batch_size: int = 128,
    workers: int = 0,
    device: str = "auto",
    resize: Optional[int] = None,
    crop: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Relabel the LMDB ``data`` with the Light CNN ``weights`` and write the result to ``out``.

    Args:
        data: a lightface LMDB (the noisy training set the model was trained on).
        weights: a ``train_lightcnn`` checkpoint (or any Light CNN checkpoint whose classifier
            has one output per class of ``data``).
        out: the new LMDB (same classes; kept samples unchanged, relabelled ones with the
            predicted label, dropped ones left out). ``out/relabel_report.json`` holds the
            counts and settings, ``out/relabel_changes.csv`` every relabelled / dropped sample.
        threshold: probability needed to switch a disagreeing label (the paper: 0.7).
        resize, crop: evaluation preprocessing (resize, then centre crop); default: the values
            stored in the checkpoint's training config, else 144 / 128.
        overwrite: replace an existing ``out``.

    Returns:
        the report dict (``counts``, ``threshold``, paths, per-sample change count ...).
    """
    data, weights, out = Path(data), Path(weights), Path(out)
    check_distinct_output(data, out)
    dataset = LMDBDataset(data)
    classes = [str(c) for c in dataset.classes]
    raw = load_checkpoint(weights)
    train_cfg = raw.get("config", {}) if isinstance(raw, dict) else {}
    ckpt_classes = raw.get("classes") if isinstance(raw, dict) else None
    if ckpt_classes is not None and [str(c) for c in ckpt_classes] != classes:
        raise ValueError(f"{weights} was trained on other classes than {data}; relabel needs the model of this data set")
    dev = resolve_device(device)
    model = build_from_checkpoint(raw, map_location=dev, expect=LightCNN)
    num_classes = getattr(model, "num_classes", 0)
    if num_classes != len(classes):
        raise ValueError(f"{weights}: classifier has {num_classes} outputs but {data} has {len(classes)} classes")
    resize = resize or int(train_cfg.get("resize", 144))
    crop = crop or int(train_cfg.get("crop", 128))
    eval_set = SampleTransformDataset(dataset, lightcnn_transforms(crop, resize)[1])
    with torch.inference_mode():
        probs, labels, indices = predict(model, eval_set, batch_size, workers, dev, progress=progress)
    decisions = relabel_decisions(probs, labels, threshold)
    counts = decisions.counts()
    log.info("relabel %s: %s (threshold %.2f)", data, counts, threshold)

    keep_rows = np.flatnonzero(decisions.action != DROP)
    if len(keep_rows) == 0:
        raise ValueError(f"relabel {data}: every sample would be dropped (threshold {threshold}); nothing to write")

    write_summary = copy_with_labels(
        dataset, out, indices[keep_rows], decisions.new_label[keep_rows], overwrite=overwrite, progress=progress,
        build_info={"relabelled_from": str(data), "relabel_weights": str(weights), "relabel_threshold": threshold,
                    "relabel_counts": counts},
    )
    changed = np.flatnonzero(decisions.action != KEEP)
    with open(out / "relabel_changes.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "action", "old_label", "old_class", "new_label", "new_class", "predicted", "confidence"])
        for row in changed:
            a = int(decisions.action[row])
            new = int(decisions.new_label[row])
            w.writerow([int(indices[row]), ACTION_NAMES[a], int(labels[row]), classes[labels[row]],
                        new if a == RELABEL else "", classes[new] if a == RELABEL else "",
                        int(decisions.predicted[row]), f"{float(decisions.confidence[row]):.4f}"])
    report = {
        "data": str(data),
        "weights": str(weights),
        "out": str(out),
        "threshold": threshold,
        "samples": int(len(labels)),
        "counts": counts,
        "written": int(len(keep_rows)),
        "classes": len(classes),
        "changes_csv": str(out / "relabel_changes.csv"),
        "lmdb": write_summary,
    }
    (out / "relabel_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report
