"""Unique, deterministic output names for input files, shared by the pipelines that write one
output per input (restoration: :func:`lightface.restore.folder.output_names`; embeddings:
``extract_embeddings --format feat``)."""
import os
from pathlib import Path
from typing import Dict, List, Sequence, Union

__all__ = ["unique_output_names"]

PathLike = Union[str, os.PathLike]


def unique_output_names(paths: Sequence[PathLike], folders: Sequence[PathLike]) -> List[str]:
    """One output name per path in ``paths``, unique and always the same for the same inputs.

    A name is the path without extension, ``/``-separated, relative to the common folder of
    ``folders`` (``folders[i]``: the folder that holds ``paths[i]``, e.g. the folder it was
    found in or its parent), so a name never leaves an output folder. Paths whose names
    would still be equal (``face.jpg`` and ``face.png``) get their extension appended
    (``face_jpg``, ``face_png``); any clash left after that gets ``_2``, ``_3``... in input order.
    """
    roots = sorted({os.path.abspath(f) for f in folders})
    common = roots[0] if len(roots) == 1 else os.path.commonpath(roots)
    stems = [Path(os.path.relpath(os.path.abspath(p), common)).with_suffix("").as_posix() for p in paths]
    counts: Dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    names = [f"{stem}_{Path(p).suffix.lstrip('.').lower()}" if counts[stem] > 1 else stem
             for p, stem in zip(paths, stems)]
    used, unique = set(), []
    for name in names:
        candidate, k = name, 2
        while candidate in used:
            candidate, k = f"{name}_{k}", k + 1
        used.add(candidate)
        unique.append(candidate)
    return unique
