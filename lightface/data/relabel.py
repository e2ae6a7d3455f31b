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
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np

__all__ = ["KEEP", "RELABEL", "DROP", "ACTION_NAMES", "RelabelDecisions", "relabel_decisions", "flip_labels",
           "check_distinct_output", "merged_alignment",
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


#: the alignment fields that say how the landmarks were found, not where the face sits in the crop: sources
#: may differ in them (their merged record keeps a field where all sources agree, else null)
_PROVENANCE_FIELDS = ("method", "detector", "source_template")


def _crop_geometry(metadata: Dict[str, Any]) -> Dict[str, Any]:
    """What fixes where a face sits in an LMDB's stored images: the template, the crop size and the
    alignment method (:func:`~lightface.data.recognition.lmdb_align_method`) of aligned crops, the size
    and resize mode of images lightface did not align (template null)."""
    from .recognition import lmdb_align_method

    alignment = metadata.get("alignment")
    alignment = alignment if isinstance(alignment, dict) else {}
    if alignment.get("template") is None:
        return {"template": None, "size": alignment.get("size"), "resize": alignment.get("resize")}
    return {"template": alignment["template"], "size": alignment.get("size"),
            "align_method": lmdb_align_method(metadata)}


def _describe(geometry: Dict[str, Any]) -> str:
    if geometry["template"] is None:
        return f"not aligned (resize {geometry['resize']}, size {geometry['size']})"
    return f"template {geometry['template']}, size {geometry['size']}, align method {geometry['align_method']}"


def merged_alignment(sources: Sequence[Any], names: Optional[Sequence[str]] = None) -> Optional[Dict[str, Any]]:
    """The ``alignment`` metadata record of one LMDB holding the samples of the LMDBs ``sources``
    (:class:`~lightface.data.LMDBDataset`): the first source's record, with the fields that only say how
    the landmarks were found (``method``, ``detector``, ``source_template``) set to None where the
    sources disagree.

    One LMDB records one crop for all its samples, which ``train_lightcnn`` then records in its
    checkpoints (``corpus_align_method``) and ``FaceEmbedder(align_method="auto")`` crops faces by.

    Args:
        names: a name per source for the error message (default: each LMDB's path).
    Raises:
        ValueError: sources whose faces sit differently in their images (another template, crop size or
            alignment method, or aligned and unaligned sources): the message names each source's record.
    """
    sources = list(sources)
    names = list(names) if names is not None else [str(getattr(d, "path", k)) for k, d in enumerate(sources)]
    metas = [d.metadata for d in sources]
    geometry = [_crop_geometry(m) for m in metas]
    if any(g != geometry[0] for g in geometry[1:]):
        listed = "; ".join(f"{name}: {_describe(g)}" for name, g in zip(names, geometry))
        raise ValueError(f"the LMDBs to merge hold differently cropped faces ({listed}), and the merged LMDB records "
                         "one crop for all its samples (train_lightcnn and FaceEmbedder(align_method='auto') follow "
                         "it): rebuild the odd ones with python -m pipelines.build_lmdb using the same --template, "
                         "--size and --align-method (or, unaligned, the same --resize and --size) as the others")
    alignment = metas[0].get("alignment")
    if not isinstance(alignment, dict):
        return alignment
    merged = dict(alignment)
    for field in _PROVENANCE_FIELDS:
        values = [m["alignment"].get(field) if isinstance(m.get("alignment"), dict) else None for m in metas]
        if any(v != values[0] for v in values[1:]):
            merged[field] = None
    return merged


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
                     build_info: Optional[Dict[str, Any]] = None, classes: Optional[Sequence[str]] = None,
                     origins: Optional[Sequence[str]] = None,
                     before_publish: Optional[Callable[[Path], None]] = None) -> Dict[str, Any]:
    """Write the samples ``indices`` of an :class:`~lightface.data.LMDBDataset` (or of a
    :class:`~lightface.data.multi_source.MultiSourceDataset` of them) to a new LMDB ``out``
    with new ``labels``; stored images are copied without re-encoding. Sources stored in
    another encoding, or in another colour (gray (H,W) vs BGR (H,W,3)), than the first
    source are decoded and re-encoded in the first source's encoding and colour. Sources whose
    faces are cropped differently (another template, size or alignment method) are refused
    (:func:`merged_alignment`): ``out`` records one alignment for all its samples.

    Args:
        classes: the class names of ``out`` (default: the dataset's; pass the merged list
            when classes were merged).
        origins: a source name per dataset source (``MultiSourceDataset.names``): stored as each
            sample's ``origin`` attribute unless it already has one (from an earlier round).
        before_publish: see :func:`lightface.data.build.write_lmdb` (files that must appear
            together with ``out``).
    Returns:
        the summary of :func:`lightface.data.build.write_lmdb`.
    Raises:
        ValueError: differently cropped sources (:func:`merged_alignment`), or nothing to write.
    """
    from .build import write_lmdb
    from .io import to_bgr, to_gray

    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if indices.shape != labels.shape:
        raise ValueError(f"indices and labels must have the same length, got {indices.shape} and {labels.shape}")
    if len(indices) == 0:
        raise ValueError(f"no samples to write to {out}")
    sources = list(getattr(dataset, "datasets", [dataset]))
    image = sources[0].metadata["image"]
    names = list(origins) if origins is not None else [str(getattr(d, "path", k)) for k, d in enumerate(sources)]
    alignment = merged_alignment(sources, names)
    color = image.get("color")
    other = [names[k] for k, d in enumerate(sources) if d.metadata["image"].get("color") != color]
    if other:
        log.warning("%s: sources %s are not %s like the first source %s; their images are converted to %s",
                    out, ", ".join(other), color, names[0], color)
    convert = to_gray if color == "gray" else to_bgr
    locate = getattr(dataset, "locate", lambda i: (0, int(i)))

    def samples():
        for index, label in zip(indices, labels):
            record = dataset.record(int(index))
            is_gray = len(record["shape"]) == 2
            if record.get("encoding", image["encoding"]) != image["encoding"] or is_gray != (color == "gray"):
                record = {k: v for k, v in record.items() if k not in ("encoded", "encoding", "shape")}
                record["image"] = convert(dataset[int(index)]["image"])
            if origins is not None:
                attributes = dict(record.get("attributes") or {})
                attributes.setdefault("origin", names[locate(int(index))[0]])
                record["attributes"] = attributes
            record["label"] = int(label)
            yield record

    return write_lmdb(out, samples(), dataset.classes if classes is None else list(classes),
                      encoding=image["encoding"], quality=image.get("quality") or 95, overwrite=overwrite,
                      alignment=alignment, build_info=build_info, progress=progress, before_publish=before_publish)
