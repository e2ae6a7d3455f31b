"""Finding the photos to enrol: a folder per person is the identity."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Tuple, Union

from ..data.io import IMAGE_EXTENSIONS

__all__ = ["collect_photos"]

PathLike = Union[str, os.PathLike]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _images_under(folder: Path) -> List[Path]:
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in sorted(files) if _is_image(f)]
    return out


def _collect_one(item: PathLike, identity: Optional[str] = None) -> List[Tuple[str, Path]]:
    """``(identity, path)`` pairs for one item; ``identity`` given: every image at or below it is that person's."""
    path = Path(item).expanduser()
    if path.is_file():
        if not _is_image(path.name):
            raise ValueError(f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        return [(identity or path.parent.name, path)]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if identity is not None:
        return [(identity, p) for p in _images_under(path)]
    with os.scandir(path) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    people = [e for e in entries if e.is_dir() and _images_under(Path(e.path))]
    if loose and people:  # one stray photo would otherwise file every person below under the folder's name
        raise ValueError(
            f"{path} holds both images ({len(loose)}, e.g. {loose[0]}) and folders of images ({len(people)}, e.g. "
            f"{people[0].name}/): it is neither a folder of people nor clearly one person's folder. Move the loose "
            "images into a person's folder, or, if it is all one person, name them explicitly "
            "(enroll --identity NAME, or {NAME: folder} in Python)")
    if loose:  # one person's folder
        return [(path.name, p) for p in _images_under(path)]
    out: List[Tuple[str, Path]] = []
    for entry in people:  # a folder of people
        out += [(entry.name, p) for p in _images_under(Path(entry.path))]
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
    Raises:
        FileNotFoundError: a path that does not exist; ValueError: no images found, or a folder
        holding both images and folders of images (not a mapping's value).
    """
    pairs: List[Tuple[str, Path]] = []
    if isinstance(paths_or_folders, Mapping):
        for identity, value in paths_or_folders.items():
            values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
            for v in values:
                pairs += _collect_one(v, str(identity))
    else:
        items = [paths_or_folders] if isinstance(paths_or_folders, (str, os.PathLike)) else list(paths_or_folders)
        for item in items:
            pairs += _collect_one(item)
    if not pairs:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {paths_or_folders!r}")
    return pairs
