"""Build lightface LMDB datasets: read, check, align, convert, encode and write samples.

:func:`build_lmdb` is the engine of ``python -m pipelines.build_lmdb``; :func:`write_lmdb`
writes a dataset from in-memory samples (e.g. a relabelled copy of another dataset);
:func:`verify_lmdb` decodes every record and checks it.

Guarantees of a build:

* it writes to ``<OUT>.partial`` and renames to ``OUT`` only when complete, so a
  half-built dataset is never mistaken for a finished one;
* samples are committed in batches together with the build progress, so after a crash
  or ``kill -9``, ``resume=True`` continues from the last commit and produces the same
  dataset, record for record, as an uninterrupted build (the source list, options and
  shuffle order are fingerprinted and checked);
* with ``workers > 0`` samples are processed in parallel processes but written in source
  order (deterministic output); a worker that dies (the system's out-of-memory killer, a
  crash in native code, an error in its set-up) stops the build with
  :class:`WorkerDiedError`, never a hang, and ``resume=True`` continues it;
* bad input (missing, empty, truncated, non-image files, images where detection fails,
  landmarks that put the crop outside the image) is skipped and listed with the reason in
  ``OUT/build_report.json`` (for a build that writes nothing over a complete dataset:
  ``<OUT>.failed_report.json``, the dataset stays as it was);
* the LMDB map grows automatically when full.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import numbers
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..utils.atomic_write import write_text_atomic
from ..utils.opencv_threads import single_threaded_opencv
from .align import ALIGN_METHODS, TEMPLATES, align_face, crop_outside_fraction, template_base_size, template_points, transform_points
from .detect import main_face
from .io import ImageReadError, decode_image, read_file_bytes, to_gray
from .lmdb_format import (
    ENCODINGS,
    LABEL_CHUNK_PREFIX,
    LABELS_KEY,
    META_KEY,
    PROGRESS_KEY,
    LMDBWriter,
    decode_payload,
    encode_image,
    is_complete_dataset,
    make_metadata,
    open_readonly,
    pack_record,
    read_metadata,
    sample_key,
    unpack_record,
)
from .sources import SourceItem, SourcePlan, open_source

__all__ = ["BuildOptions", "build_lmdb", "write_lmdb", "verify_lmdb", "process_item", "partial_path",
           "lock_path", "failed_report_path", "DatasetLockedError", "WorkerDiedError", "REPORT_NAME",
           "MAX_OUTSIDE", "check_complete"]

logger = logging.getLogger(__name__)

REPORT_NAME = "build_report.json"
RESIZE_MODES = ("crop", "stretch", "none")
#: the largest fraction of an aligned crop that may lie outside its image when the landmarks come from a
#: landmarks file or CFP fiducials; above it the sample is skipped (landmarks made for other images, or
#: for another resolution). Real tightly framed photos come close: CFP profiles reach 0.70 of a
#: ``lightcnn_train`` crop and 0.79 of an ``ffhq`` one (LFW and CelebA stay below 0.25)
MAX_OUTSIDE = 0.9


def partial_path(out) -> Path:
    """Where a build of ``out`` lives until it completes: ``<out>.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def failed_report_path(out) -> Path:
    """Where a build that wrote nothing reports why when ``out`` holds a complete dataset, which it
    leaves as it was: ``<out>.failed_report.json`` (removed when a later build of ``out`` completes)."""
    out = Path(out)
    return out.with_name(out.name + ".failed_report.json")


def _abandoned_report_path(out: Path) -> Path:
    """The report of a build of ``out`` that wrote nothing: :func:`failed_report_path` when ``out`` is a
    complete dataset (whose files stay as they were), else ``out/build_report.json``."""
    return failed_report_path(out) if is_complete_dataset(out) else out / REPORT_NAME


def lock_path(out) -> Path:
    """The lock file held while ``out`` is being written: ``<out>.lock`` (removed when the build ends)."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


class DatasetLockedError(RuntimeError):
    """Another process is building (or replacing) the same output dataset."""


class WorkerDiedError(RuntimeError):
    """A ``workers > 0`` process died mid-build (killed by the system, e.g. out of memory; a crash
    in native code; an error in its set-up); the committed part is kept for ``resume=True``."""


class _OutputLock:
    """An exclusive ``fcntl.flock`` on ``<out>.lock``, taken without waiting.

    The lock is held by an open file, so the kernel releases it when the process dies
    (``kill -9`` included); the file holds the owner's pid for the error message. On
    release the file is unlinked while still locked, and a taker checks that the path it
    locked is still the file on disk, so removing it never lets two owners in.
    """

    def __init__(self, out: Path):
        self.path = lock_path(out)
        self.fd: Optional[int] = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    owner = os.read(fd, 64).decode(errors="replace").strip()
                finally:
                    os.close(fd)
                who = f"process {owner}" if owner else "another process"
                raise DatasetLockedError(
                    f"{out} is being written by {who} (lock {self.path}); wait for that build to finish, or "
                    "write to another output") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous owner removed this file between our open and flock: retry
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:  # pragma: no cover
            pass
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None


@dataclass(frozen=True)
class BuildOptions:
    """How each image is turned into a stored sample (see :func:`build_lmdb` for the meaning)."""

    size: int = 144
    color: str = "gray"
    encoding: str = "raw"
    quality: int = 95
    template: str = "lightcnn_train"
    detect: Optional[str] = None
    det_size: int = 640
    det_threshold: float = 0.5
    source_template: Optional[str] = None
    resize: str = "crop"
    require_landmarks: bool = False
    antialias: bool = False
    align_method: str = "similarity"

    def validate(self) -> None:
        if int(self.size) < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if self.color not in ("gray", "rgb"):
            raise ValueError(f"color must be 'gray' or 'rgb', got {self.color!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if not 1 <= int(self.quality) <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        if self.source_template is not None and self.source_template not in TEMPLATES:
            raise ValueError(f"source_template must be one of {TEMPLATES} or None, got {self.source_template!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.align_method not in ALIGN_METHODS:
            raise ValueError(f"align_method must be one of {ALIGN_METHODS}, got {self.align_method!r}")
        if self.detect:  # refused here, before any work, not by the first image that needs the detector
            from .detect import check_detector_options

            check_detector_options(self.detect, self.det_size, self.det_threshold)


# ---------------------------------------------------------------------------------------
# per-sample processing (runs in worker processes)
# ---------------------------------------------------------------------------------------
_WORKER: Dict[str, Any] = {}


def _init_worker(options: BuildOptions, rec_path: Optional[str], device: str = "cpu") -> None:
    _WORKER.clear()
    _WORKER["options"] = options
    _WORKER["rec_path"] = rec_path
    _WORKER["device"] = device
    single_threaded_opencv()  # a no-op in a forked worker: the parent set it before the fork


def _detector():
    det = _WORKER.get("detector")
    if det is None:
        from .detect import FaceDetector

        opts: BuildOptions = _WORKER["options"]
        det = FaceDetector(opts.detect, det_size=opts.det_size, threshold=opts.det_threshold,
                           device=_WORKER.get("device", "cpu"))
        _WORKER["detector"] = det
    return det


def _read_bytes(item: SourceItem) -> bytes:
    if item.ref.startswith("rec:"):
        from .recordio import RecordIOReader, unpack_irecord

        reader = _WORKER.get("rec")
        if reader is None:
            reader = _WORKER["rec"] = RecordIOReader(_WORKER["rec_path"])
        _, data = unpack_irecord(reader.read_at(int(item.ref[4:])))
        return data
    return read_file_bytes(item.ref)  # regular files only: a FIFO named *.jpg must not block the build


def _jpeg_scan_start(data: bytes) -> int:
    """Byte offset of the first start-of-scan marker, walking the marker segments (so an
    EXIF thumbnail inside APP1 is skipped); -1 when the header is cut short or malformed."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return -1
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return -1


def check_complete(data: bytes, name: str) -> None:
    """Reject JPEG / PNG files cut short (OpenCV decodes those with only a warning, filling
    the missing rows with grey).

    A JPEG is complete when an end-of-image marker follows its first scan (entropy-coded
    data never contains ``FF D9``; trailing data such as motion-photo videos is allowed);
    a PNG when it holds its ``IEND`` chunk.

    Raises:
        ImageReadError: a truncated JPEG or PNG.
    """
    if data[:3] == b"\xff\xd8\xff":
        sos = _jpeg_scan_start(data)
        if sos < 0 or data.find(b"\xff\xd9", sos) < 0:
            raise ImageReadError(f"{name}: truncated JPEG (no end-of-image marker after the image data)")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data.rfind(b"IEND\xaeB`\x82") < 0:  # IEND + its fixed CRC
        raise ImageReadError(f"{name}: truncated PNG (no IEND chunk)")


def _resize(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    if mode == "none":
        return img
    h, w = img.shape[:2]
    if mode == "crop":
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        img = img[y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def process_item(item: SourceItem, options: BuildOptions) -> Tuple:
    """Turn one source item into a stored sample.

    Returns:
        ``("ok", payload bytes, shape list, crop landmarks (5,2) float32 or None)`` or
        ``("skip", reason)``.
    """
    try:
        data = _read_bytes(item)
    except OSError as err:
        return ("skip", f"cannot read: {err.strerror or err}")
    except ValueError as err:  # RecordIOError
        return ("skip", str(err))
    try:
        check_complete(data, item.name)
        img = decode_image(data, "bgr", item.name)
    except ImageReadError as err:
        return ("skip", str(err).replace(f"{item.name}: ", "", 1))
    lm = None
    if item.landmarks is not None:
        lm = np.asarray(item.landmarks, np.float64).reshape(5, 2)
    elif options.require_landmarks and not options.detect:
        return ("skip", item.no_landmarks or "no landmarks for this image (not in the landmarks file / no CFP "
                                             "fiducial file)")
    elif options.detect:
        detector = _detector()  # a detector that cannot be loaded stops the build (not a per-file problem)
        try:
            face = main_face(detector.detect(img), img.shape)
        except (ValueError, TypeError, cv2.error) as err:  # e.g. a 1x1 image: skip it, never stop the build
            return ("skip", f"detection failed on a {img.shape[1]}x{img.shape[0]} image: {err}")
        if face is None:
            return ("skip", "no face detected")
        lm = face.landmarks.astype(np.float64)
    elif options.source_template:
        base = template_base_size(options.source_template)
        h, w = img.shape[:2]
        lm = template_points(options.source_template) * np.array([w / base, h / base])
    crop_lm = None
    if lm is not None:
        try:
            crop, M = align_face(img, lm, options.template, options.size, antialias=options.antialias,
                                 method=options.align_method)
        except ValueError as err:
            return ("skip", f"alignment failed: {err}")
        outside = crop_outside_fraction(M, img.shape, options.size) if item.landmarks is not None else 0.0
        if outside > MAX_OUTSIDE:  # given landmarks only: a detected face, or a source template, is in the image
            return ("skip", f"landmarks outside the {img.shape[1]}x{img.shape[0]} image: {outside:.0%} of the crop "
                            "would be border (a landmarks file made for other images, or another resolution?)")
        crop_lm = transform_points(lm, M).astype(np.float32)
    else:
        crop = _resize(img, options.size, options.resize)
    if options.color == "gray":
        crop = to_gray(crop)
    payload = encode_image(crop, options.encoding, options.quality)
    return ("ok", payload, list(crop.shape), crop_lm)


def _work(item: SourceItem) -> Tuple:
    try:
        return process_item(item, _WORKER["options"])
    except Exception as err:  # name the file: a bare traceback from a worker process does not
        raise RuntimeError(f"{item.name}: {type(err).__name__}: {err}") from err


def _work_chunk(items: Sequence[SourceItem]) -> List[Tuple]:
    return [_work(item) for item in items]


def _in_order(pool: ProcessPoolExecutor, items: Sequence[SourceItem], chunksize: int, window: int) -> Iterator[Tuple]:
    """``_work(item)`` for each item, in order, computed by ``pool`` in chunks with at most
    ``window`` chunks submitted ahead (memory stays bounded on millions of items). Unlike
    ``multiprocessing.Pool``, which replaces a dead worker and waits for ever on its lost
    task, the pool raises ``BrokenProcessPool`` when a worker dies."""
    pending: deque = deque()
    for begin in range(0, len(items), chunksize):
        pending.append(pool.submit(_work_chunk, items[begin:begin + chunksize]))
        if len(pending) >= window:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _restart_hint(overwrite: bool) -> str:
    """How to continue, instead, an unfinished build that a build without ``resume`` is about to delete: by
    ``resume=True`` (``build_lmdb --resume``); the corpus builders (``build_corpus``, ``build_sr_corpus``,
    ``build_pose_corpus``) have no --resume and always resume unless ``--overwrite`` is given."""
    if overwrite:
        return (": overwrite=True (--overwrite) starts it over; to continue it instead, run the corpus builders "
                "(build_corpus, build_sr_corpus, build_pose_corpus) without --overwrite, or build_lmdb with --resume "
                "(resume=True)")
    return " (pass --resume (resume=True) to continue it instead)"


class _DatasetWriter:
    """Append-only sample writer on ``<out>.partial`` with resumable progress."""

    def __init__(self, out: Path, overwrite: bool, resume: bool, fingerprint: str,
                 map_size: int = 1 << 28):
        self.out = Path(out)
        self.partial = partial_path(out)
        self.writer = None
        self.lock = _OutputLock(self.out)  # before touching out or out.partial: a second run must not delete ours
        try:
            self._open(overwrite, resume, fingerprint, map_size)
        except BaseException:
            self.close()
            raise

    def _open(self, overwrite: bool, resume: bool, fingerprint: str, map_size: int) -> None:
        if is_complete_dataset(self.out):
            if not overwrite:
                raise FileExistsError(f"{self.out} already holds a complete dataset; pass overwrite=True "
                                      "(--overwrite) to replace it")
        elif self.out.is_dir() or self.out.exists():
            # finishing replaces OUT: never a folder of other files (the source folder, a run folder ...)
            entries = sorted(os.listdir(self.out)) if self.out.is_dir() else [self.out.name]
            foreign = [e for e in entries if e != REPORT_NAME]
            if not self.out.is_dir() or foreign:
                raise FileExistsError(
                    f"{self.out} exists and is not a lightface dataset ({', '.join(foreign[:3])}"
                    f"{' ...' if len(foreign) > 3 else ''}); it is never replaced: choose another output path")
        state = None
        if self.partial.exists():
            if resume:
                self.writer = LMDBWriter(self.partial, map_size)
                raw = self.writer.get(PROGRESS_KEY)
                state = json.loads(raw) if raw else None
                if state is not None and state.get("fingerprint") != fingerprint:
                    raise ValueError(
                        f"{self.partial} was started from a different source list or different options; "
                        "rerun with the original arguments, or pass overwrite=True (--overwrite) to start over")
                if state is None:
                    self.writer.close()
                    self.writer = None
            else:
                logger.warning("removing an unfinished build at %s%s", self.partial,
                               "" if fingerprint == "in-memory" else _restart_hint(overwrite))
            if state is None:
                shutil.rmtree(self.partial)
        elif resume:
            logger.info("nothing to resume at %s: starting a new build", self.partial)
        if state is None:
            self.writer = LMDBWriter(self.partial, map_size)
            state = {"fingerprint": fingerprint, "next": 0, "written": 0, "skipped": [],
                     "shapes": [], "attributes": [], "landmarks": False}
        self.state = state
        self.resumed_from = state["next"]
        self._items: List[Tuple[bytes, bytes]] = []
        self._labels: List[int] = []

    @property
    def written(self) -> int:
        return self.state["written"]

    def add(self, payload: bytes, label: int, shape, landmarks=None, attributes=None) -> None:
        st = self.state
        self._items.append((sample_key(st["written"] + len(self._labels)),
                            pack_record(payload, label, shape, landmarks, attributes)))
        self._labels.append(int(label))
        shape = list(shape)
        if shape not in st["shapes"] and len(st["shapes"]) < 2:
            st["shapes"].append(shape)
        for k in attributes or {}:
            if k not in st["attributes"]:
                st["attributes"].append(k)
        st["landmarks"] = st["landmarks"] or landmarks is not None

    def skip(self, name: str, reason: str) -> None:
        self.state["skipped"].append([name, reason])

    def commit(self, next_task: int) -> None:
        """Commit pending samples together with the progress (``next_task`` = first item not yet handled)."""
        st = self.state
        items = list(self._items)
        if self._labels:
            items.append((LABEL_CHUNK_PREFIX + sample_key(st["written"]),
                          np.asarray(self._labels, "<i8").tobytes()))
        new_state = dict(st, next=int(next_task), written=st["written"] + len(self._labels))
        items.append((PROGRESS_KEY, json.dumps(new_state).encode()))
        self.writer.put(items)
        self.state = new_state
        self._items, self._labels = [], []

    def finish(self, classes: Sequence[str], color: str, encoding: str, quality: Optional[int],
               alignment: Dict[str, Any], build: Dict[str, Any], report: Dict[str, Any],
               before_publish: Optional[Callable[[Path], None]] = None) -> Dict[str, Any]:
        """Write the metadata, then rename ``<out>.partial`` to ``out`` (replacing an old dataset).

        ``before_publish(partial)`` runs on the finished ``<out>.partial`` just before the rename,
        to add files that must appear together with the dataset (a report, CSVs)."""
        try:
            return self._finish(classes, color, encoding, quality, alignment, build, report, before_publish)
        finally:
            self.close()

    def discard(self) -> None:
        """Drop the partial build (one that cannot be resumed) and release the output lock."""
        try:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            shutil.rmtree(self.partial, ignore_errors=True)
        finally:
            self.lock.release()

    def _finish(self, classes, color, encoding, quality, alignment, build, report, before_publish=None) -> Dict[str, Any]:
        st = self.state
        chunk_keys = self.writer.keys_with_prefix(LABEL_CHUNK_PREFIX)
        labels = np.concatenate([np.frombuffer(self.writer.get(k), "<i8") for k in chunk_keys]) \
            if chunk_keys else np.zeros(0, "<i8")
        if len(labels) != st["written"]:
            raise RuntimeError(f"{self.partial}: {len(labels)} labels for {st['written']} samples (corrupt build)")
        shape = st["shapes"][0] if len(st["shapes"]) == 1 else None
        meta = make_metadata(count=st["written"], classes=classes, shape=shape, color=color,
                             encoding=encoding, quality=quality, has_landmarks=st["landmarks"],
                             attribute_keys=st["attributes"], alignment=alignment, build=build)
        self.writer.put([(META_KEY, json.dumps(meta).encode()), (LABELS_KEY, labels.tobytes())],
                        delete=[PROGRESS_KEY, *chunk_keys])
        self.writer.close()
        (self.partial / REPORT_NAME).write_text(json.dumps(report, indent=2))
        if before_publish is not None:
            before_publish(self.partial)
        old = None
        if self.out.exists():
            old = self.out.with_name(self.out.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.out, old)
        os.replace(self.partial, self.out)
        if old is not None:
            shutil.rmtree(old)
        failed_report_path(self.out).unlink(missing_ok=True)  # an earlier failure no longer describes OUT
        return meta

    def abandon(self, report: Dict[str, Any]) -> None:
        """Nothing was written: drop the partial build and write the report to :func:`_abandoned_report_path`
        (``out`` holds only the report, or stays the complete dataset it was)."""
        try:
            self._abandon(report)
        finally:
            self.close()

    def _abandon(self, report: Dict[str, Any]) -> None:
        self.writer.close()
        shutil.rmtree(self.partial)
        write_text_atomic(_abandoned_report_path(self.out), json.dumps(report, indent=2))

    def close(self) -> None:
        """Close the environment and release the output lock (the partial build stays for ``resume``)."""
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            self.lock.release()


def _already_complete(out: Path, src, plan: SourcePlan, items: Sequence[SourceItem], fp_opts: Dict[str, Any],
                      fingerprint: str, t0: float) -> Dict[str, Any]:
    """``resume`` of a build that already finished with these arguments: nothing to do (the
    summary of the finished dataset).

    The same arguments: the same items (paths, labels, landmarks: a list file of the same name
    with other lines is another build) and options, by the fingerprint stored with the dataset;
    a dataset built before the fingerprint was stored compares its source path, options and
    number of items (written + skipped).

    Raises:
        FileExistsError: ``out`` was built from something else (it is not the build being resumed).
    """
    meta = read_metadata(out)
    build = meta.get("build") or {}
    if "fingerprint" in build:
        same = build["fingerprint"] == fingerprint
    else:
        stored = str(build.get("source"))
        same = (stored == str(src) or os.path.realpath(stored) == os.path.realpath(src)) and \
            build.get("options") == fp_opts and meta["count"] + int(build.get("skipped", 0)) == len(items)
    if not same:
        raise FileExistsError(f"{out} is a complete dataset built from other images, labels, landmarks or options "
                              "than these; pass overwrite=True (--overwrite) to rebuild it, or choose another output")
    logger.info("%s is already complete (%d samples, %d classes): nothing to resume", out, meta["count"],
                meta["num_classes"])
    return {
        "out": str(out), "source": str(src), "source_kind": plan.kind, "total": len(items), "written": meta["count"],
        "skipped": int(build.get("skipped", 0)), "ignored": len(plan.ignored), "num_classes": meta["num_classes"],
        "seconds": round(time.perf_counter() - t0, 3), "images_per_second": None, "resumed_from": len(items),
        "report": str(out / REPORT_NAME), "ok": True, "nothing_to_do": True,
    }


def _check_counts(batch_size: int, workers: int = 0) -> None:
    """``batch_size >= 1`` and ``workers >= 0`` (named with their flags: a 0 batch divided by zero before)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size (--batch-size) must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
        raise ValueError(f"workers (--workers) must be an integer >= 0, got {workers!r}")


def _fingerprint(plan_items: Sequence[SourceItem], options: Dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for it in plan_items:
        h.update(json.dumps([it.ref, it.label, it.landmarks, it.attributes]).encode())
    return h.hexdigest()


def _version() -> str:
    try:
        import lightface

        return lightface.__version__
    except Exception:  # pragma: no cover - partially installed package
        return "unknown"


def build_lmdb(
    src,
    out,
    *,
    size: int = 144,
    color: str = "gray",
    encoding: str = "raw",
    quality: int = 95,
    template: str = "lightcnn_train",
    landmarks=None,
    fiducials=None,
    detect: Optional[str] = None,
    det_size: int = 640,
    det_threshold: float = 0.5,
    source_template: Optional[str] = None,
    resize: str = "crop",
    antialias: bool = False,
    align_method: str = "similarity",
    list_root=None,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
) -> Dict[str, Any]:
    """Build an LMDB dataset from a folder tree, a list file or an InsightFace RecordIO pair.

    Args:
        src: a folder with one sub-folder per identity (any depth; ``frontal``/``profile``
            folders add a ``pose`` attribute), a ``path label`` list file, or a
            ``train.rec``/``train.idx`` pair (folder, .rec or .idx).
        out: output dataset directory.
        size: crop side in pixels (144 = the Light CNN training crop).
        color: ``"gray"`` (ITU-R 601 luma, stored (H,W)) or ``"rgb"`` (stored BGR (H,W,3)).
        encoding, quality: ``"raw"`` (uncompressed pixels: no decoding when reading, the
            fastest for training; gray faces compress only ~1.7x with PNG), ``"png"``
            (lossless, smaller, slower to decode), ``"jpeg"`` or ``"webp"`` (lossy, ``quality``
            1-100; WebP the smallest).
        template: alignment template for images with landmarks (see
            :mod:`lightface.data.align`), scaled to ``size``.
        landmarks: a ``name x1 y1 ... x5 y5`` file; images are aligned with it (matched by
            the end of their relative path, :func:`lightface.data.sources.attach_landmarks`).
            Images without an entry, or whose name is ambiguous, are skipped unless ``detect``
            is given; images whose landmarks put more than :data:`MAX_OUTSIDE` of the crop
            outside the image are skipped.
        fiducials: a CFP ``Fiducials`` folder (``<id>/<pose>/NN.txt``, 30 points per image)
            matching a CFP ``Images`` tree given as ``src``: each image is aligned with the 5
            points :func:`lightface.data.pose_pairs.cfp_five_points` derives for its pose
            (its ``frontal``/``profile`` folder, also stored as the ``pose`` attribute).
            Images without a fiducial file are skipped unless ``detect`` is given.
        detect: a detector (:class:`lightface.data.detect.FaceDetector` model) used for
            images without landmarks; the main face (the largest, penalised by its distance
            from the image centre) is aligned, images without a face are skipped.
        det_size, det_threshold: detector input size and score threshold.
        source_template: the images are already aligned crops with this template (RecordIO
            sources default to the template lightface's export recorded beside them, else
            ``"arcface"``); they are re-aligned to ``template``.
        resize: for images with no landmarks/detector/source template: ``"crop"`` (centre
            square, resized to ``size``), ``"stretch"`` or ``"none"`` (keep the size).
        antialias: aligned faces larger than the crop are blurred to its resolution before
            the warp (:func:`lightface.data.align.align_face` ``antialias=True``) instead of
            point-sampled by the bilinear warp (aliased). Off by default: the shipped models'
            corpora were built without it.
        align_method: how a face is cropped from its landmarks (:func:`lightface.data.align.align_face`
            ``method``): ``"similarity"`` (default: the least-squares 5-point fit, how the shipped models'
            corpora were built) or ``"eyes"`` (the original Light CNN recipe: eyes level, eye midpoint and
            vertical eye-to-mouth distance exactly the template's; for fine-tuning an official release on
            crops like those it was trained on).
        list_root: root of relative paths in a list file (default: its folder).
        workers: processes that decode/align/encode in parallel (0 = in this process);
            output order does not depend on it.
        shuffle, seed: store the samples in a random order fixed by ``seed``.
        resume: continue an unfinished build of ``out`` (same arguments required); when
            ``out`` is already complete with these arguments (the same items and options, by
            the fingerprint stored in its metadata) there is nothing to do: its summary is
            returned (``nothing_to_do: True``).
        overwrite: replace an existing complete dataset at ``out``.
        batch_size: samples per LMDB commit.
        device: detector device (``"cpu"``, ``"cuda"``, ``"auto"``).
        progress: show a tqdm bar.
    Returns:
        summary dict: ``out``, ``written``, ``skipped``, ``ignored``, ``total``,
        ``num_classes``, ``seconds``, ``images_per_second``, ``resumed_from``, ``report``,
        ``ok`` (False when nothing was written).
    Raises:
        FileExistsError: ``out`` is a complete dataset and ``overwrite`` is False (with
            ``resume``: one built from other items or options).
        ValueError: bad options (``det_size`` / ``det_threshold`` out of range for the ``detect``
            detector included), or ``resume`` with different arguments.
        lightface.data.detect.DetectorError: ``detect`` names a detector file that is missing or
            not a 5-point face detector (refused before any work).
    """
    t0 = time.perf_counter()
    out = Path(out)
    _check_counts(batch_size=batch_size, workers=workers)
    plan: SourcePlan = open_source(src, landmarks=landmarks, list_root=list_root, fiducials=fiducials)
    if source_template is None and plan.source_template and not detect:
        source_template = plan.source_template
    opts = BuildOptions(size=int(size), color=color, encoding=encoding, quality=int(quality), template=template,
                        detect=str(detect) if detect else None, det_size=int(det_size),
                        det_threshold=float(det_threshold), source_template=source_template, resize=resize,
                        require_landmarks=landmarks is not None or fiducials is not None, antialias=bool(antialias),
                        align_method=align_method)
    opts.validate()
    items = list(plan.items)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(items))
        items = [items[i] for i in order]
    # no image has an entry (an image whose entry is ambiguous or malformed has one: it is skipped with the reason)
    unmatched = bool(items) and all(it.landmarks is None and it.no_landmarks is None for it in items)
    if landmarks is not None and not detect and unmatched:
        raise ValueError(f"no image under {src} matches a name in {landmarks}; names must match "
                         "the end of the image paths (e.g. 'name/name_0001.jpg')")
    if fiducials is not None and not detect and unmatched:
        raise ValueError(f"no image under {src} has a fiducial file in {fiducials}: give CFP's Images folder as the "
                         "source and its Fiducials folder (<id>/<frontal|profile>/NN.txt) as --fiducials")
    fp_opts = {**asdict(opts), "shuffle": bool(shuffle), "seed": int(seed) if shuffle else None}
    if not opts.antialias:  # the option's default leaves the record as it was before the option existed,
        del fp_opts["antialias"]  # so datasets built then still resume and count as complete
    if opts.align_method == "similarity":  # the same for the alignment method
        del fp_opts["align_method"]
    fingerprint = _fingerprint(items, {**fp_opts, "recordio": plan.rec_path})
    if resume and not overwrite and not partial_path(out).exists() and is_complete_dataset(out):
        return _already_complete(out, src, plan, items, fp_opts, fingerprint, t0)
    writer = _DatasetWriter(out, overwrite, resume, fingerprint)
    start = writer.resumed_from
    if start:
        logger.info("resuming %s at item %d of %d (%d samples already written)", writer.partial, start,
                    len(items), writer.written)
    todo = items[start:]
    pool = None
    try:
        if workers > 0 and todo:
            # fork starts workers in milliseconds (spawn re-imports the caller's main module);
            # the parent holds no detector session or open read transaction that they could inherit
            ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            single_threaded_opencv()
            pool = ProcessPoolExecutor(int(workers), mp_context=ctx, initializer=_init_worker,
                                       initargs=(opts, plan.rec_path, device))
            results = _in_order(pool, todo, chunksize=max(1, min(16, len(todo) // (4 * workers) or 1)),
                                window=4 * int(workers))
        else:
            _init_worker(opts, plan.rec_path, device)
            results = map(_work, todo)
        bar = tqdm(total=len(items), initial=start, disable=not progress, unit="img", desc=f"build {out.name}")
        for i, (item, res) in enumerate(zip(todo, results), start):
            if res[0] == "ok":
                _, payload, shape, crop_lm = res
                attrs = dict(item.attributes)
                attrs["source"] = item.name
                writer.add(payload, item.label, shape, crop_lm, attrs)
            else:
                writer.skip(item.name, res[1])
            bar.update(1)
            if (i + 1 - start) % batch_size == 0:
                writer.commit(i + 1)
        writer.commit(len(items))
        bar.close()
    except BrokenProcessPool as err:
        writer.close()
        raise WorkerDiedError(
            f"building {out}: a --workers process died (killed by the system, e.g. out of memory; a crash in native "
            f"code; or an error in its set-up, printed above); the samples committed so far are kept in "
            f"{writer.partial}: run the same command "
            + ("again" if resume else "with --resume (resume=True)")  # the corpus builders always resume
            + " to continue (fewer --workers need less memory)") from err
    except BaseException:
        writer.close()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.perf_counter() - t0
    st = writer.state
    summary = {
        "out": str(out),
        "source": str(src),
        "source_kind": plan.kind,
        "total": len(items),
        "written": st["written"],
        "skipped": len(st["skipped"]),
        "ignored": len(plan.ignored),
        "num_classes": len(plan.classes),
        "seconds": round(elapsed, 3),
        "images_per_second": round((len(items) - start) / elapsed, 2) if elapsed > 0 else None,
        "resumed_from": start,
        "report": str(out / REPORT_NAME),
        "ok": st["written"] > 0,
    }
    report = {
        "summary": summary,
        "skipped": [{"source": n, "reason": r} for n, r in st["skipped"]],
        "ignored": [{"source": n, "reason": r} for n, r in plan.ignored],
    }
    alignment = {
        "template": template if (st["landmarks"]) else None,
        "size": int(size),
        "method": ("landmarks" if landmarks is not None else "cfp_fiducials" if fiducials is not None else
                   "detect" if detect else "source_template" if source_template else "none"),
        "detector": str(detect) if detect else None,
        "source_template": source_template,
        "resize": None if st["landmarks"] else resize,
    }
    if st["landmarks"] and opts.align_method != "similarity":  # recorded when not the default, so that datasets
        alignment["align_method"] = opts.align_method  # built before the option still merge (relabel) with new ones
    build = {"source": str(src), "source_kind": plan.kind, "options": fp_opts, "fingerprint": fingerprint,
             "skipped": len(st["skipped"]),
             "lightface_version": _version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if st["written"] == 0:
        kept = is_complete_dataset(out)
        summary["report"] = str(_abandoned_report_path(out))
        writer.abandon(report)
        logger.error("nothing could be written from %s: %d items skipped, %d ignored (see %s for the reasons)%s",
                     src, len(st["skipped"]), len(plan.ignored), summary["report"],
                     f"; the complete dataset {out} is kept as it was" if kept else "")
        return summary
    writer.finish(plan.classes, color, encoding, quality, alignment, build, report)
    logger.info("wrote %d samples (%d classes) to %s; %d skipped, %d ignored (%s)", st["written"],
                len(plan.classes), out, len(st["skipped"]), len(plan.ignored), summary["report"])
    return summary


def write_lmdb(
    out,
    samples: Iterable[Dict[str, Any]],
    classes: Sequence[str],
    *,
    encoding: str = "raw",
    quality: int = 95,
    overwrite: bool = False,
    alignment: Optional[Dict[str, Any]] = None,
    build_info: Optional[Dict[str, Any]] = None,
    batch_size: int = 512,
    progress: bool = False,
    before_publish: Optional[Callable[[Path], None]] = None,
) -> Dict[str, Any]:
    """Write a dataset from in-memory samples (e.g. a relabelled copy of another dataset).

    Args:
        out: dataset directory (written to ``<out>.partial``, renamed when complete).
        samples: iterable of dicts with ``label`` (int in ``[0, len(classes))``) and either
            ``image`` (uint8 gray (H,W) or BGR (H,W,3)) or ``encoded`` (bytes already in
            ``encoding``) plus ``shape``; optional ``landmarks`` (5,2) and ``attributes``
            (str -> str). :meth:`LMDBDataset.record` returns dicts of this form, so
            records can be copied without re-encoding.
        classes: class names; ``len(classes)`` is the number of classes.
        encoding, quality: payload encoding of the images (and of ``encoded`` inputs).
        overwrite: replace an existing complete dataset.
        alignment, build_info: stored in the metadata (``alignment``, ``build``).
        before_publish: called with ``<out>.partial`` once the dataset in it is complete, before
            the rename to ``out``: files it writes there appear together with the dataset.
    Returns:
        summary dict with ``out``, ``written``, ``seconds``.

    A failure (or an interrupt) removes ``<out>.partial``: an in-memory write cannot be resumed.
    """
    t0 = time.perf_counter()
    _check_counts(batch_size=batch_size)
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    out = Path(out)
    writer = _DatasetWriter(out, overwrite, False, "in-memory")
    colors = set()
    n_classes = len(classes)
    try:
        for i, s in enumerate(tqdm(samples, disable=not progress, unit="img", desc=f"write {out.name}")):
            label = int(s["label"])
            if not 0 <= label < n_classes:
                raise ValueError(f"sample {i}: label {label} outside [0, {n_classes})")
            if "encoded" in s:
                if s.get("encoding", encoding) != encoding:
                    raise ValueError(f"sample {i} is encoded as {s['encoding']} but the dataset is written as "
                                     f"{encoding}; pass encoding={s['encoding']!r} or give 'image' instead")
                payload, shape = bytes(s["encoded"]), list(s["shape"])
            else:
                img = np.asarray(s["image"])
                payload, shape = encode_image(img, encoding, quality), list(img.shape)
            colors.add("gray" if len(shape) == 2 else "rgb")
            if len(colors) > 1:
                raise ValueError(f"sample {i} is {'gray (H,W)' if len(shape) == 2 else 'colour (H,W,3)'} but the "
                                 "samples before it are not; convert the images to one kind")
            writer.add(payload, label, shape, s.get("landmarks"), s.get("attributes"))
            if (i + 1) % batch_size == 0:
                writer.commit(i + 1)
        writer.commit(writer.written)
    except BaseException:
        writer.discard()
        raise
    summary = {"out": str(out), "written": writer.written, "seconds": round(time.perf_counter() - t0, 3)}
    if writer.written == 0:
        writer.abandon({"summary": summary, "skipped": [], "ignored": []})
        raise ValueError(f"write_lmdb({out}): no samples given")
    build = {"source": "write_lmdb", **(build_info or {}), "lightface_version": _version(),
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        writer.finish(classes, colors.pop(), encoding, quality, alignment or {"template": None}, build,
                      {"summary": summary, "skipped": [], "ignored": []}, before_publish=before_publish)
    except BaseException:
        writer.discard()
        raise
    return summary


def verify_lmdb(path, progress: bool = True) -> Dict[str, Any]:
    """Decode every record of a dataset and check count, labels, shapes and landmarks.

    Returns:
        ``{"ok": bool, "count": int, "checked": int, "num_classes": int, "errors": [str, ...]}``
        (at most 100 errors listed; ``error_count`` has the total).
    Raises:
        FileNotFoundError / LMDBFormatError: not a complete, supported dataset.
    """
    meta = read_metadata(path)
    enc, shape = meta["image"]["encoding"], meta["image"]["shape"]
    n, k = meta["count"], meta["num_classes"]
    errors: List[str] = []
    checked = 0
    env = open_readonly(path)
    with env.begin() as txn:
        raw = txn.get(LABELS_KEY)
        labels = np.frombuffer(raw, "<i8") if raw is not None else None
        if labels is None or len(labels) != n:
            errors.append(f"label array has {0 if labels is None else len(labels)} entries, metadata count is {n}")
        stats = txn.stat()
        if stats["entries"] != n + 2:
            errors.append(f"{stats['entries']} keys, expected {n} samples + metadata + labels")
        for i in tqdm(range(n), disable=not progress, unit="img", desc="verify"):
            rec = txn.get(sample_key(i))
            if rec is None:
                errors.append(f"sample {i}: missing")
                continue
            try:
                header, payload = unpack_record(rec)
                img = decode_payload(payload, enc, header["shape"])
            except Exception as err:
                errors.append(f"sample {i}: {err}")
                continue
            checked += 1
            lab = header.get("label")
            if not isinstance(lab, int) or not 0 <= lab < k:
                errors.append(f"sample {i}: label {lab!r} outside [0, {k})")
            if labels is not None and i < len(labels) and labels[i] != lab:
                errors.append(f"sample {i}: record label {lab} != label array {labels[i]}")
            if list(img.shape) != header["shape"] or (shape is not None and list(img.shape) != shape):
                errors.append(f"sample {i}: decoded shape {list(img.shape)}, expected {header['shape']}")
            if meta.get("landmarks") and "landmarks" not in header:
                errors.append(f"sample {i}: no landmarks although the metadata says so")
    return {"ok": not errors, "count": n, "checked": checked, "num_classes": k,
            "error_count": len(errors), "errors": errors[:100]}

