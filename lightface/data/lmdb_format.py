"""The lightface LMDB dataset format (version 1): keys, record layout, metadata, and a
low-level transactional writer.

One LMDB environment (a directory holding ``data.mdb``) per dataset. Keys (bytes):

``__meta__``
    UTF-8 JSON metadata (see :func:`make_metadata` and docs/lmdb_format.md).
``__labels__``
    the integer label of every sample, little-endian int64, ``count`` values, so
    samplers read all labels without touching a sample record.
``%010d`` (``b"0000000000"`` ...)
    one record per sample, see :func:`pack_record`.

A finished dataset has ``__meta__``; a build in progress lives under a temporary name
and holds ``__progress__`` and ``__labels__/%010d`` chunk keys instead (removed when the
build completes), so it can never be mistaken for a finished dataset.

Sample record layout: ``uint32 LE n`` | ``n`` bytes of UTF-8 JSON header | image payload.
The header holds ``label`` (int), ``shape`` ([H, W] or [H, W, 3]), optional
``landmarks`` (5 x [x, y] in crop pixels) and ``attributes`` (str -> str). The payload is
the PNG / JPEG file, or the raw uint8 pixels (C order, BGR for colour) for ``raw``.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "is_lmdb_dir",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ENCODINGS",
    "META_KEY",
    "LABELS_KEY",
    "PROGRESS_KEY",
    "LMDBFormatError",
    "sample_key",
    "encode_image",
    "decode_payload",
    "pack_record",
    "unpack_header",
    "unpack_record",
    "make_metadata",
    "check_metadata",
    "LMDBWriter",
    "read_metadata",
    "open_readonly",
    "release_readonly",
    "is_complete_dataset",
]

FORMAT_NAME = "lightface-lmdb"
FORMAT_VERSION = 1
ENCODINGS = ("png", "jpeg", "webp", "raw")
#: encodings whose ``quality`` (1-100) is stored in the metadata
LOSSY_ENCODINGS = ("jpeg", "webp")
META_KEY = b"__meta__"
LABELS_KEY = b"__labels__"
PROGRESS_KEY = b"__progress__"
LABEL_CHUNK_PREFIX = b"__labels__/"
_HEADER_LEN = struct.Struct("<I")


class LMDBFormatError(ValueError):
    """A file that is not a (complete, supported) lightface LMDB dataset or a corrupt record."""


def sample_key(index: int) -> bytes:
    """Key of sample ``index`` (0-based)."""
    return b"%010d" % index


def encode_image(image: np.ndarray, encoding: str = "png", quality: int = 95) -> bytes:
    """Encode a uint8 gray (H,W) or BGR (H,W,3) image as PNG, JPEG or WebP (lossy, ``quality`` 1-100; WebP
    is about 40% smaller than JPEG at the same error on face crops) or raw bytes."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected a uint8 (H,W) gray or (H,W,3) BGR image, got {img.dtype} {img.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(img).tobytes()
    if encoding == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    elif encoding in LOSSY_ENCODINGS:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"{encoding} quality must be in 1..100, got {quality}")
        flag = cv2.IMWRITE_JPEG_QUALITY if encoding == "jpeg" else cv2.IMWRITE_WEBP_QUALITY
        ok, buf = cv2.imencode(".jpg" if encoding == "jpeg" else ".webp", img, [flag, int(quality)])
    else:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {img.shape} image as {encoding}")
    return buf.tobytes()


def decode_payload(payload, encoding: str, shape: Sequence[int]) -> np.ndarray:
    """Decode a record payload to uint8 (H,W) gray or (H,W,3) BGR."""
    if encoding == "raw":
        expected = int(np.prod(shape))
        if len(payload) != expected:
            raise LMDBFormatError(f"raw payload has {len(payload)} bytes, expected {expected} for shape {list(shape)}")
        return np.frombuffer(payload, np.uint8).reshape(shape).copy()
    flag = cv2.IMREAD_GRAYSCALE if len(shape) == 2 else cv2.IMREAD_COLOR
    img = cv2.imdecode(np.frombuffer(payload, np.uint8), flag)
    if img is None:
        raise LMDBFormatError(f"cannot decode a {encoding} payload of {len(payload)} bytes")
    return img


def pack_record(payload: bytes, label: int, shape: Sequence[int], landmarks=None,
                attributes: Optional[Dict[str, str]] = None) -> bytes:
    """Serialise one sample record (layout in the module doc)."""
    header: Dict[str, Any] = {"label": int(label), "shape": [int(s) for s in shape]}
    if landmarks is not None:
        header["landmarks"] = np.asarray(landmarks, np.float32).reshape(5, 2).tolist()
    if attributes:
        header["attributes"] = {str(k): str(v) for k, v in attributes.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return _HEADER_LEN.pack(len(blob)) + blob + bytes(payload)


def unpack_header(record) -> Tuple[Dict[str, Any], int]:
    """Parse a record's JSON header without touching the image: ``(header, payload_offset)``."""
    if len(record) < _HEADER_LEN.size:
        raise LMDBFormatError(f"record of {len(record)} bytes is too short")
    (n,) = _HEADER_LEN.unpack_from(record, 0)
    end = _HEADER_LEN.size + n
    if end > len(record):
        raise LMDBFormatError(f"record header length {n} exceeds the record ({len(record)} bytes)")
    try:
        header = json.loads(bytes(record[_HEADER_LEN.size:end]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LMDBFormatError(f"corrupt record header: {err}") from err
    return header, end


def unpack_record(record) -> Tuple[Dict[str, Any], bytes]:
    """``(header, payload bytes)`` of a sample record."""
    header, off = unpack_header(record)
    return header, bytes(record[off:])


def make_metadata(
    *,
    count: int,
    classes: Sequence[str],
    shape: Optional[Sequence[int]],
    color: str,
    encoding: str,
    quality: Optional[int],
    has_landmarks: bool,
    attribute_keys: Sequence[str],
    alignment: Dict[str, Any],
    build: Dict[str, Any],
) -> Dict[str, Any]:
    """The ``__meta__`` dictionary of a version-1 dataset (every key documented in docs/lmdb_format.md)."""
    if color not in ("gray", "rgb"):
        raise ValueError(f"color must be 'gray' or 'rgb', got {color!r}")
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "count": int(count),
        "num_classes": len(classes),
        "classes": [str(c) for c in classes],
        "image": {
            "shape": None if shape is None else [int(s) for s in shape],
            "color": color,
            "channel_order": "gray" if color == "gray" else "BGR",
            "encoding": encoding,
            "quality": int(quality) if encoding in LOSSY_ENCODINGS and quality is not None else None,
        },
        "landmarks": bool(has_landmarks),
        "attributes": sorted(str(k) for k in attribute_keys),
        "alignment": dict(alignment),
        "build": dict(build),
    }


def check_metadata(meta: Any, where: str = "<dataset>") -> Dict[str, Any]:
    """Validate metadata read from a dataset; refuses other formats and unknown versions."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise LMDBFormatError(f"{where}: not a lightface LMDB dataset (metadata format is "
                              f"{meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise LMDBFormatError(f"{where}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise LMDBFormatError(
            f"{where}: written in lightface LMDB format version {version}, but this lightface reads "
            f"versions up to {FORMAT_VERSION}; upgrade lightface (pip install -U lightface) or rebuild "
            "the dataset with python -m pipelines.build_lmdb"
        )
    missing = [k for k in ("count", "classes", "image") if k not in meta]
    if missing:
        raise LMDBFormatError(f"{where}: metadata lacks {missing}")
    return meta


class LMDBWriter:
    """Transactional writer for one LMDB environment, growing the map when it fills.

    Args:
        path: environment directory (created).
        map_size: initial map size in bytes (doubled on ``MapFullError``).
    Use :meth:`put` with a list of ``(key, value)`` pairs: each call is one atomic commit.
    """

    def __init__(self, path, map_size: int = 1 << 26):
        import lmdb

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lmdb = lmdb
        _close_stale()  # a deleted dataset's read handle could otherwise refuse this one (see _close_stale)
        self.env = lmdb.open(str(self.path), map_size=int(map_size), subdir=True, readahead=False,
                             meminit=False, max_dbs=0, lock=True)
        self.map_size = max(int(map_size), self.env.info()["map_size"])

    def get(self, key: bytes) -> Optional[bytes]:
        with self.env.begin(write=False) as txn:
            value = txn.get(key)
            return None if value is None else bytes(value)

    def keys_with_prefix(self, prefix: bytes) -> List[bytes]:
        with self.env.begin(write=False) as txn:
            cur = txn.cursor()
            out = []
            if cur.set_range(prefix):
                for key in cur.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    out.append(bytes(key))
            return out

    def put(self, items: Iterable[Tuple[bytes, bytes]], delete: Iterable[bytes] = ()) -> None:
        """Write ``items`` (and delete ``delete`` keys) in one transaction; grows the map as needed.

        Raises:
            OSError: ``errno.ENOSPC`` when the disk is full, saying so with the path, the
                size of the commit and the free space; earlier commits are kept.
        """
        items = list(items)
        delete = list(delete)
        while True:
            try:
                self._commit(items, delete)
                return
            except self._lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
            except self._lmdb.DiskError as err:  # LMDB's name for ENOSPC
                raise self._no_space(sum(len(k) + len(v) for k, v in items)) from err
            except OSError as err:
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise self._no_space(sum(len(k) + len(v) for k, v in items)) from err

    def _commit(self, items: List[Tuple[bytes, bytes]], delete: List[bytes]) -> None:
        with self.env.begin(write=True) as txn:
            for key in delete:
                txn.delete(key)
            for key, value in items:
                txn.put(key, value)

    def _no_space(self, nbytes: int) -> OSError:
        try:
            free = f"{shutil.disk_usage(self.path).free / 2**20:.1f} MB free"
        except OSError:
            free = "free space unknown"
        return OSError(errno.ENOSPC, f"no space left on device while writing the LMDB at {self.path}: a commit of "
                       f"{nbytes / 2**20:.1f} MB did not fit ({free}); free some space (the samples committed "
                       "before are kept: build_lmdb --resume continues a build)", str(self.path))

    def sync(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        if self.env is not None:
            self.env.sync(True)
            self.env.close()
            self.env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_READ_ENVS: Dict[tuple, Any] = {}
_READ_PID: Optional[int] = None


def open_readonly(path):
    """A per-process shared read-only environment for the dataset at ``path`` (readonly,
    ``lock=False``, no readahead).

    LMDB allows one handle per environment and process, so all readers in a process share
    it. In a forked child the handles inherited from the parent are closed and reopened
    (never used across ``fork``). Raises FileNotFoundError when ``path/data.mdb`` is missing,
    :class:`LMDBFormatError` when it is not an LMDB file or is shorter than its last commit (truncated).

    Opening a new handle first closes the handles of datasets deleted or replaced since they
    were opened (see :func:`_close_stale`).
    """
    import lmdb

    global _READ_PID
    pid = os.getpid()
    if _READ_PID != pid:
        if _READ_PID is not None:
            for env in _READ_ENVS.values():
                try:
                    env.close()
                except Exception:  # an already invalid inherited handle
                    pass
        _READ_ENVS.clear()
        _READ_PID = pid
    path = Path(path).resolve()
    data = path / "data.mdb"
    if not data.is_file():
        partial = path.with_name(path.name + ".partial")
        hint = (f" (an unfinished build is at {partial}: rerun build_lmdb with --resume)" if partial.exists() else
                "; build one from your images with python -m pipelines.build_lmdb SRC OUT and give OUT")
        raise FileNotFoundError(f"{path}: no LMDB dataset here (missing data.mdb){hint}")
    st = data.stat()
    key = (str(path), st.st_dev, st.st_ino)
    env = _READ_ENVS.get(key)
    if env is None:
        _close_stale()
        try:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False,
                            subdir=True, max_readers=1024)
        except lmdb.Error as err:
            why = str(err).replace(f"{path}: ", "")
            raise LMDBFormatError(f"{path}: data.mdb is not a readable LMDB file ({why}); copy the dataset again, or "
                                  "rebuild it with python -m pipelines.build_lmdb ... --overwrite") from err
        # a data.mdb shorter than its committed pages (an interrupted copy, a full disk) is mapped as it is,
        # and reading a record past its end kills the process (SIGBUS) instead of raising
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        size = data.stat().st_size  # after reading the commit: a writer writes its pages before it
        if size < needed:
            env.close()
            raise LMDBFormatError(f"{path}: data.mdb is truncated ({size} of the {needed} bytes its last commit "
                                  "wrote: an interrupted copy or a full disk); copy the dataset again, or rebuild it "
                                  "with python -m pipelines.build_lmdb ... --overwrite")
        _READ_ENVS[key] = env
    return env


def _close_stale() -> None:
    """Close the shared handles whose ``data.mdb`` is gone or is another file now (the dataset
    was deleted or rebuilt): nothing can read them through their path any more, and py-lmdb
    (>= 3) refuses to open an environment whose data or lock file has the ``(st_dev, st_ino)``
    of one still open, which a deleted dataset's unheld lock file can pass on to a new one."""
    for key in list(_READ_ENVS):
        try:
            st = (Path(key[0]) / "data.mdb").stat()
            stale = (st.st_dev, st.st_ino) != key[1:]
        except OSError:
            stale = True
        if stale:
            _READ_ENVS.pop(key).close()


def release_readonly(path=None) -> None:
    """Close this process's shared read-only handle(s) of ``path`` (all when None), e.g.
    before opening the same environment for writing. Datasets reopen on their next access."""
    target = None if path is None else str(Path(path).resolve())
    for key in [k for k in _READ_ENVS if target is None or k[0] == target]:
        _READ_ENVS.pop(key).close()


def read_metadata(path) -> Dict[str, Any]:
    """Read and validate ``__meta__`` of the dataset at ``path`` (directory).

    Raises:
        FileNotFoundError: no ``data.mdb`` there.
        LMDBFormatError: an unfinished build, another LMDB, another format or an unknown version.
    """
    path = Path(path)
    env = open_readonly(path)
    with env.begin() as txn:
        raw = txn.get(META_KEY)
        unfinished = raw is None and txn.get(PROGRESS_KEY) is not None
    if raw is None:
        release_readonly(path)  # do not keep a build in progress open
        if unfinished:
            raise LMDBFormatError(f"{path}: an unfinished build (no metadata yet); resume it with "
                                  "python -m pipelines.build_lmdb ... --resume")
        raise LMDBFormatError(f"{path}: LMDB without lightface metadata (key __meta__): not a lightface dataset (an "
                              "LMDB of another tool, such as BasicSR's, is not read); build one from the images with "
                              "python -m pipelines.build_lmdb")
    try:
        meta = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LMDBFormatError(f"{path}: corrupt metadata: {err}") from err
    return check_metadata(meta, str(path))


def is_lmdb_dir(path) -> bool:
    """True when ``path`` is an LMDB environment folder (it holds ``data.mdb``), finished or not."""
    return (Path(path) / "data.mdb").is_file()


def is_complete_dataset(path) -> bool:
    """True when ``path`` holds a finished lightface dataset (any version)."""
    try:
        read_metadata(path)
        return True
    except LMDBFormatError as err:
        return "version" in str(err)
    except (FileNotFoundError, OSError):
        return False


