"""The multi-source face corpus in ``../shared/data`` as Light CNN training LMDBs.

Three sources whose identity labels overlap and disagree (the Light CNN paper's noisy
setting in small): LFW (``lfw_train/``, names), CFP (``cfp_train/``, numeric ids with a
``names.txt``) and CelebA (``celeba_ids/``, numeric ids only). :func:`corpus_sources`
turns each into a ``path label`` list file plus a 5-point landmarks file, leaving out the
people reserved for validation:

* LFW View-2 fold 2 (``pairs_dev.txt``'s people; no other fold holds them), and the CFP
  ids whose ``names.txt`` name is a fold-2 person, so ``pairs_dev.txt`` stays unseen. Names are
  compared without case, accents, spaces or punctuation (``Leonardo Dicaprio`` is
  ``Leonardo_DiCaprio``), and a name within a close spelling of a fold-2 name (difflib ratio
  >= :data:`NEAR_NAME_RATIO`: ``Diane Feinstein`` / ``Dianne_Feinstein``) is left out as well
  and logged: ``names.txt`` misspells many names, and a few unrelated ids lost are cheaper than
  a leak;
* ``cfp/`` (ids 451-485) is never read here: it is the held-out frontal-profile set.

CelebA gives numbers only, so a fold-2 person may still hide in ``celeba_ids/``; the
teacher-based duplicate merge of ``pipelines.relabel`` finds such cases. Class names are
prefixed with their source (``lfw/Tony_Blair``, ``cfp/031``, ``celeba/7399``).

:func:`build_corpus` then builds one LMDB per source with
:func:`lightface.data.build.build_lmdb` (144x144 ``lightcnn_train`` crops; colour by
default, so a colour teacher can read the same samples; the trainer converts to gray).
"""
from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Set, TypeVar

from .pose_pairs import write_cfp_landmarks

__all__ = ["CorpusSource", "SOURCES", "NEAR_NAME_RATIO", "heldout_people", "heldout_cfp_ids", "corpus_sources", "build_corpus", "build_listed_sources"]

log = logging.getLogger(__name__)
S = TypeVar("S")

#: the sources, in build order
SOURCES = ("lfw", "cfp", "celeba")
#: a CFP name at least this close to a fold-2 name (difflib ratio of the two keys of
#: :func:`_name_key`) is held out too; two letters off in ten (``Jevin Kostner`` / ``Kevin_Costner``)
NEAR_NAME_RATIO = 0.8


@dataclass(frozen=True)
class CorpusSource:
    """One source ready for ``build_lmdb``: its list file, landmarks file and image root."""

    name: str
    list_file: Path
    landmarks: Path
    root: Path
    images: int
    people: int


def _read_table(path: Path) -> List[List[str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.rstrip("\n").split("\t"))
    return rows


def heldout_people(data_root) -> Set[str]:
    """LFW names (``Tony_Blair``) of View-2 fold 2, the people of ``lfw_train/pairs_dev.txt``."""
    path = Path(data_root) / "lfw_train" / "people_folds.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the LFW fold table of ../shared/data/lfw_train")
    return {row[0] for row in _read_table(path) if len(row) >= 4 and row[3].strip() == "2"}


def _name_key(name: str) -> str:
    """``Leonardo_DiCaprio`` and ``Leonardo Dicaprio`` -> ``leonardodicaprio``: lower case, accents,
    spaces, underscores and punctuation removed."""
    decomposed = unicodedata.normalize("NFKD", name)
    return re.sub(r"[^a-z0-9]", "", "".join(c for c in decomposed if not unicodedata.combining(c)).lower())


def heldout_cfp_ids(names: Mapping[str, str], held: Set[str], near: float = NEAR_NAME_RATIO) -> Dict[str, str]:
    """The CFP ids to leave out because their name is a fold-2 person's.

    Args:
        names: ``{cfp id: name}`` from ``cfp_train/names.txt`` (``"131": "Diane Feinstein"``).
        held: LFW names of fold 2 (:func:`heldout_people`).
        near: the difflib ratio from which a different spelling counts as the same person.
    Returns:
        ``{cfp id: the fold-2 name it matched}``: the same name up to case, accents, spaces and
        punctuation, or (logged, to be checked by eye) a close spelling.
    """
    keys = {_name_key(h): h for h in held}
    out: Dict[str, str] = {}
    near_misses = []
    for cfp_id, name in sorted(names.items()):
        key = _name_key(name)
        if key in keys:
            out[cfp_id] = keys[key]
            continue
        close = difflib.get_close_matches(key, list(keys), n=1, cutoff=near)
        if close:
            out[cfp_id] = keys[close[0]]
            ratio = difflib.SequenceMatcher(None, key, close[0]).ratio()
            near_misses.append(f"{cfp_id} {name!r} ~ {keys[close[0]]} ({ratio:.2f})")
    if near_misses:
        log.info("cfp: also leaving out %d ids whose names.txt name is a close spelling of a fold-2 person "
                 "(difflib ratio >= %.2f; a few may be other people): %s", len(near_misses), near,
                 "; ".join(near_misses))
    return out


def _write(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def corpus_sources(data_root, out_dir, sources: Sequence[str] = SOURCES) -> Dict[str, CorpusSource]:
    """Write ``<out_dir>/<source>.txt`` (``relative/path.jpg source/identity``) and
    ``<out_dir>/<source>_5pt.txt`` landmark files for the chosen sources.

    Args:
        data_root: the shared data folder (holding ``lfw_train/``, ``cfp_train/``, ``celeba_ids/``).
        out_dir: where the list and landmark files go.
        sources: any of :data:`SOURCES`.
    Returns:
        ``{source: CorpusSource}``.
    Raises:
        FileNotFoundError: a source folder is missing; ValueError: an unknown source.
    """
    root, out = Path(data_root), Path(out_dir)
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown corpus sources {sorted(unknown)}; choose from {SOURCES}")
    held = heldout_people(root)
    made: Dict[str, CorpusSource] = {}
    for name in sources:
        if name == "lfw":
            base = root / "lfw_train"
            landmarks = base / "landmarks_5pt.txt"
            rows = [r[0] for r in _read_table(landmarks)]
            lines = [f"{rel} lfw/{rel.split('/')[0]}" for rel in rows if rel.split("/")[0] not in held]
            img_root = base / "images"
        elif name == "cfp":
            base = root / "cfp_train"
            names = {r[0]: r[1] for r in _read_table(base / "names.txt") if len(r) >= 2}
            held_ids = heldout_cfp_ids(names, held)
            landmarks = out / "cfp_5pt.txt"
            write_cfp_landmarks(base, landmarks)
            rows = [line.split()[0] for line in landmarks.read_text(encoding="utf-8").splitlines() if line.strip()]
            dropped = sorted({r.split("/")[0] for r in rows if r.split("/")[0] in held_ids})
            if dropped:
                log.info("cfp: leaving out ids %s (LFW fold-2 people, kept unseen for pairs_dev.txt)", dropped)
            lines = [f"{rel} cfp/{rel.split('/')[0]}" for rel in rows if rel.split("/")[0] not in dropped]
            img_root = base / "Images"
        else:
            base = root / "celeba_ids"
            landmarks = base / "landmarks_5pt.txt"
            rows = [r[0] for r in _read_table(landmarks)]
            lines = [f"{rel} celeba/{rel.split('/')[0]}" for rel in rows]
            img_root = base / "images"
        if not img_root.is_dir():
            raise FileNotFoundError(f"{img_root} not found: the {name} source of ../shared/data is missing")
        list_file = out / f"{name}.txt"
        _write(list_file, lines)
        people = len({line.rsplit(None, 1)[1] for line in lines})
        made[name] = CorpusSource(name, list_file, landmarks, img_root, len(lines), people)
        log.info("%s: %d images of %d people -> %s", name, len(lines), people, list_file)
    return made


def build_listed_sources(lists: Path, write_lists: Callable[[], Mapping[str, S]],
                         build: Callable[[str, S], Dict]) -> Dict[str, Dict]:
    """Write a corpus's list files (``write_lists()``, into ``lists``) and build each source's LMDB in order
    (``build(name, source)``); returns ``{name: build summary}``.

    A build refused with FileExistsError (a complete LMDB made from other lists or options, which stays as it
    is) first puts back the list files (``<name>.txt``, ``<name>_5pt.txt``) of that source and of the sources
    not yet built as they were before this run, so ``lists`` keeps describing the LMDBs beside it.
    """
    before = {p.name: p.read_bytes() for p in lists.glob("*.txt")} if lists.is_dir() else {}
    sources = write_lists()
    names = list(sources)
    summaries: Dict[str, Dict] = {}
    for i, name in enumerate(names):
        try:
            summaries[name] = build(name, sources[name])
        except FileExistsError:
            for kept in names[i:]:
                for file_name in (f"{kept}.txt", f"{kept}_5pt.txt"):
                    if file_name in before:
                        (lists / file_name).write_bytes(before[file_name])
                    else:
                        (lists / file_name).unlink(missing_ok=True)
            log.info("list files of %s put back as they were: their LMDBs were kept", ", ".join(names[i:]))
            raise
    return summaries


def build_corpus(data_root, out_dir, sources: Sequence[str] = SOURCES, color: str = "rgb", encoding: str = "jpeg",
                 quality: int = 95, workers: int = 0, progress: bool = True, size: int = 144,
                 antialias: bool = False, overwrite: bool = False) -> Dict[str, Dict]:
    """Build ``<out_dir>/<source>.lmdb`` for each source (see the module docstring).

    ``antialias``: faces larger than the crop (most CFP photos) are blurred to its resolution
    before the warp, as ``FaceEmbedder`` cuts them from photos, instead of point-sampled (off:
    how the shipped recognisers' corpora were built; :func:`lightface.data.build.build_lmdb`).

    Returns ``{source: build_lmdb summary}``. An LMDB already complete with these faces and options is kept
    (``nothing_to_do``); an interrupted one (``<source>.lmdb.partial``) is resumed; one built otherwise (other
    options, or lists that changed) raises FileExistsError unless ``overwrite`` rebuilds it, and the list
    files of it and of the sources after it are put back as they were (:func:`build_listed_sources`).
    """
    from .build import build_lmdb

    out = Path(out_dir)

    def build(name: str, src: CorpusSource) -> Dict:
        return build_lmdb(src.list_file, out / f"{name}.lmdb", size=size, color=color, encoding=encoding,
                          quality=quality, template="lightcnn_train", landmarks=src.landmarks, list_root=src.root,
                          workers=workers, resume=not overwrite, overwrite=overwrite, progress=progress,
                          antialias=antialias)

    return build_listed_sources(out / "lists", lambda: corpus_sources(data_root, out / "lists", sources), build)
