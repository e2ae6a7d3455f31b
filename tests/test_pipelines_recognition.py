"""extract_embeddings and evaluate CLIs end to end on real LFW identities.

Random Light CNN weights in the official file layout (no official weights on this machine):
the metrics are meaningless as numbers but every stage runs on real faces.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
from lightface.embed import FaceEmbedder
from pipelines import evaluate, extract_embeddings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("w") / "LightCNN_9Layers_checkpoint.pth.tar"
    torch.save(official_checkpoint(build_baseline("lightcnn9", num_classes=10)), path)
    return path


@pytest.fixture(scope="module")
def lfw(shared_data):
    root = shared_data / "lfw_identities"
    names = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
    assert len(names) == 18
    return root, names


def _copy_identities(root, names, dst, numbers=(1, 2)):
    """Copy ``name_000k.jpg`` of the given LFW identities into ``dst/<name>/``."""
    for n in names:
        (dst / n).mkdir(parents=True)
        for k in numbers:
            src = root / "images" / n / f"{n}_{k:04d}.jpg"
            (dst / n / src.name).write_bytes(src.read_bytes())
    return dst


def _lfw_pairs_file(path, names):
    """LFW View-2 layout, 2 folds x 18 matched + 18 mismatched pairs over all 18 identities."""
    lines = ["2\t18"]
    for fold in range(2):
        lines += [f"{n}\t{1 + fold}\t{2 + fold}" for n in names]
        lines += [f"{n}\t{1 + fold}\t{names[(k + 1 + fold) % 18]}\t3" for k, n in enumerate(names)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_cli_with_landmarks_on_lfw(tmp_path, weights, lfw):
    root, names = lfw
    pairs = _lfw_pairs_file(tmp_path / "pairs.txt", names)
    argv = ["--weights", str(weights), "--pairs", str(pairs), "--images", str(root / "images"),
            "--landmarks", str(root / "landmarks_5pt.txt"), "--out", str(tmp_path / "r" / "report.json"),
            "--plot", str(tmp_path / "roc.png"), "--device", "cpu"]
    report = evaluate.main(evaluate.get_args_parser().parse_args(argv))
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["n_pairs"] == 72 and saved["n_same"] == 36 and saved["n_folds"] == 2
    assert saved["alignment"] == "landmarks" and saved["arch"] == "lightcnn9" and not saved["failed_images"]
    assert 0.0 <= saved["accuracy_mean"] <= 1.0 and 0.0 <= saved["auc"] <= 1.0 and 0.0 <= saved["eer"] <= 1.0
    assert saved["tar_at_far"]["1e-01"] is not None and saved["tar_at_far"]["1e-02"] is None
    assert report["threshold"] == saved["threshold"]
    assert (tmp_path / "roc.png").stat().st_size > 10_000


def test_evaluate_cli_detector_and_bad_images(tmp_path, weights, lfw, shared_models):
    root, names = lfw
    images = _copy_identities(root, names[:4], tmp_path / "images")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    lines = [f"1 {n}/{n}_0001.jpg {n}/{n}_0002.jpg" for n in names[:4]]
    lines += [f"0 {names[k]}/{names[k]}_0001.jpg {names[k + 1]}/{names[k + 1]}_0002.jpg" for k in range(3)]
    lines += [f"0 broken.jpg {names[0]}/{names[0]}_0001.jpg"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    argv = ["--weights", str(weights), "--pairs", str(tmp_path / "pairs.txt"), "--images", str(images),
            "--detector", str(shared_models / "det_500m.onnx"), "--out", str(tmp_path / "report.json"),
            "--folds", "3", "--device", "cpu"]
    report = evaluate.main(evaluate.get_args_parser().parse_args(argv))
    assert report["alignment"] == "detector" and report["n_pairs"] == 7 and report["skipped_pairs"] == 1
    assert list(report["failed_images"]) == ["broken.jpg"]


def test_extract_embeddings_npz_and_feat(tmp_path, weights, lfw, shared_models):
    root, names = lfw
    src = _copy_identities(root, names[:2], tmp_path / "in")
    (src / names[0] / "empty.png").write_bytes(b"")
    common = ["--weights", str(weights), "-i", str(src), "--detector", str(shared_models / "det_500m.onnx"),
              "--device", "cpu", "--batch-size", "2"]
    out = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(common + ["-o", str(tmp_path / "e.npz")]))
    assert out["count"] == 4 and list(out["failed"]) == [f"{names[0]}/empty.png"]
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (4, 256) and data["embeddings"].dtype == np.float32
    assert list(data["failed_paths"]) == [f"{names[0]}/empty.png"]
    expected = FaceEmbedder(weights, device="cpu", detector=str(shared_models / "det_500m.onnx")).embed(
        [src / p for p in data["paths"]], aligned=False)
    assert np.allclose(data["embeddings"], expected, atol=1e-5)
    extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
        common + ["-o", str(tmp_path / "feats"), "--format", "feat"]))
    feat = tmp_path / "feats" / data["paths"][0].replace(".jpg", ".feat")
    assert feat.stat().st_size == 256 * 4
    assert np.allclose(np.fromfile(feat, "<f4"), data["embeddings"][0], atol=1e-6)
    assert "empty.png" in (tmp_path / "feats" / "failures.tsv").read_text()
    # a list file of aligned crops (Light CNN list with labels) and --aligned
    (tmp_path / "list.txt").write_text(f"{data['paths'][0]} 0\n{data['paths'][1]} 1\n")
    res = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
        ["--weights", str(weights), "-i", str(tmp_path / "list.txt"), "--root", str(src), "--aligned",
         "-o", str(tmp_path / "l.npz"), "--device", "cpu"]))
    assert res["count"] == 2


def test_extract_embeddings_feat_names_stay_in_out_and_are_unique(tmp_path, weights, lfw):
    root, names = lfw
    images = tmp_path / "in"
    images.mkdir()
    (images / "face.jpg").write_bytes((root / "images" / names[0] / f"{names[0]}_0001.jpg").read_bytes())
    cv2.imwrite(str(images / "face.png"), cv2.imread(str(root / "images" / names[1] / f"{names[1]}_0001.jpg")))
    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "abs.txt"  # absolute paths outside the list file's folder
    listed.write_text(f"{images / 'face.jpg'}\n{images / 'face.png'}\n")

    def run(*argv):
        return extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
            ["--weights", str(weights), "--aligned", "--device", "cpu", *argv]))

    run("-i", str(listed), "-o", str(tmp_path / "e.npz"))
    run("-i", str(listed), "-o", str(tmp_path / "feats"), "--format", "feat")
    assert sorted(p.name for p in images.iterdir()) == ["face.jpg", "face.png"]  # nothing written next to the inputs
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == ["face_jpg.feat", "face_png.feat"]
    data = np.load(tmp_path / "e.npz")
    for i, name in enumerate(["face_jpg", "face_png"]):
        assert np.allclose(np.fromfile(tmp_path / "feats" / f"{name}.feat", "<f4"), data["embeddings"][i], atol=1e-6)
    one = run("-i", str(images / "face.jpg"), "-o", str(tmp_path / "one.npz"))  # one image as the input
    assert one["count"] == 1 and list(np.load(tmp_path / "one.npz")["paths"]) == ["face.jpg"]
    assert np.allclose(np.load(tmp_path / "one.npz")["embeddings"][0], data["embeddings"][0], atol=1e-6)
    (tmp_path / "list.bin").write_bytes(b"\xff\xd8\xff\xe0 not a list")
    with pytest.raises(ValueError, match=r"list\.bin is a binary file \(not UTF-8 text\), not a text list file; "
                                         r"give a folder of images, one image, or a list file"):
        run("-i", str(tmp_path / "list.bin"), "-o", str(tmp_path / "x.npz"))


_KILLED_CHILD = """
import os, signal, sys
from pipelines import extract_embeddings as ee
original = ee._save_progress
def save_then_die(*a, **k):
    original(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the first progress save
ee._save_progress = save_then_die
ee.main(ee.get_args_parser().parse_args(sys.argv[1:]))
"""


def test_extract_embeddings_killed_midway_continues_and_refuses_other_progress(tmp_path, weights, lfw, shared_models,
                                                                              caplog):
    import os
    import subprocess
    import sys

    root, names = lfw
    src = _copy_identities(root, names[:3], tmp_path / "in")  # 6 photos
    argv = ["--weights", str(weights), "-i", str(src), "--detector", str(shared_models / "det_500m.onnx"),
            "--device", "cpu", "--batch-size", "2", "--save-every", "2"]
    full = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(argv + ["-o", str(tmp_path / "full.npz")]))
    out = tmp_path / "e.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    killed = subprocess.run([sys.executable, "-c", _KILLED_CHILD, *argv, "-o", str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not out.exists() and (tmp_path / "e.partial.npz").is_file()  # no half-written output, the progress kept
    with caplog.at_level("INFO", logger="pipelines.extract_embeddings"):
        again = extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(argv + ["-o", str(out)]))
    assert "2 of 6 images already done" in caplog.text and again["count"] == full["count"] == 6
    a, b = np.load(out), np.load(tmp_path / "full.npz")
    assert list(a["paths"]) == list(b["paths"]) and np.allclose(a["embeddings"], b["embeddings"], atol=1e-6)
    assert not (tmp_path / "e.partial.npz").exists()
    # a progress file of another extraction (here: without flip fusion) is refused, not mixed in
    subprocess.run([sys.executable, "-c", _KILLED_CHILD, *argv, "-o", str(out)], env=env, timeout=300)
    with pytest.raises(ValueError, match="progress of another extraction"):
        extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(argv + ["--flip", "-o", str(out)]))


def test_extract_embeddings_in_bfloat16_matches_float32_and_is_another_extraction(tmp_path, lfw, shared_models):
    """``--precision bfloat16`` (the shipped recogniser): the same faces within cosine 0.999 of float32, and a progress
    file of one precision is not continued by the other."""
    root, names = lfw
    src = _copy_identities(root, names[:2], tmp_path / "in")
    argv = ["-i", str(src), "--detector", str(shared_models / "det_500m.onnx"), "--device", "cpu"]
    runs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.npz"
        extract_embeddings.main(extract_embeddings.get_args_parser().parse_args(
            argv + ["--precision", precision, "-o", str(out)]))
        runs[precision] = np.load(out)
    assert list(runs["float32"]["paths"]) == list(runs["bfloat16"]["paths"]) and len(runs["float32"]["paths"]) == 4
    cosines = (runs["float32"]["embeddings"] * runs["bfloat16"]["embeddings"]).sum(1)
    assert cosines.min() > 0.999
    fingerprints = {precision: extract_embeddings._fingerprint(
        extract_embeddings.get_args_parser().parse_args(argv + ["--precision", precision, "-o", "x.npz"]),
        ["a.jpg"], "sha", True) for precision in ("float32", "bfloat16")}
    assert fingerprints["float32"] != fingerprints["bfloat16"]


def test_bfloat16_on_a_cpu_without_native_bf16_warns_that_it_is_slow(monkeypatch, caplog):
    """The warning turns on the CPU's bf16 support, which is read from torch (set here both ways)."""
    for native in (False, True):
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, name, lambda native=native: native)
        caplog.clear()
        with caplog.at_level("WARNING", logger="lightface.embed"):
            FaceEmbedder(device="cpu", precision="bfloat16")
        assert ("20 times slower" in caplog.text) is not native
    with pytest.raises(ValueError, match="precision must be one of"):
        FaceEmbedder(device="cpu", precision="float16")


def test_help_documents_defaults():
    from pipelines import enroll, search

    for mod in (evaluate, extract_embeddings, enroll, search):
        text = mod.get_args_parser().format_help()
        assert "default" in text and "--weights" in text and "--precision {float32,bfloat16}" in text
