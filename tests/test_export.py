"""ONNX / TorchScript export of Light CNNs (random weights in the official layout: no
official weights on this machine), of the face generators (super-resolver, frontalizer), and the
ONNX Runtime embedder backend."""
import copy
import json
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


def test_a_recognisers_torchscript_file_embeds_as_the_pytorch_model_with_its_card(exported, tmp_path, shared_data):
    """FaceEmbedder(the .pt of export_torchscript) was refused ("run it with torch.jit.load(path)"), though the file
    carries the card (arch, align_method; flip fusion and thresholds for a shipped model) that FaceEmbedder("x.onnx")
    follows: it runs the file as its traced graph, crops as the card says and gives the PyTorch embeddings."""
    from lightface.data.io import read_image
    from lightface.data.sources import read_landmarks_file
    from lightface.utils.checkpoint_io import CheckpointLoadError
    from lightface.utils.exported_files import load_torchscript

    root = shared_data / "lfw_identities"
    marks = read_landmarks_file(root / "landmarks_5pt.txt")
    names = sorted(marks)[:3]
    path, _, _ = exported("lightcnn9")  # an official release: cropped by the original recipe ("eyes")
    pt = export_torchscript(str(path), tmp_path / "lightcnn9.pt")
    assert load_torchscript(pt)[1] == {"arch": "lightcnn9", "align_method": "eyes"}
    ref, emb = FaceEmbedder(str(path), device="cpu"), FaceEmbedder(str(pt), device="cpu")
    assert emb.backend == "torchscript" and repr(emb).startswith("FaceEmbedder(arch='lightcnn9', backend='torchscript'")
    assert (emb.weights_info.arch, emb.weights_info.source) == ("lightcnn9", "torchscript")
    assert emb.align_method == ref.align_method == "eyes" and emb.settings(True) == ref.settings(True)
    crops = [ref.align(read_image(root / "images" / n), marks[n])[0] for n in names]
    for a, b in zip(crops, (emb.align(read_image(root / "images" / n), marks[n])[0] for n in names)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(emb.embed(crops, flip=True) - ref.embed(crops, flip=True)).max() < 1e-5
    # still a module when loaded first; an embedder of the file is not exported again; no torch.compile of a graph
    loaded = FaceEmbedder(torch.jit.load(str(pt)), device="cpu")
    assert np.abs(loaded.embed(crops) - ref.embed(crops)).max() < 1e-5
    with pytest.raises(ValueError, match="runs an exported TorchScript file already"):
        export_onnx(emb, tmp_path / "again.onnx")
    with pytest.raises(ValueError, match=r"compile=True: .* is a TorchScript file"):
        FaceEmbedder(str(pt), device="cpu", compile=True)
    # a generator's file is refused as its .onnx is; a trainer still refuses the file, naming what takes it
    sr = export_torchscript(_tiny_sr(), tmp_path / "sr.pt")
    with pytest.raises(ValueError, match=r"exported super_resolution model .* not a face recogniser: run it with "
                                         r"SuperResolver"):
        FaceEmbedder(str(sr), device="cpu")
    from lightface.models.checkpoint import read_model_checkpoint

    with pytest.raises(CheckpointLoadError, match=r"TorchScript module .*FaceEmbedder, SuperResolver, Frontalizer"):
        read_model_checkpoint(pt)


def _device_free(path):
    """The exported TorchScript file at ``path``, loaded, after checking that its traced graph names no device."""
    ts = torch.jit.load(str(path))
    pinned = [line.strip() for line in str(ts.inlined_graph).splitlines() if "Device = prim::Constant" in line]
    assert not pinned and "device(" not in ts.code, (pinned, ts.code)
    return ts


def test_torchscript_exports_name_no_device_so_they_run_off_the_cpu(tmp_path, shared_data):
    """The traced graphs of the super-resolver (its Haar filters moved with .to(device=x.device)) and of the
    frontalizer (zero noise made with torch.zeros(device=x.device), its recogniser's luma weights with
    new_tensor) held the tracing CPU as a constant (aten::to(weight, device="cpu"), aten::zeros(..., "cpu")):
    a file exported on a CPU could not run on CUDA, in lightface or in libtorch. No GPU here: the check is the
    graph (no Device constant, as a libtorch load on CUDA needs); the outputs are the PyTorch models' on real
    faces."""
    from lightface import Frontalizer, SuperResolver

    model = get_model("lightcnn9").eval()
    ts = _device_free(export_torchscript(model, tmp_path / "rec.pt"))
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        assert (ts(x) - model(x)).abs().max() < 1e-5
    resolver = SuperResolver(_tiny_sr(), device="cpu")  # its default flip ensemble, inside the graph
    ts = _device_free(export_torchscript(resolver, tmp_path / "sr.pt"))
    faces = _celeba_hq(shared_data, 32)[:3]
    with torch.no_grad():
        assert (ts(faces) - resolver.upscale_tensor(faces)).abs().max() < 1e-5
    torch.manual_seed(0)
    gen = get_model("tpgan", width=8, feature_dim=8, noise_dim=4, condition_network="some_recogniser").eval()
    gen.set_condition_network(get_model("lightcnn9", num_classes=0).eval())  # conditioned: the recogniser inside
    with torch.no_grad():
        gen.film.d16.weight.normal_(0, 0.1)
    frontalizer = Frontalizer(gen, device="cpu", mirror=None)
    pt = export_torchscript(frontalizer, tmp_path / "fr.pt")
    ts = _device_free(pt)
    faces = _aligned_lfw(shared_data, 3)
    with torch.no_grad():
        assert (ts(faces) - frontalizer.frontalize_tensor(faces)).abs().max() < 1e-5
    assert (Frontalizer(str(pt), device="cpu", mirror=None).frontalize_tensor(faces)
            - frontalizer.frontalize_tensor(faces)).abs().max() < 1e-5


def test_a_torchscript_file_pinned_to_the_cpu_runs_there_saying_so(caplog):
    """A file whose graph holds the CPU (a generator exported before its traces were device-free, a trace of your
    own) cannot move to CUDA: a restorer or embedder on CUDA runs it on the CPU, with a warning to export again;
    a device-free graph runs on the caller's device."""
    from lightface.utils.exported_files import torchscript_on_device, traced_devices

    class _Pinned(torch.nn.Module):  # as the generators traced before: a tensor made on the input's device
        def forward(self, x):
            return x + torch.zeros(x.shape[0], 1, 1, 1, device=x.device)

    pinned = torch.jit.trace(_Pinned(), torch.rand(1, 3, 8, 8))
    assert traced_devices(pinned) == {"cpu"}
    assert traced_devices(torch.jit.trace(torch.nn.Conv2d(3, 3, 1), torch.rand(1, 3, 8, 8))) == set()
    with caplog.at_level("WARNING", logger="lightface.utils.exported_files"):
        assert torchscript_on_device(pinned, torch.device("cuda"), "old.pt") == torch.device("cpu")
    assert "old.pt: its traced graph makes tensors on the fixed device cpu" in caplog.text
    assert torchscript_on_device(pinned, torch.device("cpu"), "old.pt") == torch.device("cpu")


def _tiny_sr(seed=3):
    """A small 4x WaveletSRNet whose heads are not zero (an untrained one is exactly bicubic)."""
    torch.manual_seed(seed)
    model = get_model("wavelet_srnet", channels=8, num_blocks=1, head_channels=8)
    for head in model.heads:
        torch.nn.init.normal_(head[-1].weight, std=0.02)
    return model


def _celeba_hq(shared_data, size, width=None):
    """The first two female and two male CelebA-HQ faces, area-downscaled to ``width`` x ``size`` (width
    defaults to size): (4, 3, size, width) RGB float in [0, 1]."""
    import cv2

    from lightface.data.convert import image_to_tensor

    root = shared_data / "celeba_hq"
    paths = sorted((root / "female").glob("*.jpg"))[:2] + sorted((root / "male").glob("*.jpg"))[:2]
    return image_to_tensor([cv2.resize(cv2.imread(str(p)), (width or size, size), interpolation=cv2.INTER_AREA)
                            for p in paths])


def _aligned_lfw(shared_data, count):
    """``count`` LFW faces aligned to the 128 px lightcnn template with their landmarks: (N, 3, 128, 128) RGB."""
    import cv2

    from lightface.data.align import align_face
    from lightface.data.convert import image_to_tensor

    root = shared_data / "lfw_identities"
    crops = []
    for line in (root / "landmarks_5pt.txt").read_text().splitlines()[:count]:
        name, *values = line.split()
        lm = np.array(values, np.float32).reshape(5, 2)
        crops.append(align_face(cv2.imread(str(root / "images" / name)), lm, "lightcnn", size=128)[0])
    return image_to_tensor(crops)


@pytest.fixture(scope="module")
def sr_export(tmp_path_factory):
    """(tiny 4x super-resolver module, left in training mode, and its ONNX export)."""
    model = _tiny_sr().train()
    path = export_onnx(model, tmp_path_factory.mktemp("sr") / "sr.onnx")
    return model, path


def test_a_super_resolver_exports_to_onnx_and_matches_pytorch_on_real_faces(sr_export, shared_data):
    """export_onnx(a WaveletSRNet / SuperResolver / shipped super-resolver) raised "exports face recognisers ... is a
    face generator": the SR generator, deployed as ONNX by every GFPGAN / Real-ESRGAN user, had no export. The file
    gives what SuperResolver.upscale_tensor gives (flip ensemble, clamped), at any batch and input size."""
    import onnxruntime as ort

    from lightface import SuperResolver
    from lightface.export import CARD_KEY

    model, path = sr_export
    assert model.training and all(m.training for m in model.modules())  # the caller's module as it was
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["image"]
    card = json.loads(session.get_modelmeta().custom_metadata_map[CARD_KEY])
    assert card["arch"] == "wavelet_srnet" and card["task"] == "super_resolution" and card["flip_ensemble"] is True
    assert (card["scale"], card["input_size"], card["output_size"]) == (4, 32, 128)
    resolver = SuperResolver(copy.deepcopy(model), device="cpu")
    faces = _celeba_hq(shared_data, 32)
    wide = _celeba_hq(shared_data, 32, width=40)[:2]  # not the export's size: h and w are dynamic
    for x in (faces[:1], faces[1:], wide):
        out = session.run(None, {"input": x.numpy()})[0]
        ref = resolver.upscale_tensor(x).numpy()
        assert out.shape == (x.shape[0], 3, x.shape[2] * 4, x.shape[3] * 4) and out.dtype == np.float32
        assert np.abs(out - ref).max() < 1e-5
        assert np.abs(out - torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic").numpy()).max() > 1e-3


def test_an_exported_generator_is_refused_as_a_recogniser(sr_export):
    """FaceEmbedder("sr.onnx") would run a super-resolver as a recogniser; it says what the file is."""
    _, path = sr_export
    for load in (lambda: OnnxRecognizer(path), lambda: FaceEmbedder(path, device="cpu")):
        with pytest.raises(ValueError, match=r"exported super_resolution model .* not a face recogniser"):
            load()


def test_generators_export_to_torchscript(tmp_path, shared_data):
    """export_torchscript of a super-resolver and a frontalizer (used to raise TypeError): their traced files give
    what SuperResolver / Frontalizer give on real faces, at other batch sizes and (SR) input sizes."""
    from lightface import Frontalizer, SuperResolver

    sr = _tiny_sr()
    ts = torch.jit.load(str(export_torchscript(SuperResolver(sr, device="cpu", flip_ensemble=False),
                                               tmp_path / "sr.pt")))
    single = SuperResolver(sr, device="cpu", flip_ensemble=False)
    for x in (_celeba_hq(shared_data, 32)[:3], _celeba_hq(shared_data, 24, width=36)[:1]):
        with torch.no_grad():
            assert (ts(x) - single.upscale_tensor(x)).abs().max() < 1e-5
    torch.manual_seed(0)
    gen = get_model("tpgan", width=8, feature_dim=8, noise_dim=4)
    ts = torch.jit.load(str(export_torchscript(gen, tmp_path / "fr.pt")))
    faces = _aligned_lfw(shared_data, 3)
    with torch.no_grad():
        assert (ts(faces) - Frontalizer(gen, device="cpu").frontalize_tensor(faces)).abs().max() < 1e-5


def test_a_super_resolver_exports_with_the_legacy_onnx_exporter(tmp_path, shared_data):
    """dynamo=False failed inside the Haar transform ("ONNX export of convolution for kernel of unknown shape": its
    filter bank was repeated per input channel, a shape the TorchScript-based exporter could not resolve)."""
    import onnxruntime as ort

    from lightface import SuperResolver

    sr = _tiny_sr()
    session = ort.InferenceSession(str(export_onnx(sr, tmp_path / "sr.onnx", dynamo=False)),
                                   providers=["CPUExecutionProvider"])
    resolver = SuperResolver(sr, device="cpu")
    for x in (_celeba_hq(shared_data, 32)[:3], _celeba_hq(shared_data, 24, width=36)[:1]):
        assert np.abs(session.run(None, {"input": x.numpy()})[0] - resolver.upscale_tensor(x).numpy()).max() < 1e-5


@pytest.mark.slow
def test_the_shipped_generators_exported_by_name_match_pytorch_on_real_faces(tmp_path, shared_data):
    """The shipped 4x super-resolver and the shipped (recogniser-conditioned) frontalizer, exported by name, give
    in ONNX Runtime what SuperResolver() / Frontalizer() give, at batch 1 and 3, and carry their cards."""
    import onnxruntime as ort

    from lightface import Frontalizer, SuperResolver
    from lightface.export import CARD_KEY

    def run(path, x):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        card = json.loads(session.get_modelmeta().custom_metadata_map[CARD_KEY])
        return card, [session.run(None, {"input": x[:1].numpy()})[0], session.run(None, {"input": x[1:].numpy()})[0]]

    resolver = SuperResolver(device="cpu")
    lr = _celeba_hq(shared_data, 32)
    card, outs = run(export_onnx(resolver.pretrained.name, tmp_path / "sr4.onnx"), lr)
    assert (card["weights"], card["sha256"], card["scale"]) == (resolver.pretrained.name, resolver.pretrained.sha256, 4)
    assert np.abs(np.concatenate(outs) - resolver.upscale_tensor(lr).numpy()).max() < 1e-5  # measured 3.6e-7

    frontalizer = Frontalizer(device="cpu")
    faces = _aligned_lfw(shared_data, 4)
    card, outs = run(export_onnx(frontalizer.pretrained.name, tmp_path / "fr.onnx"), faces)
    assert (card["weights"], card["mirror"]) == (frontalizer.pretrained.name, "left") and card["condition_network"]
    assert np.abs(np.concatenate(outs) - frontalizer.frontalize_tensor(faces).numpy()).max() < 1e-5  # 8.3e-7


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exporting_a_network_of_the_original_code_is_refused(tmp_path, kind):
    """The original code's networks return (logits, features): exported as they were, the file's ``features``
    output was the logits ((N, 10) here; (N, 79077) for a released classifier), silently."""
    base = build_baseline("lightcnn9", num_classes=10).eval()
    export = export_onnx if kind == "onnx" else export_torchscript
    who = "export_onnx" if kind == "onnx" else "export_torchscript"
    with pytest.raises(TypeError, match=rf"{who}: the model returned a tuple \(\(2, 10\), \(2, 256\)\).*'w.pth'"):
        export(base, tmp_path / "m.x")
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
    assert OnnxRecognizer(onnx_path).card == {"arch": "lightcnn9", "align_method": "eyes"}  # an official release
    with caplog.at_level("INFO", logger="lightface.embed"):
        emb = FaceEmbedder(onnx_path, device="cpu")
    assert repr(emb).startswith("FaceEmbedder(arch='lightcnn9', backend='onnxruntime'")
    assert emb.weights_info.arch == "lightcnn9"
    assert "carries no shipped model card" in caplog.text and "flip=False" in caplog.text


def test_an_exported_official_release_crops_whole_photos_as_the_release_does(exported, tmp_path, shared_data):
    """FaceEmbedder(official .pth.tar) crops whole photos by the original recipe (align_method "eyes"), but the
    .onnx exported from it carried no word of it: FaceEmbedder("x.onnx") cropped them by the least-squares fit, so
    the same photo gave another crop and another embedding. The card names the method; a FaceEmbedder is exported
    with its own (it was refused: "expected an nn.Module ... got FaceEmbedder")."""
    from lightface.data.io import read_image
    from lightface.data.sources import read_landmarks_file

    root = shared_data / "lfw_identities"
    name = "Gordon_Brown/Gordon_Brown_0001.jpg"
    photo, marks = read_image(root / "images" / name), read_landmarks_file(root / "landmarks_5pt.txt")[name]
    path, _, onnx_path = exported("lightcnn9")
    ref = FaceEmbedder(path, device="cpu")
    fast = FaceEmbedder(onnx_path, device="cpu")
    assert ref.align_method == fast.align_method == "eyes"
    assert fast.settings(aligned=True) == ref.settings(aligned=True)
    crop = ref.align(photo, marks)[0]
    np.testing.assert_array_equal(fast.align(photo, marks)[0], crop)
    assert np.abs(fast.embed(crop) - ref.embed(crop)).max() < 1e-5
    # an explicit method still wins over the card's
    assert FaceEmbedder(onnx_path, device="cpu", align_method="similarity").align_method == "similarity"
    # a FaceEmbedder exports its network with the method it crops by
    chosen = FaceEmbedder(path, device="cpu", align_method="similarity")
    out = export_onnx(chosen, tmp_path / "chosen.onnx")
    assert OnnxRecognizer(out).card == {"arch": "lightcnn9", "align_method": "similarity"}
    again = FaceEmbedder(out, device="cpu")
    assert again.align_method == "similarity"
    assert np.abs(again.embed(crop) - ref.embed(crop)).max() < 1e-5
    with pytest.raises(ValueError, match="runs an exported .onnx already"):
        export_onnx(fast, tmp_path / "twice.onnx")


def test_a_lightface_checkpoint_exports_with_the_least_squares_alignment(tmp_path):
    """A lightface checkpoint is cropped by the least-squares fit, which its card now says."""
    from lightcnn_tiny import ARCH, TinyLightCNN
    from lightface.models.checkpoint import save_model_checkpoint

    torch.manual_seed(0)
    ckpt = save_model_checkpoint(tmp_path / "tiny.pt", TinyLightCNN(num_classes=0), ARCH)
    card = OnnxRecognizer(export_onnx(str(ckpt), tmp_path / "tiny.onnx")).card
    assert card["align_method"] == "similarity"


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
    assert card["align_method"] == "similarity" == FaceEmbedder(path, device="cpu").align_method
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
    # its TorchScript file carries the same card, which FaceEmbedder follows as it does the .onnx's
    ts = FaceEmbedder(str(export_torchscript(name, tmp_path / "shipped.pt")), device="cpu")
    assert (ts.backend, ts.flip, ts.threshold, ts.identification_threshold, ts.align_method) == (
        "torchscript", ref.flip, ref.threshold, ref.identification_threshold, "similarity")
    assert np.abs(ts.embed(crops) - ref.embed(crops)).max() < 1e-5


def test_a_restorer_given_an_exported_file_it_cannot_run_says_what_the_file_is(tmp_path, sr_export, exported):
    """A restorer given another task's exported file (a frontalizer, a recogniser) or a TorchScript file without
    lightface's card names what the file is and what to pass; export_torchscript stores the card; a restorer running
    an exported file is not exported again (it holds no PyTorch network) but says which weights to export."""
    from lightface import Frontalizer, SuperResolver
    from lightface.export import CARD_KEY

    _, sr_path = sr_export
    torch.manual_seed(0)
    gen = get_model("tpgan", width=8, feature_dim=8, noise_dim=4)
    fr_ts = export_torchscript(Frontalizer(gen, device="cpu", mirror="left"), tmp_path / "fr.pt")
    extra = {CARD_KEY: ""}
    torch.jit.load(str(fr_ts), _extra_files=extra)
    card = json.loads(extra[CARD_KEY])
    assert (card["task"], card["mirror"], card["channels"], card["size"]) == ("frontalization", "left", 3, 128)
    with pytest.raises(ValueError, match=r"is an exported frontalization model \(tpgan\), not super-resolution: give "
                                         r"it to Frontalizer"):
        SuperResolver(str(fr_ts), device="cpu")
    with pytest.raises(ValueError, match=r"is an exported super_resolution model .* give it to SuperResolver"):
        Frontalizer(sr_path, device="cpu")
    recogniser = exported("lightcnn9")[2]
    with pytest.raises(ValueError, match=r"is an exported recognition model .* give it to FaceEmbedder"):
        Frontalizer(recogniser, device="cpu")
    cardless = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 3, 1), torch.rand(1, 3, 128, 128)), str(cardless))
    with pytest.raises(ValueError, match=r"carries no lightface model card.*lightface\.export\.export_torchscript"):
        Frontalizer(cardless, device="cpu")
    with pytest.raises(ValueError, match=r"export_onnx: this SuperResolver runs an exported file \(onnxruntime\).*"
                                         r"export the checkpoint or shipped model it was exported from"):
        export_onnx(SuperResolver(sr_path, device="cpu"), tmp_path / "again.onnx")
