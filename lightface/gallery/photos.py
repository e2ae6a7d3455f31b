"""Finding the photos to enrol: a folder per person is the identity."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Tuple, Union

from ..data.folders import image_files
from ..data.io import IMAGE_EXTENSIONS, has_image_extension, log_left_out

__all__ = ["collect_photos"]

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def _is_image(name: str) -> bool:
    return has_image_extension(name) and not name.startswith(".")


def _collect_one(item: PathLike, left_out: List[Path], identity: Optional[str] = None) -> List[Tuple[str, Path]]:
    """``(identity, path)`` pairs for one item; ``identity`` given: every image at or below it is that person's.
    Files of its folders left out for their extension are appended to ``left_out``."""
    path = Path(item).expanduser()
    if path.is_file():
        if not _is_image(path.name):
            raise ValueError(f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        return [(identity or path.parent.name, path)]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if identity is not None:
        return [(identity, p) for p in image_files(path, left_out)]
    with os.scandir(path) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    walked = {}  # sub-folder name -> (its images, its other files): each sub-folder is walked once, here
    for e in entries:
        if e.is_dir():
            others: List[Path] = []
            walked[e.name] = image_files(Path(e.path), others), others
    people = {name: v for name, v in walked.items() if v[0]}
    if loose and people:  # one stray photo would otherwise file every person below under the folder's name
        raise ValueError(
            f"{path} holds both images ({len(loose)}, e.g. {loose[0]}) and folders of images ({len(people)}, e.g. "
            f"{next(iter(people))}/): it is neither a folder of people nor clearly one person's folder. Move the loose "
            "images into a person's folder, or, if it is all one person, name them explicitly "
            "(enroll --identity NAME, or {NAME: folder} in Python)")
    # the folder's own files as image_files lists them (an image name that is not a regular file is kept, so
    # that reading it says what it is)
    own = [Path(e.path) for e in entries if not e.is_dir() and _is_image(e.name)]
    left_out += [Path(e.path) for e in entries if not e.is_dir() and not _is_image(e.name)]
    for _, others in walked.values():
        left_out += others
    if loose:  # one person's folder (its sub-folders hold no images)
        return [(path.name, p) for p in own]
    out: List[Tuple[str, Path]] = []
    for name, (images, _) in people.items():  # a folder of people
        out += [(name, p) for p in images]
    return out


def collect_photos(paths_or_folders: Union[PathLike, Iterable[PathLike], Mapping[str, object]]) -> List[Tuple[str, Path]]:
    """``(identity, photo path)`` pairs to enrol, in a stable (sorted) order.

    Args:
        paths_or_folders: one item or a list of items, each
            - a folder of people (``photos/`` holding ``alice/*.jpg``, ``bob/*.jpg`` and no
              images of its own): every sub-folder is one identity, named after it, with
              every image below it;
            - one person's folder (``photos/alice/``, images directly inside and no
              sub-folders of images): every image in it belongs to the folder's name (a folder
              holding both images and folders of images is refused as ambiguous: name it in a
              mapping);
            - an image file: its identity is the name of the folder holding it;
          or a mapping ``{identity: image | folder | list of them}`` naming the people explicitly.
    Files whose extension is not an image's (:data:`~lightface.data.io.IMAGE_EXTENSIONS`) are left
    out and counted in one log line; hidden files and folders are skipped.

    Raises:
        FileNotFoundError: a path that does not exist; ValueError: no images found, or a folder
        holding both images and folders of images (not a mapping's value).
    """
    pairs: List[Tuple[str, Path]] = []
    left_out: List[Path] = []
    if isinstance(paths_or_folders, Mapping):
        for identity, value in paths_or_folders.items():
            values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
            for v in values:
                pairs += _collect_one(v, left_out, str(identity))
    else:
        items = [paths_or_folders] if isinstance(paths_or_folders, (str, os.PathLike)) else list(paths_or_folders)
        for item in items:
            pairs += _collect_one(item, left_out)
    log_left_out(logger, "the photos to enrol", left_out)
    if not pairs:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {paths_or_folders!r}")
    return pairs
