"""Light CNN models and checkpoint loading.

There are no official Light CNN weights on this machine: "official" files here are random
weights of the original architecture (benchmarks/_baseline_lightcnn.py, split+max MFM,
original key names) saved in the released layout {"state_dict": {"module."+k: v}} with
the released classifier sizes.
"""
import argparse

import pytest
import torch

from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
from lightface.models import get_model, list_models
from lightface.models.checkpoint import (
    CheckpointMismatchError,
    WrongArchitectureError,
    build_from_checkpoint,
    load_weights,
    read_model_checkpoint,
    save_model_checkpoint,
)
from lightface.models.lightcnn import OFFICIAL_NUM_CLASSES, to_lightcnn_input

ARCHS = ["lightcnn9", "lightcnn29", "lightcnn29v2"]
COUNTS = {"lightcnn9": 5_480_864, "lightcnn29": 12_573_280, "lightcnn29v2": 10_475_872}


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_parameter_counts(arch):
    assert arch in list_models()
    model = get_model(arch)
    assert model.classifier is None
    assert _nparams(model) == COUNTS[arch]
    with_cls = get_model(arch, num_classes=10)
    bias = 0 if arch == "lightcnn29v2" else 10
    assert _nparams(with_cls) == COUNTS[arch] + 256 * 10 + bias


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    """Random original-architecture weights in the released file layout, one per arch."""
    root = tmp_path_factory.mktemp("official")
    files = {}
    for i, arch in enumerate(ARCHS):
        torch.manual_seed(100 + i)
        base = build_baseline(arch, OFFICIAL_NUM_CLASSES[arch]).eval()
        path = root / f"{arch}.pth.tar"
        torch.save(official_checkpoint(base), path)
        files[arch] = (path, base)
    return files


@pytest.mark.parametrize("arch", ARCHS)
def test_official_checkpoint_same_features_as_original(official_files, arch):
    path, base = official_files[arch]
    model = get_model(arch, weights=str(path)).eval()
    assert model.num_classes == OFFICIAL_NUM_CLASSES[arch]
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        ref_logits, ref_feat = base(x)
        logits, feat = model(x, return_logits=True)
    assert feat.shape == (2, 256) and feat.dtype == torch.float32
    assert (feat - ref_feat).abs().max() < 1e-5
    assert (logits - ref_logits).abs().max() < 1e-4
    # the same file via build_from_checkpoint: architecture inferred from the keys
    built = build_from_checkpoint(path)
    assert built.arch == arch and not built.training
    assert all(torch.equal(v, built.state_dict()[k]) for k, v in model.state_dict().items())


def test_official_backbone_only_and_fine_tuning(official_files):
    path, base = official_files["lightcnn9"]
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        ref = base(x)[1]
    backbone = get_model("lightcnn9", weights=str(path), num_classes=0).eval()
    assert backbone.classifier is None
    with torch.no_grad():
        assert (backbone(x) - ref).abs().max() < 1e-5
    other = get_model("lightcnn9", num_classes=7)
    with pytest.raises(CheckpointMismatchError, match="ignore_classifier=True"):
        load_weights(other, str(path))
    # get_model(weights=, num_classes=) raises the same error: its advice must be callable as written
    # (it said "pass ignore_classifier=True", which get_model refuses with a TypeError)
    with pytest.raises(CheckpointMismatchError, match=r"build_from_checkpoint\(path, num_classes=7\)"):
        get_model("lightcnn9", weights=str(path), num_classes=7)
    load_weights(other, str(path), ignore_classifier=True)
    assert other.classifier.weight.shape == (7, 256)
    with torch.no_grad():
        assert (other.eval()(x) - ref).abs().max() < 1e-5
    assert build_from_checkpoint(path, num_classes=5).classifier.weight.shape == (5, 256)
    with pytest.raises(CheckpointMismatchError, match="has no classifier"):
        load_weights(get_model("lightcnn9", num_classes=3), backbone.state_dict())


def test_wrong_architecture_raises_naming_keys(official_files):
    path, _ = official_files["lightcnn29"]
    with pytest.raises(CheckpointMismatchError, match="lightcnn29"):
        get_model("lightcnn9", weights=str(path))
    # a bare state_dict of the wrong model: keys and shapes are listed, nothing is loaded
    model = get_model("lightcnn29v2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = get_model("lightcnn29").state_dict()
    state.pop("conv1.filter.bias")
    state["fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(model, state)
    msg = str(err.value)
    assert "conv1.filter.bias" in msg and "fc.filter.weight" in msg and "nothing was loaded" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    bad = get_model("lightcnn9").state_dict()
    bad["features.0.filter.weight"] = torch.zeros(96, 1, 3, 3)
    with pytest.raises(CheckpointMismatchError, match=r"expected \(96, 1, 5, 5\), found \(96, 1, 3, 3\)"):
        load_weights(get_model("lightcnn9"), bad)


def _v4_release_state():
    """Random weights in the layout of the official LightCNN-V4 release (light_cnn_v4.py, 2022): RGB 3x3
    ``conv1``, residual ``blockK`` stages (1, 2, 3, 4) with single MFM convs ``conv2`` .. ``conv5`` between them
    (no ``groupK``), plain ``fc`` 8192 -> 256 and no classifier; saved from DataParallel like the others."""
    def mfm(name, cin, cout, k):
        return {f"{name}.filter.weight": torch.randn(2 * cout, cin, k, k) * 0.01, f"{name}.filter.bias": torch.zeros(2 * cout)}
    state = mfm("conv1", 3, 48, 3)
    for i, ((cin, cout), n) in enumerate(zip([(48, 96), (96, 192), (192, 128), (128, 128)], (1, 2, 3, 4)), start=1):
        for j in range(n):
            state.update(mfm(f"block{i}.{j}.conv1", cin, cin, 3), **mfm(f"block{i}.{j}.conv2", cin, cin, 3))
        state.update(mfm(f"conv{i + 1}", cin, cout, 3))
    state.update({"fc.weight": torch.randn(256, 8192) * 0.01, "fc.bias": torch.zeros(256)})
    return {"epoch": 1, "state_dict": {"module." + k: v for k, v in state.items()}}


def test_official_v4_release_is_named_not_taken_for_29v2(tmp_path):
    """LightCNN-V4 shares 29v2's conv1 / blockK / fc names; it was taken for a 'lightcnn29v2' checkpoint, and
    the error then said 'checkpoint arch lightcnn29v2' over a list of mismatched keys."""
    path = tmp_path / "LightCNN-V4_checkpoint.pth.tar"
    torch.save(_v4_release_state(), path)
    assert read_model_checkpoint(path).arch is None
    with pytest.raises(WrongArchitectureError, match="LightCNN-V4 release .*does not implement") as err:
        build_from_checkpoint(path)
    assert "lightcnn29v2" not in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="LightCNN-V4 release") as err:
        get_model("lightcnn29v2", weights=str(path))
    assert "checkpoint arch" not in str(err.value)


def test_project_checkpoint_round_trip(tmp_path):
    model = get_model("lightcnn9", num_classes=11)
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    path = save_model_checkpoint(tmp_path / "m.pt", model, "lightcnn9", {"num_classes": 11}, ema_state_dict=ema, epoch=4)
    info = read_model_checkpoint(path)
    assert info.kind == "lightface" and info.extra["epoch"] == 4
    built = build_from_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(built.state_dict()[k], v)
    built_ema = build_from_checkpoint(path, ema=True)
    assert torch.equal(built_ema.fc1.filter.weight, model.fc1.filter.weight + 1)
    with pytest.raises(ValueError, match="ema_state_dict"):
        load_weights(get_model("lightcnn9"), build_baseline("lightcnn9").state_dict(), ema=True)


def test_unsafe_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        build_from_checkpoint(path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="cannot tell which model"):
        build_from_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        build_from_checkpoint(tmp_path / "missing.pt")


def test_input_checks_and_logits_without_classifier():
    model = get_model("lightcnn9").eval()
    with pytest.raises(ValueError, match=r"\(N, 1, 128, 128\)"):
        model(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match="128x128"):
        model(torch.rand(1, 1, 112, 112))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 1, 128, 128, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="no classifier"):
        model.forward_logits(torch.rand(1, 1, 128, 128))


def test_feature_maps_and_training_mode_gradients():
    model = get_model("lightcnn9", num_classes=4)
    x = torch.rand(2, 1, 128, 128)
    maps = model.eval().feature_maps(x)
    assert maps["pool"].shape == (2, 8192) and maps["fc"].shape == (2, 256)
    assert torch.allclose(maps["fc"], model(x))
    model.train()
    logits, feats = model.forward_logits(x)
    assert logits.shape == (2, 4)
    logits.sum().backward()
    assert model.features[0].filter.weight.grad is not None


def test_to_lightcnn_input():
    rgb = torch.zeros(2, 3, 64, 80)
    rgb[:, 0] = 1.0  # pure red
    out = to_lightcnn_input(rgb)
    assert out.shape == (2, 1, 128, 128)
    assert torch.allclose(out, torch.full_like(out, 0.299), atol=1e-6)
    gray = torch.rand(1, 1, 128, 128)
    assert to_lightcnn_input(gray) is gray
    with pytest.raises(ValueError, match="channels"):
        to_lightcnn_input(torch.rand(1, 4, 8, 8))
    with pytest.raises(TypeError):
        to_lightcnn_input(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("arch", ["lightcnn9", "lightcnn29v2"])
def test_a_classifier_of_the_other_kind_is_refused_alike(arch, tmp_path):
    """The releases' linear fc2 went silently into a CosineClassifier of ``get_model('lightcnn29v2', weights=...,
    cosine_classifier=True)`` (its logits then mean something else), while lightcnn9 failed on 'unexpected
    classifier.bias'; a cosine lightface checkpoint went silently into a linear 29v2 (lightcnn9: 'the checkpoint has
    no classifier'). Both archs now say which kinds differ; the backbone still loads."""
    path = tmp_path / "official.pth.tar"
    torch.save(official_checkpoint(build_baseline(arch, num_classes=10)), path)
    with pytest.raises(CheckpointMismatchError, match="classifier is linear .*official.*the model's cosine"):
        get_model(arch, weights=str(path), cosine_classifier=True)
    assert isinstance(get_model(arch, weights=str(path)).classifier, torch.nn.Linear)
    assert get_model(arch, weights=str(path), cosine_classifier=True, num_classes=0).classifier is None
    model = get_model(arch, num_classes=5, cosine_classifier=True)
    cosine = save_model_checkpoint(tmp_path / "cos.pt", model, arch, {"num_classes": 5, "cosine_classifier": True})
    with pytest.raises(CheckpointMismatchError, match="classifier is cosine .*the model's linear.*cosine_classifier=True"):
        load_weights(get_model(arch, num_classes=5), cosine)
    built = build_from_checkpoint(cosine)
    assert torch.equal(built.classifier.weight, model.classifier.weight)
    load_weights(get_model(arch, num_classes=7), cosine, ignore_classifier=True)  # fine-tuning: backbone only
