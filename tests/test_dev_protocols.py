"""The model card's development protocols: the held-out faces, pair counts and metric ranges."""
import cv2
import numpy as np
import pytest

from lightface.eval.dev_protocols import (
    _cfp_pairs,
    _pair_scores,
    calibrate_threshold,
    cfp_heldout_faces,
    crop_embedder,
    export_lfw_dev,
    lfw_dev_faces,
    lfw_hard_faces,
    lfw_hard_occluders,
    rank1,
    rank1_hits,
    run_dev_protocols,
)
from lightface.eval.hard_conditions import HARD_CONDITIONS, OCCLUDERS, occlusion, side_light
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
    few, few_pairs, few_same = lfw_dev_faces(shared_data, n_pairs=20)  # a quick look aligns only what it scores
    assert len(few_pairs) == 20 and few_same.sum() == 10 and len(few) == len(np.unique(few_pairs)) < 40
    firsts = [np.flatnonzero(same)[:10], np.flatnonzero(~same)[:10]]  # the first pairs of each kind, in order
    for sub, full in zip((few_pairs[few_same], few_pairs[~few_same]), firsts):
        for (a, b), (fa, fb) in zip(sub, pairs[full]):
            assert np.array_equal(few[a], crops[fa]) and np.array_equal(few[b], crops[fb])


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
    hard = r["lfw_hard"]
    assert hard["gallery"] == 419 and hard["probes"] == 309
    assert all(0.0 <= hard[f"rank1_{name}"] <= 1.0 for name in HARD_CONDITIONS)
    kinds = lfw_hard_occluders(309)  # the occlusion row is the probe-weighted mean of its occluders' rows
    assert hard["rank1_occlusion"] == pytest.approx(sum((kinds == k).mean() * hard[f"rank1_occlusion_{k}"]
                                                        for k in OCCLUDERS))


def test_side_light_darkens_one_half_and_is_seeded():
    face = np.full((144, 144, 3), 128, np.uint8)
    for seed in range(6):
        lit = side_light(face, np.random.default_rng(seed))
        assert lit.shape == face.shape and lit.dtype == np.uint8 and (face == 128).all()  # the input is kept
        left, right = lit[:, :50].mean(), lit[:, 94:].mean()
        assert min(left, right) < 0.3 * max(left, right)  # a hard terminator, not a gentle gradient
        np.testing.assert_array_equal(lit, side_light(face, np.random.default_rng(seed)))


@pytest.mark.parametrize("size", [144, 150, 97])
def test_occlusion_covers_part_of_the_face_in_three_ways(size):
    face = np.full((size, size, 3), 128, np.uint8)  # the conditions scale with the image (144: the crop)
    covered = []
    for seed in range(30):
        out = occlusion(face, np.random.default_rng(seed))
        changed = (out != face).any(2)
        covered.append(round(float(changed.mean()), 2))
        assert out.shape == face.shape and 0.1 < changed.mean() < 0.6 and (face == 128).all()
    assert len(set(covered)) >= 3  # sunglasses, mask and hand cover different areas


def test_lfw_hard_is_fold_2_with_the_same_probes_under_each_condition(shared_data):
    gallery, gallery_ids, by_condition, probe_ids = lfw_hard_faces(shared_data)
    assert len(gallery) == len(set(gallery_ids.tolist())) == 419
    assert set(by_condition) == set(HARD_CONDITIONS) and len(probe_ids) == 309
    assert set(probe_ids.tolist()) <= set(gallery_ids.tolist()) and len(set(probe_ids.tolist())) == 157
    clean, lit = by_condition["clean"], by_condition["side_light"]
    assert all(len(crops) == 309 for crops in by_condition.values())
    assert all(c.shape == (144, 144, 3) and c.dtype == np.uint8 for c in clean + lit)
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(clean, lit)]) > 20
    # the dev pairs' photos of a fold-2 person are the ones aligned here
    dev_crops, _, _ = lfw_dev_faces(shared_data)
    assert any(np.array_equal(gallery[0], c) for c in dev_crops)


def test_lfw_hard_occluders_name_the_occluder_each_probe_carries(shared_data):
    """lfw_hard_occluders: sunglasses change only the eye rows, a mask only the rows below the nose, a hand
    a block from one edge; all three are used about equally."""
    _, _, by_condition, probe_ids = lfw_hard_faces(shared_data)
    kinds = lfw_hard_occluders(len(probe_ids))
    assert kinds.shape == (309,) and set(kinds.tolist()) == set(OCCLUDERS)
    assert min((kinds == k).sum() for k in OCCLUDERS) > 309 / 5
    for clean, occluded, kind in zip(by_condition["clean"], by_condition["occlusion"], kinds):
        changed = (clean != occluded).any(axis=2)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        if kind == "sunglasses":
            assert rows.min() >= 30 and rows.max() < 64
        elif kind == "mask":
            assert rows.min() >= 70 and rows.max() == 143
        else:
            assert cols.min() == 0 or cols.max() == 143
            assert cols.max() - cols.min() < 0.55 * 144


def test_rank1_counts_the_nearest_gallery_identity():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    probes = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.2]])
    assert rank1(probes, np.array([0, 1, 1]), gallery, np.array([0, 1])) == pytest.approx(2 / 3)


def test_rank1_refuses_failed_embeddings_and_empty_probes():
    # a NaN probe used to count as a hit on gallery row 0, and a NaN gallery row captured
    # every probe (argmax over NaN); FaceEmbedder.embed returns NaN rows for failed inputs
    gallery, gallery_ids = np.eye(3, 4), np.array([7, 8, 9])
    probes, probe_ids = np.array([[np.nan] * 4, [0, 1, 0, 0.0]]), np.array([7, 8])
    with pytest.raises(ValueError, match=r"probe embeddings contain NaN/inf in rows \[0\]"):
        rank1(probes, probe_ids, gallery, gallery_ids)
    bad_gallery = gallery.copy()
    bad_gallery[0] = np.nan
    with pytest.raises(ValueError, match=r"gallery embeddings contain NaN/inf in rows \[0\]"):
        rank1_hits(probes[1:], probe_ids[1:], bad_gallery, gallery_ids)
    with pytest.raises(ValueError, match="probe: expected .* N >= 1"):
        rank1(np.zeros((0, 4)), np.zeros(0), gallery, gallery_ids)
    assert rank1_hits(probes[1:], probe_ids[1:], gallery, gallery_ids).tolist() == [True]


def _assert_each_unordered_pair_once(pairs, same, ids):
    for rows in (pairs[same], pairs[~same]):
        assert (rows[:, 0] < rows[:, 1]).all() and len({tuple(p) for p in rows.tolist()}) == len(rows)
    assert (ids[pairs[same, 0]] == ids[pairs[same, 1]]).all() and (ids[pairs[~same, 0]] != ids[pairs[~same, 1]]).all()
    assert same.sum() == (~same).sum()


def test_cfp_frontal_frontal_pairs_list_each_unordered_pair_once():
    # (i, j) and (j, i) are the same comparison (cosine is symmetric): listed twice they were
    # weighted double and their twins leaked across the cross-validation folds
    ids = np.repeat([1, 2, 3], 4)
    frontal = np.ones(12, bool)
    pairs, same = _cfp_pairs(ids, frontal, frontal)
    assert same.sum() == 3 * 6  # C(4, 2) per person
    _assert_each_unordered_pair_once(pairs, same, ids)
    profile = np.tile([False, False, True, True], 3)  # frontal-profile: ordered (frontal, profile)
    pairs, same = _cfp_pairs(ids, ~profile, profile)
    assert same.sum() == 3 * 2 * 2 and (~profile[pairs[:, 0]]).all() and profile[pairs[:, 1]].all()


def test_cfp_heldout_frontal_frontal_pairs_are_1575(shared_data):
    files = sorted((shared_data / "cfp" / "Images").glob("*/*/*.jpg"))
    ids = np.array([int(f.parts[-3]) for f in files])
    profile = np.array([f.parts[-2] == "profile" for f in files])
    pairs, same = _cfp_pairs(ids, ~profile, ~profile)
    assert same.sum() == 35 * 45  # 10 frontal photos each: C(10, 2) pairs
    _assert_each_unordered_pair_once(pairs, same, ids)
    assert _cfp_pairs(ids, ~profile, profile)[1].sum() == 35 * 10 * 4


def test_unknown_protocol_is_refused(shared_data):
    with pytest.raises(ValueError, match="unknown protocols"):
        run_dev_protocols(_pixels, shared_data, ["megaface"])


def test_lfw_dev_aligned_by_a_detector_matches_the_given_landmarks_closely(shared_data, shared_models):
    """--detector det_500m.onnx: the whole-photo alignment; same pairs, crops within a few pixels."""
    from lightface.data.detect import FaceDetector

    given, pairs, same = lfw_dev_faces(shared_data)
    detected, pairs2, same2 = lfw_dev_faces(shared_data, FaceDetector(shared_models / "det_500m.onnx", device="cpu"))
    np.testing.assert_array_equal(pairs, pairs2)
    np.testing.assert_array_equal(same, same2)
    diff = [np.abs(a.astype(int) - b).mean() for a, b in zip(given, detected)]
    assert 0 < np.median(diff) < 25  # detected landmarks differ from the given ones by about a pixel


@pytest.mark.slow
def test_shipped_threshold_is_calibrated_for_aligned_crops_and_whole_photos(shared_data, shared_models):
    """``evaluate_dev --calibrate-threshold --detector det_500m.onnx``: one threshold that serves
    both ways a face reaches the network, and it is the one the shipped model card holds (here the
    one it fitted without flip fusion, which costs half the compute of the card's default)."""
    from lightface import FaceEmbedder
    from lightface.data.detect import FaceDetector

    emb = FaceEmbedder(device="cpu", flip=False)
    embed, embedded = crop_embedder(emb), []

    def recording(crops):  # keeps the given-landmark path's embeddings (the first call) for the check below
        embedded.append(embed(crops))
        return embedded[-1]

    r = calibrate_threshold(recording, shared_data, FaceDetector(shared_models / "det_500m.onnx", device="cpu"))
    assert r["pairs"] == 600
    # the accuracies are of that threshold, and it sits between the two paths' own thresholds
    _, pairs, same = lfw_dev_faces(shared_data)
    s_given = _pair_scores(embedded[0], pairs)
    assert r["accuracy_given"] == pytest.approx(((s_given >= r["threshold"]) == same).mean())
    assert min(r["threshold_given"], r["threshold_detected"]) - 1e-9 <= r["threshold"] <= \
        max(r["threshold_given"], r["threshold_detected"]) + 1e-9
    # a recogniser, on pairs the threshold was not fitted to, on both paths
    assert r["cv_accuracy_given"] > 0.85 and r["cv_accuracy_detected"] > 0.85
    # the model card's threshold is this calibration's (detector runtimes differ in the last digits)
    assert emb.threshold == pytest.approx(r["threshold"], abs=0.01)


def test_evaluate_dev_teacher_refuses_recogniser_flags(tmp_path, capsys):
    """``--teacher dlib --weights X --flip`` scored the teacher and dropped both flags without a word."""
    from pipelines import evaluate_dev
    from pipelines._cli import run_cli

    argv = ["--teacher", "dlib", "--weights", str(tmp_path / "x.pt"), "--flip", "--data", str(tmp_path)]
    assert run_cli(evaluate_dev.main, evaluate_dev.get_args_parser, argv) == 2
    assert "error: --weights --flip/--no-flip: set the recogniser, which --teacher replaces" in capsys.readouterr().err


def test_evaluate_dev_report_names_what_produced_it(shared_data, tmp_path):
    """The JSON held the protocols' numbers only: not the weights, flip fusion, detector or data behind them."""
    import json

    import torch

    from lightcnn_tiny import ARCH, TinyLightCNN
    from lightface.models.checkpoint import save_model_checkpoint
    from pipelines import evaluate_dev
    from tests.conftest import lfw_fold2_sample

    torch.manual_seed(0)
    weights = save_model_checkpoint(tmp_path / "tiny.pt", TinyLightCNN(num_classes=0), ARCH)
    data = lfw_fold2_sample(shared_data, tmp_path / "data", people=35, pair_step=12)
    argv = ["--weights", str(weights), "--data", str(data), "--protocols", "lfw_dev", "--no-flip",
            "--out", str(tmp_path / "dev.json")]
    report = evaluate_dev.main(evaluate_dev.get_args_parser().parse_args(argv))
    saved = json.loads((tmp_path / "dev.json").read_text())
    assert saved == report and saved["lfw_dev"]["pairs"] == 50
    assert saved["weights"] == str(weights) and len(saved["weights_sha256"]) == 64 and saved["flip"] is False
    assert saved["detector"] is None and saved["data"] == str(data)


def test_protocol_faces_are_cropped_by_the_align_method(shared_data):
    """The protocols cropped every face by the least-squares fit, so an official Light CNN release (trained on the
    original recipe's crops: eyes level, eye midpoint (72, 48) and mouth midpoint at y = 96 in the 144 crop) could
    not be scored on the crops it needs. ``align_method`` chooses, for the LFW and CFP faces alike."""
    from lightface.data.align import align_face
    from lightface.data.sources import read_landmarks_file
    from lightface.eval.verification import read_pairs

    root = shared_data / "lfw_train"
    first = read_pairs(root / "pairs_dev.txt").paths[0]  # the first face lfw_dev_faces crops
    photo = cv2.imread(str(root / "images" / first))
    marks = read_landmarks_file(root / "landmarks_5pt.txt")[first]
    eyes, _, _ = lfw_dev_faces(shared_data, n_pairs=2, align_method="eyes")
    least, _, _ = lfw_dev_faces(shared_data, n_pairs=2)
    np.testing.assert_array_equal(eyes[0], align_face(photo, marks, "lightcnn_train", 144, method="eyes")[0])
    np.testing.assert_array_equal(least[0], align_face(photo, marks, "lightcnn_train", 144)[0])
    assert np.abs(eyes[0].astype(int) - least[0]).mean() > 1
    with pytest.raises(ValueError, match=r"align_method must be one of \('similarity', 'eyes'\), got 'official'"):
        lfw_dev_faces(shared_data, n_pairs=2, align_method="official")
    with pytest.raises(ValueError, match="align_method must be one of"):
        run_dev_protocols(_pixels, shared_data, ["cfp_fp"], align_method="official")


def test_evaluate_dev_scores_an_official_release_on_the_crops_it_was_trained_on(shared_data, tmp_path):
    """``evaluate_dev --weights LightCNN_9Layers_checkpoint.pth.tar`` scored the official release on least-squares
    crops, and took no ``--align-method`` (``evaluate`` and ``extract_embeddings`` do): now ``auto`` crops as
    ``FaceEmbedder`` does for those weights (the original recipe), the flag chooses, and the report says which."""
    import json

    import torch

    from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
    from lightface import FaceEmbedder
    from pipelines import evaluate_dev
    from tests.conftest import lfw_fold2_sample

    torch.manual_seed(3)
    weights = tmp_path / "LightCNN_9Layers_checkpoint.pth.tar"
    torch.save(official_checkpoint(build_baseline("lightcnn9", num_classes=10).eval()), weights)
    data = lfw_fold2_sample(shared_data, tmp_path / "data", people=35, pair_step=12)
    argv = ["--weights", str(weights), "--data", str(data), "--protocols", "lfw_dev", "--no-flip",
            "--out", str(tmp_path / "dev.json")]
    report = evaluate_dev.main(evaluate_dev.get_args_parser().parse_args(argv))
    assert json.loads((tmp_path / "dev.json").read_text())["align_method"] == report["align_method"] == "eyes"
    embed = crop_embedder(FaceEmbedder(weights, device="cpu"), flip=False)
    expected = run_dev_protocols(embed, data, ["lfw_dev"], align_method="eyes")["lfw_dev"]
    assert report["lfw_dev"] == pytest.approx(expected, abs=1e-6)
    chosen = evaluate_dev.main(evaluate_dev.get_args_parser().parse_args(argv + ["--align-method", "similarity"]))
    assert chosen["align_method"] == "similarity"
    assert chosen["lfw_dev"] == pytest.approx(run_dev_protocols(embed, data, ["lfw_dev"])["lfw_dev"], abs=1e-6)


def test_export_lfw_dev_crops_by_the_align_method(shared_data, tmp_path):
    """``evaluate_dev --export-lfw-dev DIR --align-method eyes`` (validation pairs for a model trained on a corpus
    built with ``build_lmdb --align-method eyes``) wrote least-squares crops, the flag dropped without a word."""
    from pipelines import evaluate_dev

    argv = ["--data", str(shared_data), "--export-lfw-dev", str(tmp_path / "dev"), "--align-method", "eyes"]
    evaluate_dev.main(evaluate_dev.get_args_parser().parse_args(argv))
    crops, pairs, _ = lfw_dev_faces(shared_data, align_method="eyes")
    listed = read_pairs(tmp_path / "dev" / "pairs.txt")
    for k in (0, 599):
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "dev" / listed.a[k])), crops[pairs[k, 0]])
