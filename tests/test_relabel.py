"""lightface.data.relabel: the keep / relabel / drop rule and simulated label noise."""
import numpy as np
import pytest

from lightface.data.relabel import DROP, KEEP, RELABEL, flip_labels, relabel_decisions


def test_decisions_by_hand():
    probs = np.array([
        [0.80, 0.10, 0.10],  # label 0, predicted 0 -> keep
        [0.75, 0.20, 0.05],  # label 1, predicted 0 with 0.75 >= 0.7 -> relabel to 0
        [0.60, 0.30, 0.10],  # label 2, predicted 0 with 0.60 < 0.7 -> drop
        [0.10, 0.20, 0.70],  # label 1, predicted 2 with exactly 0.70 -> relabel to 2
        [0.34, 0.33, 0.33],  # label 0, predicted 0 (low confidence, but agrees) -> keep
    ])
    labels = np.array([0, 1, 2, 1, 0])
    d = relabel_decisions(probs, labels, threshold=0.7)
    assert d.action.tolist() == [KEEP, RELABEL, DROP, RELABEL, KEEP]
    assert d.new_label.tolist() == [0, 0, 2, 2, 0]
    assert d.predicted.tolist() == [0, 0, 0, 2, 0]
    assert np.allclose(d.confidence, [0.8, 0.75, 0.6, 0.7, 0.34])
    assert d.counts() == {"kept": 2, "relabelled": 2, "dropped": 1}
    # threshold 1.0 never relabels
    assert relabel_decisions(probs, labels, threshold=1.0).counts() == {"kept": 2, "relabelled": 0, "dropped": 3}


@pytest.mark.parametrize(
    "probs, labels, threshold, match",
    [
        (np.ones((2, 3)) / 3, np.array([0, 3]), 0.7, "labels must lie"),
        (np.ones((2, 3)) / 3, np.array([0]), 0.7, "expected probs"),
        (np.ones((2, 3)) / 3, np.array([0, 1]), 0.0, "threshold"),
    ],
)
def test_decision_errors(probs, labels, threshold, match):
    with pytest.raises(ValueError, match=match):
        relabel_decisions(probs, labels, threshold)


def test_flip_labels():
    labels = np.repeat(np.arange(4), 25)
    noisy, flipped = flip_labels(labels, 0.2, 4, seed=3)
    assert flipped.sum() == 20
    assert np.all(noisy[flipped] != labels[flipped]) and np.all(noisy[~flipped] == labels[~flipped])
    assert noisy.min() >= 0 and noisy.max() < 4
    again, _ = flip_labels(labels, 0.2, 4, seed=3)
    assert np.array_equal(noisy, again)
    assert np.array_equal(flip_labels(labels, 0.0, 4)[0], labels)
    # flipped labels spread over all other classes
    big, f = flip_labels(np.zeros(3000, dtype=int), 1.0, 4, seed=0)
    assert sorted(np.unique(big)) == [1, 2, 3] and f.all()
    with pytest.raises(ValueError):
        flip_labels(labels, 1.5, 4)


def test_an_existing_out_is_refused_before_any_prediction(tmp_path, monkeypatch, capsys):
    """--out holding a finished dataset is refused up front, not after predicting every sample."""
    from lightface.apps import relabel as app
    from lightface.data import write_lmdb
    from pipelines import relabel
    from pipelines._cli import run_cli

    samples = [{"image": np.zeros((8, 8), np.uint8), "label": i % 2} for i in range(4)]
    data, out = tmp_path / "data.lmdb", tmp_path / "out.lmdb"
    write_lmdb(data, samples, ["a", "b"])
    write_lmdb(out, samples, ["a", "b"])
    monkeypatch.setattr(app, "predict", lambda *a, **k: pytest.fail("predicted before checking --out"))
    argv = ["--data", str(data), "--weights", str(tmp_path / "model.pt"), "--out", str(out), "--device", "cpu"]
    assert run_cli(relabel.main, relabel.get_args_parser, argv) == 1
    assert f"--out {out} already holds a complete dataset; pass --overwrite" in capsys.readouterr().err
