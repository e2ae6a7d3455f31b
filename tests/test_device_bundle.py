"""Training on a lent GPU: the bundle that travels (RecordIO, teacher embeddings) and the one-call run.

The sources are real ORL photos in two LMDBs (as tests/test_relabel_merge.py builds them) with
dlib's embeddings of those very crops (``tests/data/orl_two_sources_dlib.npy``). The device
run is the real pipeline on the CPU with the tiny test network.
"""
import json

import numpy as np
import pytest
import torch

from lightface.data import LMDBDataset

from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py
from test_relabel_merge import A_ROWS, FIXTURE, sources  # noqa: F401  (the fixture: ORL LMDBs a, b + dlib rows)


def _cli(module, *argv):
    from pipelines._cli import parse_with_config

    mod = __import__(f"pipelines.{module}", fromlist=["main"])
    return mod.main(parse_with_config(mod.get_args_parser(), [str(x) for x in argv]))


def test_recordio_export_round_trips_through_build_lmdb(sources, tmp_path):
    from lightface.data.build import build_lmdb
    from lightface.data.recordio import RecordIOReader, insightface_image_indices
    from lightface.data.to_recordio import lmdb_to_recordio

    a = sources[0]
    info = lmdb_to_recordio(a, tmp_path / "a.rec", color="gray", encoding="webp", quality=60, size=128)
    assert info["count"] == len(A_ROWS) and info["num_classes"] == 4
    # InsightFace's layout: header record 0, images 1..N
    assert list(insightface_image_indices(RecordIOReader(tmp_path / "a.rec", tmp_path / "a.idx"))) == \
        list(range(1, len(A_ROWS) + 1))
    build_lmdb(tmp_path / "a.rec", tmp_path / "back.lmdb", size=144, color="gray", encoding="raw",
               source_template="lightcnn_train", progress=False)
    src, back = LMDBDataset(a), LMDBDataset(tmp_path / "back.lmdb")
    assert len(back) == len(src)
    for i in range(len(src)):
        x, y = src[i], back[i]
        assert y["label"] == x["label"]  # same order, same labels: per-sample embeddings stay valid
        assert y["image"].shape == (144, 144)
        assert np.abs(y["image"].astype(int) - x["image"].astype(int)).mean() < 6  # WebP 60 at 128 px, resized back


def test_recordio_export_refuses_what_it_cannot_write(sources, tmp_path):
    from lightface.data.to_recordio import lmdb_to_recordio

    with pytest.raises(ValueError, match="encoded images"):
        lmdb_to_recordio(sources[0], tmp_path / "x.rec", encoding="raw")
    with pytest.raises(ValueError, match="cannot be exported as colour"):
        lmdb_to_recordio(sources[0], tmp_path / "x.rec", color="rgb")  # ORL LMDBs are gray
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written left behind


def test_backbone_parts_fit_a_returned_file_and_join_back(tmp_path):
    from lightface.models import get_model
    from lightface.models.checkpoint import read_model_checkpoint, save_model_checkpoint
    from pipelines.device_train import PART_BYTES, export_parts

    model = get_model("lightcnn29v2", num_classes=7)
    save_model_checkpoint(tmp_path / "model.pt", model, "lightcnn29v2", {"num_classes": 7})
    out = tmp_path / "out"
    out.mkdir()
    parts = export_parts(tmp_path / "model.pt", out)
    assert len(parts) == 2  # 10.5 M float16 parameters: 21 MB, over one 16 MiB returned file
    assert all((out / p).stat().st_size <= PART_BYTES + (64 << 10) for p in parts)
    (out / "summary.json").write_text(json.dumps({"arch": "lightcnn29v2", "parts": parts, "epochs": 0, "run": {}}))
    joined = _cli("device_train", "--collect", out, "--checkpoint", tmp_path / "joined.pt")
    state = read_model_checkpoint(joined["checkpoint"]).state_dict
    ref = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    assert set(state) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(state[k], v.half().float())


@pytest.mark.slow
def test_bundle_carries_the_teacher_and_the_device_run_trains_in_its_minutes(sources, tmp_path):
    from lightface.distill.teacher import load_teacher_embeddings
    from lightface.models.checkpoint import read_model_checkpoint

    a, b = sources
    emb = np.load(FIXTURE)
    bundle = tmp_path / "bundle"
    manifest = _cli("device_bundle", "--data", a, b, "--out", bundle, "--no-wheels", "--no-progress")
    assert [s["name"] for s in manifest["sources"]] == ["a", "b"] and manifest["teacher"] == "dlib"
    assert json.loads((bundle / "bundle.json").read_text()) == manifest
    assert np.load(bundle / manifest["sources"][0]["teacher"]).dtype == np.float16

    out, work = tmp_path / "out", tmp_path / "work"
    result = _cli("device_train", "--bundle", bundle, "--out", out, "--work", work, "--device", "cpu", "--arch", TINY,
                  "--batch-size", 8, "--probe-steps", 8, "--workers", 0, "--amp", "none", "--minutes", 1.2,
                  "--reserve-seconds", 5)
    # the unpacked sources hold the teacher rows of the same samples (float16 on the way)
    np.testing.assert_allclose(load_teacher_embeddings(work / "a.lmdb"), emb[: len(A_ROWS)], atol=1e-3)
    np.testing.assert_allclose(load_teacher_embeddings(work / "b.lmdb"), emb[len(A_ROWS):], atol=1e-3)
    assert result["probe_images_per_s"] > 0 and result["epochs"] >= 1
    # the epochs were sized to the lease; on a loaded machine the --max-minutes backstop may end it first
    assert (result["run"]["stopped"] == "completed" or result["run"]["stopped"].startswith("max_minutes")) \
        and result["run"]["step"] > 0
    assert {"summary.json", "metrics.jsonl", "config.yaml", *result["parts"]} <= {p.name for p in out.iterdir()}
    joined = _cli("device_train", "--collect", out, "--checkpoint", tmp_path / "joined.pt")
    ckpt = read_model_checkpoint(joined["checkpoint"])
    assert ckpt.arch == TINY and ckpt.extra["device_run"]["epochs"] == result["epochs"]


def test_a_device_run_stopped_by_sigterm_returns_the_backbone_it_reached(sources, tmp_path):
    """A SIGTERM to the process group (a scheduler's time limit): training stops after its step and the
    backbone of that step comes back in parts. ``--epochs`` trains without the probe; ``--augment`` and ``--loss``
    (a margin loss: its cosine classifier without dropout) reach the trainer."""
    from lightface.engine.logger import read_metrics
    from stop_signal_helper import sigterm_after

    a, b = sources
    bundle, out, work = tmp_path / "bundle", tmp_path / "out", tmp_path / "work"
    _cli("device_bundle", "--data", a, b, "--out", bundle, "--no-wheels", "--no-progress")
    entry = ("import sys; sys.path.insert(0, 'tests'); import lightcnn_tiny; from pipelines._cli import run_cli; "
             "from pipelines.device_train import main, get_args_parser; sys.exit(run_cli(main, get_args_parser))")
    metrics = work / "run" / "metrics.jsonl"
    rc, log = sigterm_after(["-c", entry, "--bundle", bundle, "--out", out, "--work", work, "--device", "cpu",
                             "--arch", TINY, "--batch-size", 8, "--epochs", 500, "--workers", 1, "--amp", "none",
                             "--augment", "hard_face", "--loss", "cosface", "--minutes", 30], metrics, 2)
    assert rc == 143, log
    config = (out / "config.yaml").read_text()
    assert "augment: hard_face" in config and "loss: cosface" in config and "dropout: 0.0" in config
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["stopped"] == "signal SIGTERM" and summary["error"] is None
    assert summary["epochs"] == 500 and summary["probe_images_per_s"] is None
    assert summary["run"]["step"] == [r["step"] for r in read_metrics(metrics) if "loss" in r][-1]
    joined = _cli("device_train", "--collect", out, "--checkpoint", tmp_path / "joined.pt")
    assert joined["arch"] == TINY


def _device_entry():
    """``python -c`` code running device_train's command line with the tiny test network registered."""
    return ("import sys; sys.path.insert(0, 'tests'); import lightcnn_tiny; from pipelines._cli import run_cli; "
            "from pipelines.device_train import main, get_args_parser; sys.exit(run_cli(main, get_args_parser))")


def test_the_probe_keeps_to_the_minutes_and_its_backbone_comes_back(sources, tmp_path):
    """--minutes bounds the whole command, the throughput probe included: a probe too long for the budget
    stops at it, no run is forced after it, and the probe's backbone and summary come back."""
    import time

    a, b = sources
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    _cli("device_bundle", "--data", a, b, "--out", bundle, "--no-wheels", "--no-progress")
    t0 = time.monotonic()
    result = _cli("device_train", "--bundle", bundle, "--out", out, "--work", tmp_path / "work", "--device", "cpu",
                  "--arch", TINY, "--batch-size", 8, "--probe-steps", 100000, "--workers", 0, "--amp", "none",
                  "--minutes", 0.25, "--reserve-seconds", 0)
    assert time.monotonic() - t0 < 0.25 * 60 + 5
    assert result["stage"] == "probe" and result["run"]["stopped"].startswith("max_minutes")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "probe" and summary["error"] is None and summary["run"]["step"] > 0
    assert set(summary["parts"]) <= {p.name for p in out.iterdir()}
    assert _cli("device_train", "--collect", out, "--checkpoint", tmp_path / "joined.pt")["arch"] == TINY


def test_sigterm_in_the_probe_returns_its_backbone_and_advises_no_missing_flag(sources, tmp_path):
    from stop_signal_helper import sigterm_after

    a, b = sources
    bundle, out, work = tmp_path / "bundle", tmp_path / "out", tmp_path / "work"
    _cli("device_bundle", "--data", a, b, "--out", bundle, "--no-wheels", "--no-progress")
    rc, log = sigterm_after(["-c", _device_entry(), "--bundle", bundle, "--out", out, "--work", work, "--device",
                             "cpu", "--arch", TINY, "--batch-size", 8, "--probe-steps", 100000, "--workers", 1,
                             "--amp", "none", "--minutes", 30], work / "probe" / "metrics.jsonl", 2)
    assert rc == 143, log
    assert f"{out} holds the backbone of that step and summary.json" in log and "--resume" not in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "probe" and summary["run"]["stopped"] == "signal SIGTERM"
    assert set(summary["parts"]) <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("flags, message", [
    (("--epochs", "0"), "argument --epochs: must be a positive integer, got 0"),
    (("--lr-gamma", "-1"), r"argument --lr-gamma: must be a number in \(0, 1\], got -1"),
    (("--batch-size", "0"), "argument --batch-size: must be a positive integer"),
    (("--minutes", "0"), "argument --minutes: must be a positive number"),
])
def test_bad_numbers_are_refused_on_the_command_line(tmp_path, capsys, flags, message):
    import re

    from pipelines import device_train
    from pipelines._cli import run_cli

    with pytest.raises(SystemExit) as exit_:
        run_cli(device_train.main, device_train.get_args_parser, ["--out", str(tmp_path / "out"), *flags])
    assert exit_.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_missing_bundle_or_collect_folder_says_what_to_pass(tmp_path, capsys):
    from pipelines import device_train
    from pipelines._cli import run_cli

    argv = ["--out", str(tmp_path / "out"), "--bundle", str(tmp_path / "none")]
    assert run_cli(device_train.main, device_train.get_args_parser, argv) == 1
    assert "no bundle.json there; build one with python -m pipelines.device_bundle" in capsys.readouterr().err
    argv = ["--collect", str(tmp_path), "--checkpoint", str(tmp_path / "x.pt")]
    assert run_cli(device_train.main, device_train.get_args_parser, argv) == 1
    assert "--collect" in capsys.readouterr().err
