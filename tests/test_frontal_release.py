"""Releasing a frontalizer keeps the direction its training run mirrored faces to (``release_model``).

The release goes into a temporary manifest (``WEIGHTS_DIR`` / ``MANIFEST`` / ``CARD`` monkeypatched), so
nothing shipped is touched."""
import json

import pytest
import torch

from lightface.models import pretrained as pt
from lightface.models.checkpoint import save_model_checkpoint
from lightface.models.tpgan import TPGANGenerator, frontal_patch_centres
from lightface.restore.frontalizer import Frontalizer
from pipelines import release_model
from pipelines._cli import run_cli

TP_KW = dict(in_channels=3, width=8, feature_dim=16, noise_dim=4,
             patch_centres={k: [float(v[0]), float(v[1])] for k, v in frontal_patch_centres(128).items()})


@pytest.fixture
def install(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"weights": [], "defaults": {}}))
    monkeypatch.setattr(pt, "WEIGHTS_DIR", d)
    monkeypatch.setattr(pt, "MANIFEST", d / "manifest.json")
    monkeypatch.setattr(release_model, "CARD", tmp_path / "model_zoo.md")
    return d


def _checkpoint(path, **extra):
    torch.manual_seed(0)
    model = TPGANGenerator(**TP_KW)
    return save_model_checkpoint(path, model, "tpgan", TP_KW, ema_state_dict=model.state_dict(), **extra)


def _meta(path, preprocessing=None):
    path.write_text(json.dumps({"data": "noise", **({"preprocessing": preprocessing} if preprocessing else {})}))
    return str(path)


def _release(ckpt, meta, name="tiny_tpgan"):
    return ["--checkpoint", str(ckpt), "--name", name, "--task", "frontalization", "--ema", "--meta", meta]


def test_release_keeps_the_runs_mirror_direction(install, tmp_path):
    ckpt = _checkpoint(tmp_path / "model.pt", config={"mirror": "left", "width": 8})
    assert Frontalizer(str(ckpt), device="cpu").mirror == "left"  # the run's own checkpoint
    release_model.main(release_model.get_args_parser().parse_args(
        _release(ckpt, _meta(tmp_path / "m.json", {"size": 128}))))
    assert pt.get_pretrained("tiny_tpgan").preprocessing == {"size": 128, "mirror": "left"}
    assert Frontalizer("tiny_tpgan", device="cpu").mirror == "left"  # right-facing faces are still mirrored
    none = _checkpoint(tmp_path / "none.pt", config={"mirror": "none"})
    release_model.main(release_model.get_args_parser().parse_args(
        _release(none, _meta(tmp_path / "n.json"), "tiny_both")))
    assert Frontalizer("tiny_both", device="cpu").mirror is None


def test_release_refuses_a_meta_that_contradicts_or_cannot_tell_the_direction(install, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "model.pt", config={"mirror": "left"})
    argv = _release(ckpt, _meta(tmp_path / "m.json", {"mirror": "right"}))
    assert run_cli(release_model.main, release_model.get_args_parser, argv) == 2
    assert "trained with --mirror left" in capsys.readouterr().err
    bare = _checkpoint(tmp_path / "bare.pt")  # no training config: the meta must say it
    assert run_cli(release_model.main, release_model.get_args_parser, _release(bare, _meta(tmp_path / "b.json"))) == 2
    assert "records no training config" in capsys.readouterr().err
    assert json.loads(pt.MANIFEST.read_text())["weights"] == []  # nothing was shipped
    release_model.main(release_model.get_args_parser().parse_args(
        _release(bare, _meta(tmp_path / "r.json", {"mirror": "right"}))))
    assert Frontalizer("tiny_tpgan", device="cpu").mirror == "right"
