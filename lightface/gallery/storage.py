"""On-disk storage of a face gallery: fp16 embeddings in a memory map, records in SQLite.

Layout of a gallery directory::

    gallery.db              SQLite: meta (key/value), models, identities, faces
    embeddings-<gen>.f16    raw little-endian float16, row-major (rows, dim), L2-normalised rows
    index-<gen>.faiss       optional FAISS index over the first ``index_rows`` rows
    .lock                   advisory write lock (fcntl.flock), held only while writing

Commit protocol (one writer at a time, any number of readers):

* The SQLite ``meta`` row ``count`` is the number of committed embedding rows and
  ``embeddings_file`` names the live embedding file. Everything a reader uses is
  decided by one SQLite transaction, which is atomic and durable
  (``journal_mode=WAL``, ``synchronous=FULL``).
* ``append``: the uncommitted tail of the embedding file (rows past ``count`` left by
  a writer that died) is truncated, the new rows are written after the committed ones
  and fsynced, then one transaction inserts the face records and moves ``count``.
  A crash before the commit leaves rows past ``count`` that no reader looks at and the
  next writer overwrites; a crash after it leaves a complete add. Readers that mapped
  the first ``count`` rows are never disturbed.
* ``remove``: the kept rows are copied into a new ``embeddings-<gen+1>.f16`` (written
  as ``.tmp``, fsynced, ``os.replace``d, directory fsynced), then one transaction
  deletes the records, renumbers the rows and switches ``embeddings_file``. Files no
  longer referenced (from either side of a crash) are deleted by the next writer.

Library code: no printing; errors are :class:`GalleryError` subclasses with the path
and what to do.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "GalleryError",
    "CorruptGalleryError",
    "GalleryModelError",
    "GalleryLockedError",
    "ModelInfo",
    "FaceRecord",
    "GalleryStore",
    "FORMAT",
    "FORMAT_VERSION",
    "DB_NAME",
]

logger = logging.getLogger(__name__)

FORMAT = "lightface-gallery"
FORMAT_VERSION = 1
DB_NAME = "gallery.db"
LOCK_NAME = ".lock"
EMB_DTYPE = np.dtype("<f2")
_EMB_RE = re.compile(r"^embeddings-(\d+)\.f16$")
_INDEX_RE = re.compile(r"^index-(\d+)\.faiss$")
_COPY_ROWS = 1 << 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, arch TEXT);
CREATE TABLE IF NOT EXISTS identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    row INTEGER NOT NULL,
    identity_id INTEGER NOT NULL REFERENCES identities (id),
    path TEXT,
    file_sha256 TEXT,
    box TEXT,
    landmarks TEXT,
    det_score REAL,
    model_id INTEGER REFERENCES models (id),
    duplicate_of INTEGER,
    added REAL NOT NULL);
CREATE INDEX IF NOT EXISTS faces_row ON faces (row);
CREATE INDEX IF NOT EXISTS faces_identity ON faces (identity_id);
CREATE INDEX IF NOT EXISTS faces_sha ON faces (file_sha256);
CREATE INDEX IF NOT EXISTS faces_path ON faces (path);
"""


class GalleryError(RuntimeError):
    """A gallery that cannot be opened or written."""


class CorruptGalleryError(GalleryError):
    """The gallery directory exists but its files are damaged or inconsistent."""


class GalleryModelError(GalleryError):
    """The gallery was built with a different embedding model than the one given."""


class GalleryLockedError(GalleryError):
    """Another process holds the gallery's write lock."""


@dataclass(frozen=True)
class ModelInfo:
    """The embedding model a gallery's vectors come from.

    Attributes:
        name: the weights' name (a shipped model's name, the weights file name, or a
            module's class name).
        sha256: hex digest identifying the weights (see
            :func:`lightface.gallery.model_info`); two models are the same when their
            sha256 are equal, whatever their names.
        arch: the architecture (``"lightcnn29v2"``, ...), or None when unknown.
    """

    name: str
    sha256: str
    arch: Optional[str] = None

    def same_as(self, other: "ModelInfo") -> bool:
        """True when both describe the same weights (equal sha256)."""
        return self.sha256 == other.sha256

    def __str__(self) -> str:
        arch = f", {self.arch}" if self.arch and self.arch != self.name else ""
        return f"{self.name}{arch} (weights sha256 {self.sha256[:12]}...)"


@dataclass
class FaceRecord:
    """One enrolled face.

    Attributes:
        face_id: stable id (unchanged by removing other faces).
        row: row of its embedding in the embedding file (changes when rows are removed).
        identity: the person's name.
        path: source photo, or None.
        file_sha256: sha256 of the photo file, or None.
        box: float (4,) ``x1, y1, x2, y2`` in photo pixels, or None (aligned crops).
        landmarks: float (5, 2) or None.
        det_score: detector confidence, or None.
        model: the :class:`ModelInfo` it was embedded with, or None.
        duplicate_of: face id of a near-identical face enrolled before it, or None.
        added: unix time of the commit.
    """

    face_id: int
    row: int
    identity: str
    path: Optional[str]
    file_sha256: Optional[str]
    box: Optional[np.ndarray]
    landmarks: Optional[np.ndarray]
    det_score: Optional[float]
    model: Optional[ModelInfo]
    duplicate_of: Optional[int]
    added: float


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_array(value: Any, shape: Tuple[int, ...], what: str) -> Optional[str]:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{what} must have {int(np.prod(shape))} values {shape}, got shape {arr.shape}")
    return json.dumps([round(float(v), 3) for v in arr.reshape(-1)])


def _from_json_array(text: Optional[str], shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    if text is None:
        return None
    return np.asarray(json.loads(text), np.float32).reshape(shape)


#: galleries up to this many faces keep their row -> (face id, identity, path) table in
#: memory (about 200 B per face), so a search costs no database query
ROW_TABLE_MAX = 200_000


@dataclass(frozen=True)
class RowTable:
    """Per embedding row: ``face_ids`` int64 (N,), ``names`` and ``paths`` object (N,)."""

    face_ids: np.ndarray
    names: np.ndarray
    paths: np.ndarray


class GalleryStore:
    """Low-level storage of one gallery directory (see the module docstring).

    Args:
        root: the gallery directory.
        create: create an empty gallery when there is none; only in a missing or empty
            directory (the directory is created; hidden files such as ``.DS_Store`` do not count).

    Raises:
        GalleryError: no gallery at ``root`` and ``create=False``.
        CorruptGalleryError: ``root`` is a non-empty folder without ``gallery.db`` (not a
            gallery), ``gallery.db`` is not a lightface gallery database, or the embedding
            file is missing or shorter than the committed rows.
    """

    def __init__(self, root, create: bool = True):
        self.root = Path(root).expanduser()
        self.db_path = self.root / DB_NAME
        if not self.db_path.is_file():
            if self.root.exists() and not self.root.is_dir():
                raise GalleryError(f"{self.root}: exists and is not a directory")
            held = sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".")) if self.root.is_dir() else []
            if held:
                shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
                raise CorruptGalleryError(f"{self.root}: not a face gallery (no {DB_NAME}) and not empty (holds "
                                          f"{shown}); give the folder of an existing gallery, or a new or empty "
                                          "folder to create one")
            if not create:
                raise GalleryError(f"{self.root}: no face gallery here (no {DB_NAME}); create one with "
                                   "FaceGallery(path) or python -m pipelines.enroll")
            self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd: Optional[int] = None
        self._lock_depth = 0
        self._mm: Optional[np.ndarray] = None
        self._mm_key: Tuple[Any, ...] = ()
        self._seen: Optional[Tuple[int, int]] = None  # database state of the last refresh (see refresh)
        self._rows: Optional[RowTable] = None
        self.conn = self._connect()
        self.meta: Dict[str, str] = {}
        self._init_or_check()
        self.refresh()

    # -- connection and schema -----------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.db_path), isolation_level=None, timeout=60.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as err:
            raise CorruptGalleryError(f"{self.db_path}: not a readable SQLite database ({err}); the gallery is "
                                      "damaged: restore it from a backup or enrol again into a new folder") from err
        return conn

    def _init_or_check(self) -> None:
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            raise CorruptGalleryError(f"{self.db_path}: not a readable SQLite database ({err}); the gallery is "
                                      "damaged: restore it from a backup or enrol again into a new folder") from err
        if not tables:  # new (or a creation that died before its first commit)
            self._create()
            return
        missing = {"meta", "models", "identities", "faces"} - tables
        if missing:
            raise CorruptGalleryError(f"{self.db_path}: not a lightface gallery database (missing tables "
                                      f"{sorted(missing)}); is this the right folder?")

    def _create(self) -> None:
        with self.write_lock():
            if self.conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]:
                return  # another process created it while we waited for the lock
            emb_name = "embeddings-0.f16"
            with open(self.root / emb_name, "wb") as f:
                os.fsync(f.fileno())
            _fsync_dir(self.root)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                values = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "count": "0", "dim": "0",
                          "generation": "0", "embeddings_file": emb_name, "created": f"{time.time():.3f}"}
                self.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", values.items())
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        logger.info("created face gallery %s", self.root)

    def _read_meta(self) -> Dict[str, str]:
        try:
            meta = dict(self.conn.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as err:
            raise CorruptGalleryError(f"{self.db_path}: cannot read the gallery metadata ({err})") from err
        if meta.get("format") != FORMAT:
            raise CorruptGalleryError(f"{self.db_path}: not a lightface gallery (format {meta.get('format')!r})")
        version = int(meta.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise GalleryError(f"{self.root}: gallery format version {version} is newer than this lightface "
                               f"understands ({FORMAT_VERSION}); upgrade lightface")
        for key in ("count", "dim", "embeddings_file", "generation"):
            if key not in meta:
                raise CorruptGalleryError(f"{self.db_path}: gallery metadata lacks {key!r}")
        return meta

    def _db_state(self) -> Tuple[int, int]:
        """``(PRAGMA data_version, total_changes)``: the first changes when another connection
        commits, the second when this one writes, so an equal pair means nothing changed."""
        try:
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise CorruptGalleryError(f"{self.db_path}: cannot read the gallery database ({err})") from err
        return int(version), self.conn.total_changes

    def refresh(self) -> None:
        """Re-read the committed state if anything (this or another process) committed since
        the last call; a no-op costing one pragma otherwise, so searches can call it each time."""
        state = self._db_state()
        if state == self._seen:
            return
        self._seen, self._rows = None, None
        self.meta = self._read_meta()
        self.count = int(self.meta["count"])
        self.dim = int(self.meta["dim"])
        self.emb_path = self.root / self.meta["embeddings_file"]
        if not self.emb_path.is_file():
            raise CorruptGalleryError(f"{self.root}: the embedding file {self.emb_path.name} named by the gallery is "
                                      "missing; the gallery is damaged (restore it from a backup or enrol again)")
        need = self.count * self.dim * EMB_DTYPE.itemsize
        size = self.emb_path.stat().st_size
        if size < need:
            raise CorruptGalleryError(f"{self.emb_path}: {size} bytes, but the gallery commits {self.count} rows of "
                                      f"{self.dim} float16 ({need} bytes); the file was truncated or replaced")
        self._seen = state

    # -- embeddings -----------------------------------------------------------------------
    @property
    def embeddings(self) -> np.ndarray:
        """The committed embeddings: float16 (count, dim) memory map (copy-on-write, never written)."""
        key = (self.emb_path, self.count, self.dim)
        if self._mm is None or self._mm_key != key:
            if self.count == 0 or self.dim == 0:
                self._mm = np.zeros((0, max(self.dim, 0)), EMB_DTYPE)
            else:
                self._mm = np.memmap(self.emb_path, dtype=EMB_DTYPE, mode="c", shape=(self.count, self.dim))
            self._mm_key = key
        return self._mm

    # -- locking ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self, timeout: float = 600.0) -> Iterator[None]:
        """Hold the gallery's exclusive write lock (re-entrant); refreshes the state on entry."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        fd = os.open(str(self.root / LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd, timeout)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd, self._lock_depth = fd, 1
        try:
            if self.meta:  # not during creation
                self.refresh()
                self._cleanup()
            yield
        finally:
            self._lock_depth = 0
            self._lock_fd = None
            self._release(fd)
            os.close(fd)

    def _acquire(self, fd: int, timeout: float) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock; single writer assumed
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GalleryLockedError(f"{self.root}: another process has been writing to this gallery for "
                                             f"{timeout:.0f} s (lock {self.root / LOCK_NAME}); wait for it to finish")
                time.sleep(0.05)

    @staticmethod
    def _release(fd: int) -> None:
        try:
            import fcntl
        except ImportError:
            return
        fcntl.flock(fd, fcntl.LOCK_UN)

    def _cleanup(self) -> None:
        """Delete files no committed state refers to (left by a writer that died). Under the lock."""
        live = {self.meta["embeddings_file"], self.meta.get("index_file", "")}
        for entry in os.scandir(self.root):
            name = entry.name
            stale = name.endswith(".tmp") or ((_EMB_RE.match(name) or _INDEX_RE.match(name)) and name not in live)
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    logger.info("%s: removed %s left by an interrupted write", self.root, name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic SQLite write transaction (under the write lock)."""
        with self.write_lock():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._seen = None  # a rollback leaves total_changes counting the undone writes
                raise
            finally:
                self.refresh()

    # -- meta, models, identities --------------------------------------------------------
    def set_meta(self, conn: sqlite3.Connection, values: Dict[str, Any]) -> None:
        """Set meta keys inside an open transaction (None deletes a key)."""
        for key, value in values.items():
            if value is None:
                conn.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def model(self) -> Optional[ModelInfo]:
        """The gallery's model, or None when none was recorded."""
        mid = self.meta.get("model_id")
        if mid is None:
            return None
        row = self.conn.execute("SELECT name, sha256, arch FROM models WHERE id=?", (int(mid),)).fetchone()
        if row is None:
            raise CorruptGalleryError(f"{self.db_path}: the gallery's model record {mid} is missing")
        return ModelInfo(*row)

    def model_id(self, conn: sqlite3.Connection, model: ModelInfo) -> int:
        conn.execute("INSERT OR IGNORE INTO models (name, sha256, arch) VALUES (?, ?, ?)",
                     (model.name, model.sha256, model.arch))
        return int(conn.execute("SELECT id FROM models WHERE sha256=?", (model.sha256,)).fetchone()[0])

    def identity_names(self) -> List[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT i.name FROM identities i WHERE EXISTS (SELECT 1 FROM faces f WHERE f.identity_id=i.id) "
            "ORDER BY i.name")]

    def identity_counts(self) -> Dict[str, int]:
        return dict(self.conn.execute(
            "SELECT i.name, count(*) FROM faces f JOIN identities i ON i.id=f.identity_id GROUP BY i.name ORDER BY i.name"))

    # -- writing ----------------------------------------------------------------------------
    def append(self, emb16: np.ndarray, identities: Sequence[str], records: Sequence[Dict[str, Any]],
               model: Optional[ModelInfo] = None) -> np.ndarray:
        """Append rows atomically; returns their face ids (int64).

        Args:
            emb16: float16 (n, dim) L2-normalised rows.
            identities: n names.
            records: n dicts with optional ``path``, ``file_sha256``, ``box``, ``landmarks``,
                ``det_score``, ``duplicate_of`` (a face id, or ``("batch", j)`` for row j of
                this append).
            model: the model these rows come from (recorded as the gallery's model when it
                has none; must equal it otherwise; checked by the caller).
        """
        n = len(emb16)
        if n == 0:
            return np.zeros(0, np.int64)
        emb16 = np.ascontiguousarray(emb16, dtype=EMB_DTYPE)
        with self.write_lock():
            dim = self.dim
            if dim == 0:
                dim = emb16.shape[1]
            elif emb16.shape[1] != dim:
                raise ValueError(f"{self.root}: the gallery holds {dim}-d embeddings, got {emb16.shape[1]}-d")
            start = self.count
            # 1. the rows, after the committed ones (truncating any uncommitted tail), durable
            with open(self.emb_path, "r+b") as f:
                f.truncate(start * dim * EMB_DTYPE.itemsize)
                f.seek(start * dim * EMB_DTYPE.itemsize)
                f.write(emb16.tobytes())
                f.flush()
                os.fsync(f.fileno())
            # 2. the records and the new count, one transaction
            now = time.time()
            with self.transaction() as conn:
                mid = self.model_id(conn, model) if model is not None else None
                new_meta: Dict[str, Any] = {"count": start + n, "dim": dim}
                if mid is not None and "model_id" not in self.meta and start == 0:
                    new_meta["model_id"] = mid
                names = sorted(set(identities))
                conn.executemany("INSERT OR IGNORE INTO identities (name) VALUES (?)", [(s,) for s in names])
                ids = {}
                for chunk in range(0, len(names), 500):
                    part = names[chunk:chunk + 500]
                    ids.update(conn.execute(f"SELECT name, id FROM identities WHERE name IN ({','.join('?' * len(part))})",
                                            part).fetchall())
                first = conn.execute("SELECT coalesce(max(id), -1) + 1 FROM faces").fetchone()[0]
                rows = []
                for i, (name, rec) in enumerate(zip(identities, records)):
                    dup = rec.get("duplicate_of")
                    if isinstance(dup, tuple):  # ("batch", j): row j of this same append
                        dup = first + int(dup[1])
                    rows.append((first + i, start + i, ids[name], rec.get("path"), rec.get("file_sha256"),
                                 _json_array(rec.get("box"), (4,), "box"),
                                 _json_array(rec.get("landmarks"), (5, 2), "landmarks"),
                                 None if rec.get("det_score") is None else float(rec["det_score"]),
                                 mid, None if dup is None else int(dup), now))
                conn.executemany("INSERT INTO faces (id, row, identity_id, path, file_sha256, box, landmarks, det_score, "
                                 "model_id, duplicate_of, added) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                self.set_meta(conn, new_meta)
            return np.arange(first, first + n, dtype=np.int64)

    def remove_faces(self, where: str, params: Sequence[Any]) -> int:
        """Delete the faces selected by the SQL condition ``where`` (on table ``faces``) and compact
        the embedding file; returns how many were removed. Drops any FAISS index, and when no face is left the
        record of the faces' model and settings (:data:`FACES_KEYS`)."""
        with self.write_lock():
            doomed = np.array([r[0] for r in self.conn.execute(f"SELECT row FROM faces WHERE {where}", params)],
                              np.int64)
            if len(doomed) == 0:
                return 0
            doomed.sort()
            keep = np.ones(self.count, bool)
            keep[doomed] = False
            gen = int(self.meta["generation"]) + 1
            new_name = f"embeddings-{gen}.f16"
            tmp = self.root / (new_name + ".tmp")
            src = self.embeddings
            with open(tmp, "wb") as f:
                for s in range(0, self.count, _COPY_ROWS):
                    block = src[s:s + _COPY_ROWS][keep[s:s + _COPY_ROWS]]
                    f.write(np.ascontiguousarray(block).tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / new_name)
            _fsync_dir(self.root)
            old_files = [self.meta["embeddings_file"], self.meta.get("index_file")]
            with self.transaction() as conn:
                conn.execute(f"DELETE FROM faces WHERE {where}", params)
                moved = conn.execute("SELECT id, row FROM faces WHERE row > ? ORDER BY row", (int(doomed[0]),)).fetchall()
                if moved:
                    fid = np.array([m[0] for m in moved], np.int64)
                    old = np.array([m[1] for m in moved], np.int64)
                    new = old - np.searchsorted(doomed, old)
                    conn.executemany("UPDATE faces SET row=? WHERE id=?", zip(new.tolist(), fid.tolist()))
                conn.execute("DELETE FROM identities WHERE NOT EXISTS "
                             "(SELECT 1 FROM faces f WHERE f.identity_id=identities.id)")
                left = self.count - len(doomed)
                self.set_meta(conn, {"count": left, "embeddings_file": new_name, "generation": gen,
                                     **{k: None for k in INDEX_KEYS + (FACES_KEYS if left == 0 else ())}})
            for name in old_files:
                if name:
                    with contextlib.suppress(OSError):
                        os.unlink(self.root / name)
            return len(doomed)

    def rename_identity(self, old: str, new: str, merge: bool = False) -> int:
        """Rename identity ``old`` to ``new``; returns the number of faces moved."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM identities WHERE name=?", (old,)).fetchone()
            if row is None:
                raise KeyError(f"{self.root}: no identity {old!r} in the gallery")
            old_id = row[0]
            n = conn.execute("SELECT count(*) FROM faces WHERE identity_id=?", (old_id,)).fetchone()[0]
            target = conn.execute("SELECT id FROM identities WHERE name=?", (new,)).fetchone()
            if target is None:
                conn.execute("UPDATE identities SET name=? WHERE id=?", (new, old_id))
            elif target[0] != old_id:
                if not merge:
                    raise ValueError(f"{self.root}: identity {new!r} already exists; pass merge=True to move the faces "
                                     f"of {old!r} into it")
                conn.execute("UPDATE faces SET identity_id=? WHERE identity_id=?", (target[0], old_id))
                conn.execute("DELETE FROM identities WHERE id=?", (old_id,))
            return int(n)

    # -- reading ----------------------------------------------------------------------------
    def row_table(self) -> Optional["RowTable"]:
        """Face id, identity and path of every committed row as arrays, for galleries of at most
        :data:`ROW_TABLE_MAX` faces (None above: use :meth:`lookup_rows`); read once per change."""
        if self.count > ROW_TABLE_MAX:
            return None
        if self._rows is None:  # refresh() drops it whenever anything was committed
            face_ids = np.full(self.count, -1, np.int64)
            names = np.empty(self.count, object)
            paths = np.empty(self.count, object)
            q = "SELECT f.row, f.id, i.name, f.path FROM faces f JOIN identities i ON i.id=f.identity_id WHERE f.row < ?"
            for row, fid, name, path in self.conn.execute(q, (self.count,)):
                face_ids[row], names[row], paths[row] = fid, name, path
            self._check_records(np.flatnonzero(face_ids < 0).tolist())
            self._rows = RowTable(face_ids, names, paths)
        return self._rows

    def lookup_rows(self, rows: Iterable[int]) -> Dict[int, Tuple[int, str, Optional[str]]]:
        """``{row: (face_id, identity, path)}`` for the given embedding rows."""
        wanted = sorted({int(r) for r in rows if r >= 0})
        out: Dict[int, Tuple[int, str, Optional[str]]] = {}
        for s in range(0, len(wanted), 900):
            part = wanted[s:s + 900]
            q = (f"SELECT f.row, f.id, i.name, f.path FROM faces f JOIN identities i ON i.id=f.identity_id "
                 f"WHERE f.row IN ({','.join('?' * len(part))})")
            for row, fid, name, path in self.conn.execute(q, part):
                out[row] = (fid, name, path)
        self._check_records([r for r in wanted if r not in out])
        return out

    def _check_records(self, missing: List[int]) -> None:
        """Raise CorruptGalleryError when embedding rows (``missing``) have no face record."""
        if missing:
            raise CorruptGalleryError(f"{self.db_path}: embedding rows {missing[:5]} have no face record; the gallery "
                                      "is inconsistent (run FaceGallery.verify())")

    def faces(self, where: str = "1", params: Sequence[Any] = ()) -> List[FaceRecord]:
        q = ("SELECT f.id, f.row, i.name, f.path, f.file_sha256, f.box, f.landmarks, f.det_score, m.name, m.sha256, "
             "m.arch, f.duplicate_of, f.added FROM faces f JOIN identities i ON i.id=f.identity_id "
             f"LEFT JOIN models m ON m.id=f.model_id WHERE {where} ORDER BY f.row")
        out = []
        for r in self.conn.execute(q, params):
            out.append(FaceRecord(r[0], r[1], r[2], r[3], r[4], _from_json_array(r[5], (4,)),
                                  _from_json_array(r[6], (5, 2)), r[7], ModelInfo(r[8], r[9], r[10]) if r[8] else None,
                                  r[11], r[12]))
        return out

    def face_ids_by_path(self, paths: Sequence[str]) -> Dict[str, List[int]]:
        """``{path: [face ids enrolled from it]}`` for those of ``paths`` that are in the gallery
        (galleries created before the ``faces_path`` index answer by a scan per call)."""
        out: Dict[str, List[int]] = {}
        paths = list(dict.fromkeys(paths))
        for i in range(0, len(paths), 500):
            chunk = paths[i:i + 500]
            q = f"SELECT path, id FROM faces WHERE path IN ({','.join('?' * len(chunk))}) ORDER BY id"
            for path, face_id in self.conn.execute(q, chunk):
                out.setdefault(path, []).append(face_id)
        return out

    def find_sha(self, sha: str) -> Optional[Tuple[int, str, Optional[str]]]:
        """``(face_id, identity, path)`` of a face enrolled from a file with this sha256, or None."""
        r = self.conn.execute("SELECT f.id, i.name, f.path FROM faces f JOIN identities i ON i.id=f.identity_id "
                              "WHERE f.file_sha256=? ORDER BY f.id LIMIT 1", (sha,)).fetchone()
        return None if r is None else (r[0], r[1], r[2])

    def close(self) -> None:
        self._mm = None
        with contextlib.suppress(Exception):
            self.conn.close()


INDEX_KEYS = ("index_file", "index_factory", "index_params", "index_rows")
#: what the meta records about the faces the gallery holds (their model, the embedder settings they were made
#: with): forgotten when the last face is removed, so that an emptied gallery takes faces of any model and
#: settings and records theirs
FACES_KEYS = ("model_id", "settings", "flip", "detector", "detector_options")
