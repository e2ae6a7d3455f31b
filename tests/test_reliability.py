"""Regression tests for the reliability defects of issue 14 part 5 (a hostile probe of every
CLI and API): hangs on FIFOs and symlink loops, concurrent builds, bad files that stopped a
whole run, output collisions, bad checkpoints, tracebacks instead of messages, batch sizes,
stray temporary files, full disks.

Anything that could hang runs in a subprocess with a timeout, so a regression fails
instead of blocking the suite.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from lightface.data.build import DatasetLockedError, _OutputLock, build_lmdb, lock_path, partial_path
from lightface.data.lmdb_format import META_KEY, release_readonly

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def _run(*argv, timeout=TIMEOUT):
    """``python -m ...`` in the repository root; a hang fails the test instead of blocking it."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT))
    try:
        return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{' '.join(argv[:3])} hung for {timeout} s (regression): {err}")


def _images(folder: Path, n: int = 2, size: int = 40, seed: int = 0, ext: str = ".png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}{ext}"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


# -- 5.1 hangs: symlink loops, FIFOs ------------------------------------------------------
def test_build_lmdb_symlink_loops_and_fifo_finish(tmp_path):
    src = tmp_path / "src"
    _images(src / "a")
    _images(src / "b", seed=1)
    os.symlink("..", src / "a" / "up")            # loop 1: a/up -> src
    os.symlink("../b", src / "b" / "again")       # loop 2: b/again -> b
    os.symlink("../a", src / "b" / "to_a")        # a second link to a scanned folder
    os.symlink("self.jpg", src / "a" / "self.jpg")  # self-referencing symlink (5.7)
    os.mkfifo(src / "b" / "pipe.jpg")             # opening it for reading would block forever
    out = tmp_path / "out"
    r = _run("-m", "pipelines.build_lmdb", str(src), str(out), "--size", "32", "--no-progress")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"] == 4 and summary["num_classes"] == 2, summary
    report = json.loads((out / "build_report.json").read_text())
    reasons = {e["source"]: e["reason"] for e in report["ignored"]}
    assert "already scanned" in reasons["a/up"] and "already scanned" in reasons["b/again"]
    assert "already scanned" in reasons["b/to_a"]
    assert "regular file" in reasons["b/pipe.jpg"]
    assert "symbolic links" in reasons["a/self.jpg"]


def test_build_lmdb_list_file_with_fifo_and_self_symlink(tmp_path):
    _images(tmp_path / "img")
    os.mkfifo(tmp_path / "img" / "pipe.png")
    os.symlink("loop.png", tmp_path / "img" / "loop.png")
    lst = tmp_path / "list.txt"
    lst.write_text("img/0.png 0\nimg/pipe.png 0\nimg/loop.png 1\nimg/1.png 1\n")
    r = _run("-m", "pipelines.build_lmdb", str(lst), str(tmp_path / "out"), "--size", "32", "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    reasons = {e["source"]: e["reason"] for e in report["skipped"]}
    assert reasons.keys() == {"img/pipe.png", "img/loop.png"}
    assert "FIFO" in reasons["img/pipe.png"] and "symbolic links" in reasons["img/loop.png"]


@pytest.fixture(scope="module")
def lightcnn9_weights(tmp_path_factory):
    """A randomly initialised lightcnn9 project checkpoint (no classifier)."""
    import torch

    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "lightcnn9.pt"
    save_model_checkpoint(path, get_model("lightcnn9", num_classes=0), "lightcnn9", {"num_classes": 0})
    return path


def test_fifo_does_not_block_extract_embeddings_or_embed(tmp_path, lightcnn9_weights):
    folder = tmp_path / "faces"
    _images(folder, n=1, size=128)
    os.mkfifo(folder / "pipe.jpg")
    out = tmp_path / "emb.npz"
    # one subprocess (a hang must fail the test, not block it): the CLI, then FaceEmbedder.embed on the FIFO
    code = ("import sys\nfrom pipelines import extract_embeddings as x\n"
            "from lightface.embed import FaceEmbedder\nfrom lightface.data.io import ImageReadError\n"
            f"x.main(x.get_args_parser().parse_args(['--weights', {str(lightcnn9_weights)!r}, '-i', {str(folder)!r}, "
            f"'--aligned', '--device', 'cpu', '-o', {str(out)!r}]))\n"
            f"e = FaceEmbedder({str(lightcnn9_weights)!r}, device='cpu')\n"
            f"try:\n    e.embed([{str(folder / 'pipe.jpg')!r}])\nexcept ImageReadError as err:\n"
            "    print('refused:', err); sys.exit(0)\nsys.exit(3)\n")
    r = _run("-c", code)
    assert r.returncode == 0 and "FIFO" in r.stdout, r.stdout + r.stderr
    data = np.load(out)
    assert list(data["paths"]) == ["0.png"] and list(data["failed_paths"]) == ["pipe.jpg"]
    assert "FIFO" in str(data["failed_errors"][0])


def test_read_image_refuses_devices():
    from lightface.data.io import ImageReadError, read_image

    with pytest.raises(ImageReadError, match="device"):
        read_image("/dev/zero")  # never-ending: must not be read


# -- 5.2 concurrent builds ----------------------------------------------------------------
def test_second_build_on_the_same_output_is_refused(tmp_path):
    _images(tmp_path / "src" / "a")
    out = tmp_path / "out"
    # the "first run": a build in progress that holds the lock (another process)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from lightface.data.build import _OutputLock; "
         f"lock = _OutputLock(Path({str(out)!r})); print('locked', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        partial_path(out).mkdir()
        (partial_path(out) / "first-run-data").write_text("x")
        with pytest.raises(DatasetLockedError, match=f"process {holder.pid}"):
            build_lmdb(tmp_path / "src", out, size=32, progress=False)
        assert (partial_path(out) / "first-run-data").exists(), "the second run deleted the first run's build"
        r = _run("-m", "pipelines.build_lmdb", str(tmp_path / "src"), str(out), "--size", "32", "--no-progress")
        assert r.returncode == 1 and "being written by" in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder died (as after kill -9): the lock is free again, and released after the build
    summary = build_lmdb(tmp_path / "src", out, size=32, progress=False, overwrite=True)
    assert summary["written"] == 2 and not lock_path(out).exists()


def test_output_lock_is_exclusive_and_reusable(tmp_path):
    lock = _OutputLock(tmp_path / "ds")
    with pytest.raises(DatasetLockedError):
        _OutputLock(tmp_path / "ds")
    lock.release()
    _OutputLock(tmp_path / "ds").release()
    assert not lock_path(tmp_path / "ds").exists()


# -- 5.7 fatal bad files with --detect -----------------------------------------------------
@pytest.mark.slow
def test_detect_build_skips_tiny_images_and_self_symlinks(tmp_path, shared_data, shared_models):
    from pipelines import build_lmdb as cli

    src = tmp_path / "src" / "person"
    src.mkdir(parents=True)
    face = shared_data / "lfw_identities" / "images" / "Gordon_Brown" / "Gordon_Brown_0001.jpg"
    (src / "face.jpg").write_bytes(face.read_bytes())
    cv2.imwrite(str(src / "tiny.png"), np.full((1, 1, 3), 128, np.uint8))
    os.symlink("self.jpg", src / "self.jpg")
    lst = tmp_path / "list.txt"
    lst.write_text("src/person/face.jpg 0\nsrc/person/tiny.png 0\nsrc/person/self.jpg 0\n")
    for source in (tmp_path / "src", lst):  # was: an exception without the file name / a traceback
        out = tmp_path / f"out_{source.name}"
        rc = cli.cli([str(source), str(out), "--size", "64", "--no-progress", "--detect",
                      str(shared_models / "det_500m.onnx"), "--det-size", "320"])
        assert rc == 0
        report = json.loads((out / "build_report.json").read_text())
        assert report["summary"]["written"] == 1
        problems = {e["source"]: e["reason"] for e in report["skipped"] + report["ignored"]}
        assert "too small" in problems[next(k for k in problems if k.endswith("tiny.png"))]
        assert "symbolic links" in problems[next(k for k in problems if k.endswith("self.jpg"))]


# -- 5.6 output collisions ------------------------------------------------------------------
def _restore_tree(tmp_path):
    """a/x.jpg, b/x.jpg, a/face.jpg, a/face.png, a/face_jpg.bmp: distinct images, colliding stems."""
    imgs = {}
    for k, rel in enumerate(["a/x.jpg", "b/x.jpg", "a/face.jpg", "a/face.png", "a/face_jpg.bmp"]):
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = np.full((24, 24, 3), 20 + 40 * k, np.uint8)
        cv2.imwrite(str(path), img)
        imgs[rel] = int(cv2.imread(str(path))[12, 12, 0])
    return imgs


def test_output_names_are_unique_and_deterministic(tmp_path):
    from lightface.restore.folder import output_names

    _restore_tree(tmp_path)
    a, b = tmp_path / "in" / "a", tmp_path / "in" / "b"
    names = {p.relative_to(tmp_path / "in").as_posix(): n for p, n in output_names([a, b])}
    assert names == {"a/x.jpg": "a/x", "b/x.jpg": "b/x", "a/face.jpg": "a/face_jpg", "a/face.png": "a/face_png",
                     "a/face_jpg.bmp": "a/face_jpg_2"}
    assert output_names([a, b]) == output_names([a, b])
    # one folder: names relative to it (the usual case keeps plain stems)
    assert dict((p.name, n) for p, n in output_names(a))["x.jpg"] == "x"
    # files from two folders, and the same file given twice
    two = output_names([a / "x.jpg", b / "x.jpg", a / "x.jpg"])
    assert [n for _, n in two] == ["a/x", "b/x"]


@pytest.mark.parametrize("pipeline", ["super_resolve", "frontalize"])
def test_restore_pipelines_do_not_overwrite_outputs(tmp_path, pipeline):
    """The CLI path: every input gets its own restored file, holding its own pixels."""
    imgs = _restore_tree(tmp_path)
    if pipeline == "super_resolve":
        from lightface.models.checkpoint import save_model_checkpoint
        from lightface.models.wavelet_srnet import WaveletSRNet

        tiny = dict(scale=2, output_size=16, channels=8, num_blocks=1, head_channels=8)
        weights = save_model_checkpoint(tmp_path / "sr.pth", WaveletSRNet(**tiny), "wavelet_srnet", tiny)
    else:
        from lightface.models import get_model
        from lightface.models.checkpoint import save_model_checkpoint

        kwargs = dict(width=8, noise_dim=4, feature_dim=8)
        weights = save_model_checkpoint(tmp_path / "fr.pth", get_model("tpgan", **kwargs), "tpgan", kwargs)
    out = tmp_path / "out"
    r = _run("-m", f"pipelines.{pipeline}", "-i", str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b"),
             "-o", str(out), "--weights", str(weights), "--aligned", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    summary = summary.get("summary", summary)
    assert len(summary["processed"]) == 5 and not summary["skipped"]
    written = [o for p in summary["processed"] for o in p["outputs"] if "/cropped_faces/" in o]
    assert len(set(written)) == 5
    for p in summary["processed"]:  # each crop holds its own input's (uniform) pixels
        rel = Path(p["input"]).relative_to(tmp_path / "in").as_posix()
        crop = next(o for o in p["outputs"] if "/cropped_faces/" in o)
        assert abs(int(cv2.imread(crop)[5, 5, 0]) - imgs[rel]) <= 2, (rel, crop)


_KILL_AFTER_TWO_INPUTS = """
import os, signal, sys
from lightface.restore import folder
original = folder._Journal.append
calls = [0]
def append_then_die(self, kind, entry):
    original(self, kind, entry)
    calls[0] += 1
    if calls[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash after two inputs were finished
folder._Journal.append = append_then_die
from pipelines._cli import run_cli
from pipelines.super_resolve import get_args_parser, main
sys.exit(run_cli(main, get_args_parser, sys.argv[1:]))
"""


@pytest.mark.slow  # four child processes (each imports torch)
def test_a_killed_super_resolve_run_continues_where_it_stopped(tmp_path):
    from lightface.models.checkpoint import save_model_checkpoint
    from lightface.models.wavelet_srnet import WaveletSRNet

    _restore_tree(tmp_path)
    tiny = dict(scale=2, output_size=16, channels=8, num_blocks=1, head_channels=8)
    weights = save_model_checkpoint(tmp_path / "sr.pth", WaveletSRNet(**tiny), "wavelet_srnet", tiny)
    out = tmp_path / "out"
    argv = ["-i", str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b"), "-o", str(out), "--weights", str(weights),
            "--aligned", "--device", "cpu"]
    killed = _run("-c", _KILL_AFTER_TWO_INPUTS, *argv)
    assert killed.returncode == -9, killed.stderr[-2000:]

    def faces():
        return sorted((out / "restored_faces").rglob("*.png"))

    assert len(faces()) == 2 and not (out / "summary.json").exists()
    first = {p: p.stat().st_mtime_ns for p in faces()}
    again = _run("-m", "pipelines.super_resolve", *argv)
    assert again.returncode == 0, again.stderr
    assert "continuing an interrupted run: 2 of 5 inputs were done" in again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["processed"]) == 5 and len({p["input"] for p in summary["processed"]}) == 5
    assert len(faces()) == 5 and not (out / ".progress.jsonl").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # not redone
    # other settings: the journal of the interrupted run is not used
    killed = _run("-c", _KILL_AFTER_TWO_INPUTS, *argv)
    other = _run("-m", "pipelines.super_resolve", *argv, "--suffix", "sr")
    assert other.returncode == 0 and "other settings" in other.stderr and "continuing" not in other.stderr


# -- 5.8 bad checkpoints ---------------------------------------------------------------------
def _bad_files(tmp_path):
    import argparse

    import torch

    files = {"empty": tmp_path / "empty.pt", "text": tmp_path / "text.pt", "truncated": tmp_path / "trunc.pt",
             "unsafe": tmp_path / "unsafe.pt"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("hello world\n")
    torch.save({"state_dict": {"w": torch.ones(1000)}}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    # an arbitrary object: weights_only loading must refuse it (and never advise weights_only=False)
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, files["unsafe"])
    return files


def test_bad_checkpoint_files_give_clear_errors_and_no_unsafe_advice(tmp_path):
    from lightface.engine.checkpoint import CheckpointLoadError, load_checkpoint

    files = _bad_files(tmp_path)
    expected = {"empty": "empty (0 bytes)", "text": "not a readable PyTorch checkpoint",
                "truncated": "central directory", "unsafe": "Unsupported global"}
    for kind, path in files.items():
        with pytest.raises(CheckpointLoadError) as info:
            load_checkpoint(path)
        msg = str(info.value)
        assert str(path) in msg and expected[kind] in msg, msg
        assert "weights_only=False" not in msg and "will likely succeed" not in msg and "safe_globals" not in msg
        assert "\x1b[" not in msg  # no terminal escapes from torch's message
    with pytest.raises(CheckpointLoadError, match="not a regular file"):
        load_checkpoint(tmp_path)


def test_an_onnx_export_or_another_file_is_not_called_a_checkpoint_of_unsafe_objects(tmp_path):
    """Torch's legacy unpickler fails on any non-zip file with "Weights only load failed", which was reported as a
    checkpoint holding objects other than tensors, with advice to re-save it with torch.save."""
    import warnings

    import torch

    from lightface.engine.checkpoint import CheckpointLoadError, load_checkpoint

    (tmp_path / "garbage.pt").write_text("not a checkpoint at all\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(2, 2), torch.zeros(1, 2), str(tmp_path / "model.onnx"), dynamo=False)
    expected = {"garbage.pt": "it is not a readable PyTorch checkpoint (neither a torch.save zip nor a pickle",
                "model.onnx": "it is an ONNX model, not a PyTorch checkpoint: an .onnx export serves inference only"}
    for name, message in expected.items():
        with pytest.raises(CheckpointLoadError) as info:
            load_checkpoint(tmp_path / name)
        assert message in str(info.value) and "objects other than tensors" not in str(info.value)


def _checkpoints(tmp_path):
    import torch

    from lightface.models import get_model
    from lightface.models.checkpoint import save_model_checkpoint
    from lightface.models.wavelet_srnet import WaveletSRNet

    torch.manual_seed(0)
    sr_kw = dict(scale=2, output_size=16, channels=8, num_blocks=1, head_channels=8)
    tp_kw = dict(width=8, noise_dim=4, feature_dim=8)
    sr = WaveletSRNet(**sr_kw)
    out = {
        "sr": save_model_checkpoint(tmp_path / "sr.pth", sr, "wavelet_srnet", sr_kw),
        "tpgan": save_model_checkpoint(tmp_path / "tp.pth", get_model("tpgan", **tp_kw), "tpgan", tp_kw),
        "lightcnn": save_model_checkpoint(tmp_path / "l9.pth", get_model("lightcnn9", num_classes=0), "lightcnn9",
                                          {"num_classes": 0}),
    }
    with torch.no_grad():
        next(sr.parameters()).view(-1)[0] = float("nan")
    out["sr_nan"] = save_model_checkpoint(tmp_path / "sr_nan.pth", sr, "wavelet_srnet", sr_kw)
    sr_inf = WaveletSRNet(**sr_kw)
    out["sr_inf_ema"] = save_model_checkpoint(
        tmp_path / "sr_inf_ema.pth", sr_inf, "wavelet_srnet", sr_kw,
        ema_state_dict={k: v.clone().fill_(float("inf")) if v.is_floating_point() else v
                        for k, v in sr_inf.state_dict().items()})
    return out


def test_wrong_architecture_checkpoints_are_refused_by_name(tmp_path):
    from lightface.embed import FaceEmbedder
    from lightface.losses.identity import load_identity_network
    from lightface.models.checkpoint import WrongArchitectureError
    from lightface.restore.frontalizer import Frontalizer
    from lightface.restore.super_resolver import SuperResolver

    ck = _checkpoints(tmp_path)
    for kind in ("tpgan", "sr"):  # was: a TP-GAN accepted as a face embedder; an SR model a raw TypeError
        with pytest.raises(WrongArchitectureError, match=r"holds a '(tpgan|wavelet_srnet)' model .*LightCNN"):
            FaceEmbedder(ck[kind], device="cpu")
        with pytest.raises(WrongArchitectureError, match="LightCNN"):
            load_identity_network(ck[kind])
    with pytest.raises(WrongArchitectureError, match="not a wavelet_srnet checkpoint .*'tpgan'"):
        SuperResolver(ck["tpgan"], device="cpu")
    with pytest.raises(WrongArchitectureError, match="not a tpgan checkpoint .*'lightcnn9'"):
        Frontalizer(ck["lightcnn"], device="cpu")
    # a file holding a bare tensor (not a dict): a message, not an AttributeError
    import torch

    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for cls in (SuperResolver, Frontalizer):
        with pytest.raises(ValueError, match="expected a checkpoint dict"):
            cls(tmp_path / "tensor.pt", device="cpu")


def test_non_finite_weights_are_refused(tmp_path):
    import torch

    from lightface.models import get_model
    from lightface.models.checkpoint import NonFiniteWeightsError, build_from_checkpoint, load_weights
    from lightface.restore.super_resolver import SuperResolver

    ck = _checkpoints(tmp_path)
    with pytest.raises(NonFiniteWeightsError, match="NaN or infinite"):
        SuperResolver(ck["sr_nan"], device="cpu")
    SuperResolver(ck["sr_inf_ema"], device="cpu", ema=False)  # the raw weights are fine
    with pytest.raises(NonFiniteWeightsError, match="EMA weight"):
        SuperResolver(ck["sr_inf_ema"], device="cpu")
    model = get_model("wavelet_srnet", scale=2, output_size=16, channels=8, num_blocks=1, head_channels=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteWeightsError):
        load_weights(model, ck["sr_nan"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a refused load changed the model"
    with pytest.raises(NonFiniteWeightsError):
        build_from_checkpoint(ck["sr_nan"])


# -- 5.11 stray temporary files after a killed save; full disk --------------------------------
def test_killed_checkpoint_saves_do_not_accumulate_temporary_files(tmp_path):
    target = tmp_path / "last.pt"
    # a kill at the worst moment (after the data, before the rename), three times (one torch import, three forks)
    code = ("import os, signal, torch; from lightface.engine import checkpoint as c\n"
            "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
            "for _ in range(3):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            f"        c.save_atomic({{'w': torch.zeros(100000)}}, {str(target)!r}); os._exit(0)\n"
            "    print(os.waitpid(pid, 0)[1] & 0x7f)\n")
    r = _run("-c", code)
    assert r.stdout.split() == ["9", "9", "9"], r.stdout + r.stderr  # each save was SIGKILLed
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.tmp"]  # one reused file, not three
    (tmp_path / ".last.pt.k3j4h5g6.tmp").write_bytes(b"x" * 100)  # left by an older lightface
    import torch

    from lightface.engine.checkpoint import load_checkpoint, save_atomic

    save_atomic({"w": torch.ones(3)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.equal(load_checkpoint(target)["w"], torch.ones(3))


def test_save_atomic_leaves_a_concurrent_save_alone(tmp_path):
    import fcntl

    import torch

    from lightface.engine.checkpoint import load_checkpoint, save_atomic

    busy = tmp_path / ".ck.pt.tmp"
    fd = os.open(busy, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process is saving ck.pt right now
    try:
        save_atomic({"w": torch.ones(2)}, tmp_path / "ck.pt")
        assert busy.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".ck.pt.tmp", "ck.pt"]
        assert torch.equal(load_checkpoint(tmp_path / "ck.pt")["w"], torch.ones(2))
    finally:
        os.close(fd)


def test_full_disk_is_said_plainly(tmp_path, monkeypatch):
    import errno

    import torch

    from lightface.engine import checkpoint as ck

    target = ck.save_atomic({"w": torch.zeros(4)}, tmp_path / "last.pt")

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"no space left on device while saving checkpoint .*last\.pt.*needs about "
                                      r"3\.8 MB.*free") as info:
        ck.save_atomic({"w": torch.zeros(1000000)}, target)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert torch.equal(ck.load_checkpoint(target)["w"], torch.zeros(4))  # the previous checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_full_disk_during_torch_save_is_said_plainly(tmp_path, monkeypatch):
    """torch.save's archive writer does not pass the file's ENOSPC on: it raises "RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos N vs M" (the OSError only as its context), which was shown as it is."""
    import errno
    import io

    import torch

    from lightface.engine import checkpoint as ck

    target = ck.save_atomic({"w": torch.zeros(4)}, tmp_path / "last.pt")
    real_save = torch.save

    class _Full(io.RawIOBase):  # the disk fills up after 1000 bytes, as a real file's write does
        def __init__(self, f):
            self.f, self.room = f, 1000

        def writable(self):
            return True

        def write(self, data):
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return self.f.write(data)

    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, _Full(f), *a, **k))
    with pytest.raises(OSError, match=r"no space left on device while saving checkpoint .*last\.pt.*needs about "
                                      r"3\.8 MB.*free") as info:
        ck.save_atomic({"w": torch.zeros(1000000)}, target)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert torch.equal(ck.load_checkpoint(target)["w"], torch.zeros(4))


# -- 5.10 batch sizes --------------------------------------------------------------------------
_REQUIRED = {
    "build_lmdb": ["src", "out"],
    "evaluate": ["--weights", "w", "--pairs", "p", "--images", "i"],
    "extract_embeddings": ["--weights", "w", "-i", "x", "-o", "y"],
    "super_resolve": ["-o", "y", "--weights", "w", "-i", "x"],
    "frontalize": ["-o", "y", "--weights", "w", "-i", "x"],
    "relabel": ["--data", "d", "--weights", "w", "--out", "o"],
}


@pytest.mark.parametrize("name", sorted(_REQUIRED))
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_cli_batch_size_must_be_positive(name, value, capsys):
    import importlib

    parser = importlib.import_module(f"pipelines.{name}").get_args_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(_REQUIRED[name] + ["--batch-size", value])
    assert info.value.code == 2
    assert "--batch-size: must be a positive integer" in capsys.readouterr().err
    assert parser.parse_args(_REQUIRED[name] + ["--batch-size", "3"]).batch_size == 3


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["framing", "frontal", "frontal_quality", "ops", "small_faces", "sr", "sr_quality"])
def test_benchmarks_refuse_a_device_this_machine_lacks_on_the_command_line(name, capsys):
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    for device, says in (("cuda", "CUDA is not available; pass --device cpu"), ("gpu", "use auto, cpu, cuda or cuda:N")):
        with pytest.raises(SystemExit) as info:  # before any model, data or timing
            if hasattr(module, "get_args_parser"):
                module.get_args_parser().parse_args(["--device", device])
            else:
                module.main(["--device", device])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "argument --device: " in err and says in err, err


def test_library_batch_sizes_are_checked(tmp_path):
    from lightface.data.build import write_lmdb
    from lightface.restore.frontalizer import Frontalizer
    from lightface.restore.super_resolver import SuperResolver

    _images(tmp_path / "src" / "a")
    for bad in (0, -1):
        with pytest.raises(ValueError, match="--batch-size"):  # was: ZeroDivisionError
            build_lmdb(tmp_path / "src", tmp_path / "out", size=32, batch_size=bad, progress=False)
        with pytest.raises(ValueError, match="--batch-size"):
            write_lmdb(tmp_path / "w", [{"image": np.zeros((8, 8), np.uint8), "label": 0}], ["a"], batch_size=bad)
    with pytest.raises(ValueError, match="--workers"):
        build_lmdb(tmp_path / "src", tmp_path / "out", size=32, workers=-1, progress=False)
    assert not (tmp_path / "out").exists() and not partial_path(tmp_path / "out").exists()

    from lightface.models import get_model
    from lightface.models.wavelet_srnet import WaveletSRNet

    sr = SuperResolver(WaveletSRNet(scale=2, output_size=16, channels=8, num_blocks=1, head_channels=8), device="cpu")
    fr = Frontalizer(get_model("tpgan", width=8, noise_dim=4, feature_dim=8), device="cpu")
    face = np.zeros((16, 16, 3), np.uint8)
    for call in (lambda: sr.upscale_faces([face], batch_size=0), lambda: sr.restore(face, batch_size=0),
                 lambda: fr.frontalize_faces([face], batch_size=0), lambda: fr.frontalize(face, batch_size=-2)):
        with pytest.raises(ValueError, match="--batch-size"):
            call()


def test_lmdb_full_disk_is_said_plainly(tmp_path, monkeypatch):
    import errno

    import lmdb

    from lightface.data import lmdb_format

    _images(tmp_path / "src" / "a", n=3)

    def full(self, items, delete):
        raise lmdb.DiskError("mdb_txn_commit: No space left on device")

    monkeypatch.setattr(lmdb_format.LMDBWriter, "_commit", full)
    with pytest.raises(OSError, match=r"no space left on device while writing the LMDB at .*out\.partial.*MB free") as e:
        build_lmdb(tmp_path / "src", tmp_path / "out", size=32, progress=False)
    assert e.value.errno == errno.ENOSPC
    assert not lock_path(tmp_path / "out").exists()  # the lock is released on the way out
    from pipelines import build_lmdb as cli

    assert cli.cli([str(tmp_path / "src"), str(tmp_path / "out"), "--size", "32", "--no-progress"]) == 1


# -- 5.11 smaller defects ----------------------------------------------------------------------
def test_resume_of_a_complete_build_has_nothing_to_do(tmp_path, capsys, caplog):
    from pipelines import build_lmdb as cli

    _images(tmp_path / "src" / "a")
    argv = [str(tmp_path / "src"), str(tmp_path / "out"), "--size", "32", "--no-progress"]
    assert cli.cli(argv) == 0
    capsys.readouterr()
    assert cli.cli(argv + ["--resume"]) == 0  # was: "already holds a complete dataset" and exit 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["nothing_to_do"] and summary["written"] == 2
    # other arguments than the finished build: still refused, it is not the build being resumed
    assert cli.cli(argv[:-3] + ["--size", "40", "--no-progress", "--resume"]) == 1
    # other images under the same source path and options: refused (by the stored fingerprint; a dataset
    # built before it was stored, by its item count)
    _images(tmp_path / "src" / "b", n=1, seed=1)
    capsys.readouterr()
    assert cli.cli(argv + ["--resume"]) == 1
    assert "built from other images" in caplog.text
    release_readonly(tmp_path / "out")
    env = lmdb.open(str(tmp_path / "out"), subdir=True)
    with env.begin(write=True) as txn:
        meta = json.loads(txn.get(META_KEY))
        del meta["build"]["fingerprint"]
        txn.put(META_KEY, json.dumps(meta).encode())
    env.close()
    assert cli.cli(argv + ["--resume"]) == 1
    shutil.rmtree(tmp_path / "src" / "b")
    capsys.readouterr()
    assert cli.cli(argv + ["--resume"]) == 0 and json.loads(capsys.readouterr().out)["nothing_to_do"]


def test_build_never_replaces_a_folder_that_is_not_a_dataset(tmp_path):
    _images(tmp_path / "src" / "a")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    for out in (tmp_path / "run", tmp_path / "src"):  # a run folder; the source folder itself
        with pytest.raises(FileExistsError, match="not a lightface dataset"):
            build_lmdb(tmp_path / "src", out, size=32, progress=False, overwrite=True)
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me" and (tmp_path / "src" / "a" / "0.png").exists()


def test_relabel_refuses_out_equal_to_data(tmp_path):
    from lightface.data.build import write_lmdb
    from lightface.apps.relabel import relabel_lmdb

    data = tmp_path / "data"
    write_lmdb(data, [{"image": np.zeros((8, 8), np.uint8), "label": 0}], ["a"])
    os.symlink(data, tmp_path / "alias")
    for out in (data, tmp_path / "alias", tmp_path / "x" / ".." / "data", tmp_path):
        with pytest.raises(ValueError, match="--out .* --data"):
            relabel_lmdb(data, tmp_path / "missing.pt", out, overwrite=True, progress=False)
    assert (data / "data.mdb").exists()


def test_build_lmdb_cfp_fiducials_option(tmp_path, shared_data):
    """--fiducials gives the same dataset as the old python -c write_cfp_landmarks + --landmarks recipe."""
    import shutil

    from lightface.data import LMDBDataset
    from lightface.data.pose_pairs import write_cfp_landmarks
    from pipelines import build_lmdb as cli

    cfp = tmp_path / "cfp"
    for part in ("Images", "Fiducials"):
        for ident in ("451", "452"):
            shutil.copytree(shared_data / "cfp" / part / ident, cfp / part / ident)
    os.remove(cfp / "Fiducials" / "452" / "profile" / "04.txt")  # an image without fiducials is skipped
    common = ["--size", "64", "--template", "lightcnn", "--no-progress"]
    assert cli.cli([str(cfp / "Images"), str(tmp_path / "fid"), "--fiducials", str(cfp / "Fiducials")] + common) == 0
    write_cfp_landmarks(cfp, tmp_path / "5pt.txt")
    assert cli.cli([str(cfp / "Images"), str(tmp_path / "lm"), "--landmarks", str(tmp_path / "5pt.txt")] + common) == 0
    a, b = LMDBDataset(tmp_path / "fid"), LMDBDataset(tmp_path / "lm")
    assert len(a) == len(b) == 27 and a.classes == ["451", "452"]
    assert sorted({a.attributes(i)["pose"] for i in range(len(a))}) == ["frontal", "profile"]
    for i in range(len(a)):
        ra, rb = a.record(i), b.record(i)
        assert ra["label"] == rb["label"] and ra["attributes"] == rb["attributes"]
        np.testing.assert_allclose(ra["landmarks"], rb["landmarks"], atol=0.02)  # the file rounds to 0.01 px
        pa, pb = (np.frombuffer(r["encoded"], np.uint8).astype(int) for r in (ra, rb))
        assert np.abs(pa - pb).mean() < 0.5  # the same crops, up to that rounding
    report = json.loads((tmp_path / "fid" / "build_report.json").read_text())
    assert [s["source"] for s in report["skipped"]] == ["452/profile/04.jpg"]
    assert cli.cli([str(cfp / "Images"), str(tmp_path / "x"), "--fiducials", str(cfp / "Images")] + common) == 1


def test_a_malformed_cfp_fiducial_file_skips_its_image_with_the_file_and_reason(cfp_with_a_bad_fiducial_file, tmp_path):
    """The build went on but reported the image as having no fiducial file, the true reason only in a log line."""
    root, bad = cfp_with_a_bad_fiducial_file
    s = build_lmdb(root / "cfp_train" / "Images", tmp_path / "o.lmdb", size=32,
                   fiducials=root / "cfp_train" / "Fiducials", progress=False)
    assert s["written"] == 13 and s["skipped"] == 1
    fid = root / "cfp_train" / "Fiducials" / bad.replace(".jpg", ".txt")
    assert json.loads((tmp_path / "o.lmdb" / "build_report.json").read_text())["skipped"] == [
        {"source": bad, "reason": f"unusable CFP fiducials ({fid}: CFP fiducials must be (30, 2), got (29, 2))"}]


def test_a_failed_overwrite_leaves_the_complete_dataset_and_its_report_as_they_were(tmp_path, caplog):
    """An --overwrite build that writes nothing kept the dataset but replaced its build_report.json with its own."""
    from lightface.data.build import failed_report_path

    _images(tmp_path / "src" / "a")
    out = tmp_path / "out"
    build_lmdb(tmp_path / "src", out, size=32, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.jpg").write_bytes(b"")
    with caplog.at_level("ERROR", logger="lightface.data.build"):
        s = build_lmdb(tmp_path / "bad", out, size=32, overwrite=True, progress=False)
    assert not s["ok"] and s["report"] == str(failed_report_path(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    failed = json.loads(failed_report_path(out).read_text())
    assert failed["summary"]["written"] == 0 and failed["skipped"][0]["source"] == "a/x.jpg"
    assert f"see {failed_report_path(out)} for the reasons); the complete dataset {out} is kept" in caplog.text
    assert build_lmdb(tmp_path / "src", out, size=32, overwrite=True, progress=False)["ok"]
    assert not failed_report_path(out).exists()  # it described no longer what is beside it


# -- 5.9 one-line messages, non-zero exit when nothing was produced -----------------------------
@pytest.mark.parametrize("name,argv,message", [
    ("extract_embeddings", ["-i", "{tmp}/missing", "-o", "{tmp}/e.npz", "--weights", "{tmp}/w.pt"], "not found"),
    ("evaluate", ["--weights", "{tmp}/w.pt", "--pairs", "{tmp}/pairs.txt", "--images", "{tmp}"], "pairs.txt"),
    ("super_resolve", ["-i", "{tmp}/in", "-o", "{tmp}/o", "--weights", "{tmp}/w.pt", "--aligned"], "w.pt"),
    ("frontalize", ["-i", "{tmp}/in", "-o", "{tmp}/o", "--weights", "{tmp}/w.pt", "--aligned"], "w.pt"),
    # a wrong input path is reported before the shipped model and a detector load (or a detector pack downloads)
    ("super_resolve", ["-i", "{tmp}/in", "{tmp}/missing.jpg", "-o", "{tmp}/o"], "input not found"),
    ("super_resolve", ["-i", "{tmp}/in", "-o", "{tmp}/o", "--evaluate", "{tmp}/hr"], "input not found"),
    ("frontalize", ["-i", "{tmp}/missing.jpg", "-o", "{tmp}/o"], "input not found"),
])
def test_cli_errors_are_one_line(tmp_path, name, argv, message):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "face.png"), np.full((32, 32, 3), 128, np.uint8))
    r = _run("-m", f"pipelines.{name}", *[a.format(tmp=tmp_path) for a in argv], "--device", "cpu")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and f"{name}: error:" in r.stderr and message in r.stderr, r.stderr
    assert "face detector" not in r.stderr and "shipped weights" not in r.stderr, r.stderr


def test_cli_yaml_typo_is_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("batch_sise: 8\n")
    r = _run("-m", "pipelines.extract_embeddings", "--config", str(tmp_path / "c.yaml"), "-i", str(tmp_path),
             "-o", str(tmp_path / "e.npz"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "batch_sise" in r.stderr and "batch_size" in r.stderr, r.stderr  # the typo and the closest flag


def test_nothing_produced_is_an_error(tmp_path, lightcnn9_weights, capsys):
    from pipelines import evaluate, extract_embeddings, frontalize, super_resolve
    from pipelines._cli import run_cli

    bad = tmp_path / "bad"
    bad.mkdir()
    for n in ("a", "b"):
        (bad / f"{n}.jpg").write_bytes(b"not an image")
    # extract_embeddings: 0 of 2 embedded (was: exit 0)
    argv = ["--weights", str(lightcnn9_weights), "-i", str(bad), "--aligned", "--device", "cpu",
            "-o", str(tmp_path / "e.npz")]
    assert run_cli(extract_embeddings.main, extract_embeddings.get_args_parser, argv) == 1
    assert "none of the 2 images could be embedded" in capsys.readouterr().err
    assert list(np.load(tmp_path / "e.npz")["failed_paths"]) == ["a.jpg", "b.jpg"]  # the failures are still listed
    # evaluate: every image of every pair failed
    (tmp_path / "pairs.txt").write_text("1 a.jpg b.jpg\n0 a.jpg b.jpg\n")
    argv = ["--weights", str(lightcnn9_weights), "--pairs", str(tmp_path / "pairs.txt"), "--images", str(bad),
            "--device", "cpu", "--out", str(tmp_path / "r.json")]
    assert run_cli(evaluate.main, evaluate.get_args_parser, argv) == 1
    assert "no pair could be scored: 2 of 2 images failed" in capsys.readouterr().err
    # super_resolve / frontalize: every input skipped (was: exit 0)
    ck = _checkpoints(tmp_path)
    for mod, weights in ((super_resolve, ck["sr"]), (frontalize, ck["tpgan"])):
        argv = ["-i", str(bad), "-o", str(tmp_path / mod.__name__), "--weights", str(weights), "--aligned",
                "--device", "cpu"]
        assert run_cli(mod.main, mod.get_args_parser, argv) == 1
        err = capsys.readouterr().err
        assert "nothing was restored: all 2 input(s) were skipped" in err and "a.jpg" in err, err
