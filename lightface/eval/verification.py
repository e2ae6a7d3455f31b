"""Face verification: pair lists (LFW, CFP, simple label files) and metrics.

Pair-list formats
-----------------
* **LFW** ``pairs.txt`` (View 2): a header ``<folds> <pairs per class>`` (``10 300``), then
  per fold ``n`` matched lines ``name i j`` followed by ``n`` mismatched lines
  ``name1 i name2 j``. Image paths are ``name/name_0001.jpg``. A one-number header
  (``pairsDevTrain.txt``) gives a single set without folds.
* **Label files**: one pair per line, ``label path_a path_b`` with label ``1``/``0`` (also
  ``same``/``diff``, ``true``/``false``); whitespace separated, ``#`` comments allowed.
* **CFP** (Celebrities in Frontal-Profile): ``Protocol/Pair_list_F.txt`` and
  ``Pair_list_P.txt`` (``index path`` lines) and ``Protocol/Split/{FF,FP}/NN/{same,diff}.txt``
  (``i,j`` index pairs; for FP the first index is frontal, the second profile); the
  split number is the fold. Paths like ``../Data/Images/001/frontal/01.jpg`` are returned
  as ``Images/001/frontal/01.jpg`` (relative to the dataset root).

Metrics (:func:`verification_metrics`, scikit-learn ROC and folds): 10-fold accuracy (the
threshold maximising accuracy on 9 folds is applied to the 10th) mean/std, TAR at FAR
1e-1/1e-2/1e-3 (reported only with at least ``1/FAR`` negative pairs), ROC AUC and EER (where
FAR = FRR on the full ROC). Labels are bool, 0/1 or -1/1 (1 = same identity).
Scores are similarities: higher means more likely the same person.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold

from ..data.sources import read_list_lines

__all__ = [
    "PairList",
    "read_lfw_pairs",
    "read_label_pairs",
    "read_cfp_pairs",
    "read_pairs",
    "verification_metrics",
    "best_threshold",
    "plot_roc",
    "FAR_TARGETS",
]

PathLike = Union[str, os.PathLike]
FAR_TARGETS = (1e-1, 1e-2, 1e-3)


@dataclass
class PairList:
    """Verification pairs.

    Attributes:
        a, b: image paths (relative to the images root, as written in the list), length N.
        labels: bool (N,), True = same identity.
        folds: int (N,) fold index per pair (from the protocol), or None.
    """

    a: List[str]
    b: List[str]
    labels: np.ndarray
    folds: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.a)

    @property
    def paths(self) -> List[str]:
        """Unique image paths, in first-seen order."""
        return list(dict.fromkeys(self.a + self.b))


def _lines(path: PathLike) -> List[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair list not found: {path}")
    out = []
    for raw in read_list_lines(path, "a text pair list (LFW pairs.txt, 'label path_a path_b' lines) or a CFP "
                                     "protocol list"):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(line)
    if not out:
        raise ValueError(f"{path}: empty pair list")
    return out


def _is_lfw_pair_line(line: str) -> bool:
    """``name i j`` or ``name1 i name2 j`` (a pairs.txt body line)."""
    parts = line.split()
    return (len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and not parts[0].isdigit()) or (
        len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit() and not parts[0].isdigit())


def _lfw_path(name: str, number: str, ext: str) -> str:
    return f"{name}/{name}_{int(number):04d}{ext}"


def read_lfw_pairs(path: PathLike, ext: str = ".jpg") -> PairList:
    """Read an LFW ``pairs.txt`` (View 2, header ``folds n``), ``pairsDevTrain/Test.txt`` (header
    ``n``), or the body of one of them without a header (one fold, e.g. a single View-2 fold).

    ``folds`` holds the protocol folds of a header with two or more; one fold (no header, ``n``
    or ``1 n``) gives ``folds=None``: :func:`verification_metrics` then makes its own ``n_folds`` split."""
    lines = _lines(path)
    header = lines[0].split()
    if _is_lfw_pair_line(lines[0]):
        header, lines = [], [""] + lines
    elif not 1 <= len(header) <= 2 or not all(h.isdigit() for h in header):
        raise ValueError(f"{path}: expected an LFW header line 'folds pairs_per_class' (e.g. '10 300'), got {lines[0]!r}")
    body = lines[1:]
    n_folds, per_class = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]) if header else len(body) // 2)
    if header and len(body) != 2 * n_folds * per_class:
        raise ValueError(f"{path}: header says {n_folds} x 2 x {per_class} = {2 * n_folds * per_class} pairs, "
                         f"found {len(body)} lines")
    a, b, labels = [], [], []
    for k, line in enumerate(body, start=2):
        parts = line.split()
        if len(parts) == 3:
            a.append(_lfw_path(parts[0], parts[1], ext))
            b.append(_lfw_path(parts[0], parts[2], ext))
            labels.append(True)
        elif len(parts) == 4:
            a.append(_lfw_path(parts[0], parts[1], ext))
            b.append(_lfw_path(parts[2], parts[3], ext))
            labels.append(False)
        else:
            raise ValueError(f"{path}:{k}: expected 'name i j' or 'name1 i name2 j', got {line!r}")
    folds = np.arange(len(body)) // (2 * per_class) if len(header) == 2 and n_folds > 1 else None
    return PairList(a, b, np.array(labels, bool), folds)


_TRUE = {"1", "same", "true", "genuine", "match"}
_FALSE = {"0", "-1", "diff", "false", "impostor", "mismatch"}


def read_label_pairs(path: PathLike) -> PairList:
    """Read ``label path_a path_b`` lines (label 1/0, same/diff, true/false)."""
    a, b, labels = [], [], []
    for k, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if len(parts) != 3 or parts[0].lower() not in _TRUE | _FALSE:
            raise ValueError(f"{path}:{k}: expected 'label path_a path_b' with label 1/0, got {line!r}")
        labels.append(parts[0].lower() in _TRUE)
        a.append(parts[1])
        b.append(parts[2])
    return PairList(a, b, np.array(labels, bool))


def _cfp_relpath(p: str) -> str:
    parts = [x for x in p.replace("\\", "/").split("/") if x not in ("", ".", "..")]
    if parts and parts[0] == "Data":
        parts = parts[1:]
    return "/".join(parts)


def _cfp_list(path: Path) -> Dict[int, str]:
    table = {}
    for k, line in enumerate(_lines(path), start=1):
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{k}: expected 'index path', got {line!r}")
        table[int(parts[0])] = _cfp_relpath(parts[1].strip())
    return table


def read_cfp_pairs(protocol_dir: PathLike, setting: str = "FF") -> PairList:
    """Read the CFP protocol: ``setting`` ``"FF"`` (frontal-frontal) or ``"FP"`` (frontal-profile).

    Args:
        protocol_dir: the ``Protocol`` folder (holding ``Pair_list_F.txt``, ``Pair_list_P.txt``
            and ``Split/``).
    Returns:
        pairs with folds = split index (0-based, in split-folder order); paths relative to
        the dataset root (``Images/<id>/<frontal|profile>/NN.jpg``).
    """
    setting = setting.upper()
    if setting not in ("FF", "FP"):
        raise ValueError(f"CFP setting must be 'FF' or 'FP', got {setting!r}")
    root = Path(protocol_dir)
    frontal = _cfp_list(root / "Pair_list_F.txt")
    second = frontal if setting == "FF" else _cfp_list(root / "Pair_list_P.txt")
    split_root = root / "Split" / setting
    splits = sorted(p for p in split_root.iterdir() if p.is_dir()) if split_root.is_dir() else []
    if not splits:
        raise FileNotFoundError(f"no split folders in {split_root} (expected Split/{setting}/01/same.txt ...)")
    a, b, labels, folds = [], [], [], []
    for fold, split in enumerate(splits):
        for name, same in (("same.txt", True), ("diff.txt", False)):
            for k, line in enumerate(_lines(split / name), start=1):
                parts = [x for x in re.split(r"[,\s]+", line) if x]
                if len(parts) != 2 or not all(x.isdigit() for x in parts):
                    raise ValueError(f"{split / name}:{k}: expected 'i,j', got {line!r}")
                i, j = int(parts[0]), int(parts[1])
                if i not in frontal or j not in second:
                    raise ValueError(f"{split / name}:{k}: index {i if i not in frontal else j} is not in the pair list")
                a.append(frontal[i])
                b.append(second[j])
                labels.append(same)
                folds.append(fold)
    return PairList(a, b, np.array(labels, bool), np.array(folds, int))


def read_pairs(path: PathLike, fmt: str = "auto", ext: str = ".jpg") -> PairList:
    """Read any supported pair list.

    Args:
        fmt: ``"lfw"``, ``"labels"``, ``"cfp-ff"``, ``"cfp-fp"`` or ``"auto"`` (a folder is
            CFP FF; a file whose first line is one or two integers is LFW; else labels).
        ext: image extension for LFW lists.
    """
    path = Path(path)
    if fmt == "auto":
        if path.is_dir():
            fmt = "cfp-ff"
        else:
            first = _lines(path)[0].split()
            lfw_header = 1 <= len(first) <= 2 and all(x.isdigit() for x in first)
            fmt = "lfw" if lfw_header or _is_lfw_pair_line(_lines(path)[0]) else "labels"
    if fmt == "lfw":
        return read_lfw_pairs(path, ext)
    if fmt == "labels":
        return read_label_pairs(path)
    if fmt in ("cfp-ff", "cfp-fp"):
        return read_cfp_pairs(path, fmt[-2:])
    raise ValueError(f"unknown pair-list format {fmt!r}; use auto, lfw, labels, cfp-ff or cfp-fp")


def _bool_labels(labels) -> np.ndarray:
    """Pair labels as bool (N,): bool, 0/1 (1 = same) or -1/1 (1 = same, -1 = different)."""
    arr = np.asarray(labels).ravel()
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        kind = "strings" if arr.dtype.kind in "US" else f"{arr.dtype} values"
        raise ValueError(f"labels must be bool, 0/1 or -1/1 numbers (1 = same identity), got {kind} "
                         f"{sorted(set(arr.tolist()), key=str)[:5]}; convert them first (read_pairs does for pair-list files)")
    found = set(np.unique(arr).tolist())
    if not (found <= {0, 1} or found <= {-1, 1}):
        raise ValueError(f"labels must be bool, 0/1 or -1/1 (1 = same identity), got values {sorted(found)[:5]}")
    return arr == 1


def _check(scores, labels):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = _bool_labels(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN/inf (failed embeddings?); drop those pairs first")
    if labels.all() or not labels.any():
        raise ValueError("verification metrics need both same-identity and different-identity pairs")
    return scores, labels


def best_threshold(scores, labels) -> float:
    """The threshold maximising accuracy of ``score >= threshold`` (ROC-based).

    Returned halfway between the lowest accepted score and the next lower score, so that
    unseen scores just below the lowest accepted one are not rejected by a hair.
    """
    scores, labels = _check(scores, labels)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    pos, neg = labels.sum(), (~labels).sum()
    acc = (tpr * pos + (1 - fpr) * neg) / (pos + neg)
    i = int(np.argmax(acc))
    if not np.isfinite(thr[i]):  # reject everything
        return float(np.nextafter(scores.max(), np.inf))
    if i + 1 < len(thr):
        return float((thr[i] + thr[i + 1]) / 2)
    return float(thr[i])


def _tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _eer(fpr: np.ndarray, tpr: np.ndarray, thr: np.ndarray):
    """``(EER, threshold)`` of a full ROC (``roc_curve(..., drop_intermediate=False)``).

    The EER is where FAR = FRR on the ROC drawn as straight lines between its points (the
    ``brentq`` on ``interp1d(fpr, tpr)`` definition; a crossing may lie inside a horizontal or
    vertical run of points, which a thinned ROC leaves out). The threshold is that of the ROC
    point nearest the crossing (smallest ``|FAR - FRR|``): a real operating point.
    """
    d = (1 - tpr) - fpr  # FRR - FAR: 1 at the first point, -1 at the last, non-increasing
    k = int(np.argmax(d <= 0))  # first point at or past the crossing; k >= 1 (the ROC starts at (0, 0))
    eer = fpr[k - 1] + d[k - 1] / (d[k - 1] - d[k]) * (fpr[k] - fpr[k - 1])
    i = int(np.argmin(np.abs(d)))
    return float(eer), float(thr[i]) if np.isfinite(thr[i]) else float("inf")


def verification_metrics(
    scores, labels, folds: Optional[Sequence[int]] = None, n_folds: int = 10,
    far_targets: Sequence[float] = FAR_TARGETS, seed: int = 0,
) -> Dict[str, object]:
    """Verification metrics of similarity ``scores`` (N,) for pairs with ``labels`` (N,): bool,
    0/1 or -1/1, 1 (True) = same identity; any other values are refused.

    Args:
        folds: fold index per pair (protocol folds, e.g. LFW / CFP); None: stratified
            ``n_folds``-fold split (shuffled with ``seed``).
        far_targets: FARs for TAR@FAR; a target needs at least ``1/FAR`` negatives.
    Returns:
        a JSON-ready dict: ``accuracy_mean``, ``accuracy_std``, ``fold_accuracies``,
        ``fold_thresholds``, ``threshold`` (accuracy-maximising on all pairs), ``auc``,
        ``eer`` (where FAR = FRR on the full ROC, interpolated between its points),
        ``eer_threshold`` (the threshold whose FAR and FRR are closest), ``tar_at_far``
        ({"1e-01": TAR or None}), ``n_pairs``, ``n_same``, ``n_diff``, ``n_folds``.
    """
    scores, labels = _check(scores, labels)
    if folds is None:
        if n_folds < 2:
            raise ValueError(f"n_folds must be at least 2 for cross-validated accuracy (a threshold is fitted on "
                             f"the other folds of each one), got n_folds={n_folds}")
        n_splits = min(n_folds, int(labels.sum()), int((~labels).sum()))
        if n_splits < 2:
            raise ValueError("need at least 2 same and 2 different pairs for cross-validated accuracy")
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = list(splitter.split(scores, labels))
    else:
        folds = np.asarray(folds).ravel()
        if folds.shape != scores.shape:
            raise ValueError(f"folds {folds.shape} and scores {scores.shape} differ in length")
        splits = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in np.unique(folds)]
        if len(splits) < 2:
            raise ValueError("cross-validated accuracy needs at least 2 folds")
    accs, thrs = [], []
    for train, test in splits:
        t = best_threshold(scores[train], labels[train])
        thrs.append(t)
        accs.append(float(((scores[test] >= t) == labels[test]).mean()))
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)  # thinning can drop the EER crossing
    n_neg = int((~labels).sum())
    tar = {f"{far:.0e}": (_tar_at_far(fpr, tpr, far) if n_neg * far >= 1 else None) for far in far_targets}
    eer, eer_thr = _eer(fpr, tpr, thr)
    return {
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "fold_thresholds": thrs,
        "threshold": best_threshold(scores, labels),
        "auc": float(roc_auc_score(labels, scores)),
        "eer": eer,
        "eer_threshold": eer_thr,
        "tar_at_far": tar,
        "n_pairs": int(len(scores)),
        "n_same": int(labels.sum()),
        "n_diff": n_neg,
        "n_folds": len(splits),
    }


def plot_roc(scores, labels, out_png: PathLike, title: str = "ROC", metrics: Optional[Dict[str, object]] = None) -> Path:
    """Write a ROC plot (TAR vs FAR, log FAR axis) with the EER point and TAR@FAR markers to a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    scores, labels = _check(scores, labels)
    metrics = metrics or verification_metrics(scores, labels)
    fpr, tpr, _ = roc_curve(labels, scores)
    floor = 1.0 / max((~labels).sum(), 1)
    fig = Figure(figsize=(5.5, 4.5), dpi=120)
    ax = fig.add_subplot()
    ax.plot(np.maximum(fpr, floor / 2), tpr, lw=2,
            label=f"AUC {metrics['auc']:.4f}, acc {100 * metrics['accuracy_mean']:.2f}% ± {100 * metrics['accuracy_std']:.2f}%")
    eer = metrics["eer"]
    ax.plot([max(eer, floor / 2)], [1 - eer], "o", color="C3", label=f"EER {100 * eer:.2f}%")
    for far, tar in metrics["tar_at_far"].items():
        if tar is not None:
            ax.plot([float(far)], [tar], "s", ms=5, label=f"TAR@FAR={far}: {100 * tar:.2f}%")
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(f"{title} ({metrics['n_same']} same / {metrics['n_diff']} different pairs)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
