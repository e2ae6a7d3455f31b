"""The colour HR face corpus for super-resolution, from ``../shared/data``, as LMDBs.

Super-resolution needs sharp high-resolution faces, aligned the way the models are
used: 128x128 colour crops on the Light CNN template (:func:`lightface.data.align.align_face`,
``template="lightcnn"``). :func:`sr_corpus_sources` writes ``path label`` lists and
5-point landmark files for two sources:

* **CFP frontal photos** (``cfp/`` and ``cfp_train/``; profiles are left out): their 30
  hand-annotated fiducials become 5 points with
  :func:`lightface.data.pose_pairs.write_cfp_landmarks`;
* **CelebA face crops** (``celeba_ids/``, with ``landmarks_5pt.txt``).

``celeba_hq/`` is never read here: it is the validation set of the SR evaluation
(``python -m benchmarks.sr_quality``). Identities are held out for validation: the last
``val_ids`` CFP ids of ``cfp/`` and a seeded choice of ``val_ids`` CelebA ids go to
``val.txt`` instead of the training lists, so ``OUT/val.lmdb`` holds faces of people
the model never saw.

Faces are not enlarged beyond ``max_upscale`` (the similarity scale of the alignment):
an HR crop made by upsampling a small face is blurry ground truth. The CelebA crops of
``celeba_ids/`` are small (median eye-to-mouth distance 34 px against the template's 48
px at 128), so most of them are left out at the default 1.25; the summary says how many.

:func:`build_sr_corpus` then builds ``OUT/<source>.lmdb`` and ``OUT/val.lmdb`` with
:func:`lightface.data.build.build_lmdb` (``size=128``, ``template="lightcnn"``,
``color="rgb"``, PNG by default: HR ground truth should carry no JPEG artefacts).
Training reads them with ``python -m pipelines.train_super_resolution --data
OUT/cfp.lmdb OUT/celeba.lmdb --val-data OUT/val.lmdb``; the degradations (blur, noise,
JPEG, downscale kernels) are applied on the fly by :mod:`lightface.data.degradation`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .corpus import _write, build_listed_sources
from .pose_pairs import write_cfp_landmarks

__all__ = ["SR_SOURCES", "SRCorpusSource", "sr_corpus_sources", "build_sr_corpus", "alignment_scale"]

log = logging.getLogger(__name__)

#: the training sources, in build order
SR_SOURCES = ("cfp", "celeba")


@dataclass(frozen=True)
class SRCorpusSource:
    """One list ready for ``build_lmdb``: list file, landmarks file, image root and counts."""

    name: str
    list_file: Path
    landmarks: Path
    root: Path
    images: int
    people: int
    too_small: int


def alignment_scale(landmarks: np.ndarray, size: int = 128, template: str = "lightcnn") -> float:
    """How much :func:`~lightface.data.align.align_face` enlarges a face with these 5 points
    (the similarity transform's scale; > 1 means the crop is upsampled)."""
    from .align import affine_scale, estimate_transform

    return affine_scale(estimate_transform(np.asarray(landmarks, np.float64).reshape(5, 2), template, size))


def _landmark_rows(path: Path) -> Dict[str, np.ndarray]:
    from .sources import read_landmarks_file

    return read_landmarks_file(path)


def sr_corpus_sources(data_root, out_dir, sources: Sequence[str] = SR_SOURCES, val_ids: int = 10,
                      max_upscale: Optional[float] = 1.25, seed: int = 0, template: str = "lightcnn",
                      size: int = 128, val_only: bool = False) -> Dict[str, SRCorpusSource]:
    """Write ``<out_dir>/<source>.txt`` and ``<source>_5pt.txt`` for the chosen training sources,
    and ``val.txt`` / ``val_5pt.txt`` (held-out identities of both sources, paths relative to ``data_root``).

    Args:
        data_root: the shared data folder (``cfp/``, ``cfp_train/``, ``celeba_ids/``).
        out_dir: where the list and landmark files go.
        sources: any of :data:`SR_SOURCES`.
        val_ids: identities per source held out for validation (CFP: the last ids of ``cfp/``;
            CelebA: a seeded choice); 0 = no validation list.
        max_upscale: leave out faces the alignment would enlarge more than this; None keeps all.
        seed: seed of the CelebA validation choice.
        template, size: the crop the faces will be aligned to (for ``max_upscale``).
        val_only: write and return the validation list only (the same held-out faces as a full run's; the
            training sources' lists are left as they are).
    Returns:
        ``{source: SRCorpusSource}``, plus ``"val"`` when ``val_ids > 0``; only ``"val"`` with ``val_only``.
    Raises:
        FileNotFoundError: a source folder is missing; ValueError: an unknown source, or ``val_only`` with
        ``val_ids`` 0.
    """
    root, out = Path(data_root), Path(out_dir)
    unknown = set(sources) - set(SR_SOURCES)
    if unknown:
        raise ValueError(f"unknown SR corpus sources {sorted(unknown)}; choose from {SR_SOURCES}")
    if val_only and val_ids <= 0:
        raise ValueError("val_only with val_ids=0: no identity is held out, so there is no validation list to "
                         "write; give val_ids > 0 (--val-ids)")
    made: Dict[str, SRCorpusSource] = {}
    val_lines: List[str] = []
    val_marks: List[str] = []
    for name in sources:
        # rows: (path relative to data_root, label, landmarks)
        rows: List[Tuple[str, str, np.ndarray]] = []
        held: set = set()
        if name == "cfp":
            for sub in ("cfp", "cfp_train"):
                base = root / sub
                if not (base / "Images").is_dir():
                    raise FileNotFoundError(f"{base / 'Images'} not found: the CFP source of ../shared/data is missing")
                marks = out / f"{sub}_all_5pt.txt"
                write_cfp_landmarks(base, marks)
                for rel, lm in _landmark_rows(marks).items():
                    if rel.split("/")[1] == "frontal":
                        rows.append((f"{sub}/Images/{rel}", f"cfp/{rel.split('/')[0]}", lm))
            cfp_ids = sorted({r[1] for r in rows if r[0].startswith("cfp/")})
            held = set(cfp_ids[len(cfp_ids) - val_ids:]) if val_ids > 0 else set()
        else:
            base = root / "celeba_ids"
            if not (base / "images").is_dir():
                raise FileNotFoundError(f"{base / 'images'} not found: the CelebA source of ../shared/data is missing")
            for rel, lm in _landmark_rows(base / "landmarks_5pt.txt").items():
                rows.append((f"celeba_ids/images/{rel}", f"celeba/{rel.split('/')[0]}", lm))
            ids = sorted({r[1] for r in rows})
            if val_ids > 0:
                pick = np.random.default_rng(seed).permutation(len(ids))[:val_ids]
                held = {ids[i] for i in pick}
        lines, marks_out, too_small, n_val = [], [], 0, 0
        for rel, label, lm in rows:
            if max_upscale is not None and alignment_scale(lm, size, template) > max_upscale:
                too_small += 1
                continue
            line = f"{rel} {label}"
            mark = rel + " " + " ".join(f"{v:.2f}" for v in lm.reshape(-1))
            if label in held:
                n_val += 1
                val_lines.append(line)
                val_marks.append(mark)
            else:
                lines.append(line)
                marks_out.append(mark)
        if val_only:
            log.info("%s: %d faces held out for validation (%d left out: enlarged > %sx)", name, n_val, too_small,
                     max_upscale)
            continue
        list_file, landmarks = out / f"{name}.txt", out / f"{name}_5pt.txt"
        _write(list_file, lines)
        _write(landmarks, marks_out)
        people = len({line.rsplit(None, 1)[1] for line in lines})
        made[name] = SRCorpusSource(name, list_file, landmarks, root, len(lines), people, too_small)
        log.info("%s: %d HR faces of %d people -> %s (%d held out for validation, %d left out: enlarged > %sx)",
                 name, len(lines), people, list_file, n_val, too_small, max_upscale)
    if val_ids > 0:
        list_file, landmarks = out / "val.txt", out / "val_5pt.txt"
        _write(list_file, val_lines)
        _write(landmarks, val_marks)
        people = len({line.rsplit(None, 1)[1] for line in val_lines})
        made["val"] = SRCorpusSource("val", list_file, landmarks, root, len(val_lines), people, 0)
    return made


def build_sr_corpus(data_root, out_dir, sources: Sequence[str] = SR_SOURCES, val_ids: int = 10,
                    max_upscale: Optional[float] = 1.25, encoding: str = "png", quality: int = 95, workers: int = 0,
                    progress: bool = True, size: int = 128, template: str = "lightcnn",
                    antialias: bool = False, overwrite: bool = False, val_only: bool = False) -> Dict[str, Dict]:
    """Build ``<out_dir>/<source>.lmdb`` per training source and ``<out_dir>/val.lmdb`` (see the module docstring).

    ``template``: the crop framing (:mod:`lightface.data.align`): ``"lightcnn"`` (default, what
    the models are used on) or e.g. ``"ffhq"`` (the wider FFHQ / CelebA-HQ framing, the same
    people and photos) for a corpus that teaches a model other framings too. ``antialias``:
    faces larger than the crop (most CFP frontal photos: median scale 0.61) are blurred to its
    resolution before the warp instead of point-sampled (:func:`lightface.data.build.build_lmdb`);
    off by default, as the shipped models' corpora were built. ``val_only``: build ``val.lmdb`` alone (the
    held-out faces the SR benchmarks and ``--val-data`` read: the same faces as a full build's, so a full
    build later keeps it) and leave the training sources' lists and LMDBs as they are.

    Returns ``{name: build_lmdb summary}`` with ``kept_faces`` / ``too_small`` counts added.
    An LMDB already complete with these faces and options is kept (``nothing_to_do``); an
    interrupted one is resumed; one built otherwise (other options, or lists that changed with
    ``val_ids`` / ``max_upscale``) raises FileExistsError unless ``overwrite`` rebuilds it, and the list
    files are put back as they were (:func:`lightface.data.corpus.build_listed_sources`).
    """
    from .build import build_lmdb

    out = Path(out_dir)

    def build(name: str, src: SRCorpusSource) -> Dict:
        if src.images == 0:
            log.warning("%s: no faces left to build (see %s)", name, src.list_file)
            return {"ok": False, "kept_faces": 0, "too_small": src.too_small}
        summary = build_lmdb(src.list_file, out / f"{name}.lmdb", size=size, color="rgb", encoding=encoding,
                             quality=quality, template=template, landmarks=src.landmarks, list_root=src.root,
                             workers=workers, resume=not overwrite, overwrite=overwrite, progress=progress,
                             antialias=antialias)
        return {**summary, "kept_faces": src.images, "people": src.people, "too_small": src.too_small}

    return build_listed_sources(out / "lists", lambda: sr_corpus_sources(data_root, out / "lists", sources, val_ids,
                                                                        max_upscale, template=template, size=size,
                                                                        val_only=val_only),
                                build)
