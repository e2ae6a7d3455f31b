"""Development protocols on ``../shared/data`` people kept out of training (the model card's numbers).

* ``lfw_dev``: LFW View-2 fold 2 (``lfw_train/pairs_dev.txt``, 300 same + 300 different
  pairs; fold-2 people are in no other fold and are left out of the training corpus),
  10-fold accuracy, AUC, TAR@FAR and the cosine threshold of best accuracy.
* ``cfp_fp``: the 35 held-out CFP people of ``cfp/`` (ids 451-485, never read by the
  training corpus): every frontal-profile pair of the same person against as many random
  different-person pairs, and rank-1 identification of each profile photo against the
  gallery of all frontal photos (the frontalization use case); also frontal-frontal.

* ``lfw_hard``: open-gallery identification of LFW fold-2 people under hard capture
  conditions: the gallery holds the first photo of each of the fold's 419 people, the
  probes are up to 3 other photos of each person who has more (157 people), each scored
  clean, under hard side lighting and under occlusion (sunglasses, mask, a hand;
  :mod:`lightface.eval.hard_conditions`, seeded), as rank-1; occlusion also by occluder.

:func:`calibrate_threshold` picks one verification threshold for both ways a face reaches
the network (aligned from given landmarks, or detected on the whole photo): the two paths
put same-person cosines at different heights, so a threshold fitted to one costs the other.

Faces are aligned from the given landmarks (LFW) or fiducials (CFP) to 144x144
``lightcnn_train`` crops (uint8 BGR); a Light CNN reads their centre 128 crop, which is
exactly the 128 ``lightcnn`` test crop. ``align_method`` (every function that crops faces) is
:func:`lightface.data.align.align_face`'s ``method``: ``"similarity"`` (default; the crops
lightface recognisers are trained on) or ``"eyes"`` (the original recipe, on which the official
Light CNN releases were trained: score those with ``FaceEmbedder.align_method``, as
``python -m pipelines.evaluate_dev`` does) (:func:`crop_embedder` turns a
:class:`~lightface.FaceEmbedder` into such a function). :func:`run_dev_protocols` scores any
``embed(crops) -> (N, D)`` function, so the student and a teacher are measured the same way;
:func:`lightface.eval.paired.compare_recognisers` compares two of them probe by probe.
"""
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.align import ALIGN_METHODS, align_face
from ..data.detect import main_face
from ..data.io import write_image
from ..data.pose_pairs import cfp_five_points
from ..data.sources import read_landmarks_file
from .hard_conditions import HARD_CONDITIONS, OCCLUDERS, occluder_kind
from .verification import PairList, best_threshold, read_pairs, verification_metrics

__all__ = ["lfw_dev_faces", "export_lfw_dev", "lfw_hard_faces", "lfw_hard_occluders", "by_occluder",
           "cfp_heldout_faces", "run_dev_protocols", "rank1", "rank1_hits", "crop_embedder", "calibrate_threshold",
           "PROTOCOLS"]

log = logging.getLogger(__name__)

PROTOCOLS = ("lfw_dev", "cfp_fp", "lfw_hard")
EmbedFn = Callable[[List[np.ndarray]], np.ndarray]


def _data_dir(data_root, name: str) -> Path:
    """``data_root/name``, or a FileNotFoundError naming the path and what to pass."""
    root = Path(data_root) / name
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: the data folder must be the shared data folder holding {name}/ "
                                f"(../shared/data; --data on the command line)")
    return root


def _check_align_method(method: str) -> str:
    """``method`` when it is one of :data:`~lightface.data.align.ALIGN_METHODS`, else a ValueError saying what to
    pass (before any photo is read)."""
    if method not in ALIGN_METHODS:
        raise ValueError(f"align_method must be one of {ALIGN_METHODS}, got {method!r} (a FaceEmbedder's "
                         "align_method says which its weights need)")
    return method


def crop_embedder(embedder, flip: Optional[bool] = None) -> EmbedFn:
    """The protocols' ``embed`` function for a :class:`~lightface.FaceEmbedder` (or anything with
    its ``embed(images, aligned=True, flip=...)``): list of N 144x144 uint8 BGR ``lightcnn_train``
    crops -> (N, D) embeddings of their centre 128 crops, which are exactly the 128 ``lightcnn``
    test crops the embedder expects. ``flip``: flip fusion (None: the embedder's default)."""
    return lambda crops: embedder.embed([c[8:136, 8:136] for c in crops], aligned=True, flip=flip)


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img


class _LfwAligner:
    """Crops of ``lfw_train/images`` photos (144x144 ``lightcnn_train`` unless another
    ``template`` / ``size``), aligned from the given landmarks, or from the main face a
    ``detector`` finds (:func:`lightface.data.detect.main_face`; the given landmarks when it
    finds none; ``undetected`` counts those), by ``align_method`` (:func:`~lightface.data.align.align_face`'s
    ``method``)."""

    def __init__(self, root: Path, detector=None, template: str = "lightcnn_train", size: int = 144,
                 align_method: str = "similarity"):
        self.root, self.detector, self.template, self.size = root, detector, template, size
        self.align_method = _check_align_method(align_method)
        self.table = read_landmarks_file(root / "landmarks_5pt.txt")
        self.undetected = 0

    def __call__(self, rel: str) -> np.ndarray:
        img = _read(self.root / "images" / rel)
        points = self.table[rel]
        if self.detector is not None:
            faces = self.detector.detect(img)
            if faces:
                points = main_face(faces, img.shape).landmarks
            else:
                self.undetected += 1
        return align_face(img, points, template=self.template, size=self.size, method=self.align_method)[0]

    def report(self, protocol: str, total: int) -> None:
        """Log the photos the detector found no face in."""
        if self.undetected:
            log.warning("%s: the detector found no face in %d of %d photos; aligned those from the given landmarks",
                        protocol, self.undetected, total)


def lfw_dev_faces(data_root, detector=None, template: str = "lightcnn_train", size: int = 144,
                  n_pairs: Optional[int] = None,
                  align_method: str = "similarity") -> Tuple[List[np.ndarray], np.ndarray, np.ndarray]:
    """``(crops, pairs (P, 2) int indices into crops, same (P,) bool)`` of ``pairs_dev.txt``.

    ``detector``: align from its landmarks (a :class:`~lightface.data.detect.FaceDetector`)
    instead of the given ones, as a whole-photo pipeline does. ``template`` / ``size``: the
    crops' framing (:func:`lightface.data.align.align_face`; default the 144x144 training crop,
    whose centre 128 is the Light CNN test crop). ``n_pairs``: only the first ``n_pairs // 2``
    same and ``n_pairs // 2`` different pairs, in file order (a quick look; None: all 600). ``align_method``:
    ``"similarity"`` or ``"eyes"`` (module doc)."""
    root = _data_dir(data_root, "lfw_train")
    align = _LfwAligner(root, detector, template, size, align_method)
    pairs = read_pairs(root / "pairs_dev.txt")
    if n_pairs is not None and n_pairs < len(pairs):
        keep = np.sort(np.concatenate([np.flatnonzero(pairs.labels)[:n_pairs // 2],
                                       np.flatnonzero(~pairs.labels)[:n_pairs // 2]]))
        pairs = PairList([pairs.a[i] for i in keep], [pairs.b[i] for i in keep], pairs.labels[keep])
    paths = pairs.paths
    index = {p: i for i, p in enumerate(paths)}
    crops = [align(p) for p in paths]
    align.report("lfw_dev", len(paths))
    idx = np.asarray([[index[a], index[b]] for a, b in zip(pairs.a, pairs.b)])
    return crops, idx, np.asarray(pairs.labels, bool)


def export_lfw_dev(data_root, out_dir, align_method: str = "similarity") -> Path:
    """Write the ``pairs_dev.txt`` crops as ``out_dir/NNNN.png`` (144x144 BGR ``lightcnn_train``
    crops, cropped by ``align_method``: the method of the training corpus, ``"eyes"`` for one built
    with ``build_lmdb --align-method eyes``) and ``out_dir/pairs.txt`` (``same a.png b.png`` lines), the form
    ``python -m pipelines.train_lightcnn --val-pairs out_dir/pairs.txt`` validates on.
    Returns the pair list's path."""
    _check_align_method(align_method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crops, pairs, same = lfw_dev_faces(data_root, align_method=align_method)
    for i, crop in enumerate(crops):
        write_image(out / f"{i:04d}.png", crop)
    path = out / "pairs.txt"
    path.write_text("".join(f"{int(s)} {a:04d}.png {b:04d}.png\n" for (a, b), s in zip(pairs, same)), encoding="utf-8")
    return path


def lfw_hard_faces(data_root, probes_per_person: int = 3, seed: int = 0, detector=None,
                   align_method: str = "similarity"):
    """The ``lfw_hard`` protocol's faces (144x144 uint8 BGR ``lightcnn_train`` crops; aligned
    from ``detector``'s landmarks when given, by ``align_method``, see :func:`lfw_dev_faces`).

    Returns:
        ``(gallery crops, gallery ids (G,), {condition: probe crops}, probe ids (P,))``: one
        gallery photo per fold-2 person; the same probe photos under every condition of
        :data:`~lightface.eval.hard_conditions.HARD_CONDITIONS`.
    """
    root = _data_dir(data_root, "lfw_train")
    align = _LfwAligner(root, detector, align_method=align_method)
    people = [line.split("\t")[0] for line in (root / "people_folds.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#") and line.split("\t")[3].strip() == "2"]
    gallery, gallery_ids, probes, probe_ids = [], [], [], []
    for pid, name in enumerate(people):
        photos = sorted(p for p in align.table if p.split("/")[0] == name)
        crops = [align(p) for p in photos[:1 + probes_per_person]]
        gallery.append(crops[0])
        gallery_ids.append(pid)
        probes += crops[1:]
        probe_ids += [pid] * (len(crops) - 1)
    align.report("lfw_hard", len(gallery) + len(probes))
    by_condition = {name: [condition(crop, _probe_rng(seed, name, i)) for i, crop in enumerate(probes)]
                    for name, condition in HARD_CONDITIONS.items()}
    return gallery, np.asarray(gallery_ids), by_condition, np.asarray(probe_ids)


def _probe_rng(seed: int, condition: str, probe: int) -> np.random.Generator:
    """The generator that draws ``condition`` onto lfw_hard's probe number ``probe``."""
    return np.random.default_rng([seed, list(HARD_CONDITIONS).index(condition), probe])


def lfw_hard_occluders(num_probes: int, seed: int = 0) -> np.ndarray:
    """(P,) str: which occluder (:data:`~lightface.eval.hard_conditions.OCCLUDERS`) each of the
    first ``num_probes`` ``lfw_hard`` probes carries under ``occlusion`` (the same seeds as
    :func:`lfw_hard_faces`)."""
    return np.array([occluder_kind(_probe_rng(seed, "occlusion", i)) for i in range(num_probes)])


def by_occluder(occlusion_hits: np.ndarray) -> Dict[str, np.ndarray]:
    """``{occluder: hits}``: the (P,) per-probe results of the ``occlusion`` condition split by
    which occluder each probe carries (:func:`lfw_hard_occluders`), in :data:`OCCLUDERS` order."""
    kinds = lfw_hard_occluders(len(occlusion_hits))
    return {kind: occlusion_hits[kinds == kind] for kind in OCCLUDERS}


def cfp_heldout_faces(data_root, align_method: str = "similarity") -> Tuple[List[np.ndarray], np.ndarray, np.ndarray]:
    """``(crops, identity (N,) int, is_profile (N,) bool)`` of every photo in ``cfp/``, aligned by ``align_method``
    (module doc)."""
    _check_align_method(align_method)
    root = _data_dir(data_root, "cfp")
    crops, ids, profile = [], [], []
    for img in sorted((root / "Images").glob("*/*/*.jpg")):
        rel = img.relative_to(root / "Images")
        fid = root / "Fiducials" / rel.with_suffix(".txt")
        pts = cfp_five_points(np.loadtxt(fid, delimiter=","), rel.parts[1])
        crops.append(align_face(_read(img), pts, template="lightcnn_train", size=144, method=align_method)[0])
        ids.append(int(rel.parts[0]))
        profile.append(rel.parts[1] == "profile")
    return crops, np.asarray(ids), np.asarray(profile)


def _finite_rows(emb: np.ndarray, ids, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """``emb`` as (N, D) float64 and ``ids`` as (N,), or a ValueError naming the bad rows."""
    emb, ids = np.asarray(emb, np.float64), np.asarray(ids)
    if emb.ndim != 2 or len(emb) == 0 or ids.shape != (len(emb),):
        raise ValueError(f"{name}: expected (N, D) embeddings with N >= 1 and (N,) ids, got {emb.shape} and {ids.shape}")
    bad = np.flatnonzero(~np.isfinite(emb).all(1))
    if bad.size:
        raise ValueError(f"{name} embeddings contain NaN/inf in rows {bad[:10].tolist()} ({bad.size} of {len(emb)}; "
                         f"failed embeddings?): drop those rows first")
    return emb, ids


def rank1_hits(probe: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """(P,) bool: whether each probe's most similar gallery embedding (cosine) has its identity.

    ``probe`` (P, D) and ``gallery`` (G, D) embeddings (any scale: they are L2-normalised here),
    ``probe_ids`` (P,) and ``gallery_ids`` (G,) identity labels. Both sets must be non-empty
    and finite: a NaN row (a failed :meth:`~lightface.FaceEmbedder.embed`) is refused, naming
    the rows."""
    probe, probe_ids = _finite_rows(probe, probe_ids, "probe")
    gallery, gallery_ids = _finite_rows(gallery, gallery_ids, "gallery")
    scores = _unit(probe) @ _unit(gallery).T
    return gallery_ids[scores.argmax(1)] == probe_ids


def rank1(probe: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray) -> float:
    """Fraction of probes whose most similar gallery embedding (cosine) has their identity (:func:`rank1_hits`)."""
    return float(rank1_hits(probe, probe_ids, gallery, gallery_ids).mean())


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _pair_scores(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(P,) cosine similarities of the (P, 2) index ``pairs`` into the (N, D) embeddings ``emb``."""
    e = _unit(emb)
    return (e[pairs[:, 0]] * e[pairs[:, 1]]).sum(1)


def _verification(emb: np.ndarray, pairs: np.ndarray, same: np.ndarray) -> Dict[str, float]:
    m = verification_metrics(_pair_scores(emb, pairs), same)
    out = {"accuracy": float(m["accuracy_mean"]), "auc": float(m["auc"]), "eer": float(m["eer"]),
           "threshold": float(m["threshold"])}
    for far, tar in m["tar_at_far"].items():
        if tar is not None:
            out[f"tar@far={far}"] = float(tar)
    return out


def calibrate_threshold(embed: EmbedFn, data_root, detector, n_folds: int = 10, seed: int = 0,
                        align_method: str = "similarity") -> Dict[str, float]:
    """One cosine threshold for aligned crops and whole photos alike.

    Scores the LFW fold-2 pairs (``pairs_dev.txt``) twice, aligned from the given landmarks
    and from ``detector``'s (a :class:`~lightface.data.detect.FaceDetector`, the path of
    ``FaceEmbedder(aligned=False)``), and returns the accuracy-maximising threshold of the
    pooled scores. ``cv_accuracy_*`` say what it is worth on pairs it was not fitted to:
    stratified ``n_folds``-fold cross-validation over the pairs, each fold's threshold
    fitted on the other folds of both paths and applied to the held-out pairs of each path
    (a pair and its detected twin are always in the same fold). Both paths crop by ``align_method``
    (module doc).

    Returns:
        ``{threshold, accuracy_given, accuracy_detected, cv_accuracy_given,
        cv_accuracy_detected, threshold_given, threshold_detected, pairs}`` (the last two:
        each path's own accuracy-maximising threshold, for comparison).
    """
    from sklearn.model_selection import StratifiedKFold

    scores = {}
    for path, det in (("given", None), ("detected", detector)):
        crops, pairs, same = lfw_dev_faces(data_root, det, align_method=align_method)
        scores[path] = _pair_scores(embed(crops), pairs)
    pooled = np.concatenate([scores["given"], scores["detected"]])
    pooled_same = np.concatenate([same, same])
    threshold = best_threshold(pooled, pooled_same)
    held_out_right = {path: np.zeros(len(same), bool) for path in scores}
    for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(same, same):
        t = best_threshold(np.concatenate([scores["given"][train], scores["detected"][train]]),
                           np.concatenate([same[train], same[train]]))
        for path, s in scores.items():
            held_out_right[path][test] = (s[test] >= t) == same[test]
    out = {"threshold": float(threshold), "pairs": int(len(same))}
    for path, s in scores.items():
        out[f"accuracy_{path}"] = float(((s >= threshold) == same).mean())
        out[f"cv_accuracy_{path}"] = float(held_out_right[path].mean())
        out[f"threshold_{path}"] = float(best_threshold(s, same))
    return out


def _cfp_pairs(ids: np.ndarray, first: np.ndarray, second: np.ndarray, seed: int = 0):
    """All same-person (first, second) pairs and as many random different-person ones.

    When ``first`` and ``second`` select the same photos (frontal-frontal), each unordered
    pair is listed once, as ``(i, j)`` with ``i < j``: cosine is symmetric, so ``(j, i)``
    would be the same comparison again, weighted double and split across the
    cross-validation folds (a fold's threshold would have seen its test pair's twin)."""
    rng = np.random.default_rng(seed)
    a_idx, b_idx = np.flatnonzero(first), np.flatnonzero(second)
    symmetric = np.array_equal(a_idx, b_idx)
    same = [(i, j) for i in a_idx for j in b_idx if ids[i] == ids[j] and (i < j if symmetric else i != j)]
    diff = set()
    while len(diff) < len(same):
        i, j = int(rng.choice(a_idx)), int(rng.choice(b_idx))
        if ids[i] != ids[j]:
            diff.add((min(i, j), max(i, j)) if symmetric else (i, j))
    pairs = np.asarray(same + sorted(diff))
    return pairs, np.r_[np.ones(len(same), bool), np.zeros(len(diff), bool)]


def run_dev_protocols(embed: EmbedFn, data_root, protocols: Sequence[str] = PROTOCOLS,
                      detector=None, align_method: str = "similarity") -> Dict[str, Dict[str, float]]:
    """Score ``embed`` (list of 144x144 uint8 BGR ``lightcnn_train`` crops -> (N, D) embeddings).

    ``detector`` (a :class:`~lightface.data.detect.FaceDetector`): the LFW protocols align
    from its landmarks instead of the given ones (CFP keeps its fiducials: detectors miss
    near-90-degree profiles). ``align_method``: how every protocol crops the faces
    (``"similarity"`` or ``"eyes"``, module doc): the method the recogniser was trained on
    (``FaceEmbedder.align_method``).

    Returns:
        ``{"lfw_dev": {accuracy, auc, threshold, tar@far=...}, "cfp_fp": {fp_accuracy, fp_auc,
        ff_accuracy, rank1_profile_to_frontal, ...}, "lfw_hard": {rank1_clean, rank1_side_light,
        rank1_occlusion, rank1_occlusion_sunglasses / _mask / _hand, gallery, probes}}`` for
        the chosen protocols.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {PROTOCOLS}")
    _check_align_method(align_method)
    results: Dict[str, Dict[str, float]] = {}
    if "lfw_dev" in protocols:
        crops, pairs, same = lfw_dev_faces(data_root, detector, align_method=align_method)
        results["lfw_dev"] = {**_verification(embed(crops), pairs, same), "pairs": int(len(pairs))}
    if "cfp_fp" in protocols:
        crops, ids, profile = cfp_heldout_faces(data_root, align_method)
        emb = embed(crops)
        fp_pairs, fp_same = _cfp_pairs(ids, ~profile, profile)
        ff_pairs, ff_same = _cfp_pairs(ids, ~profile, ~profile)
        fp, ff = _verification(emb, fp_pairs, fp_same), _verification(emb, ff_pairs, ff_same)
        results["cfp_fp"] = {
            "fp_accuracy": fp["accuracy"], "fp_auc": fp["auc"], "ff_accuracy": ff["accuracy"], "ff_auc": ff["auc"],
            "rank1_profile_to_frontal": rank1(emb[profile], ids[profile], emb[~profile], ids[~profile]),
            "people": int(len(set(ids.tolist()))), "profiles": int(profile.sum()), "frontals": int((~profile).sum()),
        }
    if "lfw_hard" in protocols:
        gallery, gallery_ids, by_condition, probe_ids = lfw_hard_faces(data_root, detector=detector,
                                                                       align_method=align_method)
        g = embed(gallery)
        hits = {name: rank1_hits(embed(crops), probe_ids, g, gallery_ids) for name, crops in by_condition.items()}
        results["lfw_hard"] = {f"rank1_{name}": float(h.mean()) for name, h in hits.items()}
        results["lfw_hard"].update({f"rank1_occlusion_{kind}": float(h.mean())
                                    for kind, h in by_occluder(hits["occlusion"]).items()})
        results["lfw_hard"].update(gallery=int(len(gallery)), probes=int(len(probe_ids)))
    return results
