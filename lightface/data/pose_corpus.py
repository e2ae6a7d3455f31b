"""A pose-tagged frontalization corpus from ``../shared/data``: CFP plus the turned photos of LFW and CelebA people.

TP-GAN learns profile -> frontal from photos of one person in both poses. ``cfp_train``
gives 431 people with 10 frontal and 4 near-profile photos each; the LFW and CelebA people
that have both a frontal and a turned photo add about 550 more (docs/frontalization.md,
"A larger pose corpus"). Their pose is judged from the 5 given landmarks by
:func:`lightface.data.pose_pairs.yaw_offset`: ``|offset| < frontal_max`` is frontal,
``> turned_min`` is a training input (``profile``), photos in between are left out.

:func:`pose_candidates` lists the people. Left out, so that validation stays unseen:

* LFW View-2 fold 2 (the recogniser's ``pairs_dev.txt`` people);
* LFW people named as a CFP person (``cfp_train/names.txt`` names ``cfp/``'s held-out ids
  451-485 and ``cfp_train``'s); ``cfp/`` itself is never read as training data.

CelebA has numbers only, and one celebrity may be in two sources under two labels, so
:func:`drop_lookalikes` embeds up to :data:`BANK_PHOTOS` frontals (and their mirror images)
of every person with a recogniser and drops an LFW / CelebA person whose mean embedding is
within ``heldout_cosine`` of a held-out ``cfp/`` person or ``train_cosine`` of a person
already kept (CFP first, then LFW, then CelebA). :func:`build_pose_corpus` writes
``OUT/tree/Images/<source>_<id>/{frontal,profile}/<file>`` (symlinks to the shared data),
``OUT/tree/pose_5pt.txt``, ``OUT/lookalikes.json`` (what was dropped, nearest person and
cosine) and builds ``OUT/pose<size>`` with :func:`lightface.data.build.build_lmdb`
(``lightcnn`` template; the layout ``train_frontalization --data`` reads).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set, Tuple

import numpy as np

from ..utils.atomic_write import write_text_atomic
from .align import align_face
from .corpus import _read_table, heldout_people
from .io import read_image
from .pose_pairs import cfp_landmarks, yaw_offset
from .sources import read_landmarks_file

__all__ = ["POSE_SOURCES", "BANK_PHOTOS", "PosePerson", "pose_candidates", "heldout_cfp_people", "drop_lookalikes",
           "write_pose_tree", "build_pose_corpus"]

log = logging.getLogger(__name__)

#: the sources, in the order people are kept
POSE_SOURCES = ("cfp", "lfw", "celeba")
#: frontal photos per person in the look-alike embedding
BANK_PHOTOS = 4


@dataclass
class PosePerson:
    """One person of the corpus: ``name`` (``<source>_<id>``) and per pose ``(image path, (5, 2) landmarks)`` pairs."""

    name: str
    source: str
    frontal: List[Tuple[Path, np.ndarray]] = field(default_factory=list)
    profile: List[Tuple[Path, np.ndarray]] = field(default_factory=list)


def _table(path: Path) -> Dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the 5-point landmarks of "
                                f"../shared/data/{path.parent.name}")
    return read_landmarks_file(path)


def _cfp_names(root: Path) -> Set[str]:
    """Every CFP person's name (``cfp/`` and ``cfp_train/``), lower case with underscores like LFW's folders."""
    path = root / "cfp_train" / "names.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the CFP id -> name table of ../shared/data/cfp_train")
    return {r[1].strip().replace(" ", "_").lower() for r in _read_table(path) if len(r) >= 2}


def _cfp_people(base: Path, prefix: str) -> List[PosePerson]:
    people: Dict[str, PosePerson] = {}
    for rel, pts in cfp_landmarks(base).items():
        pid, pose, _ = rel.split("/")
        person = people.setdefault(pid, PosePerson(f"{prefix}_{pid}", prefix))
        getattr(person, "frontal" if pose == "frontal" else "profile").append((base / "Images" / rel, pts))
    return list(people.values())


def heldout_cfp_people(data_root) -> List[PosePerson]:
    """The held-out CFP people of ``cfp/`` (never training data; the look-alike reference)."""
    return _cfp_people(Path(data_root) / "cfp", "cfpheldout")


def pose_candidates(data_root, sources: Sequence[str] = POSE_SOURCES, frontal_max: float = 0.10,
                    turned_min: float = 0.20) -> List[PosePerson]:
    """The people of the chosen sources with at least one frontal and one turned photo (see the module docstring).

    Args:
        data_root: the shared data folder (``cfp_train/``, ``lfw_train/``, ``celeba_ids/``).
        sources: any of :data:`POSE_SOURCES`; ``cfp`` takes ``cfp_train`` as CFP tags it.
        frontal_max, turned_min: ``|yaw_offset|`` bounds of a frontal and of a turned LFW / CelebA photo.
    Raises:
        ValueError: an unknown source or ``frontal_max >= turned_min``; FileNotFoundError: a missing source.
    """
    root = Path(data_root)
    unknown = set(sources) - set(POSE_SOURCES)
    if unknown:
        raise ValueError(f"unknown pose sources {sorted(unknown)}; choose from {POSE_SOURCES}")
    if not 0 < frontal_max < turned_min:
        raise ValueError(f"need 0 < frontal_max < turned_min, got {frontal_max} and {turned_min}")
    people: List[PosePerson] = []
    cfp_names = _cfp_names(root) if "lfw" in sources else set()
    held = heldout_people(root) if "lfw" in sources else set()
    for src in POSE_SOURCES:
        if src not in sources:
            continue
        if src == "cfp":
            people += _cfp_people(root / "cfp_train", "cfp")
            continue
        base = root / ("lfw_train" if src == "lfw" else "celeba_ids")
        found: Dict[str, PosePerson] = {}
        for rel, pts in _table(base / "landmarks_5pt.txt").items():
            pid = rel.split("/")[0]
            if src == "lfw" and (pid in held or pid.lower() in cfp_names):
                continue
            yaw = abs(yaw_offset(pts))
            if frontal_max <= yaw <= turned_min:
                continue
            person = found.setdefault(pid, PosePerson(f"{src}_{pid}", src))
            getattr(person, "frontal" if yaw < frontal_max else "profile").append((base / "images" / rel, pts))
        people += [p for _, p in sorted(found.items()) if p.frontal and p.profile]
    for src in sources:
        group = [p for p in people if p.source == src]
        log.info("pose corpus: %s gives %d people, %d frontal and %d turned photos", src, len(group),
                 sum(len(p.frontal) for p in group), sum(len(p.profile) for p in group))
    return people


def _mean_embeddings(embedder, people: Sequence[PosePerson]) -> np.ndarray:
    """(P, D) L2-normalised mean embedding of up to :data:`BANK_PHOTOS` frontals per person (NaN: none readable),
    the faces cropped as ``embedder`` needs them (its ``align_method``: the original recipe for an official Light CNN
    release, the least-squares fit otherwise)."""
    method = getattr(embedder, "align_method", "similarity")
    crops, owner = [], []
    for k, person in enumerate(people):
        for path, pts in person.frontal[:BANK_PHOTOS]:
            try:
                crops.append(align_face(read_image(path), pts, "lightcnn", 128, method=method)[0])
                owner.append(k)
            except (OSError, ValueError) as err:  # a corrupt photo costs its vote, nothing else
                log.warning("pose corpus: %s skipped in the look-alike check (%s)", path, err)
    emb = embedder.embed(crops, aligned=True, flip=True) if crops else np.zeros((0, 256), np.float32)
    out = np.full((len(people), emb.shape[1] if len(emb) else 256), np.nan, np.float32)
    sums = np.zeros_like(out)
    np.add.at(sums, np.asarray(owner, int), emb)
    seen = np.bincount(np.asarray(owner, int), minlength=len(people)) > 0
    out[seen] = sums[seen] / np.linalg.norm(sums[seen], axis=1, keepdims=True)
    return out


def drop_lookalikes(people: Sequence[PosePerson], heldout: Sequence[PosePerson], embedder,
                    heldout_cosine: float = 0.6, train_cosine: float = 0.8) -> Tuple[List[PosePerson], List[Dict]]:
    """Keep each CFP person; keep an LFW / CelebA person unless its mean frontal embedding (``embedder``: a
    :class:`lightface.FaceEmbedder`) is within ``heldout_cosine`` of a ``heldout`` person or ``train_cosine`` of a
    person kept before it. Returns ``(kept, dropped)``; a dropped row holds the person, the nearest one, the cosine
    and the reason. A person none of whose frontals can be read is dropped too."""
    emb = _mean_embeddings(embedder, [*people, *heldout])
    mine, theirs = emb[:len(people)], emb[len(people):]
    kept_idx: List[int] = []
    dropped: List[Dict] = []
    for i, person in enumerate(people):
        if person.source == "cfp":
            kept_idx.append(i)
            continue
        if np.isnan(mine[i]).any():
            dropped.append({"person": person.name, "reason": "no readable frontal photo"})
            continue
        checks = [(theirs, [h.name for h in heldout], heldout_cosine, "a held-out CFP person"),
                  (mine[kept_idx], [people[j].name for j in kept_idx], train_cosine, "a person kept before it")]
        for bank, names, bound, what in checks:
            cos = np.nan_to_num(bank @ mine[i], nan=-1.0) if len(bank) else np.zeros(0)
            if len(cos) and cos.max() > bound:
                j = int(cos.argmax())
                dropped.append({"person": person.name, "nearest": names[j], "cosine": round(float(cos[j]), 4),
                                "reason": f"within cosine {bound} of {what}"})
                break
        else:
            kept_idx.append(i)
    log.info("pose corpus: %d look-alikes dropped, %d people kept", len(dropped), len(kept_idx))
    return [people[i] for i in kept_idx], dropped


def write_pose_tree(people: Sequence[PosePerson], tree: Path) -> int:
    """``tree/Images/<name>/{frontal,profile}/<file>`` symlinks and ``tree/pose_5pt.txt``, replacing an older tree;
    returns the number of photos linked."""
    tree = Path(tree)
    if tree.exists():
        shutil.rmtree(tree)
    lines = []
    for person in people:
        for pose in ("frontal", "profile"):
            folder = tree / "Images" / person.name / pose
            folder.mkdir(parents=True, exist_ok=True)
            for path, pts in getattr(person, pose):
                os.symlink(os.path.abspath(path), folder / path.name)
                lines.append(f"{person.name}/{pose}/{path.name} " + " ".join(f"{v:.2f}" for v in pts.reshape(-1)))
    (tree / "pose_5pt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def build_pose_corpus(data_root, out_dir, sources: Sequence[str] = POSE_SOURCES, frontal_max: float = 0.10,
                      turned_min: float = 0.20, embedder=None, heldout_cosine: float = 0.6,
                      train_cosine: float = 0.8, size: int = 128, color: str = "rgb",
                      encoding: str = "webp", quality: int = 90, workers: int = 0,
                      overwrite: bool = False, progress: bool = True, antialias: bool = False) -> Dict[str, Any]:
    """Build ``out_dir/pose<size>`` (see the module docstring); returns the ``build_lmdb`` summary plus
    ``people``, ``photos``, ``dropped`` and ``lookalikes_report``.

    The look-alike check (a few minutes on a CPU) is kept in ``out_dir/lookalikes.json`` with the options and
    recogniser it was made with, and re-used by a re-run with the same ones. An interrupted LMDB build resumes; a
    complete one is kept when its photos, landmarks and options are the same (``nothing_to_do``), else
    ``overwrite`` must say to replace it (FileExistsError, with ``out_dir/tree`` put back as it was).
    ``embedder``: the look-alike check's recogniser (a :class:`lightface.FaceEmbedder`; ``None``: no check).
    ``antialias``: faces larger than the crop are blurred to its resolution before the warp, as
    :meth:`lightface.Frontalizer.frontalize` cuts them from photos (off: how the shipped frontalizer's corpus
    was built).
    """
    from .build import build_lmdb

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    people = pose_candidates(data_root, sources, frontal_max, turned_min)
    if not people:
        raise ValueError(f"no person of {list(sources)} under {data_root} has both a frontal and a turned photo")
    dropped: List[Dict] = []
    report = out / "lookalikes.json"
    if embedder is not None and any(p.source != "cfp" for p in people):
        key = hashlib.sha256(json.dumps({"people": [p.name for p in people], "heldout_cosine": heldout_cosine,
                                         "train_cosine": train_cosine, "frontal_max": frontal_max,
                                         "weights": embedder.weights_info.as_dict()}, default=str).encode()).hexdigest()
        saved = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {}
        if saved.get("key") == key:
            log.info("pose corpus: look-alike check read from %s", report)
            dropped = saved["dropped"]
            gone = {d["person"] for d in dropped}
            people = [p for p in people if p.name not in gone]
        else:
            people, dropped = drop_lookalikes(people, heldout_cfp_people(data_root), embedder, heldout_cosine,
                                              train_cosine)
            write_text_atomic(report, json.dumps({"key": key, "dropped": dropped}, indent=1))
    tree, previous = out / "tree", out / "tree.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if tree.exists():
        tree.rename(previous)
    photos = write_pose_tree(people, tree)
    try:
        summary = build_lmdb(tree / "Images", out / f"pose{size}", size=size, color=color, encoding=encoding,
                             quality=quality, template="lightcnn", landmarks=tree / "pose_5pt.txt", workers=workers,
                             resume=not overwrite, overwrite=overwrite, progress=progress, antialias=antialias)
    except FileExistsError:  # the LMDB built from the previous tree is kept: so is that tree
        if previous.exists():
            shutil.rmtree(tree)
            previous.rename(tree)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    summary.update(people=len(people), photos=photos, dropped=len(dropped),
                   lookalikes_report=str(report) if report.is_file() else None)
    return summary
