"""FaceGallery: a persistent, searchable gallery of enrolled faces.

    >>> import lightface
    >>> emb = lightface.FaceEmbedder("model.pth", detector="det_500m.onnx")          # doctest: +SKIP
    >>> gallery = lightface.FaceGallery("people.gallery", emb)                     # doctest: +SKIP
    >>> report = gallery.enroll("photos/")       # photos/<person>/*.jpg          # doctest: +SKIP
    >>> gallery.identify(emb.embed(["who.jpg"], aligned=False)).identities       # doctest: +SKIP
    ['alice']

Storage (see :mod:`lightface.gallery.storage`): float16 embeddings in a memory-mapped
file, records in SQLite, every write committed atomically. Search is exact by default
(:mod:`lightface.gallery.exact`); :meth:`FaceGallery.build_index` adds a FAISS index for
large galleries (:mod:`lightface.gallery.faiss_backend`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..embed import settings_changes
from ..utils.state_hash import state_sha256
from . import faiss_backend
from .exact import exact_search
from .photos import collect_photos
from .results import Duplicate, EnrollReport, FaceSearch, Identification, SearchResult
from .storage import (INDEX_KEYS, CorruptGalleryError, FaceRecord, GalleryError, GalleryModelError, GalleryStore,
                      ModelInfo)

__all__ = ["FaceGallery", "model_info", "embedder_identification_threshold", "check_identity", "UNKNOWN",
           "DUPLICATE_THRESHOLD"]

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"
DUPLICATE_THRESHOLD = 0.98
#: galleries whose float32 copy fits in this many bytes (64 MiB: 65k faces of 256-d) are
#: searched on a float32 copy kept in RAM after the first search (converting float16
#: costs more than the scan at that size); larger ones are only memory-mapped
FP32_CACHE_BYTES = 64 << 20


# -- model identity ------------------------------------------------------------------------
def model_info(embedder: Any) -> ModelInfo:
    """The :class:`ModelInfo` (name, sha256, arch) that identifies an embedder's weights.

    A :class:`lightface.FaceEmbedder` says it itself (``weights_info``: the shipped
    model's name and sha256, or the weights file's name and sha256, or the state hash of
    an ``nn.Module``); a bare ``nn.Module`` is hashed the same way (every state tensor:
    key, dtype, shape, bytes). Galleries compare the sha256 only, so a renamed copy of
    the same file is the same model.

    Args:
        embedder: a :class:`lightface.FaceEmbedder`, an ``nn.Module``, a
            :class:`ModelInfo` (returned as is), or any object with a ``weights_info``
            attribute holding ``name``, ``sha256`` (and optionally ``arch``).
    """
    if isinstance(embedder, ModelInfo):
        return embedder
    info = getattr(embedder, "weights_info", None)
    if info is not None and getattr(info, "sha256", None):
        return ModelInfo(str(info.name), str(info.sha256), getattr(info, "arch", None))
    model = embedder if isinstance(embedder, torch.nn.Module) else getattr(embedder, "model", None)
    if isinstance(model, torch.nn.Module):
        inner = getattr(model, "_orig_mod", model)
        return ModelInfo(type(inner).__name__, state_sha256(inner), getattr(inner, "arch", None) or None)
    raise TypeError(f"cannot tell which model {type(embedder).__name__} runs: pass a FaceEmbedder, an nn.Module or a "
                    "lightface.gallery.ModelInfo(name, sha256)")


# -- helpers -------------------------------------------------------------------------------
def check_identity(name: str) -> str:
    """``name`` when a person can be enrolled under it; ValueError for an empty name and for :data:`UNKNOWN`."""
    if not str(name).strip():
        raise ValueError("identity names must be non-empty")
    if name == UNKNOWN:
        raise ValueError(f"{UNKNOWN!r} is reserved for faces identify() does not recognise; choose another name")
    return name


def embedder_identification_threshold(embedder: Any) -> Optional[float]:
    """The cosine an embedder's best gallery match must reach to name a person: its model
    card's ``identification_threshold`` (calibrated at a false-accept rate, over a whole
    gallery), else its verification ``threshold`` (one pair), else None."""
    if embedder is None:
        return None
    for name in ("identification_threshold", "threshold"):
        t = getattr(embedder, name, None)
        if t is not None:
            return float(t)
    return None


def _as_matrix(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{what} must be a float array or tensor (N, D), got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be (N, D) or (D,), got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(1))
        raise ValueError(f"{what}: rows {bad[:5].tolist()} hold NaN/inf (failed embeddings?); drop them first")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if len(arr) and norms.min() < 1e-12:
        raise ValueError(f"{what}: row {int(np.argmin(norms))} is all zeros")
    return arr / np.maximum(norms, 1e-12)


def _meta_records(meta: Any, n: int) -> List[Dict[str, Any]]:
    if meta is None:
        return [{} for _ in range(n)]
    if isinstance(meta, Mapping):
        cols = {k: list(v) if not isinstance(v, (str, bytes)) else [v] * n for k, v in meta.items()}
        for k, v in cols.items():
            if len(v) != n:
                raise ValueError(f"meta[{k!r}] has {len(v)} values for {n} embeddings")
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    records = list(meta)
    if len(records) != n:
        raise ValueError(f"meta has {len(records)} records for {n} embeddings")
    for r in records:
        if not isinstance(r, Mapping):
            raise TypeError(f"meta records must be dicts, got {type(r).__name__}")
    return [dict(r) for r in records]


def _file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two photo paths name one file: the same text, or one file reached through a symlink (or a hard
    link): a folder enrolled again under another spelling is already enrolled, not a duplicate of itself."""
    if a == b:
        return True
    try:
        return bool(a) and bool(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _merge_topk(parts: Sequence[Tuple[np.ndarray, np.ndarray]], k: int) -> Tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([p[0] for p in parts], 1)
    rows = np.concatenate([p[1] for p in parts], 1)
    scores = np.where(rows < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _embedder_settings(embedder: Any, aligned: bool) -> Optional[Dict[str, Any]]:
    """``embedder.settings(aligned)`` (:meth:`lightface.FaceEmbedder.settings`: flip fusion, and for whole photos
    the detector and its options; ``aligned=False`` loads the detector), ``{"flip": ...}`` for an object that only
    has a ``flip``, or None."""
    settings = getattr(embedder, "settings", None)
    if callable(settings):
        return settings(aligned)
    flip = getattr(embedder, "flip", None)
    return None if flip is None else {"flip": bool(flip)}


#: the detector settings a search or a later enrolment is checked against (what finds and aligns the faces);
#: precision (bfloat16 stays within cosine 0.9998 of float32) and aligned_template (how the given crops are framed,
#: which may differ between enrolment and queries) are recorded but not compared
_DETECTOR_CHECKED = ("detector.det_size", "detector.threshold", "detector.rescue_threshold", "detector.antialias")
#: how to set each of them again: ``(FaceEmbedder keyword, flag of the recognition CLIs)``
_DETECTOR_FIX = {"detector.det_size": ("detector_options", "--det-size"),
                 "detector.threshold": ("detector_options", "--det-threshold"),
                 "detector.rescue_threshold": ("rescue_threshold", "--rescue-threshold"),
                 "detector.antialias": ("antialias", "--antialias")}


def _flag_text(key: str, value: Any) -> str:
    """The command-line flag that sets the detector setting ``key`` of :data:`_DETECTOR_FIX` to ``value``:
    ``--det-size 320``, ``--rescue-threshold none``, ``--no-antialias``."""
    flag = _DETECTOR_FIX[key][1]
    if isinstance(value, bool):
        return flag if value else flag.replace("--", "--no-", 1)
    return f"{flag} {'none' if value is None else value}"


def _settings_text(changes: Sequence[Tuple[str, Any, Any]], which: int) -> str:
    """``det_size 640, threshold 0.5`` from the recorded (``which=1``) or current (``which=2``) values of
    :func:`lightface.embed.settings_changes` entries."""
    return ", ".join(f"{c[0].split('.', 1)[-1]} {c[which]}" for c in changes)


def _on_off(flag: Any) -> str:
    """``"on"`` / ``"off"`` for a bool or a stored ``"0"`` / ``"1"``."""
    return "on" if bool(int(flag)) else "off"


class FaceGallery:
    """A persistent gallery of enrolled faces in a directory, searchable by embedding.

    Args:
        path: the gallery directory (created, with its parents, when missing and
            ``create=True``).
        embedder: the :class:`lightface.FaceEmbedder` the gallery's faces come from (or
            will). When the gallery already records a model, a different one (other
            architecture or other weights, see :func:`model_info`) is refused with
            :class:`GalleryModelError`. Used by :meth:`enroll`, :meth:`search_faces` and
            for :meth:`identify`'s default threshold (``embedder.identification_threshold``,
            else ``embedder.threshold``).
        create: create an empty gallery when ``path`` holds none (else raise
            :class:`GalleryError`).

    Raises:
        GalleryError: no gallery at ``path`` and ``create=False``.
        CorruptGalleryError: the files are damaged (not a gallery database, embedding file
            missing or truncated).
        GalleryModelError: ``embedder`` is not the model the gallery was built with.

    Opening is cheap (a SQLite read and a memory map; nothing is loaded), so a 1M-face
    gallery opens in milliseconds. Writes (:meth:`add`, :meth:`enroll`, :meth:`remove`,
    :meth:`rename`, :meth:`build_index`) are atomic: a process killed at any point leaves
    the gallery at its last committed state. One process writes at a time (a file lock
    serialises writers); readers can search while another process enrols.
    """

    def __init__(self, path: Union[str, os.PathLike], embedder: Any = None, *, create: bool = True):
        self._store = GalleryStore(path, create=create)
        self.path = self._store.root
        self.embedder = None
        self._model: Optional[ModelInfo] = None
        self._index = None
        self._index_file: Optional[str] = None
        self._f32: Optional[np.ndarray] = None
        self._f32_key: Tuple[Any, ...] = ()
        self._told_no_faiss = False  # the "index but no faiss" warning is given once, not at every search
        if embedder is not None:
            self._model = self._check_model(embedder)
            self.embedder = embedder

    # -- properties ----------------------------------------------------------------------------
    def __len__(self) -> int:
        self._store.refresh()
        return self._store.count

    def __repr__(self) -> str:
        return (f"FaceGallery({str(self.path)!r}, faces={self._store.count}, dim={self._store.dim}, "
                f"model={self.model}, index={self._store.meta.get('index_factory')})")

    def __enter__(self) -> "FaceGallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the database connection and the memory map."""
        self._index = None
        self._f32 = None
        self._store.close()

    @property
    def dim(self) -> int:
        """Embedding size (0 until the first face is added)."""
        return self._store.dim

    @property
    def model(self) -> Optional[ModelInfo]:
        """The model the gallery's embeddings come from (None when never recorded)."""
        return self._store.model()

    @property
    def embeddings(self) -> np.ndarray:
        """float16 (N, D) memory map of the committed, L2-normalised embeddings (row order)."""
        self._store.refresh()
        return self._store.embeddings

    @property
    def threshold(self) -> Optional[float]:
        """The identification threshold :meth:`identify` uses by default: the attached
        embedder's (:func:`embedder_identification_threshold`), else the one stored in the
        gallery, else None."""
        t = embedder_identification_threshold(self.embedder)
        if t is not None:
            return float(t)
        stored = self._store.meta.get("threshold")
        return None if stored is None else float(stored)

    @property
    def settings(self) -> Optional[Dict[str, Any]]:
        """The settings of the embedder the gallery's first faces were enrolled (or added, :meth:`add_npz`) with
        (:meth:`lightface.FaceEmbedder.settings`: ``flip``, ``aligned``, ``detector`` with its ``model``,
        ``det_size``, ``threshold``, ``rescue_threshold`` ...), or None when none were recorded. In a gallery
        whose first faces were aligned crops, ``detector`` is that of its first whole-photo faces (None until
        some arrive). A gallery of an earlier lightface gives what it recorded (``flip``; ``detector`` with
        ``model``, ``det_size`` and ``threshold``)."""
        meta = self._store.meta
        if "settings" in meta:
            return json.loads(meta["settings"])
        legacy: Dict[str, Any] = {}
        if "flip" in meta:
            legacy["flip"] = bool(int(meta["flip"]))
        if "detector" in meta:
            legacy["detector"] = {"model": meta["detector"], **(self.detector_options or {})}
        return legacy or None

    @property
    def detector(self) -> Optional[str]:
        """The detector the gallery's whole-photo faces were enrolled with (``"det_500m.onnx"``,
        ``"yunet"``, ...; recorded with the first whole-photo faces), or None (aligned crops only, older
        galleries)."""
        return self._store.meta.get("detector")

    @property
    def detector_options(self) -> Optional[Dict[str, Any]]:
        """The detector's ``det_size`` and ``threshold`` the gallery's whole-photo faces were enrolled with
        (``{"det_size": 640, "threshold": 0.5}``; recorded with the first whole-photo faces), or None (aligned
        crops only, older galleries)."""
        text = self._store.meta.get("detector_options")
        return None if text is None else json.loads(text)

    def set_threshold(self, threshold: Optional[float]) -> None:
        """Store the default identification threshold in the gallery (None removes it)."""
        with self._store.transaction() as conn:
            self._store.set_meta(conn, {"threshold": None if threshold is None else float(threshold)})

    def identities(self) -> List[str]:
        """Sorted names of the enrolled people."""
        return self._store.identity_names()

    def counts(self) -> Dict[str, int]:
        """``{identity: number of faces}``."""
        return self._store.identity_counts()

    def faces(self, identity: Optional[str] = None) -> List[FaceRecord]:
        """The face records (all, or one identity's), in embedding-row order."""
        if identity is None:
            return self._store.faces()
        return self._store.faces("i.name=?", (identity,))

    def face(self, face_id: int) -> FaceRecord:
        """The record of one face (KeyError when there is no such face)."""
        found = self._store.faces("f.id=?", (int(face_id),))
        if not found:
            raise KeyError(f"{self.path}: no face with id {face_id}")
        return found[0]

    def select_faces(self, identities: Sequence[str] = (), face_ids: Sequence[int] = (),
                     paths: Sequence[Union[str, os.PathLike]] = ()) -> List[FaceRecord]:
        """The faces of the given people, with the given face ids, and enrolled from the given photos, each once,
        in embedding-row order (what ``python -m pipelines.gallery GALLERY list`` / ``remove`` act on).

        Args:
            identities: names of enrolled people (every face of each).
            face_ids: face ids (:attr:`FaceRecord.face_id`, the ids search results and ``EnrollReport.changed`` give).
            paths: source photo paths as enrolled: :meth:`enroll` stores absolute paths, so a relative path is
                also looked up made absolute from the current folder; :meth:`add_npz` stores absolute paths too
                (an earlier lightface's npz: its relative paths as they are).
        Raises:
            KeyError: some of them match no face (each is named; nothing is selected then).
        """
        self._store.refresh()
        ids: Dict[int, None] = {}
        missing: List[str] = []
        for name in dict.fromkeys(str(s) for s in identities):
            found = self._store.faces("i.name=?", (name,))
            ids.update((r.face_id, None) for r in found)
            if not found:
                missing.append(f"identity {name!r}")
        wanted = list(dict.fromkeys(int(i) for i in face_ids))
        known = {r.face_id for c in range(0, len(wanted), 500)
                 for r in self._store.faces(f"f.id IN ({','.join('?' * len(wanted[c:c + 500]))})", wanted[c:c + 500])}
        ids.update((i, None) for i in wanted if i in known)
        missing += [f"face id {i}" for i in wanted if i not in known]
        given = [os.fspath(p) for p in paths]
        by_path = self._store.face_ids_by_path(given + [os.path.abspath(p) for p in given])
        for p in dict.fromkeys(given):
            found_ids = by_path.get(p, []) + by_path.get(os.path.abspath(p), [])
            ids.update((i, None) for i in found_ids)
            if not found_ids:
                missing.append(f"photo {p}")
        if missing:
            raise KeyError(f"{self.path}: no face of {', '.join(missing[:10])}"
                           f"{f' and {len(missing) - 10} more' if len(missing) > 10 else ''} in the gallery (python -m "
                           f"pipelines.gallery {self.path} list shows the people, their face ids and photos)")
        order = sorted(ids)
        return sorted((r for c in range(0, len(order), 500)
                       for r in self._store.faces(f"f.id IN ({','.join('?' * len(order[c:c + 500]))})",
                                                  order[c:c + 500])), key=lambda r: r.row)

    def describe(self) -> Dict[str, Any]:
        """What the gallery holds and how it was made, without reading any embedding: ``path``, ``faces``,
        ``identities`` (how many people), ``dim``, ``model`` (``name``, ``sha256``, ``arch``; None when never
        recorded), ``threshold`` (the one stored in the gallery, or None), ``settings`` (:attr:`settings`),
        ``index`` (:attr:`index_info`: None when searched exactly) and ``bytes`` (its files on disk). What
        ``python -m pipelines.gallery GALLERY info`` prints."""
        self._store.refresh()
        model = self.model
        stored = self._store.meta.get("threshold")
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return {"path": str(self.path), "faces": self._store.count, "identities": len(self._store.identity_names()),
                "dim": self._store.dim,
                "model": None if model is None else {"name": model.name, "sha256": model.sha256, "arch": model.arch},
                "threshold": None if stored is None else float(stored), "settings": self.settings,
                "index": self.index_info, "bytes": size}

    @property
    def index_info(self) -> Optional[Dict[str, Any]]:
        """The FAISS index description (``factory``, ``params``, ``rows`` covered, ``file``), or None."""
        import json

        meta = self._store.meta
        if "index_file" not in meta:
            return None
        return {"factory": meta["index_factory"], "params": json.loads(meta["index_params"]),
                "rows": int(meta["index_rows"]), "file": meta["index_file"]}

    # -- model checks --------------------------------------------------------------------------
    def _check_model(self, embedder: Any) -> ModelInfo:
        info = model_info(embedder)
        recorded = self._store.model()
        if recorded is not None and not recorded.same_as(info):
            raise GalleryModelError(
                f"{self.path}: this gallery was built with {recorded}, but the embedder runs {info}; embeddings of "
                "different models are not comparable. Open it with the model it was built with, or enrol into a "
                "new gallery folder")
        if recorded is None and self._store.count:
            logger.warning("%s: the gallery records no model (faces were added without one); cannot check that %s "
                           "matches them", self.path, info)
        self._check_flip(_embedder_settings(embedder, aligned=True))  # flip only: the detector is not loaded here
        return info

    def _check_flip(self, settings: Optional[Mapping[str, Any]], who: str = "this embedder has it") -> None:
        """Warn when ``settings`` (:meth:`lightface.FaceEmbedder.settings`) have another flip fusion than the
        gallery's faces."""
        for key, recorded_flip, flip in settings_changes(self.settings, settings or {}):
            if key == "flip":
                logger.warning("%s: the gallery's faces were embedded with flip fusion %s, %s %s: the scores shift "
                               "and the model card's thresholds differ between the two; use flip=%s (--%sflip)",
                               self.path, _on_off(recorded_flip), who, _on_off(flip), bool(recorded_flip),
                               "" if recorded_flip else "no-")

    def _check_detector(self, embedder: Any) -> None:
        """Warn when whole photos are embedded with another detector than the gallery's faces were:
        its landmarks place the crop differently, and the scores shift; or with the same detector at
        another ``det_size`` / ``threshold``: other faces are found (small ones, weak ones), so a person
        enrolled from a face the other setting misses, or the reverse, is not matched; or cropped from the
        landmarks by another ``align_method``: the crops differ, and the scores shift."""
        self._check_detector_settings(_embedder_settings(embedder, aligned=False))

    def _check_detector_settings(self, settings: Optional[Mapping[str, Any]],
                                 who: str = "this embedder's detector") -> None:
        """:meth:`_check_detector` for the settings (:meth:`lightface.FaceEmbedder.settings` of whole photos)
        that some faces were or will be embedded with; ``who`` names them in the warning."""
        changes = {c[0]: c for c in settings_changes(self.settings, settings or {})}
        if "detector.align_method" in changes:
            _, recorded, method = changes["detector.align_method"]
            logger.warning("%s: the gallery's faces were cropped from their landmarks with align_method %r, %s with "
                           "%r: the crops differ (eye line, face position and scale) and the scores shift; use "
                           "FaceEmbedder(align_method=%r) (--align-method %s) to crop as the enrolment did",
                           self.path, recorded, who, method, recorded, recorded)
        if "detector.model" in changes:
            _, recorded, name = changes["detector.model"]
            logger.warning("%s: the gallery's faces were detected and aligned by %s, %s is %s: crops differ "
                           "slightly and the scores shift; use FaceEmbedder(detector=...) (--detector) with the "
                           "gallery's detector", self.path, recorded, who, name)
            return
        changed = [changes[k] for k in _DETECTOR_CHECKED if k in changes]
        if changed:
            options = {k.split(".")[1]: changes[k][1] for k in _DETECTOR_CHECKED[:2] if k in changes}
            fix = [f"FaceEmbedder(detector_options={options})"] if options else []
            fix += [f"FaceEmbedder({_DETECTOR_FIX[c[0]][0]}={c[1]})" for c in changed
                    if _DETECTOR_FIX[c[0]][0] != "detector_options"]
            flags = " ".join(_flag_text(c[0], c[1]) for c in changed)
            effects = []
            if any(c[0] != "detector.antialias" for c in changed):
                effects.append("other faces are found (small or weak ones), so some are found in one setting and "
                               "missed in the other")
            if any(c[0] == "detector.antialias" for c in changed):  # the same face, cropped differently
                effects.append("the same face is cropped differently, so the scores shift")
            logger.warning("%s: the gallery's faces were detected with %s, %s runs with %s: %s; use %s%s to detect "
                           "as the enrolment did", self.path, _settings_text(changed, 1), who,
                           _settings_text(changed, 2), "; ".join(effects), " and ".join(fix),
                           f" ({flags})" if flags else "")

    def _check_settings(self, settings: Optional[Mapping[str, Any]], who: str) -> None:
        """Both checks (flip fusion; for whole photos the detector) of settings that faces arrive with."""
        self._check_flip(settings, f"{who} have it")
        if isinstance(settings, Mapping) and settings.get("detector"):
            self._check_detector_settings(settings, f"{who}' detector")

    def _record_embedder_settings(self, embedder: Any, aligned: bool) -> None:
        """:meth:`_record_settings` of the embedder (its settings for ``aligned``, its identification threshold)."""
        self._record_settings(_embedder_settings(embedder, aligned), embedder_identification_threshold(embedder))

    def _record_settings(self, settings: Optional[Mapping[str, Any]], threshold: Optional[float] = None) -> None:
        """Store, in one transaction, the identification threshold (unless the gallery has one) and the settings
        faces arrive with (:meth:`lightface.FaceEmbedder.settings`): all of them with the gallery's first faces
        (flip fusion, checked by :meth:`_check_model`; for whole photos the detector and its options, checked by
        :meth:`_check_detector`), and the detector of the first whole-photo faces of a gallery that records none
        (one started from aligned crops, or from embeddings added without settings), so that photos searched or
        enrolled later are checked against it; also under the keys earlier lightface versions read (``flip``,
        ``detector``, ``detector_options``)."""
        self._store.refresh()
        meta = self._store.meta
        values: Dict[str, Any] = {}
        if threshold is not None and "threshold" not in meta:
            values["threshold"] = float(threshold)
        recorded = self.settings
        detector = settings.get("detector") if isinstance(settings, Mapping) else None
        if isinstance(settings, Mapping) and not self._store.count and recorded is None:
            values["settings"] = json.dumps(dict(settings), sort_keys=True)
            if settings.get("flip") is not None:
                values["flip"] = int(bool(settings["flip"]))
        elif detector and not (recorded or {}).get("detector") and "detector" not in meta:
            values["settings"] = json.dumps({**(recorded or {}), "detector": detector}, sort_keys=True)
        else:
            detector = None
        if detector:
            values["detector"] = detector["model"]
            if detector.get("det_size") is not None and detector.get("threshold") is not None:
                values["detector_options"] = json.dumps(
                    {"det_size": detector["det_size"], "threshold": round(detector["threshold"], 4)}, sort_keys=True)
        if values:
            with self._store.transaction() as conn:
                self._store.set_meta(conn, values)

    # -- writing -------------------------------------------------------------------------------
    def add(self, embeddings: Any, identities: Union[str, Sequence[str]], meta: Any = None, *,
            model: Any = None, settings: Union[None, str, Mapping[str, Any]] = None) -> np.ndarray:
        """Add faces atomically (all or none).

        Args:
            embeddings: float (N, D) or (D,) numpy array or tensor; normalised to unit
                length here and stored as float16.
            identities: one name for all, or N names (non-empty; ``"unknown"`` is reserved).
            meta: per-face metadata: None, N dicts, or a dict of N-long columns, with any of
                ``path``, ``file_sha256``, ``box`` (4,), ``landmarks`` (5, 2), ``det_score``,
                ``duplicate_of``.
            model: the model the embeddings come from (an embedder, an nn.Module or a
                :class:`ModelInfo`); default: the gallery's embedder. Refused when it differs
                from the gallery's model.
            settings: the embedder settings the embeddings were made with
                (:meth:`lightface.FaceEmbedder.settings` of ``aligned``; the ``settings`` entry of a
                ``python -m pipelines.extract_embeddings`` npz, JSON text accepted; :meth:`add_npz` passes it).
                Checked as :meth:`enroll` checks an embedder's (a warning when their flip fusion or detector
                settings differ from the gallery's) and recorded as it records them (with the first faces, and the
                detector of the first whole-photo faces). None: nothing is checked or recorded.
        Returns:
            int64 (N,) face ids of the new faces.
        """
        emb = _as_matrix(embeddings, "embeddings")
        n = len(emb)
        names = [identities] * n if isinstance(identities, str) else [str(s) for s in identities]
        if len(names) != n:
            raise ValueError(f"{len(names)} identities for {n} embeddings")
        for s in set(names):
            check_identity(s)
        if self._store.dim and emb.shape[1] != self._store.dim:
            raise ValueError(f"{self.path}: the gallery holds {self._store.dim}-d embeddings, got {emb.shape[1]}-d")
        info = self._model if model is None else self._check_model(model)
        records = _meta_records(meta, n)
        if isinstance(settings, (str, bytes, np.ndarray)):
            settings = json.loads(str(settings))
        if settings is not None and not isinstance(settings, Mapping):
            raise TypeError(f"settings must be a FaceEmbedder.settings() dict or its JSON text, got "
                            f"{type(settings).__name__}")
        if settings is not None:
            self._check_settings(settings, "these embeddings")
            self._record_settings(settings)
        return self._store.append(emb.astype(np.float16), names, records, model=info)

    def add_npz(self, path: Union[str, os.PathLike], identities: Union[None, str, Sequence[str]] = None) -> np.ndarray:
        """Add the embeddings of a ``python -m pipelines.extract_embeddings`` npz (``--format npz``), with the
        model and the settings it records (:meth:`add` with ``model`` and ``settings``): embeddings of another
        model are refused (:class:`GalleryModelError`), other flip fusion or detector settings than the gallery's
        give the warning :meth:`enroll` gives.

        Args:
            path: the ``.npz`` file.
            identities: one name for all, N names, or None (default): each image's folder, as :meth:`enroll`
                names people (the npz's ``paths`` are relative to the extracted folder: ``<person>/<photo>``).
        Returns:
            int64 face ids of the new faces. The npz's ``paths`` joined to its ``root`` (the absolute folder it
            was extracted from) are stored as the faces' paths, with its ``file_sha256``, as :meth:`enroll` stores
            photos; an npz of an earlier lightface records neither, and its relative ``paths`` are stored as they
            are (a warning says that photos enrolled from the same files are then not recognised). Adding the same
            npz again adds nothing, nor does adding it to a gallery that enrolled its photos (or enrolling its
            photos after it): a file already enrolled (same sha256) is not added again (a warning when under
            another path or person), nor a face whose path, person and embedding are already in the gallery, so
            that a rerun of ``python -m pipelines.enroll GALLERY embeddings.npz`` resumes as it does for photos.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not an npz of python -m pipelines.extract_embeddings ({err})") from err
        if "embeddings" not in data or "paths" not in data:
            raise ValueError(f"{path}: no 'embeddings' / 'paths' arrays; not an npz of "
                             "python -m pipelines.extract_embeddings (--format npz)")
        rels = [str(p) for p in data["paths"]]
        # an npz of this lightface records the folder its paths are relative to and each file's sha256: its faces
        # are stored with absolute paths, as enroll() stores photos, so that either finds the other's faces
        root = str(data["root"]) if "root" in data else ""
        if not root:
            logger.warning("%s: the npz records no root folder (written by an earlier lightface): its faces keep its "
                           "relative paths, so photos enrolled from the same files are not recognised as its faces; "
                           "extract it again (python -m pipelines.extract_embeddings) to record them", path)
        paths = [os.path.abspath(os.path.join(root, p)) for p in rels] if root else rels
        shas = [str(s) or None for s in data["file_sha256"]] if "file_sha256" in data else [None] * len(paths)
        if len(shas) != len(paths):
            raise ValueError(f"{path}: {len(shas)} file_sha256 for {len(paths)} paths; not an npz of "
                             "python -m pipelines.extract_embeddings")
        if identities is None:
            parts = [Path(p).parts for p in rels]
            bad = [p for p, q in zip(rels, parts) if len(q) < 2]
            if bad:
                raise ValueError(f"{path}: {len(bad)} image(s) have no folder to name their person (e.g. {bad[0]!r}); "
                                 "pass identities= (one name, or one per image; python -m pipelines.enroll: "
                                 "--identity NAME)")
            identities = [q[-2] for q in parts]
        sha = str(data["weights_sha256"]) if "weights_sha256" in data else ""
        model = None
        if sha:
            model = ModelInfo(str(data.get("weights_name", "")) or sha[:12], sha,
                              str(data.get("weights_arch", "")) or None)
        else:
            logger.warning("%s: the npz names no model (written by an earlier lightface); it is taken for the "
                           "gallery's", path)
        settings = str(data["settings"]) if "settings" in data else None
        emb = _as_matrix(data["embeddings"], f"{path}: embeddings")
        names = [identities] * len(paths) if isinstance(identities, str) else [str(s) for s in identities]
        if len(names) == len(paths) == len(emb):
            keep = self._not_enrolled(emb, names, paths, shas, rels)
            if not keep.all():
                logger.info("%s: %d of the %d faces of %s are already in the gallery (same file, or same path, "
                            "person and embedding); not added again", self.path, int((~keep).sum()), len(keep), path)
                kept = np.flatnonzero(keep)
                emb, names, paths, shas = emb[keep], [names[i] for i in kept], [paths[i] for i in kept], \
                    [shas[i] for i in kept]
            if not len(emb):
                return np.zeros(0, np.int64)
        return self.add(emb, names, {"path": paths, "file_sha256": shas}, model=model, settings=settings)

    def _not_enrolled(self, emb: np.ndarray, names: Sequence[str], paths: Sequence[str],
                      shas: Optional[Sequence[Optional[str]]] = None,
                      other_paths: Optional[Sequence[str]] = None) -> np.ndarray:
        """bool (N,): the faces to add. Left out: a file (``shas``, None where unknown) already enrolled, or met
        earlier in this call, as :meth:`enroll` leaves it out (logged when under another path or person), and a
        face in the gallery under the same path (or its ``other_paths``: the relative path an earlier lightface
        stored for an npz's face) and person with the same embedding."""
        self._store.refresh()
        keep = np.ones(len(emb), bool)
        seen: Dict[str, Tuple[str, str]] = {}
        for i, sha in enumerate(shas or ()):
            if not sha:
                continue
            prev = self._store.find_sha(sha)
            prev = prev[1:] if prev is not None else seen.get(sha)
            if prev is None:
                seen[sha] = (names[i], paths[i])
                continue
            keep[i] = False
            if prev[0] != names[i] or not _same_file(prev[1], paths[i]):
                logger.warning("%s (%s): same file as %s (%s); not added again", paths[i], names[i], prev[1], prev[0])
        other = list(other_paths) if other_paths is not None else list(paths)
        known = self._store.face_ids_by_path([p for i, k in enumerate(keep) if k for p in (paths[i], other[i])])
        if not known:
            return keep
        ids = sorted({i for v in known.values() for i in v})
        records = {r.face_id: r for c in range(0, len(ids), 500)
                   for r in self._store.faces(f"f.id IN ({','.join('?' * len(ids[c:c + 500]))})", ids[c:c + 500])}
        stored = self._store.embeddings
        for i, p in enumerate(paths):
            for fid in dict.fromkeys(known.get(p, []) + known.get(other[i], [])) if keep[i] else ():
                r = records.get(fid)
                same = r is not None and r.identity == names[i]
                if same and float(stored[r.row].astype(np.float32) @ emb[i]) > 0.999:
                    keep[i] = False
                    break
        return keep

    def remove(self, identity: str) -> int:
        """Remove every face of ``identity``; returns how many were removed.

        Rewrites the embedding file without them (atomically) and drops the FAISS index
        (rebuild it with :meth:`build_index`, ``python -m pipelines.gallery GALLERY index auto``). Raises KeyError
        for an unknown identity. ``python -m pipelines.gallery GALLERY remove NAME`` from the command line.
        """
        removed = self._store.remove_faces("identity_id IN (SELECT id FROM identities WHERE name=?)", (identity,))
        if removed == 0:
            raise KeyError(f"{self.path}: no identity {identity!r} in the gallery")
        self._index = None
        logger.info("%s: removed %d faces of %r", self.path, removed, identity)
        return removed

    def remove_faces(self, face_ids: Sequence[int]) -> int:
        """Remove single faces by face id; returns how many were removed (unknown ids are ignored; see
        :meth:`select_faces` to refuse them). Drops the FAISS index, as :meth:`remove` does. ``python -m
        pipelines.gallery GALLERY remove --face-id ID ...`` from the command line."""
        ids = sorted({int(i) for i in face_ids})
        if not ids:
            return 0
        removed = self._store.remove_faces(f"id IN ({','.join('?' * len(ids))})", ids)
        self._index = None
        return removed

    def rename(self, old: str, new: str, merge: bool = False) -> int:
        """Rename identity ``old`` to ``new``; returns its number of faces.

        Raises KeyError when ``old`` is not enrolled, ValueError when ``new`` exists
        (unless ``merge=True``, which moves the faces into it) or is ``"unknown"``.
        """
        if not str(new).strip():
            raise ValueError(f"{self.path}: cannot rename {old!r} to an empty name")
        if new == UNKNOWN:
            raise ValueError(f"{self.path}: cannot rename {old!r} to {UNKNOWN!r}, the name reserved for faces identify() "
                             "does not recognise; choose another name")
        return self._store.rename_identity(old, new, merge)

    # -- enrolment -----------------------------------------------------------------------------
    def _detect(self, embedder: Any, img: np.ndarray, source: str, report: EnrollReport):
        """The photo's main face as ``embedder`` embeds whole photos (its rescue, its crop):
        ``(gray crop, record)``; a photo with several faces is noted in ``report``."""
        face, crop, found = embedder._main_face_crop(img, source)
        if found > 1:
            report.multi_face[source] = found
        return crop, {"box": face.box, "landmarks": face.landmarks, "det_score": face.score}

    def enroll(self, paths_or_folders: Any, embedder: Any = None, *, aligned: bool = False, batch_size: int = 32,
               duplicate_threshold: Optional[float] = DUPLICATE_THRESHOLD, progress: bool = False) -> EnrollReport:
        """Enrol photos: detect the face, align, embed, add. Resumable and crash-safe.

        Each photo's main face is taken as ``embedder.embed(photo, aligned=False)`` takes it:
        the same crop, and the embedder's ``rescue_threshold`` for occluded faces the detector
        scores under its own threshold.

        Args:
            paths_or_folders: a folder of people (one sub-folder per person, named after
                them), one person's folder, image files, a list of these, or
                ``{identity: paths}`` (see :func:`lightface.gallery.photos.collect_photos`).
            embedder: a :class:`lightface.FaceEmbedder` (default: the gallery's). Its model is
                recorded in the gallery on the first enrolment and checked afterwards.
            aligned: the photos are already Light CNN crops (no detection; see
                ``FaceEmbedder``'s size policy).
            batch_size: faces per forward pass and per commit: a killed run loses at most
                one batch, and running again resumes after the last commit.
            duplicate_threshold: cosine at or above which a new face is flagged as a
                near-duplicate of an enrolled one (None: no check). Byte-identical files are
                always detected (sha256) and not added twice.
            progress: show a tqdm bar.
        Returns:
            an :class:`EnrollReport`. Bad photos (unreadable, no face) are skipped and
            listed in ``report.failed``; they never stop the run.
        """
        from ..data.io import ImageReadError, decode_image, to_gray
        from ..embed import NoFaceError, prepare_aligned

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        embedder = embedder if embedder is not None else self.embedder
        if embedder is None:
            raise ValueError("enroll needs an embedder: FaceGallery(path, embedder) or enroll(..., embedder=...)")
        if isinstance(paths_or_folders, Mapping):  # names given by the caller: refused before any work
            for name in paths_or_folders:
                check_identity(name)
        info = self._check_model(embedder)
        if not aligned:
            self._check_detector(embedder)
        self._record_embedder_settings(embedder, aligned)
        t0 = time.perf_counter()
        items = collect_photos(paths_or_folders)
        report = EnrollReport(photos=len(items))
        seen: Dict[str, Tuple[str, str]] = {}
        pending: List[Tuple[str, str, np.ndarray, Dict[str, Any]]] = []
        identities = set()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="enrolling", unit="photo")
        try:
            for identity, photo in items:
                if bar is not None:
                    bar.update(1)
                source = os.path.abspath(photo)
                if identity == UNKNOWN or not identity.strip():
                    report.failed[source] = (f"{source}: the identity name {identity!r} is reserved for faces "
                                             "identify() does not recognise; rename the folder")
                    continue
                try:
                    data = Path(photo).read_bytes()
                except OSError as err:
                    report.failed[source] = f"{source}: cannot read ({err.strerror or err})"
                    continue
                sha = _file_sha256(data)
                prev = self._store.find_sha(sha)
                if prev is None and sha in seen:
                    prev = (None, *seen[sha])
                if prev is not None:
                    if prev[1] == identity and _same_file(prev[2], source):
                        report.skipped += 1
                    else:
                        report.duplicates.append(Duplicate(source, identity, "file", prev[0], prev[1], prev[2]))
                        logger.warning("%s: same file as %s (%s); not added again", source, prev[2], prev[1])
                    continue
                try:
                    img = decode_image(data, "bgr", source)
                    if aligned:
                        gray, rec = prepare_aligned(to_gray(img), source,
                                                    getattr(embedder, "aligned_template", "auto")), {}
                    else:
                        gray, rec = self._detect(embedder, img, source, report)
                except (ImageReadError, NoFaceError, ValueError, TypeError) as err:
                    report.failed[source] = str(err)
                    logger.warning("skipping %s", err)
                    continue
                seen[sha] = (identity, source)
                rec.update(path=source, file_sha256=sha)
                pending.append((identity, source, gray, rec))
                if len(pending) >= batch_size:
                    self._enroll_batch(pending, embedder, info, report, duplicate_threshold, identities)
                    pending = []
            if pending:
                self._enroll_batch(pending, embedder, info, report, duplicate_threshold, identities)
        finally:
            if bar is not None:
                bar.close()
        report.identities = sorted(identities)
        report.seconds = time.perf_counter() - t0
        logger.info("%s: %s", self.path, report.summary())
        return report

    def _enroll_batch(self, pending, embedder, info: ModelInfo, report: EnrollReport,
                      duplicate_threshold: Optional[float], identities: set) -> None:
        crops = np.stack([p[2] for p in pending])
        x = torch.from_numpy(crops).unsqueeze(1).float().div_(255.0)
        emb = embedder.embed_tensor(x).float().cpu().numpy()
        records = [p[3] for p in pending]
        if duplicate_threshold is not None:
            thr = float(duplicate_threshold)
            if len(self._store.embeddings):
                res = self.search(emb, k=1)
                for j in np.flatnonzero(res.scores[:, 0] >= thr):
                    m = res[int(j)][0]
                    records[j]["duplicate_of"] = m.face_id
                    report.duplicates.append(Duplicate(pending[j][1], pending[j][0], "embedding", m.face_id, m.identity,
                                                       m.path, m.score))
            sims = emb @ emb.T
            for j in range(1, len(pending)):
                i = int(np.argmax(sims[j, :j]))
                if sims[j, i] >= thr and "duplicate_of" not in records[j]:
                    records[j]["duplicate_of"] = ("batch", i)
                    report.duplicates.append(Duplicate(pending[j][1], pending[j][0], "embedding", None, pending[i][0],
                                                       pending[i][1], float(sims[j, i])))
        for path, old_ids in self._store.face_ids_by_path([p[1] for p in pending]).items():
            report.changed[path] = old_ids
            logger.warning("%s: the file differs from the one enrolled from this path as face %s; the new face is "
                           "added beside it (remove_faces(%s), python -m pipelines.gallery %s remove --face-id %s, "
                           "drops the old)", path, ", ".join(map(str, old_ids)), old_ids, self.path,
                           " ".join(map(str, old_ids)))
        ids = self.add(emb, [p[0] for p in pending], records, model=info)
        for d in report.duplicates:  # fill in face ids of in-batch originals (near-duplicates and same files)
            if d.of_face_id is None:
                k = next((i for i, p in enumerate(pending) if p[1] == d.of_path), None)
                if k is not None:
                    d.of_face_id = int(ids[k])
        report.added += len(pending)
        identities.update(p[0] for p in pending)

    # -- search --------------------------------------------------------------------------------
    def _load_index(self):
        name = self._store.meta.get("index_file")
        if name is None:
            return None
        if self._index is None or self._index_file != name:
            path = self.path / name
            if not path.is_file():
                raise CorruptGalleryError(f"{path}: the FAISS index named by the gallery is missing; rebuild it with "
                                          f"build_index() or drop it with drop_index() ("
                                          f"{faiss_backend.index_commands(self.path)}); {faiss_backend.EXACT_HINT}")
            self._index = faiss_backend.load_index(path)
            self._index_file = name
        return self._index

    def _exact_rows(self) -> np.ndarray:
        """The embeddings for the exact search: a float32 copy for small galleries, else the float16 map."""
        store = self._store
        emb = store.embeddings
        if emb.shape[0] * emb.shape[1] * 4 > FP32_CACHE_BYTES:
            self._f32 = None
            return emb
        key = (store.emb_path, store.count)
        if self._f32 is None or self._f32_key != key:
            self._f32, self._f32_key = np.asarray(emb, dtype=np.float32), key
        return self._f32

    def _search_rows(self, q: np.ndarray, k: int, backend: str, params: Optional[Dict[str, Any]]):
        store = self._store
        n = store.count
        if backend not in ("auto", "exact", "faiss"):
            raise ValueError(f"backend must be 'auto', 'exact' or 'faiss', got {backend!r}")
        has_index = "index_file" in store.meta
        if backend == "faiss" and not has_index:
            raise GalleryError(f"{self.path}: the gallery has no FAISS index; build one with build_index() (python "
                               f"-m pipelines.gallery {self.path} index auto), or search with backend='exact' "
                               "(--backend exact)")
        use_faiss = has_index and (backend == "faiss" or (backend == "auto" and faiss_backend.available()))
        if has_index and backend == "auto" and not use_faiss and not self._told_no_faiss:
            self._told_no_faiss = True
            logger.warning("%s: the gallery has a FAISS index but faiss is not installed; searching exactly "
                           "(pip install 'lightface[search]')", self.path)
        if not use_faiss:
            return exact_search(self._exact_rows(), q, k)
        import json

        index = self._load_index()
        covered = min(int(store.meta["index_rows"]), n)
        p = dict(json.loads(store.meta["index_params"]))
        p.update(params or {})
        parts = [faiss_backend.search_index(index, q, min(k, covered), p)] if covered else []
        if covered < n:  # rows added after the index was built: searched exactly
            parts.append(exact_search(store.embeddings[covered:], q, k, row_offset=covered))
        if len(parts) == 1 and (parts[0][1] >= 0).all():
            return parts[0]
        return _merge_topk(parts, min(k, n))

    def search(self, queries: Any, k: int = 5, *, backend: str = "auto",
               params: Optional[Dict[str, Any]] = None) -> SearchResult:
        """The k most similar gallery faces of each query.

        Args:
            queries: float (Q, D) or (D,) embeddings (numpy or tensor; normalised here).
            k: matches per query (fewer when the gallery holds fewer faces).
            backend: ``"auto"`` (the FAISS index when the gallery has one and faiss is
                installed, else exact), ``"exact"`` or ``"faiss"``.
            params: FAISS search parameters overriding the stored ones (``nprobe``,
                ``efSearch``).
        Returns:
            :class:`SearchResult` (scores are cosine similarities in [-1, 1]).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self._store.refresh()
        q = _as_matrix(queries, "queries")
        if self._store.dim and q.shape[1] != self._store.dim:
            raise ValueError(f"queries are {q.shape[1]}-d but the gallery holds {self._store.dim}-d embeddings")
        if self._store.count == 0:
            empty = np.zeros((len(q), 0))
            return SearchResult(empty.astype(np.float32), empty.astype(np.int64), empty.astype(object),
                                empty.astype(object))
        scores, rows = self._search_rows(q, int(k), backend, params)
        face_ids, names, paths = self._row_records(rows)
        # float16 storage: a unit vector's stored norm is 1 +- 1e-3, so clip to the cosine range
        return SearchResult(np.clip(scores, -1.0, 1.0).astype(np.float32), face_ids, names, paths)

    def _row_records(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face ids (-1), identities and paths (None) of result rows (-1 = no match)."""
        shape, found = rows.shape, rows >= 0
        face_ids = np.full(shape, -1, np.int64)
        names = np.empty(shape, object)
        paths = np.empty(shape, object)
        table = self._store.row_table()
        if table is not None:
            r = rows[found]
            face_ids[found], names[found], paths[found] = table.face_ids[r], table.names[r], table.paths[r]
            return face_ids, names, paths
        records = self._store.lookup_rows(rows[found])
        for (i, j), r in np.ndenumerate(rows):
            if r >= 0:
                face_ids[i, j], names[i, j], paths[i, j] = records[int(r)]
        return face_ids, names, paths

    def _resolve_threshold(self, threshold: Optional[float]) -> float:
        if threshold is not None:
            return float(threshold)
        t = self.threshold
        if t is None:
            raise ValueError(f"{self.path}: identify needs a threshold: pass threshold=<cosine>, or open the gallery "
                             "with an embedder that has one (embedder.threshold, from its model card)")
        return t

    def identify(self, queries: Any, threshold: Optional[float] = None, *, backend: str = "auto",
                 params: Optional[Dict[str, Any]] = None) -> Identification:
        """Open-set identification: the nearest enrolled person, or ``"unknown"``.

        Args:
            queries: float (Q, D) or (D,) embeddings.
            threshold: cosine similarity below which the answer is :data:`UNKNOWN`.
                Default: the embedder's calibrated identification threshold (its model
                card's ``identification_threshold``, else its verification ``threshold``),
                else the one stored in the gallery; ValueError when there is none.
            backend, params: as in :meth:`search`.
        """
        thr = self._resolve_threshold(threshold)
        res = self.search(queries, k=1, backend=backend, params=params)
        nq = len(res)
        if res.scores.shape[1] == 0:
            return Identification([UNKNOWN] * nq, np.full(nq, -np.inf, np.float32), [None] * nq, [None] * nq,
                                  np.full(nq, -1, np.int64), thr)
        scores = res.scores[:, 0]
        nearest = [str(s) for s in res.identities[:, 0]]
        names = [s if sc >= thr else UNKNOWN for s, sc in zip(nearest, scores)]
        return Identification(names, scores, nearest, list(res.paths[:, 0]), res.face_ids[:, 0].copy(), thr)

    def search_faces(self, image: Any, k: int = 5, embedder: Any = None, threshold: Optional[float] = None,
                     **kwargs) -> List[FaceSearch]:
        """Detect every face of one photo (a group photo works) and search each.

        Args:
            image: a path, uint8 BGR/gray numpy array or PIL image (a whole photo).
            k: matches per face.
            embedder: default: the gallery's (its model is checked against the gallery's).
            threshold: for the open-set ``identity`` of each face (default as in
                :meth:`identify`; when there is none, ``identity`` is None).
            **kwargs: ``backend`` / ``params`` for :meth:`search`.
        Returns:
            one :class:`FaceSearch` per face, largest first (empty when no face is found).
        """
        embedder = embedder if embedder is not None else self.embedder
        if embedder is None:
            raise ValueError("search_faces needs an embedder: FaceGallery(path, embedder) or embedder=...")
        if embedder is not self.embedder:
            self._check_model(embedder)
        self._check_detector(embedder)
        faces = embedder.embed_faces(image, rescue=True)  # an occluded face, as enroll() takes it
        if not faces:
            return []
        res = self.search(np.stack([f.embedding for f in faces]), k=k, **kwargs)
        # as identify(): the card's identification threshold, else the one stored in the gallery
        thr = float(threshold) if threshold is not None else embedder_identification_threshold(embedder)
        if thr is None:
            thr = self.threshold
        out = []
        for i, f in enumerate(faces):
            matches = res[i]
            identity = None
            if thr is not None:
                identity = matches[0].identity if matches and matches[0].score >= thr else UNKNOWN
            out.append(FaceSearch(f.box, f.score, f.landmarks, f.crop, f.embedding, matches, identity))
        return out

    # -- FAISS index ---------------------------------------------------------------------------
    def build_index(self, kind: str = "auto", params: Optional[Dict[str, Any]] = None, progress: bool = False,
                    seed: int = 0) -> Dict[str, Any]:
        """Build (or rebuild) the FAISS index over every face and store it in the gallery.

        Args:
            kind: ``"auto"`` (HNSW up to ``faiss_backend.HNSW_MAX_ROWS`` faces, IVF above),
                ``"hnsw"``, ``"ivf"``, ``"flat"`` (these four in any case), or any FAISS factory string
                (``"HNSW32"``, ``"IVF4096,Flat"``, ...; ValueError when FAISS cannot parse it).
            params: overrides of the build/search parameters (``efConstruction``,
                ``efSearch``, ``nprobe``); stored with the index.
            progress: show a tqdm bar while adding vectors.
            seed: IVF training-sample seed.
        Returns:
            :attr:`index_info`. Faces added later are searched exactly until
            :meth:`update_index` (or a rebuild) covers them.
        """
        faiss_backend.require()
        store = self._store
        with store.write_lock():
            n = store.count
            if n == 0:
                raise GalleryError(f"{self.path}: the gallery is empty; nothing to index")
            if kind.lower() in faiss_backend.KINDS:
                factory, p = faiss_backend.choose_index(n, kind.lower())
            else:
                factory, p = kind, {}
            p = {**p, **(params or {})}
            t0 = time.perf_counter()
            index = faiss_backend.build_index(store.embeddings, factory, p, seed=seed, progress=progress)
            self._commit_index(index, factory, p, n)
        logger.info("%s: built %s over %d faces in %.1f s", self.path, factory, n, time.perf_counter() - t0)
        return self.index_info

    def _commit_index(self, index, factory: str, params: Dict[str, Any], rows: int) -> None:
        store = self._store
        old = store.meta.get("index_file")
        name = f"index-{time.time_ns()}.faiss"
        faiss_backend.save_index(index, self.path / name)
        from .storage import _fsync_dir

        _fsync_dir(self.path)
        with store.transaction() as conn:
            store.set_meta(conn, {"index_file": name, "index_factory": factory,
                                  "index_params": faiss_backend.params_to_text(params), "index_rows": rows})
        if old and old != name:
            try:
                os.unlink(self.path / old)
            except OSError:
                pass
        self._index, self._index_file = index, name

    def update_index(self, progress: bool = False) -> Dict[str, Any]:
        """Add the faces enrolled since the index was built to it (no retraining)."""
        import json

        store = self._store
        with store.write_lock():
            if "index_file" not in store.meta:
                raise GalleryError(f"{self.path}: the gallery has no FAISS index; build one with build_index() "
                                   f"(python -m pipelines.gallery {self.path} index auto)")
            covered = int(store.meta["index_rows"])
            if covered < store.count:
                index = self._load_index()
                faiss_backend.add_rows(index, store.embeddings[covered:])
                self._commit_index(index, store.meta["index_factory"], json.loads(store.meta["index_params"]),
                                   store.count)
        return self.index_info

    def drop_index(self) -> None:
        """Remove the FAISS index (search becomes exact)."""
        store = self._store
        with store.write_lock():
            old = store.meta.get("index_file")
            with store.transaction() as conn:
                store.set_meta(conn, {k: None for k in INDEX_KEYS})
            if old:
                try:
                    os.unlink(self.path / old)
                except OSError:
                    pass
        self._index = None

    # -- integrity -----------------------------------------------------------------------------
    def verify(self) -> Dict[str, Any]:
        """Check the whole gallery; returns a summary, raises :class:`CorruptGalleryError` listing
        every problem found (SQLite integrity, row numbering, non-finite or non-unit vectors,
        index bookkeeping)."""
        import sqlite3

        store = self._store
        store.refresh()
        problems = []
        try:
            check = store.conn.execute("PRAGMA integrity_check").fetchall()
            if check != [("ok",)]:
                problems.append(f"SQLite integrity_check: {check[:3]}")
            rows = np.array([r[0] for r in store.conn.execute("SELECT row FROM faces ORDER BY row")], np.int64)
        except sqlite3.DatabaseError as err:
            raise CorruptGalleryError(f"{store.db_path}: {err}") from err
        if len(rows) != store.count or (len(rows) and not np.array_equal(rows, np.arange(store.count))):
            problems.append(f"{len(rows)} face records for {store.count} embedding rows (rows must be 0..count-1)")
        emb = store.embeddings
        bad_rows = []
        for s in range(0, len(emb), 1 << 16):
            block = np.asarray(emb[s:s + (1 << 16)], np.float32)
            norms = np.linalg.norm(block, axis=1)
            bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-2))
            bad_rows += (bad + s).tolist()
        if bad_rows:
            problems.append(f"{len(bad_rows)} embeddings are not finite unit vectors (rows {bad_rows[:5]})")
        info = self.index_info
        if info is not None:
            if info["rows"] > store.count:
                problems.append(f"the FAISS index covers {info['rows']} rows but the gallery has {store.count}")
            if not (self.path / info["file"]).is_file():
                problems.append(f"the FAISS index file {info['file']} is missing")
        if problems:
            raise CorruptGalleryError(f"{self.path}: " + "; ".join(problems))
        return {"faces": store.count, "identities": len(store.identity_names()), "dim": store.dim,
                "model": str(self.model) if self.model else None, "index": info}
