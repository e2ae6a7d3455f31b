"""Data: image I/O, face alignment and detection, LMDB datasets, transforms.

Submodules load on first use (so worker processes that only build datasets do not
import torch): ``lightface.data.LMDBDataset``, ``build_lmdb``, ``write_lmdb``,
``verify_lmdb``, ``align_face``, ``FaceDetector``.
"""
import importlib

_LAZY = {
    "LMDBDataset": "lightface.data.lmdb_dataset",
    "build_lmdb": "lightface.data.build",
    "write_lmdb": "lightface.data.build",
    "verify_lmdb": "lightface.data.build",
    "align_face": "lightface.data.align",
    "invert_affine": "lightface.data.align",
    "FaceDetector": "lightface.data.detect",
    "DetectedFace": "lightface.data.detect",
    "read_image": "lightface.data.io",
    "decode_image": "lightface.data.io",
    "ImageReadError": "lightface.data.io",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightface.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
