"""``LMDBDataset``: a map-style torch Dataset over a lightface LMDB (format in docs/lmdb_format.md)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from torch.utils.data import Dataset

from .lmdb_format import (
    LABELS_KEY,
    LMDBFormatError,
    decode_payload,
    open_readonly,
    read_metadata,
    sample_key,
    unpack_header,
)

__all__ = ["LMDBDataset"]


class LMDBDataset(Dataset):
    """Samples of a dataset built by ``python -m pipelines.build_lmdb`` (or ``write_lmdb``).

    The LMDB environment opens lazily in each process that reads (readonly, no lock, no
    readahead), so the dataset works in DataLoader workers under ``fork`` and ``spawn``.
    Labels, class names and metadata are read once at construction, without decoding images.

    Args:
        path: dataset directory.
        transform: optional callable applied to the decoded image (e.g. a pipeline from
            :mod:`lightface.data.transforms`); an albumentations ``Compose`` is called as
            ``transform(image=img)["image"]``. Its output replaces ``sample["image"]``. A
            transform that can move pixels (any albumentations step other than an image-only one
            such as colour, blur, noise or ``ToTensorV2``: a crop, flip, affine, resize or pad; or
            any other callable) leaves ``landmarks`` out of the sample, since the stored points
            would not describe the returned image; :meth:`record` still gives them.

    ``dataset[i]`` returns a dict:
        ``image``: uint8 (H,W) gray or (H,W,3) BGR (or the transform's output);
        ``label``: int;
        ``landmarks``: float32 (5,2) ``(x, y)`` in image pixels (only when the dataset has them and
        no transform that moves pixels is set);
        ``attributes``: dict str -> str (e.g. ``pose``, ``source``; only when present).

    Example:
        >>> ds = LMDBDataset("casia.lmdb", transform=train_transform())
        >>> ds.labels.shape, len(ds.classes), ds.metadata["image"]["shape"]
    """

    def __init__(self, path, transform: Optional[Callable] = None):
        self.path = Path(path)
        self.metadata: Dict[str, Any] = read_metadata(self.path)
        self.transform = transform
        self._alb = _is_albumentations(transform)
        self._keeps_geometry = transform is None or (self._alb and _image_only(transform))
        self.classes: List[str] = list(self.metadata["classes"])
        self._encoding = self.metadata["image"]["encoding"]
        self._txn = None
        self._pid = None
        self._has_landmarks = bool(self.metadata.get("landmarks"))
        self._has_attributes = bool(self.metadata.get("attributes"))
        with self._begin() as txn:
            raw = txn.get(LABELS_KEY)
            if raw is None:
                raise LMDBFormatError(f"{self.path}: the label array (key __labels__) is missing")
            self.labels: np.ndarray = np.frombuffer(bytes(raw), "<i8").astype(np.int64)
        self._close()
        if len(self.labels) != self.metadata["count"]:
            raise LMDBFormatError(f"{self.path}: {len(self.labels)} labels for count {self.metadata['count']}")

    # -- environment handling ------------------------------------------------------
    def _begin(self):
        return open_readonly(self.path).begin(write=False, buffers=False)

    def _get(self, index: int) -> bytes:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        index %= len(self)
        if self._txn is None or self._pid != os.getpid() or not self._env_alive():
            # opened lazily in each process; a transaction inherited through fork is not reused
            self._txn = self._begin()
            self._pid = os.getpid()
        raw = self._txn.get(sample_key(index))
        if raw is None:
            raise LMDBFormatError(f"{self.path}: sample {index} is missing (run build_lmdb --verify)")
        return raw

    def _header(self, index: int):
        """``(header, payload offset, record)`` of sample ``index``; a damaged record raises an
        :class:`LMDBFormatError` naming the dataset, the sample and the check to run."""
        raw = self._get(index)
        try:
            header, off = unpack_header(raw)
        except LMDBFormatError as err:
            raise self._damaged(index, err) from err
        return header, off, raw

    def _damaged(self, index: int, err: Exception) -> LMDBFormatError:
        return LMDBFormatError(f"{self.path}: sample {index % len(self)}: {err}; the record is damaged: run "
                               f"python -m pipelines.build_lmdb --verify {self.path} and rebuild the dataset")

    def _env_alive(self) -> bool:
        try:
            self._txn.id()
            return True
        except Exception:  # the shared handle was released (release_readonly)
            return False

    def _close(self) -> None:
        if self._txn is not None and self._pid == os.getpid():
            self._txn.abort()
        self._txn = None
        self._pid = None

    def close(self) -> None:
        """End this dataset's read transaction (a new one starts on the next access)."""
        self._close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_txn"] = state["_pid"] = None
        return state

    def __del__(self):
        try:
            if self._pid == os.getpid():
                self._close()
        except Exception:
            pass

    # -- access ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def attributes(self, index: int) -> Dict[str, str]:
        """String attributes of a sample (``pose``, ``source`` ...), read without decoding the image: every key
        of the dataset's ``attributes`` metadata, ``""`` where the sample has none (as ``dataset[i]``)."""
        return self._all_attributes(self._header(index)[0])

    def _all_attributes(self, header: Dict[str, Any]) -> Dict[str, str]:
        attrs = header.get("attributes", {})
        return {k: attrs.get(k, "") for k in self.metadata.get("attributes") or ()}

    def record(self, index: int) -> Dict[str, Any]:
        """The stored sample without decoding: ``encoded`` bytes, their ``encoding``, ``shape``, ``label`` and
        ``landmarks`` / ``attributes`` when present (the input form of ``write_lmdb``)."""
        header, off, raw = self._header(index)
        out = {"encoded": raw[off:], "encoding": self._encoding, "shape": header["shape"], "label": header["label"]}
        if "landmarks" in header:
            out["landmarks"] = np.asarray(header["landmarks"], np.float32)
        if "attributes" in header:
            out["attributes"] = dict(header["attributes"])
        return out

    def __getitem__(self, index: int) -> Dict[str, Any]:
        header, off, raw = self._header(int(index))
        try:
            image = decode_payload(memoryview(raw)[off:], self._encoding, header["shape"])
        except LMDBFormatError as err:
            raise self._damaged(int(index), err) from err
        sample: Dict[str, Any] = {"image": image, "label": int(header["label"])}
        if self._has_landmarks and self._keeps_geometry:
            sample["landmarks"] = np.asarray(header.get("landmarks", np.full((5, 2), np.nan)), np.float32)
        if self._has_attributes:
            sample["attributes"] = self._all_attributes(header)
        if self.transform is not None:
            sample["image"] = self.transform(image=image)["image"] if self._alb else self.transform(image)
        return sample

    def __repr__(self) -> str:
        im = self.metadata["image"]
        return (f"LMDBDataset({str(self.path)!r}, samples={len(self)}, classes={self.num_classes}, "
                f"shape={im['shape']}, color={im['color']}, encoding={im['encoding']})")

    def info(self) -> str:
        """The metadata as indented JSON."""
        return json.dumps(self.metadata, indent=2)


def _is_albumentations(transform) -> bool:
    if transform is None:
        return False
    try:
        import albumentations as A
    except ImportError:  # pragma: no cover
        return False
    return isinstance(transform, (A.BaseCompose, A.BasicTransform))


def _image_only(transform) -> bool:
    """Whether an albumentations transform leaves every pixel where it is (colour, blur, noise, conversions)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    if isinstance(transform, A.BaseCompose):
        return all(_image_only(t) for t in transform.transforms)
    return isinstance(transform, (A.ImageOnlyTransform, ToTensorV2))
