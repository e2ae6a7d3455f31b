"""Shared test fixtures: the real face data in ../shared, devices, determinism."""
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTFACE_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (skips the test when absent)."""
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """``../shared/models`` (skips the test when absent)."""
    return _need(SHARED_MODELS)


def lfw_fold2_sample(shared_data: Path, out: Path, people: int = 0, pair_step: int = 1) -> Path:
    """A data folder ``out`` whose ``lfw_train/`` is LFW fold 2 cut down: its first ``people`` people
    (0: all 419) and every ``pair_step``-th of the 600 ``pairs_dev.txt`` pairs, the real photos and
    landmarks linked. The development protocols run on it at a fraction of their compute."""
    src, lfw = shared_data / "lfw_train", out / "lfw_train"
    lfw.mkdir(parents=True)
    for name in ("images", "landmarks_5pt.txt"):
        (lfw / name).symlink_to(src / name)
    rows = (src / "people_folds.txt").read_text(encoding="utf-8").splitlines()
    fold2 = [r for r in rows if r and not r.startswith("#") and r.split("\t")[3].strip() == "2"]
    (lfw / "people_folds.txt").write_text("\n".join(fold2[: people or None]) + "\n", encoding="utf-8")
    pairs = [r for r in (src / "pairs_dev.txt").read_text(encoding="utf-8").splitlines() if r and not r.startswith("#")]
    (lfw / "pairs_dev.txt").write_text("\n".join(pairs[::pair_step]) + "\n", encoding="utf-8")
    return out


@pytest.fixture
def cfp_with_a_bad_fiducial_file(shared_data, tmp_path):
    """``(root, rel)``: a ../shared/data look-alike in ``tmp_path/data`` with CFP id 001 of ``cfp_train/`` and 451 of
    ``cfp/`` (photos linked, fiducial files copied), ``cfp_train/names.txt`` and an LFW fold table, where the fiducial
    file of the image ``cfp_train/Images/<rel>`` lost its last line (29 points instead of 30)."""
    import shutil

    root = tmp_path / "data"
    for sub, ident in (("cfp_train", "001"), ("cfp", "451")):
        (root / sub / "Images").mkdir(parents=True)
        (root / sub / "Images" / ident).symlink_to(shared_data / sub / "Images" / ident)
        shutil.copytree(shared_data / sub / "Fiducials" / ident, root / sub / "Fiducials" / ident)
    shutil.copy(shared_data / "cfp_train" / "names.txt", root / "cfp_train" / "names.txt")
    (root / "lfw_train").mkdir()
    (root / "lfw_train" / "people_folds.txt").write_text("Nobody\t2\t2\t3\n")
    rel = "001/frontal/02.jpg"
    fid = root / "cfp_train" / "Fiducials" / rel.replace(".jpg", ".txt")
    fid.write_text("\n".join(fid.read_text().splitlines()[:29]) + "\n")
    return root, rel


@pytest.fixture
def disk_full_at_sync(monkeypatch):
    """``disk_full_at_sync(name)``: from then on, syncing the file written as ``name`` fails as a full disk
    does (``ENOSPC``, the moment an atomic write learns it: ``lightface.utils.atomic_write`` writes
    ``.NAME.PID.tmp`` and syncs it before renaming it over ``name``); every other file syncs as usual.
    A report written in place, without that temporary file, is not affected, so a test can tell them apart."""
    import errno

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name the file being synced")
    real = os.fsync

    def arm(name: str) -> None:
        def fsync(fd):
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    return arm
