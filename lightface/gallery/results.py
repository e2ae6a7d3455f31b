"""Result types of :class:`lightface.gallery.FaceGallery`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["Match", "SearchResult", "Identification", "Duplicate", "EnrollReport", "FaceSearch"]


# -- results -------------------------------------------------------------------------------
@dataclass
class Match:
    """One gallery face returned by a search."""

    identity: str
    score: float
    path: Optional[str]
    face_id: int


@dataclass
class SearchResult:
    """Top-k matches of Q queries (``K = min(k, number of faces)`` columns, best first).

    Attributes:
        scores: float32 (Q, K) cosine similarities, descending.
        face_ids: int64 (Q, K) gallery face ids.
        identities: (Q, K) object array of identity names.
        paths: (Q, K) object array of source photo paths (None when not recorded).
    """

    scores: np.ndarray
    face_ids: np.ndarray
    identities: np.ndarray
    paths: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i: int) -> List[Match]:
        """The matches of query ``i``, best first."""
        return [Match(str(self.identities[i, j]), float(self.scores[i, j]), self.paths[i, j], int(self.face_ids[i, j]))
                for j in range(self.scores.shape[1])]

    def to_records(self) -> List[Dict[str, Any]]:
        """One dict per (query, rank): ``query, rank, identity, score, path, face_id``."""
        return [{"query": i, "rank": j + 1, "identity": m.identity, "score": m.score, "path": m.path,
                 "face_id": m.face_id} for i in range(len(self)) for j, m in enumerate(self[i])]


@dataclass
class Identification:
    """Open-set answers for Q queries.

    Attributes:
        identities: Q names; :data:`UNKNOWN` (``"unknown"``) when the best score is below
            ``threshold`` or the gallery is empty.
        scores: float32 (Q,) best cosine similarity (-inf for an empty gallery).
        nearest: Q names of the nearest face whatever its score (None for an empty gallery).
        paths: Q source photos of the nearest face.
        face_ids: int64 (Q,) nearest face ids (-1 for an empty gallery).
        threshold: the cosine threshold used.
    """

    identities: List[str]
    scores: np.ndarray
    nearest: List[Optional[str]]
    paths: List[Optional[str]]
    face_ids: np.ndarray
    threshold: float

    @property
    def known(self) -> np.ndarray:
        """bool (Q,): True where the query was identified (score >= threshold)."""
        return self.scores >= self.threshold


@dataclass
class Duplicate:
    """A photo flagged as a duplicate during enrolment.

    ``kind`` is ``"file"`` (byte-identical to an enrolled photo: not added again) or
    ``"embedding"`` (cosine >= the duplicate threshold to an enrolled face: added, and
    recorded with ``duplicate_of``). ``conflict`` is True when the two carry different
    identities (a labelling error, or the same photo filed under two people).
    """

    path: str
    identity: str
    kind: str
    of_face_id: Optional[int]
    of_identity: str
    of_path: Optional[str]
    score: float = 1.0

    @property
    def conflict(self) -> bool:
        return self.identity != self.of_identity


@dataclass
class EnrollReport:
    """What :meth:`FaceGallery.enroll` did.

    Attributes:
        photos: photos found.
        added: faces added (one per photo).
        skipped: photos already in the gallery (same file at the same path; resumed runs).
        failed: ``{path: reason}`` for unreadable photos and photos with no face.
        duplicates: photos flagged as duplicates (see :class:`Duplicate`).
        multi_face: ``{path: faces found}`` where a photo held several faces (the main one was
            enrolled: the largest, its area weighted by its detection score, penalised by its distance from the
            image centre: :func:`lightface.data.detect.main_face`).
        identities: identities that received faces in this run.
        changed: ``{path: [old face ids]}`` for photos whose path was already enrolled from a
            different file (edited or replaced since): the new face is added beside the old
            ones, which :meth:`FaceGallery.remove_faces` (``python -m pipelines.gallery GALLERY remove
            --face-id ID ...``) drops when they are stale.
        seconds: wall time.
    """

    photos: int = 0
    added: int = 0
    skipped: int = 0
    failed: Dict[str, str] = field(default_factory=dict)
    duplicates: List[Duplicate] = field(default_factory=list)
    multi_face: Dict[str, int] = field(default_factory=dict)
    identities: List[str] = field(default_factory=list)
    changed: Dict[str, List[int]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """A one-paragraph human summary."""
        def dups(kind: str, what: str) -> str:  # "N <what>", and how many of them carry another identity
            found = [d for d in self.duplicates if d.kind == kind]
            other = sum(d.conflict for d in found)
            return f"{len(found)} {what}" + (f" ({other} under another identity)" if other else "")

        rate = self.added / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.photos} photos: {self.added} faces added for {len(self.identities)} identities, "
                f"{self.skipped} already enrolled, {len(self.failed)} failed, "
                f"{dups('file', 'exact duplicate files skipped')}, {dups('embedding', 'near-duplicates flagged')}, "
                f"{len(self.multi_face)} photos with several faces (main face enrolled), "
                f"{len(self.changed)} changed since enrolled (old faces kept); {self.seconds:.1f} s "
                f"({rate:.1f} faces/s)")


@dataclass
class FaceSearch:
    """One face found in a photo by :meth:`FaceGallery.search_faces`, with its matches.

    Attributes:
        box, det_score, landmarks: the detection (photo pixels).
        crop: the aligned gray 128x128 uint8 crop that was embedded.
        embedding: float32 (D,).
        matches: the top-k gallery faces, best first.
        identity: the open-set answer (:data:`UNKNOWN` below the threshold), or None when
            no threshold was available.
    """

    box: np.ndarray
    det_score: float
    landmarks: np.ndarray
    crop: np.ndarray
    embedding: np.ndarray
    matches: List[Match]
    identity: Optional[str]
