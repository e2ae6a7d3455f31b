"""The model card's development protocols: the held-out faces, pair counts and metric ranges."""
import cv2
import numpy as np
import pytest

from lightface.eval.dev_protocols import cfp_heldout_faces, export_lfw_dev, lfw_dev_faces, rank1, run_dev_protocols
from lightface.eval.verification import read_pairs


def _pixels(crops):
    """A deliberately weak embedding: 16x16 gray thumbnails of the centre crop, mean-removed."""
    out = np.stack([cv2.resize(cv2.cvtColor(c[8:136, 8:136], cv2.COLOR_BGR2GRAY), (16, 16)).ravel() for c in crops])
    out = out.astype(np.float64)
    return out - out.mean(1, keepdims=True)


def test_lfw_dev_is_fold_2_aligned(shared_data):
    crops, pairs, same = lfw_dev_faces(shared_data)
    assert len(pairs) == 600 and same.sum() == 300
    assert all(c.shape == (144, 144, 3) and c.dtype == np.uint8 for c in crops)
    assert pairs.max() < len(crops)


def test_exported_lfw_dev_is_what_train_lightcnn_validates_on(shared_data, tmp_path):
    """``evaluate_dev --export-lfw-dev DIR``: the same crops and pairs, as a --val-pairs list."""
    crops, pairs, same = lfw_dev_faces(shared_data)
    listed = read_pairs(export_lfw_dev(shared_data, tmp_path / "dev"))
    assert len(listed.labels) == 600 and list(map(bool, listed.labels)) == same.tolist()
    for k in (0, 299, 300, 599):  # first and last same-person / different-person pairs
        a = cv2.imread(str(tmp_path / "dev" / listed.a[k]))
        b = cv2.imread(str(tmp_path / "dev" / listed.b[k]))
        np.testing.assert_array_equal(a, crops[pairs[k, 0]])
        np.testing.assert_array_equal(b, crops[pairs[k, 1]])


@pytest.mark.slow
def test_protocols_score_a_weak_embedding_in_range(shared_data):
    crops, ids, profile = cfp_heldout_faces(shared_data)
    assert len(set(ids.tolist())) == 35 and profile.sum() == 140 and (~profile).sum() == 350
    r = run_dev_protocols(_pixels, shared_data)
    assert r["lfw_dev"]["pairs"] == 600
    for value in (r["lfw_dev"]["accuracy"], r["cfp_fp"]["fp_accuracy"], r["cfp_fp"]["rank1_profile_to_frontal"]):
        assert 0.0 <= value <= 1.0
    # thumbnails know nothing about identity across pose: near chance on profiles
    assert r["cfp_fp"]["rank1_profile_to_frontal"] < 0.3


def test_rank1_counts_the_nearest_gallery_identity():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    probes = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.2]])
    assert rank1(probes, np.array([0, 1, 1]), gallery, np.array([0, 1])) == pytest.approx(2 / 3)


def test_unknown_protocol_is_refused(shared_data):
    with pytest.raises(ValueError, match="unknown protocols"):
        run_dev_protocols(_pixels, shared_data, ["megaface"])
