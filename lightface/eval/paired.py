"""Paired comparison of two recognisers on the same faces: exact McNemar tests.

Two recognisers scored on the same probes (or pairs) differ only where one is right and
the other wrong. McNemar's test looks at those discordant items alone: ``b01`` right only
with B, ``b10`` right only with A; under "the two are equally good" each discordant item
is B's with probability 1/2, so ``b01`` is Binomial(b01 + b10, 1/2) and the exact
two-sided p-value is a binomial tail. Far more sensitive than comparing two accuracies as
if they came from different faces: the many faces both get right (or both wrong) add no noise.

:func:`compare_recognisers` runs it on the development protocols of
:mod:`lightface.eval.dev_protocols` (the model card's faces): ``lfw_hard`` rank-1
identification per capture condition and pooled, and the ``lfw_dev`` pairs.

Reference: Q. McNemar, "Note on the sampling error of the difference between correlated
proportions or percentages", Psychometrika 12(2), 1947; the exact (binomial) form as in
Fagerland, Lydersen and Laake, BMC Medical Research Methodology 13:91, 2013.
"""
import logging
import math
import numbers
from typing import Dict, Tuple

import numpy as np

from .dev_protocols import EmbedFn, _pair_scores, by_occluder, lfw_dev_faces, lfw_hard_faces, rank1_hits
from .verification import best_threshold

__all__ = ["mcnemar_exact", "paired_counts", "pair_hits", "compare_recognisers", "format_comparison"]

log = logging.getLogger(__name__)


def mcnemar_exact(b01: int, b10: int) -> float:
    """The exact two-sided McNemar p-value of ``b01`` vs ``b10`` discordant items.

    ``min(1, 2 * P[X <= min(b01, b10)])`` for ``X ~ Binomial(b01 + b10, 1/2)`` (the same value
    as ``scipy.stats.binomtest(b01, b01 + b10, 0.5).pvalue``), computed in exact integer
    arithmetic. Symmetric in its arguments; 1.0 when there are no discordant items.

    Args:
        b01: items right only with the second system (int >= 0).
        b10: items right only with the first system (int >= 0).

    Returns:
        The p-value, a float in (0, 1].

    Example:
        >>> f"{mcnemar_exact(41, 7):.2e}"   # 41 items right only with B, 7 only with A
        '6.24e-07'
        >>> mcnemar_exact(5, 5), mcnemar_exact(0, 0)
        (1.0, 1.0)
    """
    for name, value in (("b01", b01), ("b10", b10)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer count, got {type(value).__name__} {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be a count >= 0, got {value}")
    n, k = int(b01) + int(b10), min(int(b01), int(b10))
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)  # int / int: correctly rounded for any n


def paired_counts(correct_a, correct_b) -> Dict[str, float]:
    """Accuracies, discordant counts and the exact McNemar p-value of two systems on the same items.

    Args:
        correct_a: (N,) bool, item i right with system A.
        correct_b: (N,) bool, the same items with system B.

    Returns:
        ``{"n", "accuracy_a", "accuracy_b", "b_only" (right only with B), "a_only" (right only
        with A), "p_value"}`` (:func:`mcnemar_exact`).
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    for name, x in (("correct_a", a), ("correct_b", b)):
        if x.dtype != bool:
            raise TypeError(f"{name} must be a bool array (item right or wrong), got dtype {x.dtype}")
        if x.ndim != 1 or not len(x):
            raise ValueError(f"{name} must be a non-empty (N,) array, got shape {x.shape}")
    if a.shape != b.shape:
        raise ValueError(f"paired results must cover the same items: correct_a {a.shape} vs correct_b {b.shape}")
    b01, b10 = int((~a & b).sum()), int((a & ~b).sum())
    return {"n": int(len(a)), "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()),
            "b_only": b01, "a_only": b10, "p_value": mcnemar_exact(b01, b10)}


def pair_hits(emb: np.ndarray, pairs: np.ndarray, same: np.ndarray):
    """Which verification pairs one model gets right at its accuracy-maximising threshold on them.

    Args:
        emb: (N, D) embeddings (any scale: cosine similarity is used).
        pairs: (P, 2) int indices into ``emb``.
        same: (P,) bool, same person.

    Returns:
        ``(correct (P,) bool, threshold)``: ``cosine >= threshold`` is the decision, the
        threshold is :func:`~lightface.eval.verification.best_threshold` on these very pairs
        (the highest of equally accurate ones; optimistic for the accuracy, but each model gets
        its best, so the comparison is fair).
    """
    scores = _pair_scores(emb, pairs)
    same = np.asarray(same, bool)
    threshold = best_threshold(scores, same)
    return (scores >= threshold) == same, threshold


def compare_recognisers(embed_a: EmbedFn, embed_b: EmbedFn, data_root, detector=None,
                        align_methods: Tuple[str, str] = ("similarity", "similarity")) -> Dict[str, Dict[str, float]]:
    """Paired comparison of two recognisers on the same development-protocol faces.

    Args:
        embed_a, embed_b: list of 144x144 uint8 BGR ``lightcnn_train`` crops -> (N, D)
            embeddings (:func:`~lightface.eval.dev_protocols.crop_embedder` makes one from a
            :class:`~lightface.FaceEmbedder`).
        data_root: the shared data folder (holding ``lfw_train/``).
        detector: a :class:`~lightface.data.detect.FaceDetector`: align from its landmarks
            instead of the given ones (the whole-photo path), as ``run_dev_protocols`` does.
        align_methods: how the faces are cropped for A and for B (``"similarity"`` or ``"eyes"``,
            :func:`lightface.data.align.align_face`'s ``method``): each recogniser's own
            (``FaceEmbedder.align_method``: ``"eyes"`` for an official Light CNN release), so that each
            is scored on the crops it was trained on; the same photos, landmarks and probe conditions
            either way, so the items stay paired.

    Returns:
        ``{row: paired_counts(...)}`` (:func:`paired_counts`: ``n``, ``accuracy_a``,
        ``accuracy_b``, ``b_only``, ``a_only``, ``p_value``) for the rows
        ``lfw_hard/<condition>`` (rank-1 of the probes under each of ``clean``,
        ``side_light``, ``occlusion``), ``lfw_hard/occlusion_<occluder>`` (the occluded probes by
        occluder: sunglasses, mask, hand), ``lfw_hard/all`` (all probe-conditions pooled) and
        ``lfw_dev/pairs`` (the 600 LFW fold-2 pairs, each model at its own accuracy-maximising
        threshold on them, :func:`pair_hits`; this row adds ``threshold_a``, ``threshold_b``).
    """
    methods = dict.fromkeys(align_methods)  # each method's crops once, in order
    hard = {method: lfw_hard_faces(data_root, detector=detector, align_method=method) for method in methods}
    hits = {}
    for key, embed, method in (("a", embed_a, align_methods[0]), ("b", embed_b, align_methods[1])):
        gallery, gallery_ids, by_condition, probe_ids = hard[method]
        log.info("lfw_hard: embedding %d gallery and %d x %d probe crops (align_method %s) with %s", len(gallery),
                 len(by_condition), len(probe_ids), method, key.upper())
        g = embed(gallery)
        hits[key] = {name: rank1_hits(embed(crops), probe_ids, g, gallery_ids) for name, crops in by_condition.items()}
    results = {f"lfw_hard/{name}": paired_counts(hits["a"][name], hits["b"][name]) for name in by_condition}
    split_a, split_b = by_occluder(hits["a"]["occlusion"]), by_occluder(hits["b"]["occlusion"])
    results.update({f"lfw_hard/occlusion_{kind}": paired_counts(split_a[kind], split_b[kind]) for kind in split_a})
    results["lfw_hard/all"] = paired_counts(np.concatenate(list(hits["a"].values())),
                                            np.concatenate(list(hits["b"].values())))

    dev = {method: lfw_dev_faces(data_root, detector, align_method=method) for method in methods}
    crops, pairs, same = dev[align_methods[0]]
    log.info("lfw_dev: embedding %d crops of %d pairs with A and B", len(crops), len(pairs))
    (correct_a, threshold_a), (correct_b, threshold_b) = (pair_hits(embed(dev[method][0]), pairs, same)
                                                          for embed, method in zip((embed_a, embed_b), align_methods))
    results["lfw_dev/pairs"] = {**paired_counts(correct_a, correct_b), "threshold_a": float(threshold_a),
                                "threshold_b": float(threshold_b)}
    return results


def _p_text(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def format_comparison(results: Dict[str, Dict[str, float]]) -> str:
    """A readable table of :func:`compare_recognisers` results: one line per row with its
    label, the item count, accuracy A, accuracy B, the items right only with B, right only
    with A, and the exact McNemar p-value (then a note on the pair row's thresholds)."""
    head = f"{'':<30}{'n':>6}{'acc A':>9}{'acc B':>9}{'B only':>8}{'A only':>8}{'p':>10}"
    lines = [head, "-" * len(head)]
    for row, r in results.items():
        label = row.replace("/", " ") + (" *" if "threshold_a" in r else "")
        lines.append(f"{label:<30}{r['n']:>6}{r['accuracy_a']:>9.4f}{r['accuracy_b']:>9.4f}{r['b_only']:>8}"
                     f"{r['a_only']:>8}{_p_text(r['p_value']):>10}")
    lines.append("B only / A only: items right only with B / only with A; p: exact two-sided McNemar test")
    for row, r in results.items():
        if "threshold_a" in r:
            lines.append(f"* {row.replace('/', ' ')}: each model at its own accuracy-maximising cosine threshold on "
                         f"these pairs (A {r['threshold_a']:.3f}, B {r['threshold_b']:.3f}): optimistic, but paired")
    return "\n".join(lines)
