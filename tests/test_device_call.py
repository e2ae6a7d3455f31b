"""What one call of the device tool sends and sends back, checked here before a lent GPU is spent on it.

The device tool carries the working tree (tracked files and untracked ones git does not ignore)
plus the carried paths, at most 64 MiB, and returns at most 8 files of 16 MiB from ``$OUT``.
These tests run the device pipelines on the CPU (``pipelines.device_train``,
``pipelines.device_frontalization``, ``pipelines.device_bundle``) with tiny data, and build their
own wheels and git checkouts in ``tmp_path``.
"""
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcnn_tiny import ARCH as TINY  # tests/lightcnn_tiny.py
from test_frontalization import pose_lmdb  # noqa: F401  (the fixture: a tiny pose LMDB)
from test_relabel_merge import A_ROWS, B_ROWS, sources  # noqa: F401  (the fixture: ORL LMDBs a, b + dlib rows)


def _cli(module, *argv):
    from pipelines._cli import parse_with_config

    mod = __import__(f"pipelines.{module}", fromlist=["main"])
    return mod.main(parse_with_config(mod.get_args_parser(), [str(x) for x in argv]))


def _run_cli(module, *argv):
    from pipelines._cli import run_cli

    mod = __import__(f"pipelines.{module}", fromlist=["main"])
    return run_cli(mod.main, mod.get_args_parser, [str(x) for x in argv])


# -- what comes back ----------------------------------------------------------------------------------------
def test_a_generator_with_a_tensor_over_a_returned_file_comes_back_in_parts_that_collect_joins(tmp_path):
    """At width 32 the TP-GAN's fc.filter.weight (512 x 16384) alone is 16 MiB in float16: its rows are cut
    across parts, every part fits a returned file, and --collect joins the generator exactly."""
    from lightface.models import get_model
    from lightface.models.checkpoint import read_model_checkpoint
    from pipelines.device_train import PART_BYTES, export_parts

    kwargs = {"width": 32, "feature_dim": 256, "noise_dim": 100}
    model = get_model("tpgan", **kwargs)
    assert model.state_dict()["fc.filter.weight"].numel() * 2 >= 16 << 20
    out = tmp_path / "OUT"
    out.mkdir()
    parts = export_parts(read_model_checkpoint(model.state_dict()), out, "generator", drop=())
    assert len(parts) == 2  # 30 MiB in float16
    assert all((out / p).stat().st_size <= 16 << 20 for p in parts)
    assert all((out / p).stat().st_size <= PART_BYTES + (64 << 10) for p in parts)
    (out / "summary.json").write_text(json.dumps({"parts": parts, "run": {"step": 1}, "error": None,
                                                  "network": {"arch": "tpgan", "model_kwargs": kwargs}}))
    joined = _cli("device_frontalization", "--collect", out, "--checkpoint", tmp_path / "joined.pt")
    state = read_model_checkpoint(joined["checkpoint"]).state_dict
    ref = model.state_dict()
    assert set(state) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(state[k], v.half().float() if v.is_floating_point() else v)


def test_a_generator_that_would_not_come_back_is_refused_before_training(pose_lmdb, tmp_path, capsys):
    """Width 64 (the paper's, 84.9 MiB in float16) needs more than the 8 files a call returns: refused before
    any training, with summary.json saying why."""
    out, work = tmp_path / "OUT", tmp_path / "work"
    rc = _run_cli("device_frontalization", "--out", out, "--work", work, "--device", "cpu", "--minutes", 5, "--",
                  "--data", pose_lmdb, "--width", 64, "--batch-size", 2, "--workers", 0, "--steps", 1)
    err = capsys.readouterr().err
    assert rc == 1 and "would not come back" in err and "--width" in err
    assert not (work / "run").exists()  # nothing trained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == [] and "would not come back" in summary["error"]
    assert _run_cli("device_frontalization", "--collect", out, "--checkpoint", tmp_path / "x.pt") == 1
    assert "returned no network" in capsys.readouterr().err


def test_a_budget_that_leaves_no_training_time_is_refused(tmp_path, capsys):
    """--minutes 0.5 less the default --reserve-seconds 40 leaves nothing: no training past the budget."""
    out = tmp_path / "OUT"
    rc = _run_cli("device_frontalization", "--out", out, "--work", tmp_path / "work", "--device", "cpu",
                  "--minutes", 0.5, "--", "--width", 8)
    assert rc == 1 and "nothing trained; give more --minutes" in capsys.readouterr().err
    assert not (tmp_path / "work" / "run").exists()
    assert "nothing trained" in json.loads((out / "summary.json").read_text())["error"]


def test_a_run_that_breaks_returns_its_summary_with_or_without_a_checkpoint(sources, tmp_path, capsys):
    """A NaN before the first checkpoint still sends summary.json back (no parts) and the command ends (its
    DataLoader worker with it); after one, the returned backbone's step is recorded. The advice names
    device_train's own flags."""
    a, b = sources
    bundle, work = tmp_path / "bundle", tmp_path / "work"
    _cli("device_bundle", "--data", a, b, "--out", bundle, "--no-wheels", "--no-progress")
    argv = ["--bundle", bundle, "--work", work, "--device", "cpu", "--arch", TINY, "--batch-size", 8,
            "--amp", "none", "--epochs", 3, "--lr", 1e8, "--minutes", 5, "--reserve-seconds", 0]
    entry = ("import sys; sys.path.insert(0, 'tests'); import lightcnn_tiny; from pipelines._cli import run_cli; "
             "from pipelines.device_train import main, get_args_parser; sys.exit(run_cli(main, get_args_parser))")
    done = subprocess.run([sys.executable, "-c", entry, *map(str, argv), "--workers", "1", "--out",
                           str(tmp_path / "OUT1")], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=600)
    err = done.stderr
    assert done.returncode == 1, err[-3000:]
    assert "NaN or infinite" in err and "Lower --lr" in err and "--clip-grad" not in err and "--resume" not in err
    summary = json.loads((tmp_path / "OUT1" / "summary.json").read_text())
    assert summary["parts"] == [] and summary["stage"] == "run" and "NaN or infinite" in summary["error"]
    assert "--clip-grad" not in summary["error"]

    assert _run_cli("device_train", *argv, "--workers", 0, "--out", tmp_path / "OUT2", "--save-every", 1) == 1
    assert "holds the backbone of its last checkpoint" in capsys.readouterr().err
    summary = json.loads((tmp_path / "OUT2" / "summary.json").read_text())
    assert summary["parts"] and summary["exported"] == "last.pt" and summary["run"]["step"] >= 1


# -- what travels -------------------------------------------------------------------------------------------
def _git(repo, *argv):
    subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)


def test_what_travels_counts_untracked_files_and_carried_paths_once(tmp_path):
    from pipelines.device_bundle import tracked_bytes

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("/.device/\n")
    (repo / "code.py").write_bytes(b"x" * 1000)
    _git(repo, "add", ".gitignore", "code.py")
    (repo / "notes.bin").write_bytes(b"n" * 5000)  # untracked, not ignored: the device tool sends it
    (repo / ".device").mkdir()
    (repo / ".device" / "bundle.bin").write_bytes(b"b" * 7000)  # ignored: travels only when carried
    tree = 1000 + 5000 + len("/.device/\n")
    assert tracked_bytes(repo) == tree

    from pipelines.device_bundle import carried_bytes

    assert carried_bytes([repo / ".device"], repo) == 7000
    assert carried_bytes([repo / "notes.bin"], repo) == 0  # already counted with the tree


def test_sizing_a_call_outside_a_git_checkout_says_so(tmp_path):
    from pipelines.device_bundle import tracked_bytes

    with pytest.raises(RuntimeError, match="is not a git checkout"):
        tracked_bytes(tmp_path)


# -- the bundle and its wheels ------------------------------------------------------------------------------
def _wheel(folder, name, version, body):
    """A pure-Python wheel ``NAME-VERSION-py3-none-any.whl`` whose module ``NAME`` holds ``body``."""
    files = {f"{name}/__init__.py": body.encode(),
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},"
                     f"{len(v)}\n" for k, v in files.items()) + f"{name}-{version}.dist-info/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in {**files, f"{name}-{version}.dist-info/RECORD": record.encode()}.items():
            z.writestr(k, v)
    return path


def test_wheels_installed_again_replace_the_earlier_versions_and_two_versions_are_refused(tmp_path, monkeypatch):
    from pipelines.device_train import install_wheels

    monkeypatch.setattr(sys, "path", list(sys.path))  # install_wheels puts the site first on the path
    monkeypatch.setenv("PYTHONPATH", "")
    (tmp_path / "w1").mkdir()
    (tmp_path / "w2").mkdir()
    old, new = _wheel(tmp_path / "w1", "lfdummy", "1.0", "V = 1\n"), _wheel(tmp_path / "w2", "lfdummy", "2.0", "V = 2\n")
    site = tmp_path / "site"
    assert install_wheels([old], site) == [old.name]
    assert install_wheels([new], site) == [new.name]  # a later call on the same machine, a newer bundle
    assert (site / "lfdummy" / "__init__.py").read_text() == "V = 2\n"
    with pytest.raises(RuntimeError, match="two versions of one package.*lfdummy-1.0.*lfdummy-2.0"):
        install_wheels([old, new], tmp_path / "site2")
    broken = tmp_path / "w1" / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="pip could not install"):
        install_wheels([broken], tmp_path / "site3")


def test_a_bundle_made_again_replaces_its_corpus_and_keeps_one_version_of_each_wheel(sources, tmp_path):
    a, b = sources
    bundle = tmp_path / "bundle"
    _cli("device_bundle", "--data", a, b, "--out", bundle, "--no-wheels", "--no-progress")
    wheels = bundle / "wheels"
    wheels.mkdir()
    kept = _wheel(wheels, "lfdummy", "1.0", "")
    manifest = _cli("device_bundle", "--data", a, "--out", bundle, "--no-wheels", "--no-progress")
    assert sorted(p.name for p in (bundle / "corpus").iterdir() if p.name.startswith("b.")) == []  # b's left
    assert manifest["wheels"] == [kept.name]  # --no-wheels keeps the wheels there, and says so
    _wheel(wheels, "lfdummy", "2.0", "")  # an earlier bundle's version beside the new one
    with pytest.raises(RuntimeError, match="two versions of one package"):
        _cli("device_bundle", "--data", a, "--out", bundle, "--no-wheels", "--no-progress")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a device bundle"):
        _cli("device_bundle", "--data", a, "--out", other, "--no-wheels", "--no-progress")
    assert (other / "keep.txt").is_file()


def test_the_bundle_carries_what_its_wheels_need():
    """Every requirement of a carried wheel on the device's Python is carried too, or is in the device's
    image at a version nobody pins (typing-extensions is carried: pydantic needs >= 4.16)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from pipelines.device_bundle import DEVICE_IMAGE, DEVICE_PYTHON, DEVICE_WHEELS

    carried = {canonicalize_name(n) for n in DEVICE_WHEELS}
    env = {"python_version": DEVICE_PYTHON, "python_full_version": f"{DEVICE_PYTHON}.0", "sys_platform": "linux",
           "platform_system": "Linux", "extra": ""}
    needs = {canonicalize_name(r.name) for name in DEVICE_WHEELS for r in map(Requirement, metadata.requires(name) or [])
             if r.marker is None or r.marker.evaluate(env)}
    assert "typing-extensions" in needs
    assert needs <= carried | {canonicalize_name(n) for n in DEVICE_IMAGE}


def test_a_bundle_made_again_is_unpacked_again_on_the_same_machine(sources, tmp_path):
    """A later call on the same machine (same --work) with a re-made bundle of the same source names rebuilds
    the LMDBs and their teacher rows; the same bundle again keeps them."""
    from lightface.data import LMDBDataset
    from lightface.distill.teacher import load_teacher_embeddings
    from pipelines.device_train import unpack

    a, b = sources
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copytree(b, swapped / "a.lmdb")
    shutil.copytree(a, swapped / "b.lmdb")
    first = _cli("device_bundle", "--data", a, b, "--out", tmp_path / "bundle1", "--no-wheels", "--no-progress")
    second = _cli("device_bundle", "--data", swapped / "a.lmdb", swapped / "b.lmdb", "--out", tmp_path / "bundle2",
                  "--no-wheels", "--no-progress")
    work = tmp_path / "work"
    unpack(tmp_path / "bundle1", first, work, 0)
    assert len(LMDBDataset(work / "a.lmdb")) == len(A_ROWS)
    unpack(tmp_path / "bundle2", second, work, 0)
    assert len(LMDBDataset(work / "a.lmdb")) == len(B_ROWS)
    np.testing.assert_allclose(load_teacher_embeddings(work / "a.lmdb"), load_teacher_embeddings(b), atol=1e-3)
    mtime = (work / "a.lmdb" / "data.mdb").stat().st_mtime_ns
    unpack(tmp_path / "bundle2", second, work, 0)
    assert (work / "a.lmdb" / "data.mdb").stat().st_mtime_ns == mtime  # the same bundle: nothing rebuilt
