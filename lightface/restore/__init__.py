"""Face restoration front-ends: super-resolution (``SuperResolver``), frontalization
(``Frontalizer``), and the shared pieces: pasting faces back (``paste``) and batch
processing of files and folders (``folder``).

Submodules load on first use, e.g. ``from lightface.restore.super_resolver import SuperResolver``.
"""
import importlib

_LAZY = {
    "SuperResolver": "lightface.restore.super_resolver",
    "Frontalizer": "lightface.restore.frontalizer",
    "paste_face": "lightface.restore.paste",
    "restore_paths": "lightface.restore.folder",
    "RestoreResult": "lightface.restore.folder",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightface.restore' has no attribute {name!r}")
