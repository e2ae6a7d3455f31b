"""Recognition training data: Light CNN transforms, per-sample seeded datasets, class-stratified splits.

Used by the Light CNN trainer, relabelling and the noisy-label benchmark::

    train_tf, eval_tf = lightcnn_transforms(crop=128, resize=144, augment="basic")
    train_idx, val_idx = stratified_split(lmdb.labels, 0.1, seed=0)
    train_set = SampleTransformDataset(lmdb, train_tf, train_idx, seed=0)   # (image, label, index) items
"""
import os
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..utils.seeding import sample_seed
from .convert import image_to_tensor
from .lmdb_dataset import LMDBDataset
from .multi_source import MultiSourceDataset

__all__ = ["AUGMENTS", "stratified_split", "SampleTransformDataset", "lightcnn_transforms", "data_paths",
           "check_distinct_sources", "open_training_lmdbs", "lmdb_align_method", "corpus_align_method"]

AUGMENTS = ("basic", "strong", "hard", "hard_face")
#: the share of faces ``augment="hard"`` puts under a hard side light or a large occluder
HARD_SHARE = 0.4
#: the share of faces ``augment="hard_face"`` also gives glasses, a face mask or a hand
WORN_SHARE = 0.3


def _split_counts(sizes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """How many samples each class of ``sizes`` gives to validation: ``round(fraction * sizes.sum())`` in all.

    Every class gives ``floor(fraction * size)`` (its share), never its last sample; the samples
    still missing from the total go one by one to classes chosen at random with probability
    proportional to what their share's fractional part asks for. A class thus gives
    the floor or the ceiling of its share, and the whole split is the fraction asked for (a 2%
    split of 16,539 photos in 2,043 classes holds out 331, not one photo of every class)."""
    room = np.maximum(sizes - 1, 0)  # a class keeps at least one sample for training
    target = min(int(round(fraction * int(sizes.sum()))), int(room.sum()))
    share = fraction * sizes
    counts = np.minimum(np.floor(share).astype(np.int64), room)
    weight = np.where(counts < room, share - counts, 0.0)
    missing = target - int(counts.sum())
    while missing > 0:
        open_ = np.flatnonzero(counts < room)
        p = weight[open_] + 1e-9  # classes whose share is whole may still have to give one (capped neighbours)
        chosen = rng.choice(open_, size=min(missing, len(open_)), replace=False, p=p / p.sum())
        counts[chosen] += 1
        weight[chosen] = 0.0
        missing -= len(chosen)
    return counts


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0,
                     every_class: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the samples for validation, spread over the classes as evenly as it allows.

    The held-out total is ``round(fraction * N)``: each class gives the floor or the ceiling of
    its share ``fraction * class size``, the classes that give the ceiling drawn at random
    (weighted by the share's fractional part), and never its last sample, so one-sample
    classes stay in training. On a corpus of many small classes (2% of 16,539 photos in 2,043
    classes) that is 331 photos from as many classes, not one of every class (12%); on a few
    large classes every class gives its rounded share. A fraction too small for one sample
    gives an empty validation set.

    ``every_class=True`` is the rule of lightface before session 50 (what ``train_lightcnn``
    runs started then resume with): ``round(fraction * size)`` of every class, at least one of
    every class with two or more samples, so a small fraction of many small classes holds out
    far more than asked (2% -> 12% of the corpus above).

    Args:
        labels: (N,) integer labels.
        fraction: in [0, 1).
        seed: which classes give the ceiling, and which of their samples.
        every_class: the earlier rule (above).
    Returns:
        ``(train_indices, val_indices)``, both sorted int64 arrays.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if fraction <= 0:
        counts = np.zeros(len(classes), dtype=np.int64)
    elif every_class:
        counts = np.where(sizes < 2, 0, np.minimum(sizes - 1, np.maximum(1, np.round(fraction * sizes)))).astype(np.int64)
    else:
        counts = _split_counts(sizes, fraction, rng)
    train, val = [], []
    for k, idx in enumerate(np.split(np.argsort(inverse, kind="stable"), np.cumsum(sizes)[:-1])):
        rng.shuffle(idx)
        val.append(idx[:counts[k]])
        train.append(idx[counts[k]:])
    return (np.sort(np.concatenate(train)).astype(np.int64),
            np.sort(np.concatenate(val) if val else np.zeros(0, np.int64)).astype(np.int64))


def _as_tensor(image) -> Tensor:
    """(C, H, W) float32 in [0, 1] from a transform output: a tensor (used as is) or a uint8 / float array."""
    if isinstance(image, Tensor):
        out = image if image.dim() == 3 else image.unsqueeze(0)
        return out.float()
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return image_to_tensor(arr)
    out = torch.from_numpy(np.ascontiguousarray(arr if arr.ndim == 3 else arr[..., None])).permute(2, 0, 1)
    return out.float()


class SampleTransformDataset(Dataset):
    """Samples of a base dataset through a transform, each sample's randomness seeded.

    Args:
        base: a dataset whose items are dicts with ``image`` (uint8 HxW gray or HxWx3 BGR)
            and ``label`` (int), e.g. :class:`lightface.data.LMDBDataset`.
        transform: ``transform(image=uint8 array) -> {"image": tensor (1,H,W) float [0,1]}``
            (an albumentations ``Compose``; its ``set_random_seed`` is used when present).
        indices: the subset of ``base`` to expose (default: all).
        seed: base seed of the per-sample augmentation seeds.
        labels: labels to use instead of the base dataset's (same order as ``indices``).

    ``item = (image (1,H,W) float32, label int64, index in base)``. Call :meth:`set_epoch`
    so augmentations differ between epochs but not between runs (or DataLoader workers).
    """

    def __init__(self, base, transform: Callable, indices: Optional[Sequence[int]] = None, seed: int = 0,
                 labels: Optional[Sequence[int]] = None):
        self.base = base
        self.transform = transform
        self.indices = np.arange(len(base), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        sample = self.base[index]
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(sample_seed(self.seed, self.epoch, index))
        image = _as_tensor(self.transform(image=sample["image"])["image"])
        label = int(sample["label"]) if self.labels is None else int(self.labels[i])
        return image, label, index


def lightcnn_transforms(crop: int = 128, resize: int = 144, flip: bool = True, augment: str = "basic"):
    """``(train, eval)`` albumentations pipelines: resize to ``resize`` (a no-op for stored
    crops of that size), then :mod:`lightface.data.transforms`: ``augment="basic"`` is the
    original recipe (random ``crop``, horizontal flip), ``"strong"`` adds geometry, colour,
    lighting, blur, JPEG and occlusion (:func:`~lightface.data.transforms.strong_train_transform`),
    ``"hard"`` is ``"strong"`` with :data:`HARD_SHARE` of the faces also under a hard side light
    or a large occluder (sunglasses, scarf or hand sized), ``"hard_face"`` is ``"hard"`` with
    :data:`WORN_SHARE` of the faces also wearing glasses or a face mask or covered by a hand,
    drawn where they sit on the face (:class:`~lightface.data.transforms.FaceOccluder`);
    evaluation takes the centre crop.
    BGR colour samples become gray (ITU-R 601 luma).
    Outputs are float32 (1, crop, crop) tensors in [0, 1]."""
    import albumentations as A
    import cv2

    from . import transforms as T

    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")

    def pipeline(*tail):
        return T.ReseedingCompose([A.Resize(resize, resize, interpolation=cv2.INTER_AREA), *tail])

    flip_p = 0.5 if flip else 0.0
    if augment != "basic":
        hard = HARD_SHARE if augment in ("hard", "hard_face") else 0.0
        worn = WORN_SHARE if augment == "hard_face" else 0.0
        train = pipeline(T.strong_train_transform(size=crop, flip=flip_p, hard=hard, worn=worn))
    else:
        train = pipeline(T.BGRToGray(), T.train_transform(size=crop, flip=flip_p))
    return train, pipeline(T.BGRToGray(), T.eval_transform(size=crop))


def data_paths(data: Union[str, os.PathLike, Sequence[str]]) -> List[str]:
    """One path or several as a list of strings."""
    return [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(d) for d in data]


def check_distinct_sources(paths: Sequence[Union[str, os.PathLike]], what: Union[str, Sequence[str]],
                           hint: str = "give each source once") -> None:
    """Refuse data sources of which two are the same LMDB or folder (also through another spelling or a
    symlink), or one is a folder inside another: their samples would count twice (in training, and in a
    validation split taken from them, which then holds training images).

    Args:
        what: how the message names the sources (``"training LMDB"``, ``"--data"``), or one name per path
            (``["--data", "--data", "--val-data"]``).
        hint: what the message says to do.
    Raises:
        ValueError: naming both paths.
    """
    paths = [str(p) for p in paths]
    kinds = [what] * len(paths) if isinstance(what, str) else [str(w) for w in what]
    seen: List[Tuple[str, str, str]] = []  # (real path, path, kind)
    for path, kind in zip(paths, kinds):
        real = os.path.realpath(path)
        for other_real, other, other_kind in seen:
            if real == other_real:
                same = (f"is given twice (also as {other})" if kind == other_kind else
                        f"is also given as {other_kind} {other}")
                raise ValueError(f"{kind} {path} {same}; {hint}")
            if real.startswith(other_real + os.sep) or other_real.startswith(real + os.sep):
                (inner, inner_kind), (outer, outer_kind) = sorted(
                    [(path, kind), (other, other_kind)], key=lambda pk: -len(os.path.realpath(pk[0])))
                raise ValueError(f"{inner_kind} {inner} is inside {outer_kind} {outer}: its samples would count twice; "
                                 f"{hint}")
        seen.append((real, path, kind))


def open_training_lmdbs(data: Union[str, Sequence[str]], what: str = "training"):
    """One LMDB, or several stacked as a :class:`~lightface.data.multi_source.MultiSourceDataset`.

    Raises:
        FileNotFoundError: a path that does not exist (the message says how to build one).
        ValueError: the same LMDB given twice (its samples would count twice, under two labels per person).
    """
    sets = []
    paths = data_paths(data)
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} LMDB not found: {path}; build one with python -m pipelines.build_lmdb")
    check_distinct_sources(paths, f"{what} LMDB")
    for path in paths:
        sets.append(LMDBDataset(path))
    if not sets:
        raise FileNotFoundError(f"no {what} LMDB given")
    return sets[0] if len(sets) == 1 else MultiSourceDataset(sets)


def lmdb_align_method(metadata: Mapping[str, Any]) -> Optional[str]:
    """How the faces of an LMDB (its ``metadata``) were cropped from their landmarks
    (:func:`lightface.data.align.align_face`'s ``method``): ``alignment.align_method`` when recorded
    (``"eyes"``: built with ``build_lmdb --align-method eyes``), ``"similarity"`` for aligned crops without
    it (the default, and every LMDB built before the option), None for images lightface did not align
    (``alignment.template`` null: whole images resized)."""
    alignment = metadata.get("alignment")
    if not isinstance(alignment, Mapping) or alignment.get("template") is None:
        return None
    return str(alignment.get("align_method") or "similarity")


def corpus_align_method(data) -> Optional[str]:
    """The alignment method (:func:`lmdb_align_method`) of a training corpus: an
    :class:`~lightface.data.LMDBDataset`, or a :class:`~lightface.data.multi_source.MultiSourceDataset`
    of them (:func:`open_training_lmdbs`); None when no source was aligned by lightface.
    ``train_lightcnn`` records it in its checkpoints, so that ``FaceEmbedder(align_method="auto")``
    crops faces as the model was trained.

    Raises:
        ValueError: sources cropped by different methods (a recogniser trained on both has no one crop
            to be embedded with): the message names each source's method.
    """
    sources = data.datasets if isinstance(data, MultiSourceDataset) else [data]
    found = {str(getattr(d, "path", k)): lmdb_align_method(getattr(d, "metadata", {})) for k, d in enumerate(sources)}
    methods = sorted({m for m in found.values() if m is not None})
    if len(methods) > 1:
        listed = ", ".join(f"{path}: {m}" for path, m in found.items() if m is not None)
        raise ValueError(f"the training LMDBs were cropped by different alignment methods ({listed}); a model "
                         "trained on both is embedded with one crop, wrong for part of its training: rebuild the "
                         f"odd ones with the same python -m pipelines.build_lmdb --align-method (one of {methods})")
    return methods[0] if methods else None
