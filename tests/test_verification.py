"""Pair-list parsers and verification metrics."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lightface.eval.verification import (
    best_threshold,
    plot_roc,
    read_cfp_pairs,
    read_label_pairs,
    read_lfw_pairs,
    read_pairs,
    verification_metrics,
)


def test_lfw_pairs_view2(tmp_path):
    lines = ["2\t2"]
    for f in range(2):
        lines += [f"Ann_Veneman\t{1 + f}\t{3 + f}", "Tom_Ridge\t1\t2",
                  f"Ann_Veneman\t{1 + f}\tTom_Ridge\t10", "Gray_Davis\t5\tJohn_Snow\t7"]
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    pairs = read_pairs(path)
    assert len(pairs) == 8
    assert pairs.a[0] == "Ann_Veneman/Ann_Veneman_0001.jpg" and pairs.b[0] == "Ann_Veneman/Ann_Veneman_0003.jpg"
    assert pairs.b[2] == "Tom_Ridge/Tom_Ridge_0010.jpg"
    assert list(pairs.labels) == [True, True, False, False] * 2
    assert list(pairs.folds) == [0, 0, 0, 0, 1, 1, 1, 1]
    path.write_text("3 2\n" + "\n".join(lines[1:]))
    with pytest.raises(ValueError, match="header says"):
        read_lfw_pairs(path)


def test_lfw_pairs_with_one_fold_are_split_into_n_folds(tmp_path):
    lines = ["1\t4"] + [f"Ann_Veneman\t1\t{k}" for k in range(2, 6)] + [f"Ann_Veneman\t1\tTom_Ridge\t{k}" for k in range(1, 5)]
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    pairs = read_pairs(path)
    assert len(pairs) == 8 and pairs.folds is None  # like the same body without a header
    scores = np.where(pairs.labels, 0.8, 0.2)
    metrics = verification_metrics(scores, pairs.labels, folds=pairs.folds, n_folds=4)
    assert metrics["n_folds"] == 4 and metrics["accuracy_mean"] == 1.0
    # an image given as the pair list: said plainly, not a UnicodeDecodeError
    image = tmp_path / "face.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(ValueError, match="face.jpg is an image file, not a text list file; give a text pair list"):
        read_pairs(image)


def test_label_pairs(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("# comment\n1 a/1.jpg a/2.jpg\nsame b/1.jpg b/2.jpg\n0 a/1.jpg b/1.jpg\n")
    pairs = read_pairs(path)
    assert list(pairs.labels) == [True, True, False] and pairs.folds is None
    assert pairs.paths == ["a/1.jpg", "b/1.jpg", "a/2.jpg", "b/2.jpg"]
    path.write_text("maybe a b\n")
    with pytest.raises(ValueError, match=r"pairs.txt:1"):
        read_label_pairs(path)


def test_cfp_protocol(tmp_path):
    proto = tmp_path / "Protocol"
    (proto / "Split" / "FP" / "01").mkdir(parents=True)
    (proto / "Split" / "FP" / "02").mkdir(parents=True)
    (proto / "Pair_list_F.txt").write_text("1 ../Data/Images/001/frontal/01.jpg\n2 ../Data/Images/002/frontal/01.jpg\n")
    (proto / "Pair_list_P.txt").write_text("1 ../Data/Images/001/profile/01.jpg\n2 ../Data/Images/002/profile/01.jpg\n")
    for s in ("01", "02"):
        (proto / "Split" / "FP" / s / "same.txt").write_text("1,1\n2,2\n")
        (proto / "Split" / "FP" / s / "diff.txt").write_text("1,2\n")
    pairs = read_pairs(proto, fmt="cfp-fp")
    assert len(pairs) == 6 and list(pairs.folds) == [0, 0, 0, 1, 1, 1]
    assert pairs.a[0] == "Images/001/frontal/01.jpg" and pairs.b[2] == "Images/002/profile/01.jpg"
    assert list(pairs.labels) == [True, True, False] * 2
    with pytest.raises(FileNotFoundError, match="FF"):
        read_cfp_pairs(proto, "FF")


def test_metrics_on_separable_and_random_scores():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(600, bool), np.zeros(600, bool)]
    perfect = np.where(labels, 0.8, 0.1) + rng.normal(0, 0.01, 1200)
    m = verification_metrics(perfect, labels)
    assert m["accuracy_mean"] == 1.0 and m["auc"] == 1.0 and m["eer"] == 0.0
    assert m["tar_at_far"]["1e-01"] == 1.0 and m["tar_at_far"]["1e-02"] == 1.0
    assert m["tar_at_far"]["1e-03"] is None  # 600 negatives < 1/1e-3
    assert 0.1 < m["threshold"] <= 0.8 and m["n_folds"] == 10
    noisy = np.where(labels, 0.6, 0.4) + rng.normal(0, 0.15, 1200)
    m = verification_metrics(noisy, labels, folds=np.arange(1200) % 10)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, noisy))
    # Gaussian classes 0.2 apart with sigma 0.15 -> accuracy about Phi(0.1/0.15) = 0.75
    assert 0.70 < m["accuracy_mean"] < 0.80 and 0.20 < m["eer"] < 0.30 and m["accuracy_std"] > 0
    assert 0.45 < m["threshold"] < 0.55


def test_threshold_hand_computed():
    scores = np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0], bool)
    assert best_threshold(scores, labels) == pytest.approx(0.325)
    with pytest.raises(ValueError, match="NaN"):
        verification_metrics([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="both"):
        verification_metrics([0.1, 0.2], [True, True])


def test_one_fold_is_refused_naming_the_fold_count(capsys):
    # a single fold leaves no pairs to fit the threshold on: the cause is n_folds, not the pairs
    # (pipelines.evaluate --folds 1 used to embed every image first, then blame the pairs)
    from pipelines.evaluate import get_args_parser

    labels = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    with pytest.raises(ValueError, match="n_folds must be at least 2 .*got n_folds=1"):
        verification_metrics(np.where(labels, 0.8, 0.2), labels, n_folds=1)
    required = ["--weights", "w", "--pairs", "p", "--images", "i"]
    with pytest.raises(SystemExit) as info:
        get_args_parser().parse_args(required + ["--folds", "1"])
    assert info.value.code == 2 and "--folds: must be an integer >= 2, got 1" in capsys.readouterr().err
    assert get_args_parser().parse_args(required + ["--folds", "2"]).folds == 2


def test_plot_roc(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    scores = labels * 0.3 + rng.random(200)
    out = plot_roc(scores, labels, tmp_path / "roc.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def _far_frr_crossing(scores, labels):
    """Brute force: FAR and FRR of ``score >= t`` at every distinct score t and at +inf; the EER
    where the two curves cross (linear between neighbouring thresholds)."""
    thr = np.r_[np.inf, np.unique(scores)[::-1]]
    far = np.array([(scores[~labels] >= t).mean() for t in thr])
    frr = np.array([(scores[labels] < t).mean() for t in thr])
    d = frr - far
    k = int(np.argmax(d <= 0))
    return far[k - 1] + d[k - 1] / (d[k - 1] - d[k]) * (far[k] - far[k - 1]), thr[np.argmin(np.abs(d))]


def test_eer_is_where_far_equals_frr_on_the_full_roc():
    # 6 positives above all 10 negatives, 4 below: FAR = FRR = 0.4 at threshold 6. sklearn's
    # thinned ROC drops the points of that horizontal run, which gave eer 0.2 at threshold 15
    # (where FAR is 0 and FRR 0.4)
    labels = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    scores = np.r_[20, 19, 18, 17, 16, 15, -4, -3, -2, -1.0, np.arange(10.0)]
    m = verification_metrics(scores, labels)
    assert m["eer"] == pytest.approx(0.4) and m["eer_threshold"] == 6.0
    # LFW-sized Gaussian scores: the brute-force FAR/FRR crossing, draw after draw
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    for _ in range(10):
        scores = np.round(np.where(labels, 0.5, 0.2) + rng.normal(0, 0.1, 600), 2)  # rounded: ties too
        eer, thr = _far_frr_crossing(scores, labels)
        m = verification_metrics(scores, labels)
        assert m["eer"] == pytest.approx(eer, abs=1e-12) and m["eer_threshold"] == thr


@pytest.mark.parametrize("same, diff", [(1, -1), (1, 0), (1.0, 0.0), (True, False)])
def test_labels_may_be_bool_01_or_pm1(same, diff):
    scores = np.r_[np.linspace(0.5, 1, 20), np.linspace(0, 0.6, 20)]
    m = verification_metrics(scores, [same] * 20 + [diff] * 20)
    assert m["n_same"] == 20 and m["n_diff"] == 20 and m["auc"] > 0.95


@pytest.mark.parametrize("labels, match", [
    ([1] * 20 + [0] * 10 + [-1] * 10, r"got values \[-1, 0, 1\]"),
    ([2] * 20 + [0] * 20, r"got values \[0, 2\]"),
    (["1"] * 20 + ["0"] * 20, "labels must be bool, 0/1 or -1/1 numbers"),
])
def test_other_labels_are_refused_naming_the_values(labels, match):
    # '0' and -1 are truthy: a bool cast scored them as "same" (and then blamed the pairs)
    scores = np.r_[np.linspace(0.5, 1, 20), np.linspace(0, 0.6, 20)]
    with pytest.raises(ValueError, match=match):
        verification_metrics(scores, labels)
