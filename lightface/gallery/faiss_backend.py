"""Approximate search with FAISS (optional: ``pip install 'lightface[search]'``, i.e. faiss-cpu).

The index is chosen from the gallery size and described by a FAISS factory string
stored in the gallery with its parameters, so it can be rebuilt and compared:

* up to :data:`HNSW_MAX_ROWS` (2M) faces: ``"HNSW32"`` (graph search), ``efConstruction``
  100, ``efSearch`` 128. On 1M faces with the statistics of real face embeddings
  (``python -m benchmarks.search``) it finds the exact top-1 for 99.6% of the queries,
  27x faster than the exact scan (``efConstruction`` 40 builds 1.5x faster but needs
  ``efSearch`` 384 for 99.6%, 11x); IVF needs to visit a large share of its cells for the
  same recall. Costs: ~1.3 KB of RAM per face and a build of ~15-20 minutes per million
  faces on 2 cores;
* larger galleries: ``"IVF{nlist},SQfp16"`` (inverted lists over k-means cells, vectors
  kept as float16 like the gallery itself: ~0.5 KB per face), ``nlist`` the power of two
  nearest ``4 * sqrt(N)``, ``nprobe`` ``nlist / 16`` cells visited per query; raise
  ``nprobe`` (``search(..., params={"nprobe": ...})`` or ``build_index(params=...)``) for
  recall, lower it for speed.

Vectors are L2-normalised and the metric is the inner product, so scores are cosine
similarities, as in the exact search (``IndexFlatIP`` is the reference the recall is
measured against, see ``python -m benchmarks.search``).
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["available", "require", "choose_index", "check_kind", "build_index", "save_index", "load_index",
           "search_index", "HNSW_MAX_ROWS", "EXACT_HINT", "KINDS", "index_commands"]

logger = logging.getLogger(__name__)

HNSW_MAX_ROWS = 2_000_000
#: how to search a gallery whose index cannot be used, from Python and from the command line
EXACT_HINT = "meanwhile backend='exact' (python -m pipelines.search --backend exact) searches without it"
_ADD_ROWS = 1 << 16
#: the index kinds :func:`choose_index` sizes itself (anything else is taken as a FAISS factory string)
KINDS = ("auto", "hnsw", "ivf", "flat")


def index_commands(gallery: Any) -> str:
    """The command lines that rebuild and drop the FAISS index of the gallery folder ``gallery``."""
    return (f"python -m pipelines.gallery {gallery} index auto rebuilds it, python -m pipelines.gallery {gallery} "
            "index none drops it")
_TRAIN_POINTS_PER_CELL = 40


def available() -> bool:
    """True when ``faiss`` can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def require():
    """Import and return ``faiss``, or raise an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("FAISS is not installed: pip install 'lightface[search]' (the faiss-cpu package); "
                          "exact search works without it") from err
    return faiss


def choose_index(n: int, kind: str = "auto") -> Tuple[str, Dict[str, int]]:
    """``(factory string, parameters)`` for a gallery of ``n`` faces.

    Args:
        n: gallery size.
        kind: ``"auto"`` (HNSW up to :data:`HNSW_MAX_ROWS`, else IVF), ``"hnsw"``, ``"ivf"`` or ``"flat"``
            (``"Flat"``: every vector compared, as the exact search does; a reference for recall).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    if kind == "flat":
        return "Flat", {}
    if kind == "hnsw" or (kind == "auto" and n <= HNSW_MAX_ROWS):
        return "HNSW32", {"efConstruction": 100, "efSearch": 128}
    nlist = 2 ** int(round(math.log2(4.0 * math.sqrt(max(n, 1)))))
    nlist = int(min(max(nlist, 1), 1 << 16, max(n // _TRAIN_POINTS_PER_CELL, 1)))
    return f"IVF{nlist},SQfp16", {"nprobe": max(min(16, nlist), nlist // 16)}


def _index_factory(faiss, dim: int, factory: str):
    """``faiss.index_factory`` for inner products; a string FAISS cannot parse is a ValueError saying what to write."""
    try:
        return faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:  # FAISS's C++ message names its source file, not what to write instead
        raise ValueError(f"{factory!r} is not an index kind: use auto, hnsw, ivf, flat, or a FAISS factory string "
                         "(case matters: 'HNSW32', 'IVF1024,SQfp16', 'Flat')") from err


def check_kind(kind: str, dim: int = 256) -> None:
    """Check, before any work, that an index of ``kind`` (one of :data:`KINDS` in any case, or a FAISS factory
    string) can be built over ``dim``-d embeddings: FAISS is installed and parses the string (an empty index is
    made, nothing is trained).

    Raises:
        ImportError: FAISS is not installed (:func:`require`'s message).
        ValueError: ``kind`` is neither a kind of :data:`KINDS` nor a factory string FAISS can build.
    """
    faiss = require()
    if kind.lower() not in KINDS:
        _index_factory(faiss, dim, kind)


def _set_params(faiss, index, params: Dict[str, Any], k: int = 1) -> None:
    if "efSearch" in params or "efConstruction" in params:
        hnsw = faiss.downcast_index(index).hnsw
        if "efConstruction" in params:
            hnsw.efConstruction = int(params["efConstruction"])
        if "efSearch" in params:
            hnsw.efSearch = max(int(params["efSearch"]), int(k))
    if "nprobe" in params:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(int(params["nprobe"]), ivf.nlist)


def build_index(embeddings: np.ndarray, factory: str, params: Dict[str, Any], seed: int = 0, progress: bool = False):
    """Build a FAISS inner-product index over every row of ``embeddings``.

    Args:
        embeddings: float16 or float32 (N, D), rows L2-normalised (a memory map is read in blocks).
        factory: a FAISS factory string (``"HNSW32"``, ``"IVF4096,SQfp16"``, ``"Flat"``, ...).
        params: ``efConstruction`` / ``efSearch`` (HNSW), ``nprobe`` (IVF).
        seed: training-sample seed (IVF).
        progress: show a tqdm bar while adding.
    Returns:
        the trained, filled index (row i of ``embeddings`` is id i).
    """
    faiss = require()
    n, dim = embeddings.shape
    index = _index_factory(faiss, dim, factory)
    _set_params(faiss, index, {k: v for k, v in params.items() if k == "efConstruction"})
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index)
        want = min(n, _TRAIN_POINTS_PER_CELL * ivf.nlist) if ivf is not None else min(n, 100_000)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=want, replace=False))
        sample = np.asarray(embeddings[rows], dtype=np.float32)
        if ivf is not None:
            ivf.cp.seed = seed
            ivf.cp.max_points_per_centroid = _TRAIN_POINTS_PER_CELL
        logger.info("training %s on %d vectors", factory, len(sample))
        index.train(sample)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"indexing ({factory})", unit="face")
    for start in range(0, n, _ADD_ROWS):
        block = np.asarray(embeddings[start:start + _ADD_ROWS], dtype=np.float32)
        index.add(block)
        if bar is not None:
            bar.update(len(block))
    if bar is not None:
        bar.close()
    return index


def add_rows(index, embeddings: np.ndarray) -> None:
    """Append rows to an existing index (ids continue from ``index.ntotal``)."""
    for start in range(0, len(embeddings), _ADD_ROWS):
        index.add(np.asarray(embeddings[start:start + _ADD_ROWS], dtype=np.float32))


def save_index(index, path: Path) -> None:
    """Write ``index`` to ``path`` durably (temporary file, fsync, rename)."""
    faiss = require()
    tmp = Path(str(path) + ".tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_index(path: Path):
    """Read an index written by :func:`save_index`."""
    faiss = require()
    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        from .storage import CorruptGalleryError

        raise CorruptGalleryError(f"{path}: cannot read the FAISS index ({str(err).splitlines()[0]}); rebuild it with "
                                  f"FaceGallery.build_index() or drop it with FaceGallery.drop_index() "
                                  f"({index_commands(Path(path).parent)}); {EXACT_HINT}") from err


def search_index(index, queries: np.ndarray, k: int, params: Optional[Dict[str, Any]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)``: float32 (Q, k) inner products and int64 (Q, k) ids (-1: fewer than k found)."""
    faiss = require()
    _set_params(faiss, index, {k2: v for k2, v in (params or {}).items() if k2 != "efConstruction"}, k)
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k))
    return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)


def params_to_text(params: Dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)
