"""Several LMDB datasets trained on as one, each sample keeping its source.

Noisy multi-source corpora (the Light CNN setting: CASIA + MS-Celeb, or LFW + CFP +
CelebA here) come as one LMDB per source. :class:`MultiSourceDataset` stacks them: labels
are offset so that every source's classes get their own range, class names stay as they
are when they are unique across sources and become ``"<source>:<name>"`` otherwise, and
``source_of(i)`` / ``item["source"]`` say where a sample came from.
"""
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from torch.utils.data import Dataset

__all__ = ["MultiSourceDataset"]


def _unique_names(paths: Sequence[Path]) -> List[str]:
    """A distinct short name per path: the stem, else ``parent/stem``, else ``stem#position`` (1-based)."""
    names = [p.stem for p in paths]
    if len(set(names)) == len(names):
        return names
    names = [f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.stem}#{k + 1}" for k, p in enumerate(paths)]


class MultiSourceDataset(Dataset):
    """The concatenation of datasets with ``labels`` and ``classes`` (e.g. :class:`lightface.data.LMDBDataset`).

    Args:
        datasets: the sources, in order; sample ``i`` of the result is sample ``i - offset``
            of the source holding it.
        names: a short name per source, all different (default: each LMDB folder's stem; stems
            that repeat (``a/train.lmdb``, ``b/train.lmdb``) get their parent folder, ``a/train``,
            and then their position, ``train#2``).

    Items are the source's item dicts (``image`` uint8 (H,W) gray or (H,W,3) BGR, ``label``)
    with ``label`` shifted to the global class index and ``source`` (the source name) added.
    """

    def __init__(self, datasets: Sequence[Any], names: Sequence[str] = ()):
        if not datasets:
            raise ValueError("MultiSourceDataset needs at least one dataset")
        self.datasets = list(datasets)
        if names:
            if len(names) != len(datasets):
                raise ValueError(f"{len(names)} names for {len(datasets)} datasets")
            self.names = [str(n) for n in names]
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"source names must differ, got {self.names}")
        else:
            self.names = _unique_names([Path(getattr(d, "path", f"source{k}")) for k, d in enumerate(datasets)])
        self.sample_offsets = np.cumsum([0] + [len(d) for d in datasets])
        self.class_offsets = np.cumsum([0] + [len(d.classes) for d in datasets])
        all_names = [str(c) for d in datasets for c in d.classes]
        unique = len(set(all_names)) == len(all_names)
        self.classes: List[str] = [
            str(c) if unique else f"{name}:{c}" for name, d in zip(self.names, datasets) for c in d.classes]
        self.labels = np.concatenate([np.asarray(d.labels, dtype=np.int64) + off
                                      for d, off in zip(datasets, self.class_offsets[:-1])])
        self.sources = np.repeat(np.arange(len(datasets)), [len(d) for d in datasets])

    def __len__(self) -> int:
        return int(self.sample_offsets[-1])

    def _locate(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        k = int(np.searchsorted(self.sample_offsets, index, side="right") - 1)
        return k, index - int(self.sample_offsets[k])

    def source_of(self, index: int) -> str:
        """The name of the source holding sample ``index``."""
        return self.names[self._locate(index)[0]]

    def locate(self, index: int):
        """``(source position, index inside that source)`` of sample ``index``."""
        return self._locate(int(index))

    def class_sources(self) -> List[str]:
        """The source name of every class (in :attr:`classes` order)."""
        return [name for name, d in zip(self.names, self.datasets) for _ in d.classes]

    def record(self, index: int) -> Dict[str, Any]:
        """The stored sample without decoding (the source's ``record``), ``label`` shifted to the global class."""
        k, local = self._locate(int(index))
        rec = dict(self.datasets[k].record(local))
        rec["label"] = int(rec["label"]) + int(self.class_offsets[k])
        return rec

    def __getitem__(self, index: int) -> Dict[str, Any]:
        k, local = self._locate(int(index))
        item = dict(self.datasets[k][local])
        item["label"] = int(item["label"]) + int(self.class_offsets[k])
        item["source"] = self.names[k]
        return item
