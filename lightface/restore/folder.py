"""Batch restoration of image files and folders, with GFPGAN/CodeFormer-style outputs.

Generic over the restorer: :func:`restore_paths` takes a callable that turns one image into
a :class:`RestoreResult` (the whole restored image and/or the per-face crops), so the same
driver serves super-resolution and frontalization. Each input gets an output ``NAME`` (see
:func:`output_names`: its path without extension, relative to the folder given, or to the
common folder of several inputs, so ``a/x.jpg`` and ``b/x.jpg`` become ``a/x`` and ``b/x``;
``face.jpg`` and ``face.png`` in one folder become ``face_jpg`` and ``face_png``), and it
writes (under ``outdir``):

* ``cropped_faces/NAME_00.png``: the face crops given to the restorer;
* ``restored_faces/NAME_00{suffix}.png``: the restored face crops;
* ``cmp/NAME_00.png``: input crop (resized to the output) | restored crop, side by side;
* ``restored_imgs/NAME{suffix}.{ext}``: the whole restored image (when the restorer gives one).

:func:`restore_paths` walks a folder with its sub-folders (``recursive=False``: its own images
only, and a warning counts the images below); a sub-folder's images keep their path in the
names (``sub/x.jpg`` -> ``restored_imgs/sub/x.jpg``). Files whose extension is not an image's
(:data:`lightface.data.io.IMAGE_EXTENSIONS`) are left out, counted in one log line.

Unreadable files, images that are too small or too large, and restorer errors (an OpenCV
error included) are skipped and reported (``summary["skipped"]``); the run never stops halfway
through a folder. Gray inputs are restored as colour; RGBA inputs keep their alpha channel
(resized to the output) when written as PNG.

With a ``run_key`` (the pipelines pass their settings), a run journals each finished input
in ``OUTDIR/.progress.jsonl``: the same command after a crash, a kill or Ctrl-C skips the
inputs already done and returns the whole summary; the journal is removed when the run
ends. A journal written with other settings is ignored (that run starts over), and an input
whose file changed since it was journalled (size or modification time) is restored again.
"""
import json
import logging
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from ..data.folders import folder_images, image_files
from ..data.io import (IMAGE_EXTENSIONS, JPEG_EXTENSIONS, ImageReadError, decode_unchanged, log_left_out,
                       opencv_error_text, read_file_bytes, write_image)
from ..utils.atomic_write import atomic_file
from ..utils.output_names import unique_output_names

__all__ = ["RestoreResult", "list_images", "output_names", "load_image_with_alpha", "side_by_side", "restore_paths",
           "nothing_restored", "check_batch_size"]

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


@dataclass
class RestoreResult:
    """What a restorer returns for one image (all uint8 BGR).

    image: the whole restored image (H', W', 3), or None (face-only restorers, aligned mode).
    crops: the input face crops, one per face.
    faces: the restored face crops, same order as ``crops``.
    notes: messages for the report (e.g. "no face detected").
    """

    image: Optional[np.ndarray] = None
    crops: List[np.ndarray] = field(default_factory=list)
    faces: List[np.ndarray] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


@dataclass
class _Found:
    """What :func:`_collect` found: ``pairs`` ``[(image, the folder given that it was found in, or None for a
    file given directly)]``; ``other_files``: files of the folders walked left out for their extension;
    ``subfolders``: the sub-folders a walk without ``recursive`` did not enter (nor count the images of)."""

    pairs: List[Tuple[Path, Optional[Path]]]
    other_files: List[Path]
    subfolders: List[Path]


def _collect(inputs: Union[PathLike, Sequence[PathLike]], recursive: bool) -> _Found:
    """The images of files and/or folders, sorted per input, no duplicates (see :class:`_Found`)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found, seen = _Found([], [], []), set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():  # without recursive, one listing of the folder: its sub-folders are not walked
            images = (image_files(p, found.other_files) if recursive
                      else folder_images(p, found.other_files, found.subfolders))
            pairs = [(q, p) for q in images]
        elif p.is_file():
            pairs = [(p, None)]
        else:
            raise FileNotFoundError(f"input not found: {p}")
        for q, base in pairs:
            key = os.path.abspath(q)
            if key not in seen:  # the same file given twice (a file inside a folder also given) is restored once
                seen.add(key)
                found.pairs.append((q, base))
    if not found.pairs:  # an error: worth walking the sub-folders to say what they hold
        nested = [q for d in found.subfolders for q in image_files(d)]
        hints = "".join([f"; {len(nested)} image(s) lie in sub-folders, e.g. {nested[0]} (walk them: "
                         "recursive=True, the CLIs' default)" if nested else "",
                         f"; {len(found.other_files)} other file(s), e.g. {found.other_files[0]}"
                         if found.other_files else ""])
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}"
                                + hints)
    return found


def list_images(inputs: Union[PathLike, Sequence[PathLike]], recursive: bool = False) -> List[Path]:
    """Image files from files and/or folders (folders: their image files, sorted; sub-folders too with ``recursive``).

    Folders are walked by :func:`lightface.data.folders.image_files`, as every folder walk of lightface: symlinked
    sub-folders followed (each real folder once), hidden files and folders left out; a FIFO or device with an
    image's name is listed, and reported as skipped when it is read.

    Raises:
        FileNotFoundError: a path does not exist, or nothing with an image extension was found (the message
            counts the images in sub-folders a walk without ``recursive`` left out, and the other files).
    """
    return [p for p, _ in _collect(inputs, recursive).pairs]


def _named(pairs: Sequence[Tuple[Path, Optional[Path]]]) -> List[Tuple[Path, str]]:
    """``[(path, unique output name)]`` of :func:`_collect`'s pairs (see :func:`output_names`)."""
    names = unique_output_names([p for p, _ in pairs], [base if base is not None else p.parent for p, base in pairs])
    return [(p, name) for (p, _), name in zip(pairs, names)]


def output_names(inputs: Union[PathLike, Sequence[PathLike]], recursive: bool = False) -> List[Tuple[Path, str]]:
    """The images of ``inputs`` (as :func:`list_images`) with a unique output name each.

    A name is the image's path without extension, ``/``-separated, relative to the folder
    given when ``inputs`` is one folder, else to the common folder of all inputs (a file
    given directly counts as its own folder): ``-i a b`` names ``a/x.jpg`` and ``b/x.jpg``
    ``a/x`` and ``b/x``. Images whose names would still be equal (``face.jpg`` and
    ``face.png``) get their extension appended (``face_jpg``, ``face_png``); any clash
    left after that gets ``_2``, ``_3``... in input order. The same inputs always give the
    same names.

    Returns:
        ``[(path, name)]`` in input order.
    """
    return _named(_collect(inputs, recursive).pairs)


def load_image_with_alpha(path: PathLike):
    """Read ``path`` -> ``(bgr uint8 (H, W, 3), alpha uint8 (H, W) or None, was_gray)``, upright.

    An EXIF orientation is applied (the written result carries no EXIF, so it must be
    upright itself); gray images are expanded to 3 channels; 16-bit images are scaled to
    8 bits; the alpha channel of RGBA images is returned separately (the colour is not
    premultiplied).
    Raises :class:`~lightface.data.io.ImageReadError` for unreadable files.
    """
    path = Path(path)
    try:
        data = read_file_bytes(path)  # regular files only: a FIFO must not block
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror or err})") from err
    img = decode_unchanged(data, str(path))
    alpha, gray = None, False
    if img.ndim == 2:
        gray = True
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        alpha = img[:, :, 3].copy()
        img = np.ascontiguousarray(img[:, :, :3])
    return img, alpha, gray


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left`` resized (nearest, so its pixels stay visible) to ``right``'s size, then ``[left | right]``."""
    h, w = right.shape[:2]
    if left.shape[:2] != (h, w):
        left = cv2.resize(left, (w, h), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([left, right], axis=1)


def settings_key(args: Any, weights_sha256: Optional[str] = None) -> str:
    """A restore run's ``run_key``: every command-line setting except where it runs and writes, plus the
    weights' sha256 (the shipped default can change between versions)."""
    skip = {"output", "device", "batch_size"}
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in skip}
    return json.dumps({"settings": settings, "weights_sha256": weights_sha256}, sort_keys=True)


def _stamp(path: PathLike) -> Optional[List[int]]:
    """An input file's ``[size, mtime_ns]`` (None when it cannot be read): the journal's test of "unchanged"."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class _Journal:
    """``OUTDIR/.progress.jsonl``: a header line ``{"key": run_key}``, then one line per finished input
    (``{"kind": "processed" | "skipped", "entry": {...}, "stamp": [size, mtime_ns]}``), appended and synced
    to disk one by one. ``stamps`` holds this run's inputs' stamps (:func:`_stamp`)."""

    def __init__(self, outdir: Path, key: str, stamps: Dict[str, Optional[List[int]]]):
        self.path, self.key, self.stamps = outdir / ".progress.jsonl", key, stamps

    def load(self) -> List[Tuple[str, Dict]]:
        """The entries of an earlier run with the same key whose inputs are among this run's and unchanged
        ([] when there is none or it had other settings)."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            if json.loads(lines[0]).get("key") != self.key:
                log.warning("%s was written with other settings: this run starts over", self.path)
                return []
        except (IndexError, ValueError):
            return []
        entries, changed = [], 0
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except ValueError:  # the line being written when the run was killed
                break
            path = record["entry"]["input"]
            if path not in self.stamps:
                continue
            if self.stamps[path] is None or record.get("stamp") != self.stamps[path]:
                changed += 1
                continue
            entries.append((record["kind"], record["entry"]))
        if changed:
            log.info("%d input(s) changed since the interrupted run: restoring them again", changed)
        return entries

    def start(self, entries: List[Tuple[str, Dict]]) -> None:
        with atomic_file(self.path, "w", encoding="utf-8") as f:
            f.write(json.dumps({"key": self.key}) + "\n")
            f.writelines(self._line(k, e) for k, e in entries)

    def append(self, kind: str, entry: Dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(self._line(kind, entry))
            f.flush()
            os.fsync(f.fileno())

    def _line(self, kind: str, entry: Dict) -> str:
        return json.dumps({"kind": kind, "entry": entry, "stamp": self.stamps.get(entry["input"])}) + "\n"


#: the sub-folders of ``outdir`` that :func:`restore_paths` writes
OUTPUT_FOLDERS = ("cropped_faces", "restored_faces", "cmp", "restored_imgs")


def _outside_outputs(pairs: List[Tuple[Path, Optional[Path]]], out: Path) -> List[Tuple[Path, Optional[Path]]]:
    """``pairs`` without the earlier results that a folder walk found in ``out``'s output folders (``-o`` inside
    ``-i``: logged); ValueError when an input given directly, or a folder given, lies in them, where a restored
    file of the same name would replace it (e.g. ``-i OUT/restored_imgs -o OUT``, a second pass over results)."""
    folders = [os.path.realpath(out / name) + os.sep for name in OUTPUT_FOLDERS]

    def among_outputs(path: Path) -> bool:
        return any((os.path.realpath(path) + os.sep).startswith(f) for f in folders)

    inside = [(p, base) for p, base in pairs if among_outputs(p)]
    given = [p for p, base in inside if base is None or among_outputs(base)]
    if given:
        raise ValueError(f"{len(given)} input(s) lie in the output folders of {out} ({given[0]} ...), whose "
                         "restored files could replace them; choose an output folder (-o) that does not hold the "
                         "inputs, e.g. a new one")
    if inside:
        log.info("left out %d earlier result(s) in the output folders of %s, e.g. %s", len(inside), out, inside[0][0])
    results = set(inside)
    return [pair for pair in pairs if pair not in results]


def restore_paths(
    inputs: Union[PathLike, Sequence[PathLike]],
    outdir: PathLike,
    restore: Callable[[np.ndarray], RestoreResult],
    suffix: Optional[str] = None,
    ext: str = "auto",
    min_size: int = 8,
    max_pixels: int = 40_000_000,
    save_crops: bool = True,
    show_progress: bool = True,
    run_key: Optional[str] = None,
    recursive: bool = True,
) -> Dict[str, List[Dict]]:
    """Run ``restore`` on every image in ``inputs`` and write the outputs under ``outdir``.

    Args:
        inputs: files and/or folders (see :func:`list_images`); a folder's files whose extension is not an
            image's are left out and counted in the log.
        outdir: output root (created).
        restore: ``bgr uint8 (H, W, 3) -> RestoreResult``.
        suffix: appended to restored file names (``NAME_00{suffix}.png``); None adds nothing.
        ext: extension of ``restored_imgs`` files: ``"auto"`` (the input's; PNG for inputs with
            alpha), ``"png"`` or ``"jpg"``.
        min_size: inputs with a side shorter than this are skipped.
        max_pixels: inputs with more pixels than this are skipped (memory safety; resize them first).
        save_crops: also write ``cropped_faces/``.
        run_key: the run's settings as a string: journal the progress and continue an interrupted
            run with the same key (see the module doc); None: no journal.
        recursive: restore the images in the folders' sub-folders too (outputs keep their relative
            paths: ``a/b/x.jpg`` -> ``restored_imgs/a/b/x.jpg``), except earlier results in ``outdir``'s
            output folders; False: only the folders' own images (a warning counts those left out).
    Returns:
        ``{"processed": [{"input", "name", "faces", "outputs", "notes"}...], "skipped": [{"input", "reason"}...]}``
        (``name``: the input's output name, see :func:`output_names`).
    Raises:
        ValueError: an input lies in one of ``outdir``'s output folders (``restored_imgs/`` ...), where an output
            could replace it; nothing is written.
    """
    if ext not in ("auto", "png", "jpg"):
        raise ValueError(f"ext must be 'auto', 'png' or 'jpg', got {ext!r}")
    found = _collect(inputs, recursive)
    out = Path(outdir)
    named = _named(_outside_outputs(found.pairs, out))
    log_left_out(log, ", ".join(map(str, [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)),
                 found.other_files)
    if found.subfolders:
        log.warning("left out %d sub-folder(s), e.g. %s, unwalked: recursive=False (the CLIs: --no-recursive)",
                    len(found.subfolders), found.subfolders[0])
    out.mkdir(parents=True, exist_ok=True)
    sfx = f"_{suffix}" if suffix else ""
    summary: Dict[str, List[Dict]] = {"processed": [], "skipped": []}
    journal = _Journal(out, run_key, {str(p): _stamp(p) for p, _ in named}) if run_key is not None else None
    done = set()
    if journal is not None:
        earlier = journal.load()
        for kind, entry in earlier:
            summary[kind].append(entry)
            done.add(entry["input"])
        if done:
            log.info("continuing an interrupted run: %d of %d inputs were done (%s)", len(done), len(named),
                     journal.path)
        journal.start(earlier)

    def finish(kind: str, entry: Dict) -> None:
        summary[kind].append(entry)
        if journal is not None:
            journal.append(kind, entry)

    for path, name in tqdm(named, desc="restore", unit="img", disable=not show_progress):
        if str(path) in done:
            continue
        try:
            img, alpha, gray = load_image_with_alpha(path)
        except ImageReadError as err:
            finish("skipped", {"input": str(path), "reason": str(err)})
            log.warning("skipped %s", err)
            continue
        h, w = img.shape[:2]
        reason = None
        if min(h, w) < min_size:
            reason = f"image too small ({w}x{h} < {min_size} px)"
        elif h * w > max_pixels:
            reason = f"image too large ({w}x{h} > {max_pixels} pixels); downscale it first"
        if reason is None:
            try:
                result = restore(img)
            except (ValueError, RuntimeError) as err:  # a bad image must not stop the folder
                reason = f"{type(err).__name__}: {err}"
            except cv2.error as err:  # nor an OpenCV function that fails on it
                reason = opencv_error_text(err)
        if reason is not None:
            finish("skipped", {"input": str(path), "reason": reason})
            log.warning("skipped %s: %s", path, reason)
            continue
        notes = list(result.notes) + (["gray input restored as colour"] if gray else [])
        outputs = []
        for i, face in enumerate(result.faces):
            stem = f"{name}_{i:02d}"
            outputs.append(str(write_image(out / "restored_faces" / f"{stem}{sfx}.png", face)))
            if i < len(result.crops):
                if save_crops:
                    outputs.append(str(write_image(out / "cropped_faces" / f"{stem}.png", result.crops[i])))
                outputs.append(str(write_image(out / "cmp" / f"{stem}{sfx}.png", side_by_side(result.crops[i], face))))
        if result.image is not None:
            whole = result.image
            out_ext = path.suffix.lower().lstrip(".") if ext == "auto" else ext
            if out_ext not in ("png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff"):
                out_ext = "jpg" if f".{out_ext}" in JPEG_EXTENSIONS else "png"
            if alpha is not None:
                if ext == "auto":
                    out_ext = "png"
                if out_ext == "png":
                    a = cv2.resize(alpha, (whole.shape[1], whole.shape[0]), interpolation=cv2.INTER_LINEAR)
                    whole = np.dstack([whole, a])
                else:
                    notes.append("alpha channel dropped (JPEG output)")
            outputs.append(str(write_image(out / "restored_imgs" / f"{name}{sfx}.{out_ext}", whole)))
        for note in notes:
            log.info("%s: %s", path.name, note)
        finish("processed", {"input": str(path), "name": name, "faces": len(result.faces), "outputs": outputs,
                             "notes": notes})
    if journal is not None:
        journal.path.unlink(missing_ok=True)
    log.info("restored %d image(s), skipped %d", len(summary["processed"]), len(summary["skipped"]))
    return summary


def nothing_restored(summary: Dict[str, List[Dict]], outdir: PathLike) -> str:
    """The message for a :func:`restore_paths` run in which every input was skipped."""
    n = len(summary["skipped"])
    reasons = "; ".join(f"{Path(s['input']).name}: {s['reason']}" for s in summary["skipped"][:3])
    return (f"nothing was restored: all {n} input(s) were skipped (reasons in {Path(outdir) / 'summary.json'})"
            + (f": {reasons}" if reasons else ""))


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` when it is an integer >= 1, else ``ValueError`` naming ``--batch-size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size (--batch-size) must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def iter_batches(items: Sequence, batch_size: int) -> Iterable[Sequence]:
    """Consecutive slices of ``items`` of at most ``batch_size`` (checked eagerly by the callers)."""
    check_batch_size(batch_size)
    for i in range(0, len(items), batch_size):
        yield items[i : i + batch_size]
