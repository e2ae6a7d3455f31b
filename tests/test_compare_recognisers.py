"""Paired comparison of two recognisers: the exact McNemar test, the per-item counts, and
``python -m pipelines.compare_recognisers`` end to end on the real development faces
(tiny random Light CNNs, so it runs in seconds; the shipped model against itself runs on a sixth of fold 2)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import binomtest

from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py (registers the tiny Light CNN)
from lightcnn_tiny import TinyLightCNN
from lightface.eval.paired import compare_recognisers, format_comparison, mcnemar_exact, pair_hits, paired_counts
from lightface.models.checkpoint import save_model_checkpoint
from pipelines import compare_recognisers as cli
from pipelines._cli import run_cli
from tests.conftest import lfw_fold2_sample

ROWS = ["lfw_hard/clean", "lfw_hard/side_light", "lfw_hard/occlusion", "lfw_hard/occlusion_sunglasses",
        "lfw_hard/occlusion_mask", "lfw_hard/occlusion_hand", "lfw_hard/all", "lfw_dev/pairs"]


# ---------------------------------------------------------------------------------------
# the exact McNemar test
# ---------------------------------------------------------------------------------------
def test_mcnemar_known_values():
    assert mcnemar_exact(41, 7) == pytest.approx(6.2404084e-07, rel=1e-6)  # the rc10 vs rc9 lfw_hard count
    assert mcnemar_exact(41, 7) < 1e-4
    assert mcnemar_exact(19, 2) == pytest.approx(0.000221252, rel=1e-5)
    assert mcnemar_exact(37, 18) == pytest.approx(0.0144538, rel=1e-5)
    assert mcnemar_exact(0, 5) == 2 / 2 ** 5  # both tails of the most extreme split
    assert mcnemar_exact(0, 1) == 1.0


@pytest.mark.parametrize("k", [0, 1, 7, 300])
def test_mcnemar_equal_counts_and_no_discordance_give_1(k):
    assert mcnemar_exact(k, k) == 1.0


def test_mcnemar_is_symmetric_and_matches_scipy():
    for b01 in range(0, 40, 3):
        for b10 in range(0, 40, 4):
            p = mcnemar_exact(b01, b10)
            assert p == mcnemar_exact(b10, b01)
            assert 0.0 < p <= 1.0
            if b01 + b10:
                assert p == pytest.approx(binomtest(b01, b01 + b10, 0.5).pvalue, rel=1e-9, abs=1e-300)


def test_mcnemar_large_counts_stay_finite():
    assert mcnemar_exact(2000, 1900) == pytest.approx(binomtest(2000, 3900, 0.5).pvalue, rel=1e-9)
    assert 0.0 <= mcnemar_exact(5000, 0) < 1e-300


def test_mcnemar_accepts_numpy_counts_and_refuses_bad_ones():
    assert mcnemar_exact(np.int64(41), np.int32(7)) == mcnemar_exact(41, 7)
    with pytest.raises(ValueError, match="b10 must be a count >= 0"):
        mcnemar_exact(3, -1)
    with pytest.raises(TypeError, match="b01 must be an integer"):
        mcnemar_exact(3.0, 1)
    with pytest.raises(TypeError, match="integer"):
        mcnemar_exact(True, 1)


# ---------------------------------------------------------------------------------------
# paired counts and pair decisions
# ---------------------------------------------------------------------------------------
def test_paired_counts_by_hand():
    a = np.array([1, 1, 0, 0, 1, 0], bool)
    b = np.array([1, 0, 1, 1, 1, 0], bool)
    r = paired_counts(a, b)
    assert r == {"n": 6, "accuracy_a": 0.5, "accuracy_b": 4 / 6, "b_only": 2, "a_only": 1,
                 "p_value": mcnemar_exact(2, 1)}
    assert paired_counts(a, a)["b_only"] == paired_counts(a, a)["a_only"] == 0 and paired_counts(a, a)["p_value"] == 1.0


def test_paired_counts_refuses_mismatched_or_non_bool_input():
    with pytest.raises(ValueError, match="same items"):
        paired_counts(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(TypeError, match="bool"):
        paired_counts(np.ones(3), np.ones(3, bool))
    with pytest.raises(ValueError, match="non-empty"):
        paired_counts(np.ones(0, bool), np.ones(0, bool))


def test_pair_hits_uses_the_accuracy_maximising_threshold():
    # cosines of the pairs: 1.0 (same), 0.8 (same), 0.6 (diff), 0.0 (diff) -> a threshold in (0.6, 0.8]
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    pairs = np.array([[0, 1], [0, 2], [0, 3], [0, 4]])
    correct, threshold = pair_hits(emb * 3.0, pairs, np.array([True, True, False, False]))
    assert correct.all() and 0.6 < threshold <= 0.8
    correct, _ = pair_hits(emb, pairs, np.array([True, False, True, False]))  # not separable: 3 of 4
    assert correct.dtype == bool and correct.sum() == 3


# ---------------------------------------------------------------------------------------
# on the real development faces
# ---------------------------------------------------------------------------------------
def _thumbnails(size):
    """A deliberately weak embedding: size x size gray thumbnails of the centre crop, mean-removed."""
    def embed(crops):
        out = np.stack([cv2.resize(cv2.cvtColor(c[8:136, 8:136], cv2.COLOR_BGR2GRAY), (size, size)).ravel()
                        for c in crops]).astype(np.float64)
        return out - out.mean(1, keepdims=True)
    return embed


def test_compare_recognisers_counts_are_consistent(shared_data):
    """Two weak embeddings of the same faces: counts per row add up, pooled = sum of conditions."""
    r = compare_recognisers(_thumbnails(16), _thumbnails(8), shared_data)
    assert list(r) == ROWS
    conditions = [r[f"lfw_hard/{c}"] for c in ("clean", "side_light", "occlusion")]
    assert all(c["n"] == 309 for c in conditions) and r["lfw_hard/all"]["n"] == 927 and r["lfw_dev/pairs"]["n"] == 600
    for row in r.values():
        assert row["accuracy_b"] - row["accuracy_a"] == pytest.approx((row["b_only"] - row["a_only"]) / row["n"])
        assert row["p_value"] == mcnemar_exact(row["b_only"], row["a_only"])
    occluders = [r[f"lfw_hard/occlusion_{k}"] for k in ("sunglasses", "mask", "hand")]
    assert all(o["n"] > 50 for o in occluders) and sum(o["n"] for o in occluders) == 309
    for key in ("b_only", "a_only"):
        assert r["lfw_hard/all"][key] == sum(c[key] for c in conditions)
        assert r["lfw_hard/occlusion"][key] == sum(o[key] for o in occluders)
    assert r["lfw_hard/all"]["b_only"] + r["lfw_hard/all"]["a_only"] > 0  # different embeddings disagree somewhere


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("tiny")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(save_model_checkpoint(folder / f"tiny{seed}.pt", TinyLightCNN(num_classes=0), TINY))
    return paths


@pytest.fixture(scope="module")
def cli_run(shared_data, tiny_checkpoints, tmp_path_factory):
    """``compare_recognisers TINY1 TINY2 --data ... --out r/cmp.json``, run once for the tests below."""
    out = tmp_path_factory.mktemp("cmp") / "r" / "cmp.json"
    a, b = map(str, tiny_checkpoints)
    args = cli.get_args_parser().parse_args([a, b, "--data", str(shared_data), "--out", str(out)])
    return cli.main(args), out


def test_cli_end_to_end_writes_json_and_a_table(cli_run, tiny_checkpoints, capsys):
    report, out = cli_run
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["a"] == str(tiny_checkpoints[0]) and saved["detector"] is None
    assert list(saved["results"]) == ROWS
    assert saved["results"]["lfw_hard/all"]["n"] == 927 and saved["results"]["lfw_dev/pairs"]["n"] == 600
    for row in saved["results"].values():
        assert 0.0 <= row["accuracy_a"] <= 1.0 and 0.0 <= row["accuracy_b"] <= 1.0 and 0.0 < row["p_value"] <= 1.0
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_cli_table_lists_every_row(cli_run, capsys):
    report, _ = cli_run
    text = format_comparison(report["results"])
    for label in ("lfw_hard clean", "lfw_hard side_light", "lfw_hard occlusion", "lfw_hard all", "lfw_dev pairs *"):
        assert label in text
    assert "acc A" in text and "B only" in text and "optimistic, but paired" in text


def test_cli_names_a_missing_checkpoint(tmp_path, capsys):
    status = run_cli(cli.main, cli.get_args_parser, [str(tmp_path / "nope.pt"), "shipped", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1
    assert "recogniser A" in err and str(tmp_path / "nope.pt") in err and "'shipped'" in err


def test_cli_checks_both_recognisers_before_loading_either(tmp_path, capsys):
    status = run_cli(cli.main, cli.get_args_parser, ["shipped", "no_such_model", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1 and "recogniser B" in err and "no_such_model" in err and "shipped name" in err


def test_cli_names_a_missing_data_folder(tiny_checkpoints, tmp_path, capsys):
    a, b = map(str, tiny_checkpoints)
    status = run_cli(cli.main, cli.get_args_parser, [a, b, "--data", str(tmp_path / "no_data")])
    err = capsys.readouterr().err
    assert status == 1
    assert str(tmp_path / "no_data" / "lfw_train") in err and "--data" in err


def test_cli_help_documents_every_flag():
    text = " ".join(cli.get_args_parser().format_help().split())
    for flag in ("--data", "--detector", "--out", "shipped", "default: ../shared/data"):
        assert flag in text


@pytest.fixture
def fold2_sample(shared_data, tmp_path) -> Path:
    """LFW fold 2 cut to its first 35 of 419 people and every twelfth of the 600 pairs: the protocols at a
    twelfth of their compute."""
    return lfw_fold2_sample(shared_data, tmp_path / "data", people=35, pair_step=12)


@pytest.mark.slow
def test_the_shipped_model_against_itself_has_no_discordant_items(fold2_sample, capsys):
    """Two shipped recognisers, each loaded on its own (B by its name), agree on every item (a deterministic
    embedding)."""
    from lightface.models.pretrained import default_weights

    name = default_weights("recognition").name
    report = cli.main(cli.get_args_parser().parse_args(["shipped", name, "--data", str(fold2_sample),
                                                        "--no-flip"]))  # half the compute of the card's flip fusion
    assert report["flip_a"] is report["flip_b"] is False
    assert report["results"]["lfw_dev/pairs"]["n"] == 50 and report["results"]["lfw_hard/clean"]["n"] > 20
    for row in report["results"].values():
        assert row["b_only"] == row["a_only"] == 0 and row["p_value"] == 1.0
        assert row["accuracy_a"] == row["accuracy_b"]
    assert report["results"]["lfw_hard/clean"]["accuracy_a"] > 0.3  # a real recogniser, not chance
    assert "lfw_hard all" in capsys.readouterr().out


def test_each_recogniser_is_scored_on_the_crops_of_its_align_method(fold2_sample):
    """Both recognisers embedded the same least-squares crops, so an official Light CNN release (trained on the
    original recipe's crops) was compared on faces cropped as it never saw them. ``align_methods`` gives each its
    own crops of the same photos: the items stay paired."""
    from lightface.eval.dev_protocols import lfw_dev_faces, lfw_hard_faces

    seen = {"a": [], "b": []}

    def spy(key):
        def embed(crops):
            seen[key].append(crops)
            return _thumbnails(16)(crops)
        return embed

    r = compare_recognisers(spy("a"), spy("b"), fold2_sample, align_methods=("eyes", "similarity"))
    eyes_gallery = lfw_hard_faces(fold2_sample, align_method="eyes")[0]
    least_gallery = lfw_hard_faces(fold2_sample)[0]
    eyes_dev, least_dev = lfw_dev_faces(fold2_sample, align_method="eyes")[0], lfw_dev_faces(fold2_sample)[0]
    for key, gallery, dev in (("a", eyes_gallery, eyes_dev), ("b", least_gallery, least_dev)):
        assert all(np.array_equal(x, y) for x, y in zip(seen[key][0], gallery))  # lfw_hard's gallery comes first
        assert all(np.array_equal(x, y) for x, y in zip(seen[key][-1], dev))  # lfw_dev's crops last
    assert not np.array_equal(eyes_gallery[0], least_gallery[0])
    assert r["lfw_dev/pairs"]["n"] == 50 and r["lfw_hard/clean"]["n"] == len(seen["a"][1])


def test_cli_scores_an_official_release_on_the_crops_it_was_trained_on(fold2_sample, tiny_checkpoints, tmp_path):
    """``compare_recognisers LightCNN_9Layers_checkpoint.pth.tar RUN/last.pt``: the official release now gets the
    crops FaceEmbedder gives it (--align-method auto: the original recipe), the lightface checkpoint its
    least-squares ones; the report says which. ``--align-method`` sets one method for both."""
    import torch

    from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
    from lightface import FaceEmbedder
    from lightface.eval.dev_protocols import crop_embedder

    torch.manual_seed(3)
    official = tmp_path / "LightCNN_9Layers_checkpoint.pth.tar"
    torch.save(official_checkpoint(build_baseline("lightcnn9", num_classes=10).eval()), official)
    tiny = str(tiny_checkpoints[0])
    argv = [str(official), tiny, "--data", str(fold2_sample), "--no-flip"]
    report = cli.main(cli.get_args_parser().parse_args(argv))
    assert (report["align_method_a"], report["align_method_b"]) == ("eyes", "similarity")
    embeds = [crop_embedder(FaceEmbedder(w, device="cpu"), flip=False) for w in (official, tiny)]
    assert report["results"] == compare_recognisers(*embeds, fold2_sample, align_methods=("eyes", "similarity"))
    both = cli.main(cli.get_args_parser().parse_args(argv + ["--align-method", "similarity"]))
    assert (both["align_method_a"], both["align_method_b"]) == ("similarity", "similarity")
