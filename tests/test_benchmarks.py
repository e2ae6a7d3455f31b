"""The speed benchmarks' reference implementations and CLIs (correctness only: timings belong in
docs/benchmarks.md, never in assertions).

``benchmarks/_baseline_srnet.py`` and ``benchmarks/_baseline_tpgan.py`` are the plain-PyTorch
Wavelet-SRNet and TP-GAN generator that ``benchmarks.sr`` / ``benchmarks.frontal`` time beside
ours; they must load our weights and give our outputs, or the ratio compares different work.
"""
from pathlib import Path

import cv2
import pytest
import torch

from benchmarks._baseline_srnet import build_baseline_srnet, haar_analysis, haar_synthesis
from benchmarks._baseline_tpgan import build_baseline_tpgan
from lightface.models import get_model
from lightface.models.wavelet_srnet import WaveletSRNet
from lightface.nn.wavelet import WaveletPacket2d

PHOTOS = ["Gordon_Brown/Gordon_Brown_0001.jpg", "Hugo_Chavez/Hugo_Chavez_0001.jpg"]


def _real_faces(shared_data, size):
    """Two LFW photos, centre 120 px (the face) resized to size x size: (2, 3, size, size) RGB in [0, 1]."""
    faces = []
    for rel in PHOTOS:
        path = shared_data / "lfw_identities" / "images" / rel
        if not path.is_file():
            pytest.skip(f"{path} not found")
        img = cv2.imread(str(path))[65:185, 65:185, ::-1]
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        faces.append(torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(faces)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_reference_haar_packet_matches_wavelet_packet2d(levels):
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    wpt = WaveletPacket2d(levels).double()
    coeffs = wpt(x)
    torch.testing.assert_close(haar_analysis(x, levels), coeffs)
    torch.testing.assert_close(haar_synthesis(coeffs, levels), wpt.inverse(coeffs))


@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_reference_srnet_gives_our_sr_images_with_our_weights(shared_data, scale):
    torch.manual_seed(0)
    model = WaveletSRNet(scale=scale, output_size=8 * scale, channels=8, num_blocks=2, head_channels=8,
                         head_groups=2 if scale == 2 else 4)
    for head in model.heads:  # zero at init: give the subband re-ordering something to get wrong
        head[-1].reset_parameters()
    model.eval()
    ref = build_baseline_srnet(model)
    lr = _real_faces(shared_data, 8)
    with torch.no_grad():
        torch.testing.assert_close(ref(lr), model(lr), atol=1e-5, rtol=0)


def test_reference_srnet_runs_a_shipped_model(shared_data):
    from lightface.restore.super_resolver import SuperResolver

    model = SuperResolver(scale=4, flip_ensemble=False).model
    ref = build_baseline_srnet(model)
    lr = _real_faces(shared_data, model.input_size)
    with torch.no_grad():
        torch.testing.assert_close(ref(lr), model(lr), atol=1e-5, rtol=0)


def test_reference_srnet_gradients_match(shared_data):
    torch.manual_seed(0)
    model = WaveletSRNet(scale=4, output_size=32, channels=8, num_blocks=1, head_channels=8)
    ref = build_baseline_srnet(model)
    assert ref.training
    lr, hr = _real_faces(shared_data, 8), _real_faces(shared_data, 32)
    grads = []
    for net in (model, ref):
        torch.nn.functional.l1_loss(net(lr), hr).backward()
        grads.append({k: p.grad for k, p in net.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [dict(width=8), dict(width=16, in_channels=1, noise_dim=0)])
def test_reference_tpgan_gives_our_frontal_faces_with_our_weights(shared_data, kwargs):
    torch.manual_seed(0)
    g = get_model("tpgan", **kwargs).eval()
    ref = build_baseline_tpgan(g)
    x = _real_faces(shared_data, 128)
    if kwargs.get("in_channels") == 1:
        x = x.mean(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), g.frontalize(x), atol=1e-6, rtol=0)


def test_reference_tpgan_refuses_conditioned_generators():
    g = get_model("tpgan", width=8, condition_network="lightcnn29v2_3src_rc15")
    with pytest.raises(ValueError, match="unconditioned"):
        build_baseline_tpgan(g)


def test_sr_benchmark_table_is_ours_vs_reference_on_the_same_weights(capsys):
    from benchmarks import sr

    sr.bench_models(torch.device("cpu"), 1, dict(channels=8, num_blocks=1, head_channels=8))
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4  # 4x and 8x, batch 1 and 16
    assert all(float(row[-1]) < 1e-5 for row in rows)  # max |ours - reference| of the SR images


def test_frontal_benchmark_reports_ours_vs_reference():
    from benchmarks.frontal import get_args_parser, main

    out = main(get_args_parser().parse_args(["--width", "8", "--batch-sizes", "2", "--iters", "1", "--no-train"]))
    row = out["throughput"][2]
    assert row["max_diff"] < 1e-6 and row["ours"] > 0 and row["reference"] > 0


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--threads", "0"], ["--train-batch", "0"], ["--channels", "0"]])
def test_sr_benchmark_refuses_bad_values_on_the_command_line(argv, capsys):
    """A value that cannot run is a usage error before any model is built (it was a ZeroDivisionError after
    the first table, or, for --threads 0, silently ignored)."""
    from benchmarks import sr

    with pytest.raises(SystemExit) as exc:
        sr.main(argv + ["--channels", "8", "--num-blocks", "1"] if argv[0] != "--channels" else argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--train-width", "12"], ["--width", "20"], ["--batch-sizes", "1", "0"],
                                  ["--threads", "0"], ["--iters", "0"], ["--train-batch", "0"]])
def test_frontal_benchmark_refuses_bad_values_on_the_command_line(argv, capsys):
    """--train-width 12 used to fail with a traceback only after the whole throughput table, --batch-sizes 0 with
    a ZeroDivisionError, --threads 0 was silently ignored."""
    from benchmarks.frontal import get_args_parser

    with pytest.raises(SystemExit) as exc:
        get_args_parser().parse_args(argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("module, argv", [("sr_robustness", ["--max-faces", "0"]),
                                          ("sr_quality", ["--max-heldout", "0"]),
                                          ("small_faces", ["--factors", "0"]), ("small_faces", ["--limit", "-1"]),
                                          ("small_faces", ["--limit", "3"]),
                                          ("sr_quality", ["--heldout", "no/such/val.lmdb"]),
                                          ("sr_quality", ["--photo", "no/such/photo.jpg"]),
                                          ("sr_quality", ["--celeba-hq", "no/such/celeba_hq"]),
                                          ("sr_quality", ["--detector", "no/such/det_500m.onnx"]),
                                          ("sr_quality", ["--weights", "wavelet_srnet_x4_c48_framng"]),
                                          ("sr_quality", ["--weights", "recognition"]),
                                          ("frontal_quality", ["--weights", "sr4"]),
                                          ("sr_face_size", ["--weights", "no/such/model.pt"]),
                                          ("sr_robustness", ["--weights", "sr4", "sr9"]),
                                          ("small_faces", ["--weights", "recogniton"]),
                                          ("framing", ["--weights", "sr8"]),
                                          ("embed", ["--weights", "lightcnn29v2_3src_rc51"]),
                                          ("search", ["--weights", "no/such/run"]),
                                          ("frontal_quality", ["--cfp", "no/such/cfp"]),
                                          ("frontal_quality", ["--data", "no/such/pose.lmdb"]),
                                          ("framing", ["--data", "no/such/data"])])
def test_quality_benchmarks_refuse_bad_values_on_the_command_line(module, argv, capsys):
    """Usage errors before any model or face is read: --max-faces 0 was a torch.stack RuntimeError after the
    models were loaded, --factors 0 a ZeroDivisionError and --limit 3 a ValueError (too few pairs for the 10-fold
    accuracy) after the detector and recogniser were; sr_quality --heldout or --photo naming nothing left that
    set or photo out without a word (a typo gave a table without the held-out row, exit 0), and so did its
    --celeba-hq and --detector, frontal_quality --cfp and framing --data ("skipped", exit 0; frontal_quality
    --data: a traceback). A --weights that names no file and no shipped model of the benchmark's task was
    a traceback ("checkpoint not found") or, in sr_quality / frontal_quality, "skipped" with exit status 0."""
    import importlib

    mod = importlib.import_module(f"benchmarks.{module}")
    with pytest.raises(SystemExit) as exc:
        if hasattr(mod, "get_args_parser"):
            mod.get_args_parser().parse_args(argv)
        else:
            mod.main(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_small_faces_refuses_a_data_folder_that_names_nothing(capsys):
    """small_faces --data no/such/data said "skipped: no/such/data/lfw_train is absent" with exit status 0."""
    from benchmarks.small_faces import main

    with pytest.raises(SystemExit) as exc:
        main(["--data", "no/such/data"])
    assert exc.value.code == 2 and "--data no/such/data: no such folder" in capsys.readouterr().err


def test_benchmark_default_paths_follow_lightface_shared(tmp_path):
    """The benchmarks' default data, detector and photo paths were ../shared beside the checkout whatever
    LIGHTFACE_SHARED said (in a worktree elsewhere: "skipped: .../shared/data/lfw_train is absent")."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LIGHTFACE_SHARED": str(tmp_path / "elsewhere"), "PYTHONPATH": str(root)}
    code = ("import benchmarks.framing as f, benchmarks.sr_quality as q, benchmarks.embed as e, benchmarks.search as s;"
            "print(f.SHARED_DATA, q.SHARED, e.DEFAULT_FACES, s.DEFAULT_REAL)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    paths = out.stdout.split()
    assert len(paths) == 4 and all(p.startswith(str(tmp_path / "elsewhere")) for p in paths), out.stdout


def test_sr_robustness_names_its_own_flag_for_missing_faces(tmp_path):
    """A --heldout that is neither an LMDB nor a folder is refused naming --heldout, before any model loads (the
    message named --data, a flag sr_robustness does not have)."""
    from benchmarks.sr_robustness import get_args_parser, main

    with pytest.raises(FileNotFoundError, match=r"^--heldout .*val\.lmdb: no such LMDB or image folder"):
        main(get_args_parser().parse_args(["--heldout", str(tmp_path / "val.lmdb"), "--weights", "sr4"]))


def test_text_table_sizes_every_column_to_its_widest_cell():
    """benchmarks._table.text_table, the one table printer of the SR benchmarks: long and short names alike."""
    from benchmarks._table import text_table

    lines = text_table(["condition", "bicubic", "sr4", "wavelet_srnet_x8_c64_robust_framing"],
                       [["bilinear_aliased", "19.78", "17.86 (-1.91)", "17.86 (-1.91)"],
                        ["clean", "20.72", "24.70 (+3.98)", "9.00 (+10.00)"]]).splitlines()
    assert len({len(line) for line in lines}) == 1  # right-aligned columns end together
    # the name column fits the longest name: the next column ends at one place on every line
    assert [line.index(c) + len(c) for line, c in zip(lines, ("bicubic", "19.78", "20.72"))] == [25] * 3
    assert lines[1].startswith("bilinear_aliased    19.78  17.86 (-1.91)")
    with pytest.raises(ValueError, match="3 cells under a header of 2"):
        text_table(["a", "b"], [["1", "2", "3"]])


def test_sr_benchmark_timer_waits_for_cuda(monkeypatch):
    """CUDA kernels run asynchronously: a timer that does not synchronise measures the launches only."""
    from benchmarks import sr

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    sr._time(lambda: None, 2, device=torch.device("cuda"))
    assert len(calls) >= 2  # after the warm-up and after the timed calls
    calls.clear()
    sr._time(lambda: None, 2, device=torch.device("cpu"))
    assert calls == []


@pytest.mark.parametrize("flag", ["--steps", "--rounds", "--batch-size", "--threads", "--num-classes"])
def test_train_benchmark_refuses_zero_on_the_command_line(flag, capsys):
    """--steps 0 failed in every child run ("returned non-zero exit status 1"), --rounds 0 printed an empty table."""
    from benchmarks.train import get_args_parser

    with pytest.raises(SystemExit) as exc:
        get_args_parser().parse_args([flag, "0"])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_train_benchmark_shows_why_a_child_run_failed(monkeypatch):
    """Each configuration runs in a subprocess; when one fails, its error must reach the user, not only
    "Command [...] returned non-zero exit status 1"."""
    import subprocess

    from benchmarks import train

    def fake_run(cmd, check=False, **kwargs):
        if check:
            raise subprocess.CalledProcessError(1, cmd, "", "RuntimeError: DefaultCPUAllocator: not enough memory")
        return subprocess.CompletedProcess(cmd, 1, "", "RuntimeError: DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(train.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="(?s)'baseline' run failed.*not enough memory"):
        train.main(train.get_args_parser().parse_args(["--configs", "baseline", "--rounds", "1"]))


def test_search_evidence_crops_faces_as_the_embedder_does(shared_data, tmp_path, monkeypatch):
    """``benchmarks.search --evidence`` identifies LFW faces cropped from their landmarks as the recogniser under
    test needs them (FaceEmbedder.align: its align_method, "eyes" for an official Light CNN release or a model
    trained on --align-method eyes crops), not always by the least-squares fit."""
    import argparse

    import numpy as np

    import lightface.data.io as io
    from benchmarks import search
    from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py (registers the tiny Light CNN)
    from lightface import FaceEmbedder

    if not (shared_data / "lfw_train" / "landmarks_5pt.txt").is_file():
        pytest.skip("lfw_train not found")
    torch.manual_seed(0)
    embedder = FaceEmbedder(get_model(TINY, num_classes=0), device="cpu", align_method="eyes")
    read, seen = io.read_image, []
    monkeypatch.setattr(io, "read_image", lambda path, *a, **k: seen.append(path) or read(path, *a, **k))
    batches = []
    embed_tensor = embedder.embed_tensor
    monkeypatch.setattr(embedder, "embed_tensor", lambda x, *a, **k: batches.append(x.clone()) or embed_tensor(x, *a, **k))
    out = search.evidence_lfw(argparse.Namespace(real=str(shared_data), evidence_folds=["2"]), tmp_path, embedder, "tiny")
    assert out["faces"] == len(seen) > 8 and out["sets"]["other photos"]["probes"] > 0
    marks = search._landmarks(shared_data)
    for i, path in enumerate(seen[:8]):
        want = io.to_gray(embedder.align(read(path), marks[f"{path.parent.name}/{path.name}"])[0])
        got = np.rint(batches[0][i, 0].numpy() * 255).astype(np.uint8)
        assert np.array_equal(got, want), path
