"""Merging duplicate identities across sources and dropping outliers with embeddings."""
import numpy as np

from lightface.data.identity_cleanup import find_duplicate_classes, find_outliers, plan_cleanup


def _people(n_people=6, per=5, dim=32, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    emb = np.repeat(centres, per, 0) + noise * rng.standard_normal((n_people * per, dim)) / np.sqrt(dim)
    return emb, np.repeat(np.arange(n_people), per), centres


def test_same_person_in_two_sources_is_merged_and_nobody_else():
    emb, person, _ = _people()
    # source a labels people 0-3, source b labels people 2-5: people 2 and 3 are in both
    a = person <= 3
    labels = np.where(a, person, 4 + person - 2)  # a: classes 0-3; b: classes 4-7 (people 2-5)
    classes = ["a/0", "a/1", "a/2", "a/3", "b/2", "b/3", "b/4", "b/5"]
    sources = [c.split("/")[0] for c in classes]
    b_rows = np.flatnonzero(person >= 2)  # people 2 and 3 also photographed in source b
    emb2 = np.concatenate([emb[a], emb[b_rows] + 0.01])
    labels2 = np.concatenate([labels[a], 4 + person[b_rows] - 2])
    r = plan_cleanup(emb2, labels2, classes, merge_threshold=0.8, outlier_threshold=0.3, class_sources=sources, center=False)
    assert sorted(map(sorted, r["merged"])) == [["a/2", "b/2"], ["a/3", "b/3"]]
    assert r["stats"]["classes_after"] == 6 and "a/2+b/2" in r["classes"]
    assert r["dropped"] == []


def test_one_source_labels_are_never_merged_with_each_other():
    emb, person, _ = _people(n_people=2)
    labels = np.where(np.arange(len(person)) % 2 == 0, person, person + 2)  # each person split in two labels
    centroids = np.stack([emb[labels == c].mean(0) for c in range(4)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    assert find_duplicate_classes(centroids, 0.8, class_sources=["a"] * 4) == []
    assert sorted(map(sorted, find_duplicate_classes(centroids, 0.8))) == [[0, 2], [1, 3]]


def test_a_mislabelled_photo_is_dropped_and_small_classes_are_kept():
    emb, person, centres = _people(n_people=3, per=6)
    emb[0] = centres[2]  # photo of person 2 labelled as person 0
    out = find_outliers(emb, person, outlier_threshold=0.3)
    assert out.tolist() == [True] + [False] * (len(person) - 1)
    assert not find_outliers(emb[:2], person[:2], 0.3).any()  # a 2-photo class keeps both


def test_rows_without_embedding_keep_their_label():
    emb, person, _ = _people(n_people=2)
    emb[3] = np.nan
    r = plan_cleanup(emb, person, ["x", "y"], center=False)
    assert r["labels"][3] == person[3] and r["stats"]["without_embedding"] == 1




def test_a_third_source_class_joins_a_group_only_when_it_matches_every_member():
    """Measured on the real corpus with the shipped recogniser at 0.7: celeba/7471 (someone else) was linked
    to cfp/052 and so merged with lfw/Ashton_Kutcher + cfp/052, a group whose weakest pair had cosine 0.56
    (cleanup_merged.csv said so): single linkage put people the threshold keeps apart in one class."""
    lfw, cfp = np.array([1.0, 0.0, 0.0]), np.array([0.9, 0.43589, 0.0])  # lfw . cfp = 0.9
    celeba = np.array([0.56, 0.75, 0.352])  # celeba . cfp = 0.831 >= 0.7, celeba . lfw = 0.56 < 0.7
    centroids = np.stack([lfw, cfp, celeba / np.linalg.norm(celeba)])
    sims = centroids @ centroids.T
    assert sims[0, 1] > 0.7 and sims[1, 2] > 0.7 and sims[0, 2] < 0.7
    groups = find_duplicate_classes(centroids, 0.7, class_sources=["lfw", "cfp", "celeba"])
    assert groups == [[0, 1]]  # the strongest link stays; celeba/x stays its own class
    # every pair of a group reaches the threshold
    assert find_duplicate_classes(centroids, 0.5, class_sources=["lfw", "cfp", "celeba"]) == [[0, 1, 2]]
