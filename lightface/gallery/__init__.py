"""Face search: a persistent gallery of enrolled faces (:class:`FaceGallery`).

Modules: :mod:`~lightface.gallery.storage` (fp16 memory map + SQLite, atomic commits),
:mod:`~lightface.gallery.exact` (chunked exact search), :mod:`~lightface.gallery.faiss_backend`
(optional FAISS index), :mod:`~lightface.gallery.photos` (which photos belong to whom),
:mod:`~lightface.gallery.results` (result types), :mod:`~lightface.gallery.gallery`
(:class:`FaceGallery`). See docs/search.md.
"""
from .gallery import DUPLICATE_THRESHOLD, UNKNOWN, FaceGallery, model_info
from .photos import collect_photos
from .results import Duplicate, EnrollReport, FaceSearch, Identification, Match, SearchResult
from .storage import (CorruptGalleryError, FaceRecord, GalleryError, GalleryLockedError, GalleryModelError,
                      ModelInfo)

__all__ = [
    "FaceGallery",
    "SearchResult",
    "Match",
    "Identification",
    "EnrollReport",
    "Duplicate",
    "FaceSearch",
    "FaceRecord",
    "ModelInfo",
    "model_info",
    "collect_photos",
    "GalleryError",
    "CorruptGalleryError",
    "GalleryModelError",
    "GalleryLockedError",
    "UNKNOWN",
    "DUPLICATE_THRESHOLD",
]
