"""MXNet RecordIO (``train.rec`` + ``train.idx``) read and written without MXNet.

InsightFace distributes its training sets (MS1M-ArcFace, Glint360K, WebFace42M ...) in
this container. Framing, as in dmlc-core's ``recordio``:

* every record starts at a 4-byte boundary with ``uint32 LE`` magic ``0xCED7230A``,
  then ``uint32 LE lrec``: the upper 3 bits are a continuation flag ``cflag``, the lower
  29 bits the payload length; the payload follows, zero-padded to a multiple of 4.
* ``cflag`` 0 = a whole record; 1/2/3 = first/middle/last part of a record whose payload
  contained the magic word at a 4-aligned position: the writer cuts the payload there and
  drops those 4 bytes, the reader joins the parts putting the magic word back.
* the ``.idx`` file is text, one ``index<TAB>byte offset`` line per record.

The payload of an image record is an ``IRHeader`` (``<IfQQ``: ``flag`` uint32,
``label`` float32, ``id`` uint64, ``id2`` uint64; 24 bytes), then ``flag`` float32 labels
when ``flag > 0`` (in which case the scalar ``label`` field is unused), then the encoded
image. InsightFace's record 0 is a header record with ``flag > 0`` whose first label is
the index one past the last image record (images are records ``1 .. label[0]-1``).

A pair exported by lightface (:mod:`lightface.data.to_recordio`) has a third file,
``X.lightface.json`` beside ``X.rec`` (:func:`sidecar_path`): ``{"template": ..., "classes": [...]}``,
the alignment template of its crops (``null``: not aligned), which ``build_lmdb`` takes as the
source template (InsightFace's own pairs have none: their crops are ArcFace's), and the class
names of the exported LMDB, which ``build_lmdb`` keeps (InsightFace's pairs, and pairs exported
before the key existed: the label numbers).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "RECORDIO_MAGIC",
    "RecordIOError",
    "IRHeader",
    "pack_irecord",
    "unpack_irecord",
    "RecordIOReader",
    "RecordIOWriter",
    "read_index",
    "insightface_image_indices",
    "sidecar_path",
    "read_sidecar",
]

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_U32 = struct.Struct("<I")
_IR = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1


class RecordIOError(ValueError):
    """A malformed RecordIO file or record."""


@dataclass(frozen=True)
class IRHeader:
    """Image record header. ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: Union[float, np.ndarray]
    id: int = 0
    id2: int = 0

    @property
    def class_label(self) -> float:
        """The identity label: ``label`` or, for a vector label, its first element."""
        if isinstance(self.label, np.ndarray):
            if self.label.size == 0:
                raise RecordIOError("record header has an empty label vector")
            return float(self.label[0])
        return float(self.label)


def pack_irecord(header: IRHeader, payload: bytes) -> bytes:
    """Serialise ``IRHeader`` + payload (a vector label sets ``flag`` to its length)."""
    if isinstance(header.label, (np.ndarray, list, tuple)):
        vec = np.asarray(header.label, dtype="<f4").reshape(-1)
        return _IR.pack(len(vec), 0.0, header.id, header.id2) + vec.tobytes() + bytes(payload)
    return _IR.pack(0, float(header.label), header.id, header.id2) + bytes(payload)


def unpack_irecord(record: bytes) -> Tuple[IRHeader, bytes]:
    """Split a record payload into ``(IRHeader, image bytes)``."""
    if len(record) < _IR.size:
        raise RecordIOError(f"record of {len(record)} bytes is shorter than an IRHeader ({_IR.size})")
    flag, label, id1, id2 = _IR.unpack_from(record, 0)
    body = record[_IR.size:]
    if flag > 0:
        need = 4 * flag
        if len(body) < need:
            raise RecordIOError(f"record declares {flag} labels but holds only {len(body)} bytes after the header")
        return IRHeader(flag, np.frombuffer(body[:need], dtype="<f4").copy(), id1, id2), bytes(body[need:])
    return IRHeader(flag, float(label), id1, id2), bytes(body)


def _read_frame_header(fh, path, offset: int) -> Tuple[int, int]:
    """Read the 8-byte frame header at the file position: ``(cflag, payload length)``."""
    head = fh.read(8)
    if len(head) < 8:
        raise RecordIOError(f"{path}: truncated record header at byte {offset}")
    magic, lrec = struct.unpack("<II", head)
    if magic != RECORDIO_MAGIC:
        raise RecordIOError(f"{path}: bad magic 0x{magic:08x} at byte {offset} "
                            "(wrong offset in the .idx file, or not a RecordIO file)")
    return lrec >> 29, lrec & _LEN_MASK


class RecordIOReader:
    """Random access to records by byte offset (``read_at``) or by ``.idx`` index (``read_idx``).

    The file handle opens lazily and reopens after ``fork`` (safe in DataLoader / pool workers).
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        self.idx_path = Path(idx_path) if idx_path else None
        self._index: Optional[Dict[int, int]] = read_index(self.idx_path) if self.idx_path else None
        self._fh = None
        self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"] = None
        state["_pid"] = None
        return state

    def _file(self):
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.rec_path, "rb")
            self._pid = os.getpid()
        return self._fh

    @property
    def keys(self) -> List[int]:
        if self._index is None:
            raise RecordIOError("no .idx file given: read by byte offset or scan the file")
        return list(self._index)

    def offset(self, idx: int) -> int:
        if self._index is None:
            raise RecordIOError("no .idx file given")
        try:
            return self._index[idx]
        except KeyError:
            raise RecordIOError(f"{self.idx_path}: no record with index {idx}") from None

    def read_idx(self, idx: int) -> bytes:
        return self.read_at(self.offset(idx))

    def read_at(self, offset: int) -> bytes:
        """The (joined) payload of the record starting at byte ``offset``."""
        fh = self._file()
        fh.seek(offset)
        parts: List[bytes] = []
        while True:
            cflag, length = _read_frame_header(fh, self.rec_path, fh.tell())
            data = fh.read(length)
            if len(data) < length:
                raise RecordIOError(f"{self.rec_path}: record at byte {offset} is truncated")
            pad = (-length) % 4
            if pad:
                fh.seek(pad, os.SEEK_CUR)
            if cflag == 0:
                if parts:
                    raise RecordIOError(f"{self.rec_path}: whole record inside a split record at byte {offset}")
                return data
            if cflag == 1:
                if parts:
                    raise RecordIOError(f"{self.rec_path}: split record restarts at byte {offset}")
                parts.append(data)
            elif cflag in (2, 3):
                if not parts:
                    raise RecordIOError(f"{self.rec_path}: continuation without a start at byte {offset}")
                parts.append(_MAGIC_BYTES)
                parts.append(data)
                if cflag == 3:
                    return b"".join(parts)
            else:
                raise RecordIOError(f"{self.rec_path}: invalid continuation flag {cflag} at byte {offset}")

    def read_header_at(self, offset: int) -> bytes:
        """The IRHeader bytes (and its vector labels) of the record at ``offset``, without
        reading the image. Falls back to :meth:`read_at` for a split record whose first part
        ends inside the header."""
        fh = self._file()
        fh.seek(offset)
        _, length = _read_frame_header(fh, self.rec_path, offset)
        data = fh.read(min(length, _IR.size))
        if len(data) == _IR.size:
            need = _IR.size + 4 * _U32.unpack_from(data, 0)[0]
            if need <= length:
                return data + fh.read(need - _IR.size)
        return self.read_at(offset)

    def scan(self) -> Iterator[Tuple[int, bytes]]:
        """Yield ``(offset, payload)`` for every record in file order (no index needed)."""
        size = self.rec_path.stat().st_size
        fh = self._file()
        pos = 0
        while pos < size:
            payload = self.read_at(pos)
            yield pos, payload
            pos = fh.tell()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class RecordIOWriter:
    """Write a RecordIO file (and optionally its ``.idx``) in MXNet's exact framing."""

    def __init__(self, rec_path, idx_path=None):
        self._fh = open(rec_path, "wb")
        self._idx = open(idx_path, "w") if idx_path else None

    def write(self, payload: bytes, idx: Optional[int] = None) -> int:
        """Append one record; returns its byte offset. ``idx`` writes an ``.idx`` line."""
        payload = bytes(payload)
        if len(payload) >= 1 << 29:
            raise RecordIOError(f"record of {len(payload)} bytes exceeds the 2^29 RecordIO limit")
        offset = self._fh.tell()
        start = 0
        aligned_end = len(payload) - len(payload) % 4
        for i in range(0, aligned_end, 4):
            if payload[i:i + 4] == _MAGIC_BYTES:
                self._frame(1 if start == 0 else 2, payload[start:i])
                start = i + 4
        self._frame(3 if start else 0, payload[start:])
        if self._idx is not None:
            if idx is None:
                raise ValueError("this writer keeps an .idx file: pass idx=")
            self._idx.write(f"{int(idx)}\t{offset}\n")
        return offset

    def _frame(self, cflag: int, data: bytes) -> None:
        self._fh.write(_U32.pack(RECORDIO_MAGIC))
        self._fh.write(_U32.pack((cflag << 29) | len(data)))
        self._fh.write(data)
        self._fh.write(b"\0" * ((-len(data)) % 4))

    def close(self) -> None:
        self._fh.close()
        if self._idx is not None:
            self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_index(idx_path) -> Dict[int, int]:
    """Parse an ``.idx`` file: ``{record index: byte offset}`` in file order."""
    out: Dict[int, int] = {}
    path = Path(idx_path)
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            cols = line.split()
            if len(cols) != 2:
                raise RecordIOError(f"{path}:{lineno}: expected 'index<TAB>offset', got {line!r}")
            try:
                out[int(cols[0])] = int(cols[1])
            except ValueError:
                raise RecordIOError(f"{path}:{lineno}: non-integer index/offset {line!r}") from None
    return out


def insightface_image_indices(reader: RecordIOReader) -> Sequence[int]:
    """The image record indices of an InsightFace ``train.rec``: ``1 .. label[0]-1`` when
    record 0 is the header record (``flag > 0``), otherwise every index in the ``.idx``."""
    keys = reader.keys
    if 0 in keys:
        header, _ = unpack_irecord(reader.read_idx(0))
        if header.flag > 0:
            end = int(header.class_label)
            present = set(keys)
            return [k for k in range(1, end) if k in present]
    return keys


def sidecar_path(rec_path) -> Path:
    """``X.lightface.json`` beside ``X.rec``: what lightface's export records about its crops."""
    rec = Path(rec_path)
    return rec.with_name(f"{rec.stem}.lightface.json")


def read_sidecar(rec_path) -> Optional[Dict[str, Any]]:
    """The sidecar of ``rec_path`` (:func:`sidecar_path`) as a dict; None when there is none
    (a RecordIO pair that lightface did not export).

    Raises:
        RecordIOError: the sidecar is not a JSON object.
    """
    path = sidecar_path(rec_path)
    if not path.is_file():
        return None
    fix = "export the pair again, or delete the file to read its crops as ArcFace's"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordIOError(f"{path}: not valid JSON ({err}); {fix}") from err
    if not isinstance(info, dict):
        raise RecordIOError(f"{path}: expected a JSON object, got {type(info).__name__}; {fix}")
    return info
