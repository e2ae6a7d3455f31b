"""ONNX / TorchScript export of Light CNNs (random weights in the official layout: no
official weights on this machine) and the ONNX Runtime embedder backend."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
from lightface.embed import FaceEmbedder
from lightface.export import OnnxRecognizer, export_onnx, export_torchscript
from lightface.models import get_model


def _official_file(tmp_path, arch, seed=7):
    torch.manual_seed(seed)
    base = build_baseline(arch, num_classes=10).eval()
    path = tmp_path / f"{arch}.pth.tar"
    torch.save(official_checkpoint(base), path)
    return path, base


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{arch: (official-layout checkpoint, baseline model, exported .onnx)}, built lazily."""
    root = tmp_path_factory.mktemp("export")
    cache = {}

    def get(arch):
        if arch not in cache:
            path, base = _official_file(root, arch)
            cache[arch] = (path, base, export_onnx(str(path), root / "m" / f"{arch}.onnx"))
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ["lightcnn9", pytest.param("lightcnn29v2", marks=pytest.mark.slow)])
def test_onnx_runtime_matches_pytorch_with_dynamic_batch(exported, arch):
    path, base, onnx_path = exported(arch)
    assert not onnx_path.with_name(onnx_path.name + ".data").exists()  # one self-contained file
    run = OnnxRecognizer(onnx_path, providers=["CPUExecutionProvider"])
    for n in (1, 5):  # exported with batch 2: the batch axis is dynamic
        x = torch.rand(n, 1, 128, 128)
        with torch.no_grad():
            ref = base(x)[1].numpy()
        out = run(x)
        assert out.shape == (n, 256) and out.dtype == np.float32
        assert np.abs(out - ref).max() < 1e-4
    with pytest.raises(ValueError, match=r"\(N, 1, 128, 128\)"):
        run(np.zeros((1, 3, 128, 128), np.float32))


def test_onnx_recognizer_rejects_integer_crops_like_the_model(exported):
    """uint8 0..255 crops used to give meaningless features without a word; any float dtype runs."""
    _, _, onnx_path = exported("lightcnn9")
    run = OnnxRecognizer(onnx_path, providers=["CPUExecutionProvider"])
    crops = np.random.default_rng(0).integers(0, 256, (2, 1, 128, 128), dtype=np.uint8)
    for bad in (crops, torch.from_numpy(crops), crops.astype(np.int64).tolist()):
        with pytest.raises(TypeError, match=r"must be float in \[0, 1\], got dtype (uint8|int64); divide uint8 images by 255"):
            run(bad)
    x = torch.from_numpy(crops / 255.0)  # float64
    for good in (x, x.numpy(), x.half(), x.to(torch.bfloat16)):
        as_float32 = good.float().numpy() if isinstance(good, torch.Tensor) else good.astype(np.float32)
        assert np.array_equal(run(good), run(as_float32))


# Exports a tiny Light CNN over a good earlier export under a file-size limit (as a full disk).
FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, sys
    sys.path.insert(0, sys.argv[3])
    from lightcnn_tiny import TinyLightCNN
    from lightface.export import export_onnx, export_torchscript

    kind, path = sys.argv[1], sys.argv[2]
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        if kind == "onnx":
            export_onnx(TinyLightCNN(), path, dynamo=False)
        else:
            export_torchscript(TinyLightCNN(), path)
    except OSError as err:
        print("OSError", err.errno)
    """
)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_failed_export_leaves_the_earlier_file(tmp_path, kind):
    """A write that fails halfway (file too large / disk full) raises OSError and leaves the earlier
    export as it was, with no temporary file (it used to truncate it; TorchScript aborted the process)."""
    from lightcnn_tiny import TinyLightCNN

    path = tmp_path / ("m.onnx" if kind == "onnx" else "m.pt")
    if kind == "onnx":
        export_onnx(TinyLightCNN(), path, dynamo=False)
    else:
        export_torchscript(TinyLightCNN(), path)
    good = path.read_bytes()
    assert len(good) > 20_000
    (tmp_path / "child.py").write_text(FULL_DISK_CHILD)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, str(tmp_path / "child.py"), kind, str(path), str(Path(__file__).parent)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["OSError", "27"], (done.returncode, done.stderr[-2000:])
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", path.name]


def test_torchscript_matches_pytorch(tmp_path):
    model = get_model("lightcnn9").eval()
    ts = torch.jit.load(str(export_torchscript(model, tmp_path / "m.pt")))
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        assert (ts(x) - model(x)).abs().max() < 1e-5


def test_a_torchscript_export_given_as_weights_says_how_to_run_it(tmp_path):
    """FaceEmbedder(the .pt of export_torchscript) said the file was "truncated, corrupt or another kind of file":
    it names TorchScript and torch.jit.load, whose module FaceEmbedder takes."""
    from lightface.utils.checkpoint_io import CheckpointLoadError

    model = get_model("lightcnn9").eval()
    path = export_torchscript(model, tmp_path / "lightcnn9_ts.pt")
    with pytest.raises(CheckpointLoadError, match=r"TorchScript module .*torch\.jit\.load\(path\)"):
        FaceEmbedder(str(path), device="cpu")
    crops = [np.random.default_rng(i).integers(0, 256, (128, 128), dtype=np.uint8) for i in range(2)]
    loaded = FaceEmbedder(torch.jit.load(str(path)), device="cpu")
    assert np.abs(loaded.embed(crops) - FaceEmbedder(model, device="cpu").embed(crops)).max() < 1e-5


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
@pytest.mark.parametrize("arch, kwargs", [("tpgan", {"width": 8, "feature_dim": 8, "noise_dim": 4}),
                                          ("wavelet_srnet", {})])
def test_exporting_a_generator_says_only_recognisers_export(tmp_path, kind, arch, kwargs):
    """export_onnx(Frontalizer().model) failed inside the trace with the generator's own input check ("TP-GAN input
    must be (N, 3, 128, 128) aligned faces ... align with align_face"), sending the caller to re-align faces."""
    model = get_model(arch, **kwargs).eval()
    export = export_onnx if kind == "onnx" else export_torchscript
    with pytest.raises(TypeError, match=r"exports face recognisers .* is a face generator"):
        export(model, tmp_path / "g.x")
    assert list(tmp_path.iterdir()) == []


def test_exporting_a_model_in_training_leaves_it_as_it_was(tmp_path):
    """Exporting mid-training (a checkpoint callback) must not switch the caller's model to eval mode."""
    model = get_model("lightcnn9", num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_torchscript(model, tmp_path / "m.pt")
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_embedder_onnx_backend_equals_torch(exported):
    path, _, onnx_path = exported("lightcnn9")
    crops = [np.random.default_rng(i).integers(0, 256, (128, 128), dtype=np.uint8) for i in range(3)]
    fast = FaceEmbedder(onnx_path, device="cpu")
    assert fast.backend == "onnxruntime"
    ref = FaceEmbedder(path, device="cpu").embed(crops, flip=True)
    assert np.abs(fast.embed(crops, flip=True) - ref).max() < 1e-5


def test_an_export_without_a_card_names_its_arch_and_says_flip_is_off(exported, caplog):
    """The repr read ``arch='NoneType'``, and nothing said that the file carries no flip fusion / threshold."""
    _, _, onnx_path = exported("lightcnn9")
    assert OnnxRecognizer(onnx_path).card == {"arch": "lightcnn9"}
    with caplog.at_level("INFO", logger="lightface.embed"):
        emb = FaceEmbedder(onnx_path, device="cpu")
    assert repr(emb).startswith("FaceEmbedder(arch='lightcnn9', backend='onnxruntime'")
    assert emb.weights_info.arch == "lightcnn9"
    assert "carries no shipped model card" in caplog.text and "flip=False" in caplog.text


@pytest.mark.slow
def test_the_shipped_recogniser_exported_by_name_embeds_and_decides_as_in_pytorch(tmp_path):
    """Its ONNX export ran without flip fusion at threshold 0.35 (the PyTorch embedder: flip fusion, the card's
    0.3427): default embeddings of one photo agreed only to cosine 0.96."""
    from lightface.export import CARD_KEY

    ref = FaceEmbedder(device="cpu")
    name = ref.pretrained.name
    path = export_onnx(name, tmp_path / "shipped.onnx")
    card = OnnxRecognizer(path).card
    assert card["weights"] == name and card["sha256"] == ref.pretrained.sha256 and CARD_KEY == "lightface.card"
    emb = FaceEmbedder(path, device="cpu")
    assert (emb.flip, emb.threshold, emb.identification_threshold) == (ref.flip, ref.threshold,
                                                                       ref.identification_threshold)
    assert ref.flip and repr(emb).startswith(f"FaceEmbedder(arch='{ref.pretrained.arch}', backend='onnxruntime'")
    crops = [np.random.default_rng(i).integers(0, 256, (128, 128), dtype=np.uint8) for i in range(3)]
    assert np.abs(emb.embed(crops) - ref.embed(crops)).max() < 1e-5
    no_flip, ref_no_flip = FaceEmbedder(path, device="cpu", flip=False), FaceEmbedder(device="cpu", flip=False)
    assert (no_flip.threshold, no_flip.identification_threshold) == (ref_no_flip.threshold,
                                                                     ref_no_flip.identification_threshold)
    # by the shipped file's path too
    assert OnnxRecognizer(export_onnx(ref.pretrained.path(), tmp_path / "by_path.onnx")).card == card
