"""Where dataset images come from: folder trees, list files, InsightFace RecordIO, landmark files.

Every source becomes a :class:`SourcePlan`: an ordered list of :class:`SourceItem` (what
to read, its integer label, optional 5-point landmarks and string attributes) plus the
class names. Nothing is decoded here; :mod:`lightface.data.build` does that.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.templates import TEMPLATES
from .folders import log_problem as _log_problem, walk_folders
from .io import has_image_extension
from .recordio import RecordIOReader, insightface_image_indices, read_sidecar, sidecar_path, unpack_irecord
from .lmdb_format import is_lmdb_dir

__all__ = [
    "POSE_TAGS",
    "SourceItem",
    "SourcePlan",
    "scan_folder",
    "read_list_lines",
    "read_list_file",
    "scan_recordio",
    "read_landmarks_file",
    "attach_landmarks",
    "attach_cfp_fiducials",
    "open_source",
    "natural_key",
]

logger = logging.getLogger(__name__)

#: folder names that carry a pose tag instead of an identity (CFP: ``<id>/frontal``, ``<id>/profile``)
POSE_TAGS = ("frontal", "profile")


@dataclass(frozen=True)
class SourceItem:
    """One sample to build.

    Attributes:
        ref: absolute file path, or ``"rec:<byte offset>"`` inside the plan's RecordIO file.
        label: integer class index.
        name: how the sample is named in reports and the ``source`` attribute (path relative
            to the source root, or ``train.rec#<index>``).
        landmarks: 10 floats ``x1 y1 ... x5 y5`` in source-image pixels, or None.
        attributes: sorted ``(key, value)`` string pairs (e.g. ``("pose", "profile")``).
        no_landmarks: why an item that has an entry in the landmarks file or fiducials folder
            got no landmarks (an unusable fiducial file, an ambiguous landmarks name): the
            reason the build reports when it skips the item; None otherwise.
    """

    ref: str
    label: int
    name: str
    landmarks: Optional[Tuple[float, ...]] = None
    attributes: Tuple[Tuple[str, str], ...] = ()
    no_landmarks: Optional[str] = None


@dataclass
class SourcePlan:
    """An ordered list of items, the class names, and files that were not considered images.

    ``ignored`` holds ``(name, reason)`` for files left out before decoding (other file
    types, images outside identity folders, list lines that cannot be parsed).
    ``source_template`` names the alignment the images already have (``"arcface"`` for
    InsightFace RecordIO, the exported template for lightface's own), or None.
    """

    kind: str
    root: Path
    items: List[SourceItem]
    classes: List[str]
    ignored: List[Tuple[str, str]] = field(default_factory=list)
    rec_path: Optional[str] = None
    idx_path: Optional[str] = None
    source_template: Optional[str] = None


def natural_key(text: str):
    """Sort key that orders ``s2`` before ``s10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def scan_folder(root, pose_tags: Sequence[str] = POSE_TAGS) -> SourcePlan:
    """One folder per identity, at any depth: the class of an image is the path of its
    folder relative to ``root``; a folder named after a pose tag (``frontal``/``profile``)
    adds ``pose=<tag>`` and the class is its parent folder. Hidden files are left out.

    Symlinked folders are followed, each real folder once (:func:`walk_folders`): a folder
    already scanned (a symlink loop such as ``a/b -> ..``, or a second link to the same
    folder) is left out and listed in ``ignored``. Only regular files are taken (``os.stat`` follows
    symlinks): FIFOs, sockets, devices, broken or self-referencing symlinks are listed in
    ``ignored`` with the reason, never opened.

    Returns:
        plan with classes in natural sort order and items sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"source folder not found: {root}")
    found: List[Tuple[str, str, Path, Tuple[Tuple[str, str], ...]]] = []
    ignored: List[Tuple[str, str]] = []

    def problem(rel: str, reason: str) -> None:
        _log_problem(rel, reason)
        ignored.append((rel, reason))

    for dirpath, _, filenames in walk_folders(root, problem):
        rel_dir = Path(dirpath).relative_to(root)
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            path = Path(dirpath) / fname
            rel = (rel_dir / fname).as_posix()
            if not has_image_extension(path):
                ignored.append((rel, f"not an image extension ({path.suffix or 'none'})"))
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as err:  # broken symlink, symlink loop, permissions
                problem(rel, f"cannot read: {err.strerror or err}")
                continue
            if not stat.S_ISREG(mode):
                problem(rel, "not a regular file (FIFO, socket or device); not read")
                continue
            parts = rel_dir.parts
            attrs: Tuple[Tuple[str, str], ...] = ()
            if parts and parts[-1].lower() in pose_tags:
                attrs = (("pose", parts[-1].lower()),)
                parts = parts[:-1]
            if not parts:
                ignored.append((rel, "image is not inside an identity folder"))
                continue
            found.append((Path(*parts).as_posix(), rel, path, attrs))
    classes = sorted({c for c, *_ in found}, key=natural_key)
    index = {c: i for i, c in enumerate(classes)}
    items = [SourceItem(os.path.realpath(path), index[c], rel, None, attrs)
             for c, rel, path, attrs in sorted(found, key=lambda f: natural_key(f[1]))]
    return SourcePlan("folder", root, items, classes, ignored)


def read_list_lines(list_path, instead: str) -> List[str]:
    """The lines of the UTF-8 text list file ``list_path``. An image or other binary file given
    where a list is expected raises ``ValueError`` naming it and saying what to give ``instead``."""
    list_path = Path(list_path)
    try:
        return list_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        kind = "an image file" if has_image_extension(list_path) else "a binary file (not UTF-8 text)"
        raise ValueError(f"{list_path} is {kind}, not a text list file; give {instead}") from None


def read_list_file(list_path, root=None) -> SourcePlan:
    """A Light CNN list file: one ``path label`` line per image (``#`` comments allowed;
    the path may contain spaces, the label is the last column). Paths are relative to
    ``root`` (default: the list file's folder). Integer labels are used as given (classes
    ``"0" .. str(max)``); other labels are names mapped to indices in natural sort order.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"list file not found: {list_path}")
    root = Path(root) if root is not None else list_path.parent
    rows: List[Tuple[str, str]] = []
    ignored: List[Tuple[str, str]] = []
    instead = "a list file of 'path label' lines, a folder of identity folders, or a train.rec/.idx"
    for lineno, line in enumerate(read_list_lines(list_path, instead), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.rsplit(None, 1)
        if len(cols) != 2:
            ignored.append((f"{list_path.name}:{lineno}", f"expected 'path label', got {line!r}"))
            continue
        rows.append((cols[0], cols[1]))
    if all(re.fullmatch(r"-?\d+", lab) for _, lab in rows):
        labels = [int(lab) for _, lab in rows]
        if labels and min(labels) < 0:
            raise ValueError(f"{list_path}: negative label {min(labels)}; labels must be 0-based class indices")
        classes = [str(i) for i in range(max(labels) + 1)] if labels else []
    else:
        classes = sorted({lab for _, lab in rows}, key=natural_key)
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[lab] for _, lab in rows]
    items = []
    for (rel, _), lab in zip(rows, labels):
        path = Path(rel) if os.path.isabs(rel) else root / rel
        # realpath, not Path.resolve: a self-referencing symlink must become a skipped item, not a RuntimeError
        items.append(SourceItem(os.path.realpath(path), lab, Path(rel).as_posix()))
    return SourcePlan("list", root, items, classes, ignored)


def _find_rec_pair(path: Path) -> Tuple[Path, Path]:
    if path.is_dir():
        rec, idx = path / "train.rec", path / "train.idx"
    elif path.suffix == ".idx":
        rec, idx = path.with_suffix(".rec"), path
    else:
        rec, idx = path, path.with_suffix(".idx")
    for p in (rec, idx):
        if not p.is_file():
            raise FileNotFoundError(f"RecordIO source needs both {rec.name} and {idx.name}; missing {p}")
    return rec, idx


def _recordio_template(rec, info: Optional[dict]) -> Optional[str]:
    """The alignment template of the crops in the RecordIO file ``rec``: the ``template`` its
    lightface sidecar ``info`` records (:func:`lightface.data.recordio.read_sidecar`; None: not
    aligned), else ``"arcface"`` (InsightFace's 112x112 crops).

    Raises:
        ValueError: the sidecar names a template lightface does not know.
    """
    template = "arcface" if info is None else info.get("template", "arcface")
    if template is not None and template not in TEMPLATES:
        raise ValueError(f"{sidecar_path(rec)}: unknown template {template!r} (known: {', '.join(TEMPLATES)}); "
                         "export the pair again with this lightface, or pass --source-template")
    return template


def _recordio_classes(rec, info: Optional[dict], labels: int) -> List[str]:
    """The class names of the RecordIO file ``rec`` whose labels run below ``labels``: the ``classes``
    its lightface sidecar ``info`` records (the exported LMDB's, classes without samples included),
    else ``"0" .. str(labels - 1)``.

    Raises:
        ValueError: the sidecar's ``classes`` is not a list of names, or names fewer classes than the labels use.
    """
    classes = (info or {}).get("classes")
    if classes is None:
        return [str(i) for i in range(labels)]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(classes) < labels:
        raise ValueError(f"{sidecar_path(rec)}: 'classes' must list a name for each of the {labels} labels of "
                         f"{rec.name}; export the pair again with this lightface, or delete the sidecar's "
                         "'classes' to number the classes")
    return classes


def scan_recordio(path) -> SourcePlan:
    """An InsightFace ``train.rec``/``train.idx`` pair (``path``: the folder, the .rec or
    the .idx). Reads only the record headers (labels); images stay in the file. The images
    are taken to be aligned with :func:`_recordio_template` (ArcFace's 112x112 crops unless
    lightface exported the pair); the class names are :func:`_recordio_classes` (those of the
    LMDB lightface exported, else the label numbers)."""
    rec, idx = _find_rec_pair(Path(path))
    reader = RecordIOReader(rec, idx)
    try:
        items = []
        for k in insightface_image_indices(reader):
            offset = reader.offset(k)
            header, _ = unpack_irecord(reader.read_header_at(offset))
            label = int(round(header.class_label))
            if label < 0:
                raise ValueError(f"{rec}: record {k} has negative label {label}")
            items.append(SourceItem(f"rec:{offset}", label, f"{rec.name}#{k}"))
    finally:
        reader.close()
    info = read_sidecar(rec)
    classes = _recordio_classes(rec, info, max((it.label for it in items), default=-1) + 1)
    return SourcePlan("recordio", rec.parent, items, classes, [], str(rec.resolve()), str(idx.resolve()),
                      _recordio_template(rec, info))


#: a landmarks line: the name (anything, spaces and commas included), then 10 values separated by
#: whitespace or commas
_LANDMARKS_LINE = re.compile(r"(.+?)" + r"[\s,]+([^\s,]+)" * 10)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_landmarks_file(path) -> Dict[str, np.ndarray]:
    """``name x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`` lines (whitespace or comma separated) ->
    ``{name: float64 (5, 2)}``; order left eye, right eye, nose, left/right mouth corner.

    The name is everything before the last 10 values, so it may hold spaces and commas
    (``John Smith/IMG 0001.jpg``); ``#`` lines are comments.

    Raises:
        ValueError: ``file:line`` of a line that is not a name and 10 numbers, or of a name
            listed again with other points.
    """
    path = Path(path)
    table: Dict[str, np.ndarray] = {}
    first_line: Dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = _LANDMARKS_LINE.fullmatch(line)
            if m is None or _is_number(re.split(r"[\s,]+", m.group(1))[-1]):  # image names end in an extension
                raise ValueError(f"{path}:{lineno}: expected an image name and 10 numbers (x1 y1 ... x5 y5), "
                                 f"got {line!r}")
            try:
                points = np.asarray(m.groups()[1:], np.float64).reshape(5, 2)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: non-numeric landmark in {line!r}") from None
            name = m.group(1).replace("\\", "/")
            if name in table and not np.array_equal(table[name], points, equal_nan=True):
                raise ValueError(f"{path}:{lineno}: {name!r} is listed again with other points (first on line "
                                 f"{first_line[name]}); keep one line per image")
            table[name] = points
            first_line.setdefault(name, lineno)
    return table


def _with_landmarks(item: SourceItem, landmarks: Optional[np.ndarray]) -> SourceItem:
    """``item`` with its 5 points set from ``landmarks`` (any shape holding 10 values); as is for None."""
    if landmarks is None:
        return item
    return replace(item, landmarks=tuple(float(v) for v in landmarks.reshape(-1)))


def attach_landmarks(plan: SourcePlan, table: Dict[str, np.ndarray]) -> Tuple[SourcePlan, int]:
    """Give each item the landmarks whose name matches the end of its relative path
    (``images/a/a_1.jpg`` matches ``a/a_1.jpg``; the longest matching name wins).

    A name that is the match of several images (``1.jpg`` for ``a/1.jpg`` and ``b/1.jpg``) is
    ambiguous: those images get no landmarks, and the reason in ``no_landmarks`` (logged).

    Returns:
        ``(new plan, matched count)``.
    """
    keys: List[Optional[str]] = []
    images_of: Dict[str, set] = defaultdict(set)
    for it in plan.items:
        parts = Path(it.name).parts
        key = next((k for k in ("/".join(parts[i:]) for i in range(len(parts))) if k in table), None)
        keys.append(key)
        if key is not None:
            images_of[key].add(it.name)
    reasons = {}
    for key, names in sorted(images_of.items()):
        if len(names) > 1:
            shown = ", ".join(sorted(names)[:3]) + (" ..." if len(names) > 3 else "")
            reasons[key] = (f"ambiguous landmarks name {key!r}: it matches {len(names)} images ({shown}); write paths "
                            "relative to the source folder in the landmarks file")
            logger.warning("%s; those images get no landmarks", reasons[key])
    items = [replace(it, no_landmarks=reasons[key]) if key in reasons
             else _with_landmarks(it, None if key is None else table[key]) for it, key in zip(plan.items, keys)]
    matched = sum(key is not None and key not in reasons for key in keys)
    return replace(plan, items=items), matched


def attach_cfp_fiducials(plan: SourcePlan, fiducials) -> Tuple[SourcePlan, int]:
    """Give each item the 5 points computed from its CFP fiducial file.

    CFP lays its data out as ``Images/<id>/<pose>/NN.jpg`` and ``Fiducials/<id>/<pose>/NN.txt``
    (30 ``x,y`` lines); ``fiducials`` is the ``Fiducials`` folder and the items are matched
    by relative path (``451/frontal/01.jpg`` -> ``451/frontal/01.txt``). The pose comes from
    the folder layout (the item's ``pose`` attribute, i.e. its ``frontal``/``profile``
    folder) and decides the mapping (:func:`lightface.data.pose_pairs.read_cfp_fiducials`).
    Items without a fiducial file or pose keep no landmarks; an unreadable or malformed file
    is logged and its item gets the reason in ``no_landmarks``.

    Returns:
        ``(new plan, matched count)``.
    """
    from .pose_pairs import read_cfp_fiducials

    root = Path(fiducials)
    if not root.is_dir():
        raise NotADirectoryError(f"fiducials folder not found: {root} (CFP's Fiducials/<id>/<pose>/NN.txt)")
    items, matched = [], 0
    for it in plan.items:
        pose = dict(it.attributes).get("pose")
        fid = (root / it.name).with_suffix(".txt")
        lm = None
        if pose in ("frontal", "profile") and fid.is_file():
            try:
                lm = read_cfp_fiducials(fid, pose)
            except ValueError as err:
                logger.warning("unusable CFP fiducials (%s); the image is aligned only if detection is on", err)
                items.append(replace(it, no_landmarks=f"unusable CFP fiducials ({err})"))
                continue
        matched += int(lm is not None)
        items.append(_with_landmarks(it, lm))
    return replace(plan, items=items), matched


def open_source(src, landmarks=None, list_root=None, fiducials=None) -> SourcePlan:
    """Pick the source kind from ``src``: a folder holding ``train.rec``+``train.idx`` or a
    ``.rec``/``.idx`` file -> RecordIO; another folder -> folder tree; another file -> list
    file. ``landmarks`` (a landmarks file) or ``fiducials`` (a CFP ``Fiducials`` folder, see
    :func:`attach_cfp_fiducials`) is attached by relative path.

    Raises:
        ValueError: ``src`` is an LMDB dataset (a folder holding ``data.mdb``, or that file),
            which holds built samples, not source images.
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"source not found: {src}")
    if is_lmdb_dir(src) or src.name == "data.mdb":
        dataset = src if src.is_dir() else src.parent
        raise ValueError(f"{src} is an LMDB dataset, not a source of images: a dataset cannot be rebuilt from "
                         f"a dataset. Inspect it with 'python -m pipelines.build_lmdb --info {dataset}' (or "
                         "--verify); to build another, give the image folder, list file or train.rec it was "
                         "built from (--info shows it as build.source)")
    if (src.is_dir() and (src / "train.rec").is_file()) or src.suffix in (".rec", ".idx"):
        plan = scan_recordio(src)
    elif src.is_dir():
        plan = scan_folder(src)
    else:
        plan = read_list_file(src, list_root)
    if landmarks is not None and fiducials is not None:
        raise ValueError("give either a landmarks file or a CFP fiducials folder, not both")
    if landmarks is not None:
        plan, matched = attach_landmarks(plan, read_landmarks_file(landmarks))
        logger.info("landmarks for %d of %d images from %s", matched, len(plan.items), landmarks)
    if fiducials is not None:
        plan, matched = attach_cfp_fiducials(plan, fiducials)
        logger.info("CFP fiducials -> 5 landmarks for %d of %d images from %s", matched, len(plan.items), fiducials)
    return plan
