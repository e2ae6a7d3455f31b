"""Clean a multi-source identity corpus with face embeddings: merge duplicate identities, drop outliers.

The same person often appears in two sources under two labels (``lfw/Tony_Blair`` and
``cfp/467``); each source also has photos of the wrong person. Given one embedding per
sample (from a trained Light CNN, or from a teacher such as dlib's: the "oracle"), this
module finds both:

* :func:`find_duplicate_classes`: classes whose centroids (mean of L2-normalised
  embeddings, re-normalised) are each other's best match (across sources) with cosine >=
  ``merge_threshold`` are linked, and linked classes are merged (union-find) as long as every
  two classes of a group reach ``merge_threshold``;
* :func:`find_outliers`: samples whose cosine to their (merged) class centroid, computed
  without the sample itself, is below ``outlier_threshold``.

:func:`plan_cleanup` combines them into new labels (merged classes share one label;
outliers get ``-1``) plus a report of what was merged and dropped. Writing the cleaned
LMDB is :func:`lightface.data.build.write_lmdb`'s job (``pipelines.relabel --embeddings``).
"""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["class_centroids", "find_duplicate_classes", "find_outliers", "outlier_scores", "plan_cleanup"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_centroids(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, D) unit centroids: the mean of each class's unit embeddings, re-normalised (0 rows for empty classes)."""
    e = _unit(embeddings)
    sums = np.zeros((num_classes, e.shape[1]))
    np.add.at(sums, labels, e)
    return _unit(sums)


def _find(parent: List[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def find_duplicate_classes(centroids: np.ndarray, merge_threshold: float, class_sources: Optional[Sequence[str]] = None,
                           counts: Optional[np.ndarray] = None) -> List[List[int]]:
    """Groups (lists of >= 2 class indices) of classes that are the same person.

    Two classes are linked when each is the other's most similar class (of the other's
    source, when sources are given) and their centroid cosine is >= ``merge_threshold``;
    linked classes are grouped, strongest links first, only while every two classes of the
    group have centroid cosine >= ``merge_threshold`` (a link that would bring in a class
    below it with another member is refused). Mutual best matches keep one person from
    chaining into others, and a source's own labels are trusted to be distinct people: when
    ``class_sources`` is given, classes of the same source are never linked, and a link that
    would bring two of them into one group (through a third source) is refused.

    Args:
        centroids: (K, D) unit class centroids.
        merge_threshold: cosine at or above which two mutual best matches are linked.
        class_sources: the source of each class (a name, or a set of names for a class already
            merged across sources: it counts as each of them), or None (one source: mutual
            nearest classes).
        counts: samples per class; classes with none are never linked.
    """
    k = len(centroids)
    valid = np.ones(k, bool) if counts is None else np.asarray(counts) > 0
    if class_sources is None:
        members = [frozenset([0])] * k
        src = np.zeros(k, int)
    else:
        if len(class_sources) != k:
            raise ValueError(f"class_sources has {len(class_sources)} entries for {k} classes")
        sets = [frozenset([c]) if isinstance(c, str) else frozenset(str(x) for x in c) for c in class_sources]
        atoms = {a: i for i, a in enumerate(sorted(set().union(*sets)))}
        members = [frozenset(atoms[a] for a in m) for m in sets]
        src = np.unique(np.asarray(["\0".join(sorted(m)) for m in sets]), return_inverse=True)[1]
    kind = {int(src[i]): members[i] for i in range(k)}  # source id -> its source names
    sims = centroids @ centroids.T
    sims[:, ~valid] = -np.inf
    np.fill_diagonal(sims, -np.inf)
    best = {}  # (class, other source) -> best class of that source
    for s in np.unique(src):
        cols = np.flatnonzero(src == s)
        if class_sources is None:
            cols = np.arange(k)
        if not len(cols):
            continue
        pick = cols[np.argmax(sims[:, cols], axis=1)]
        for i in range(k):
            best[(i, int(s))] = int(pick[i])
    links = []
    for i in range(k):
        if not valid[i]:
            continue
        for s in np.unique(src):
            if class_sources is not None and kind[int(s)] & members[i]:
                continue
            j = best.get((i, int(s)))
            if j is None or j <= i or not valid[j] or sims[i, j] < merge_threshold or best.get((j, int(src[i]))) != i:
                continue
            links.append((float(sims[i, j]), i, j))
    # strongest links first; a link that would put two classes of one source in one group is
    # refused (a source's own labels are distinct people), so no chain joins them either
    # refused too is a link that would put two classes below the threshold in one group: a third source's
    # class linked to one member only would otherwise join people the threshold keeps apart
    parent = list(range(k))
    group_sources = {i: set(members[i]) for i in range(k)}
    group_members = {i: [i] for i in range(k)}
    for _, i, j in sorted(links, key=lambda t: -t[0]):
        a, b = _find(parent, i), _find(parent, j)
        if a == b or (class_sources is not None and group_sources[a] & group_sources[b]):
            continue
        if sims[np.ix_(group_members[a], group_members[b])].min() < merge_threshold:
            continue
        root, child = min(a, b), max(a, b)
        parent[child] = root
        group_sources[root] |= group_sources.pop(child)
        group_members[root] += group_members.pop(child)
    groups: Dict[int, List[int]] = {}
    for i in range(k):
        groups.setdefault(_find(parent, i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def outlier_scores(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) cosine between each sample's unit embedding and the mean of the *other* samples of
    its class (NaN for a sample alone in its class)."""
    e = _unit(embeddings)
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    sums = np.zeros((k, e.shape[1]))
    np.add.at(sums, labels, e)
    counts = np.bincount(labels, minlength=k)
    others = sums[labels] - e
    score = (e * _unit(others)).sum(1)
    return np.where(counts[labels] > 1, score, np.nan)


def find_outliers(embeddings: np.ndarray, labels: np.ndarray, outlier_threshold: float, min_class_size: int = 3) -> np.ndarray:
    """Bool (N,) mask of samples far from the rest of their class.

    A sample's score (:func:`outlier_scores`) is the cosine between its unit embedding and
    the mean of the other samples of its class; classes with fewer than ``min_class_size``
    samples keep all (too few to say who is the odd one out).
    """
    labels = np.asarray(labels)
    score = outlier_scores(embeddings, labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    counts = np.bincount(labels, minlength=k)
    with np.errstate(invalid="ignore"):
        return (counts[labels] >= min_class_size) & (score < outlier_threshold)


def plan_cleanup(embeddings: np.ndarray, labels: np.ndarray, classes: Sequence[str], merge_threshold: float = 0.8,
                 outlier_threshold: float = 0.3, class_sources: Optional[Sequence[str]] = None,
                 min_class_size: int = 3, center: bool = True) -> Dict[str, Any]:
    """New labels for a corpus: duplicate classes merged, outliers dropped (label -1).

    Args:
        embeddings: (N, D) one embedding per sample (any scale; NaN rows are kept unchanged).
        labels: (N,) int class index per sample; classes: the K class names.
        merge_threshold / outlier_threshold: cosine thresholds (see the module docstring).
        class_sources: per class, its source or set of sources (merge across sources only), or None.
        center: subtract the mean embedding first (needed for embeddings compared by
            Euclidean distance, such as dlib's, whose cosines are all high otherwise).
    Returns:
        ``{"labels": (N,) new labels into "classes" (-1 = dropped), "classes": merged class
        names (members joined with "+"), "merged": [[names...], ...], "dropped": [sample
        indices], "stats": counts}``.
    """
    labels = np.asarray(labels, np.int64)
    emb = np.asarray(embeddings, np.float64)
    known = np.isfinite(emb).all(1)
    if center:  # embeddings compared by distance (dlib's) share a large common direction
        emb = emb - emb[known].mean(0)
    k = len(classes)
    counts = np.bincount(labels[known], minlength=k)
    centroids = class_centroids(emb[known], labels[known], k)
    groups = find_duplicate_classes(centroids, merge_threshold, class_sources, counts)
    target = np.arange(k)
    for g in groups:
        target[g] = min(g)
    kept_ids = np.unique(target)
    new_index = {int(c): i for i, c in enumerate(kept_ids)}
    members: Dict[int, List[str]] = {}
    for c in range(k):
        members.setdefault(int(target[c]), []).append(str(classes[c]))
    new_classes = ["+".join(members[int(c)]) for c in kept_ids]
    merged_labels = np.asarray([new_index[int(target[c])] for c in labels], np.int64)
    outliers = np.zeros(len(labels), bool)
    outliers[known] = find_outliers(emb[known], merged_labels[known], outlier_threshold, min_class_size)
    scores = np.full(len(labels), np.nan)
    scores[known] = outlier_scores(emb[known], merged_labels[known])
    # the weakest link of each group: its lowest pairwise centroid cosine
    group_cosine = [float(min(centroids[a] @ centroids[b] for i, a in enumerate(g) for b in g[i + 1:])) for g in groups]
    out_labels = np.where(outliers, -1, merged_labels)
    return {
        "labels": out_labels,
        "classes": new_classes,
        "merged": [[str(classes[c]) for c in g] for g in groups],
        "merged_cosine": group_cosine,
        "dropped": np.flatnonzero(outliers).tolist(),
        "scores": scores,
        "stats": {"samples": int(len(labels)), "classes_before": int(k), "classes_after": int(len(new_classes)),
                  "merge_groups": len(groups), "dropped": int(outliers.sum()), "without_embedding": int((~known).sum()),
                  "merge_threshold": float(merge_threshold), "outlier_threshold": float(outlier_threshold)},
    }
