"""Semantic bootstrapping: relabel a noisy face dataset with a trained Light CNN.

The Light CNN paper (Wu et al., TIFS 2018, Sec. "semantic bootstrapping") cleans a noisy
training set with the model trained on it: for each sample, with ``p`` the predicted
class and ``q_p`` its softmax probability,

* **keep** the sample when ``p`` equals its label;
* **relabel** it to ``p`` when ``p`` differs and ``q_p >= threshold`` (0.7 in the paper);
* **drop** it otherwise.

Training again on the relabelled set and repeating gives the paper's 1R / 2R rounds
(see docs/noisy_labels.md). The class list is unchanged, so every round's model has the
same classifier size and label meaning.
"""
import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

__all__ = ["KEEP", "RELABEL", "DROP", "RelabelDecisions", "relabel_decisions", "relabel_lmdb", "flip_labels",
           "copy_with_labels"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

KEEP, RELABEL, DROP = 0, 1, 2
ACTION_NAMES = {KEEP: "kept", RELABEL: "relabelled", DROP: "dropped"}


@dataclass
class RelabelDecisions:
    """Per-sample outcome of :func:`relabel_decisions` (all arrays (N,)).

    Attributes:
        action: int8, ``KEEP`` (0) / ``RELABEL`` (1) / ``DROP`` (2).
        new_label: int64, the label after relabelling (the old one for kept / dropped samples).
        predicted: int64 arg-max class.
        confidence: float32 probability of the predicted class.
    """

    action: np.ndarray
    new_label: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray

    def counts(self) -> Dict[str, int]:
        """``{"kept": n, "relabelled": n, "dropped": n}``."""
        return {name: int((self.action == code).sum()) for code, name in ACTION_NAMES.items()}


def relabel_decisions(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.7) -> RelabelDecisions:
    """Apply the keep / relabel / drop rule.

    Args:
        probs: (N, K) class probabilities (softmax outputs, rows summing to 1).
        labels: (N,) the current integer labels in [0, K).
        threshold: minimum probability of a disagreeing prediction to switch the label.

    Returns:
        :class:`RelabelDecisions`.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"expected probs (N, K) and labels (N,), got {probs.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), found [{labels.min()}, {labels.max()}]")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    predicted = probs.argmax(1).astype(np.int64)
    confidence = probs[np.arange(len(predicted)), predicted].astype(np.float32)
    action = np.full(len(labels), DROP, dtype=np.int8)
    action[predicted == labels] = KEEP
    action[(predicted != labels) & (confidence >= threshold)] = RELABEL
    new_label = np.where(action == RELABEL, predicted, labels)
    return RelabelDecisions(action, new_label, predicted, confidence)


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
    import torch

    from ..engine.distributed import resolve_device
    from ..engine.checkpoint import load_checkpoint
    from ..engine.lightcnn_trainer import SampleTransformDataset, lightcnn_transforms, predict
    from ..models.checkpoint import build_from_checkpoint
    from . import LMDBDataset

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
    from ..models.lightcnn import LightCNN

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


def check_distinct_output(data: PathLike, out: PathLike) -> None:
    """Refuse an output that is the input dataset or holds it (``--out`` equal to ``--data``, also
    through another spelling or a symlink): writing it would replace the data being read.

    Raises:
        ValueError: naming both paths.
    """
    d, o = os.path.realpath(data), os.path.realpath(out)
    if d == o or d.startswith(o.rstrip(os.sep) + os.sep):
        raise ValueError(f"--out {out} {'is' if d == o else 'contains'} --data {data}: relabelling writes a new "
                         "dataset and would replace the one it reads; choose another --out")


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int = 0):
    """Simulate label noise: give ``round(fraction * N)`` random samples a random *other* class.

    Args:
        labels: (N,) integer labels in [0, num_classes).
        fraction: share of samples to corrupt, in [0, 1].
        num_classes: number of classes (>= 2).
        seed: NumPy seed; the same seed flips the same samples to the same classes.
    Returns:
        ``(noisy_labels (N,) int64, flipped (N,) bool)``.
    """
    labels = np.asarray(labels).astype(np.int64)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if num_classes < 2:
        raise ValueError(f"label flipping needs >= 2 classes, got {num_classes}")
    rng = np.random.default_rng(seed)
    n_flip = int(round(fraction * len(labels)))
    chosen = rng.choice(len(labels), size=n_flip, replace=False)
    noisy = labels.copy()
    # a uniformly random class among the num_classes - 1 others
    offset = rng.integers(1, num_classes, size=n_flip)
    noisy[chosen] = (labels[chosen] + offset) % num_classes
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[chosen] = True
    return noisy, flipped


def copy_with_labels(dataset, out: PathLike, indices, labels, overwrite: bool = False, progress: bool = False,
                     build_info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write the samples ``indices`` of an :class:`~lightface.data.LMDBDataset` to a new LMDB
    ``out`` with new ``labels`` (same classes, stored images copied without re-encoding).

    Returns:
        the summary of :func:`lightface.data.build.write_lmdb`.
    """
    from .build import write_lmdb

    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if indices.shape != labels.shape:
        raise ValueError(f"indices and labels must have the same length, got {indices.shape} and {labels.shape}")
    if len(indices) == 0:
        raise ValueError(f"no samples to write to {out}")

    def samples():
        for index, label in zip(indices, labels):
            record = dataset.record(int(index))
            record["label"] = int(label)
            yield record

    image = dataset.metadata["image"]
    return write_lmdb(out, samples(), dataset.classes, encoding=image["encoding"], quality=image.get("quality") or 95,
                      overwrite=overwrite, alignment=dataset.metadata.get("alignment"), build_info=build_info,
                      progress=progress)
