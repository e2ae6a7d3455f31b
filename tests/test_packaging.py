"""What a user installs: the sdist holds everything the op library needs to compile (sources and the
headers they include), the shipped weights and the YuNet detector, and the wheel tag setup.py asks
for matches the stable ABI torch compiles the extension with (so Python 3.9 can build and install it).
A wheel requires the torch release its op library was compiled against, and the op library is not
loaded next to another one; wheel and sdist carry the licences."""
import email
import importlib.util
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import setuptools
import torch
from torch.utils import cpp_extension

from lightface.ops import _library

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "lightface" / "weights"

# what a checkout may hold that is not the project's source (a copy of the tree skips it)
NOT_SOURCE = shutil.ignore_patterns(".*", "build", "dist", "runs", "demo_output", "*.egg-info", "__pycache__",
                                    "*.so", "*.pyc")
# the torch release this environment builds lightface._C against (2.13.0+cpu -> 2.13.0)
TORCH_PIN = f"torch=={str(torch.__version__).split('+')[0]}"
LICENCES = ["LICENSE", "lightface/weights/LICENSE-yunet.txt"]


def _copy_of_checkout(tmp_path: Path) -> Path:
    """A copy of the checkout's source (builds in it write nothing into the checkout)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    return src


def _setup(src: Path, *command: str) -> None:
    subprocess.run([sys.executable, "setup.py", "-q", *command], cwd=src, check=True, capture_output=True,
                   text=True, timeout=300)


def _sdist(tmp_path: Path) -> Path:
    """Build the sdist of a copy of the checkout -> the archive."""
    _setup(_copy_of_checkout(tmp_path), "sdist", "--dist-dir", str(tmp_path / "dist"))
    (archive,) = (tmp_path / "dist").glob("lightface-*.tar.gz")
    return archive


def _requires(metadata: str) -> dict:
    """Core metadata text -> {requirement name: requirement} of its unconditional Requires-Dist."""
    reqs = [r for r in email.message_from_string(metadata).get_all("Requires-Dist", []) if ";" not in r]
    return {r.split("=")[0].split(">")[0].split("<")[0].strip(): r for r in reqs}


def test_sdist_holds_the_op_sources_headers_weights_and_tests(tmp_path):
    archive = _sdist(tmp_path)
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        pkg_info = tar.extractfile(f"{archive.name[:-len('.tar.gz')]}/PKG-INFO").read().decode()
    csrc = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").rglob("*") if p.is_file())
    assert any(n.endswith(".h") for n in csrc)
    missing = [n for n in csrc if n not in names]
    assert not missing, f"the sdist cannot compile lightface._C: it lacks {missing} (MANIFEST.in)"
    shipped = json.loads((WEIGHTS / "manifest.json").read_text())["weights"]
    wanted = ["lightface/weights/manifest.json", "lightface/weights/LICENSE-yunet.txt"]
    wanted += [f"lightface/weights/{w['file']}" for w in shipped]
    wanted += [f"release/{w['name']}.json" for w in shipped if w["task"] != "detection"]  # test_pretrained reads them
    assert any(w["arch"] == "yunet" for w in shipped)
    wanted += ["CMakeLists.txt", "Makefile", "tests/conftest.py", "docs/model_zoo.md", *LICENCES]
    assert not [n for n in wanted if n not in names], "the sdist lacks files it needs"
    assert not [n for n in names if "__pycache__" in n or n.endswith((".so", ".pyc"))]
    # the sdist compiles lightface._C where it is installed: any torch it builds with, decided there
    meta = email.message_from_string(pkg_info)
    assert _requires(pkg_info)["torch"] == "torch>=2.4"
    assert "requires-dist" in [d.lower() for d in meta.get_all("Dynamic", [])]
    assert meta["License-Expression"] == "MIT" and sorted(meta.get_all("License-File")) == sorted(LICENCES)


def test_licence_is_mit_of_the_lightface_developers():
    """pyproject declares MIT: the repository, the sdist and the wheel carry the licence text."""
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the lightface developers" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_wheel_metadata_requires_the_torch_it_compiles_against(tmp_path):
    """The metadata of a build (what pip reads before building a wheel or an editable install, and reuses
    as the wheel's) pins the build environment's torch release: lightface._C uses torch's unstable C++ ABI,
    so a wheel installed next to another torch failed to load its op library or loaded it against
    changed data structures. Its .dist-info carries both licences."""
    src = _copy_of_checkout(tmp_path)
    (tmp_path / "meta").mkdir()
    _setup(src, "dist_info", "--output-dir", str(tmp_path / "meta"))
    (info,) = (tmp_path / "meta").glob("lightface-*.dist-info")
    metadata = (info / "METADATA").read_text()
    assert _requires(metadata)["torch"] == TORCH_PIN
    assert {"numpy", "insightface", "onnxruntime", "pillow"} <= set(_requires(metadata))
    assert email.message_from_string(metadata)["License-Expression"] == "MIT"
    assert sorted(p.relative_to(info / "licenses").as_posix() for p in (info / "licenses").rglob("*")
                  if p.is_file()) == sorted(LICENCES)


@pytest.mark.parametrize("command, pinned", [("bdist_wheel", True), ("editable_wheel", True), ("dist_info", True),
                                             ("egg_info", True), ("sdist", False)])
@pytest.mark.parametrize("version, pin", [("2.13.0+cpu", "torch==2.13.0"), ("2.14.1+cu130", "torch==2.14.1"),
                                          ("2.15.0.dev20261201+cpu", "torch==2.15.0.dev20261201")])
def test_setup_pins_torch_for_every_build_but_the_sdist(monkeypatch, command, pinned, version, pin):
    """Any build of that release (CPU or CUDA: the local label is left out), as torchvision's wheels ask."""
    monkeypatch.setattr(torch, "__version__", version)
    monkeypatch.setattr(sys, "argv", ["setup.py", command, "--dist-dir", "dist"])
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    torch_reqs = [r for r in captured.get("install_requires", []) if r.startswith("torch")]
    assert torch_reqs == [pin if pinned else "torch>=2.4"]


def _built_library():
    spec = importlib.util.find_spec("lightface._C")
    if spec is None or not spec.origin:
        pytest.skip("lightface._C is not built (make build)")
    return spec.origin


def test_op_library_records_the_torch_it_was_compiled_against():
    assert _library.built_against_torch(_built_library()) == _library.torch_release(torch.__version__)


OTHER_TORCH_CHILD = textwrap.dedent(
    """
    import warnings, torch
    torch.__version__ = torch.torch_version.TorchVersion("2.12.1+cpu")  # torch changed after the build
    from lightface import ops
    assert not ops.extension_available()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = torch.randn(2, 6, 3, 3)
        assert torch.equal(ops.mfm(x), torch.maximum(x[:, :3], x[:, 3:]))
    print("\\n".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)))
    """
)


def test_op_library_built_for_another_torch_is_not_loaded(tmp_path):
    """A library compiled against another torch release is not loaded (it fails to load or misbehaves):
    the reference runs instead and the one warning names both releases and how to rebuild."""
    _built_library()
    (tmp_path / "child.py").write_text(OTHER_TORCH_CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(_library.DISABLE_ENV, None)
    out = subprocess.run([sys.executable, str(tmp_path / "child.py")], check=True, capture_output=True, text=True,
                         env=env, cwd=str(tmp_path), timeout=300).stdout.strip()
    assert len(out.splitlines()) == 1, out
    built = _library.torch_release(torch.__version__)
    assert f"compiled against torch {built} but torch 2.12.1+cpu is installed" in out
    assert "make clean build" in out and "build_ext --inplace --force" in out and f"torch=={built}" in out


@pytest.mark.slow
def test_built_wheel_pins_torch_and_carries_licences_and_the_pipelines(tmp_path):
    """The wheel a user installs, built as pip builds it (metadata first, then the wheel reusing it)."""
    src = _copy_of_checkout(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheels"), str(src)], check=True, capture_output=True, text=True, timeout=1200,
                   env=dict(os.environ, MAX_JOBS="2"))
    (wheel,) = (tmp_path / "wheels").glob("lightface-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read("lightface-0.1.0.dist-info/METADATA").decode()
        (library,) = [n for n in names if n.startswith("lightface/_C") and n.endswith(".so")]
        zf.extract(library, tmp_path)
    assert _requires(metadata)["torch"] == TORCH_PIN
    assert not [p for p in LICENCES if f"lightface-0.1.0.dist-info/licenses/{p}" not in names]
    assert "lightface/weights/LICENSE-yunet.txt" in names
    assert {"pipelines/super_resolve.py", "pipelines/__init__.py"} <= names  # DESIGN.md: python -m pipelines.<name>
    assert _library.built_against_torch(tmp_path / library) == _library.torch_release(torch.__version__)


@pytest.mark.parametrize("torch_min_python, tag", [("0x03090000", "cp39"), ("0x030A0000", "cp310"), (None, None)])
def test_wheel_tag_is_the_stable_abi_torch_compiles_for(monkeypatch, capsys, torch_min_python, tag):
    """torch 2.8 (the last release for Python 3.9) compiles py_limited_api extensions for the 3.9 ABI,
    2.13 for 3.10: a fixed cp310 tag made setuptools refuse to build the wheel on Python 3.9
    ("would build wheel with unsupported tag ('cp310', 'abi3', ...)"), so `make test` could not
    install there. A torch without min_supported_cpython defines no Py_LIMITED_API: no abi3 tag."""
    if torch_min_python is None:
        monkeypatch.delattr(cpp_extension, "min_supported_cpython", raising=False)
    else:
        monkeypatch.setattr(cpp_extension, "min_supported_cpython", torch_min_python, raising=False)
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    (ext,) = captured["ext_modules"]
    assert captured.get("options", {}).get("bdist_wheel", {}).get("py_limited_api") == tag
    assert ext.py_limited_api == (tag is not None)
    assert f"stable ABI={tag or 'no'}" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("version, torch_spec", [((3, 9, 18), "torch==2.8.0"), ((3, 12, 1), "torch==2.13.0")])
def test_make_installs_a_torch_that_exists_for_the_python(tmp_path, version, torch_spec):
    """README: `make demo` / `make test` need only Python 3.9+. torch 2.13 has no Python 3.9 build, so
    the default torch==2.13.0 made the first pip install of `make` fail there (ResolutionImpossible).
    A stand-in interpreter that reports ``version`` answers the Makefile's probe; `make -n` only prints."""
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; sys.version_info = {tuple(version)}; '
                      'exec(sys.argv[1])" "$2"\n')
    python.chmod(0o755)
    venv = tmp_path / "venv"
    # not the settings of a `make test TORCH_SPEC=...` this test may run under (make passes them down)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TORCH_SPEC")}
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "install", f"PYTHON={python}", f"VENV={venv}"],
                         check=True, capture_output=True, text=True, timeout=60, env=env).stdout
    (install,) = [line for line in out.splitlines()
                  if f"{venv}/bin/python -m pip install" in line and "torch==" in line]
    assert f'"{torch_spec}"' in install
