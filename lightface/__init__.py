"""lightface: Light CNN face recognition and identity-preserving face generation.

Heavy submodules load on first use: ``lightface.FaceEmbedder``, ``lightface.similarity``,
``lightface.SuperResolver`` and ``lightface.Frontalizer`` import their modules lazily.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "FaceEmbedder": "lightface.embed",
    "similarity": "lightface.embed",
    "SuperResolver": "lightface.restore.super_resolver",
    "Frontalizer": "lightface.restore.frontalizer",
    "get_model": "lightface.models",
    "FaceGallery": "lightface.gallery",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightface' has no attribute {name!r}")


def __dir__():
    """The lazy names too, so ``dir(lightface)`` and tab completion show ``FaceEmbedder`` and the rest."""
    return sorted({*globals(), *_LAZY})
