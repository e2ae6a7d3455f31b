"""Walking folders of images: every folder walk of lightface (datasets, embedding extraction, galleries,
super-resolution and frontalization of folders, SR training folders) goes through here, so they all follow
symlinked folders once, leave hidden files and folders out and filter on the same image extensions."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from .io import has_image_extension

__all__ = ["walk_folders", "image_files", "folder_images", "log_problem"]

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def log_problem(rel: str, reason: str) -> None:
    """The default ``problem`` report of :func:`walk_folders`: a logged warning ``rel: reason``."""
    logger.warning("%s: %s", rel, reason)


def walk_folders(root, problem: Callable[[str, str], None] = log_problem
                 ) -> Iterator[Tuple[str, List[str], List[str]]]:
    """``os.walk(root)``'s ``(dirpath, dirnames, filenames)``, top-down, following symlinked folders,
    each real folder once: a folder already entered (a symlink loop such as ``a/b -> ..``, or a
    second link to the same folder), or a folder above ``root`` (``person/loop -> ..`` would walk ``person``'s
    siblings as its own), is not entered. That, and a folder that cannot be
    opened or listed, is reported as ``problem(path relative to root, reason)`` (default: a
    logged warning). Hidden folders (``.name``) are left out; sub-folders are entered in sorted
    order.
    """
    root = Path(root)
    root_st = root.stat()
    visited: Dict[Tuple[int, int], str] = {}
    above = {*Path(os.path.abspath(root)).parents, *Path(os.path.realpath(root)).parents}
    for up in above:  # a link up to one of them would walk root's siblings as its own
        try:
            st = up.stat()
        except OSError:
            continue
        visited[(st.st_dev, st.st_ino)] = f"{up} (above the folder walked)"
    visited[(root_st.st_dev, root_st.st_ino)] = "."

    def on_error(err: OSError) -> None:
        rel = os.path.relpath(err.filename, root) if err.filename else "?"
        problem(Path(rel).as_posix(), f"cannot list folder: {err.strerror or err}")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=on_error):
        rel_dir = Path(dirpath).relative_to(root)
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            rel = (rel_dir / d).as_posix()
            try:
                st = os.stat(os.path.join(dirpath, d))
            except OSError as err:
                problem(rel, f"cannot open folder: {err.strerror or err}")
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:
                problem(rel, f"folder already scanned as {visited[key]!r} (symlink loop or second link to it); "
                             "not followed")
                continue
            visited[key] = rel
            keep.append(d)
        dirnames[:] = keep
        yield dirpath, dirnames, filenames


def image_files(folder: PathLike, left_out: Optional[List[Path]] = None,
                problem: Callable[[str, str], None] = log_problem) -> List[Path]:
    """The image files (:func:`~lightface.data.io.has_image_extension`) at or below ``folder``, sorted by path.

    Sub-folders are walked as :func:`walk_folders` walks them: symlinked folders followed, each real folder
    once, hidden folders left out. Hidden files (``.name``, e.g. macOS ``._x.jpg`` resource forks) are left out
    silently; the other files whose extension is not an image's are appended to ``left_out`` (sorted) when
    given, so that a caller can say what it skipped. An entry with an image's name that is not a regular file
    (a FIFO, a device, a broken symlink) is listed with the images, so that reading it reports it
    (:class:`~lightface.data.io.NotARegularFileError`, never a read that blocks) instead of dropping it silently.
    """
    images: List[Path] = []
    others: List[Path] = []
    for dirpath, _, names in walk_folders(folder, problem):
        for name in names:
            if not name.startswith("."):
                (images if has_image_extension(name) else others).append(Path(dirpath, name))
    if left_out is not None:
        left_out += sorted(others)
    return sorted(images)


def folder_images(folder: PathLike, left_out: Optional[List[Path]] = None,
                  subfolders: Optional[List[Path]] = None) -> List[Path]:
    """The image files directly in ``folder``, sorted by path: :func:`image_files` without entering
    sub-folders (a walk of a folder's own files costs one listing, however large the tree below it).

    Files are classified as :func:`image_files` classifies them (hidden ones left out silently, the others
    whose extension is not an image's appended to ``left_out``, sorted); the non-hidden sub-folders (symlinked
    ones included) are appended to ``subfolders`` (sorted) when given, so that a caller can say what it did not
    enter.

    Raises:
        OSError: ``folder`` cannot be listed.
    """
    images: List[Path] = []
    others: List[Path] = []
    dirs: List[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows a symlink
            except OSError:
                is_dir = False
            path = Path(folder, entry.name)
            if is_dir:
                dirs.append(path)
            else:
                (images if has_image_extension(entry.name) else others).append(path)
    if left_out is not None:
        left_out += sorted(others)
    if subfolders is not None:
        subfolders += sorted(dirs)
    return sorted(images)
