"""What a user installs: the sdist holds everything the op library needs to compile (sources and the
headers they include), the shipped weights and the YuNet detector, and the wheel tag setup.py asks
for matches the stable ABI torch compiles the extension with (so Python 3.9 can build and install it)."""
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import setuptools
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "lightface" / "weights"

# what a checkout may hold that is not the project's source (a copy of the tree skips it)
NOT_SOURCE = shutil.ignore_patterns(".*", "build", "dist", "runs", "demo_output", "*.egg-info", "__pycache__",
                                    "*.so", "*.pyc")


def _sdist_names(tmp_path: Path) -> set:
    """Build the sdist of a copy of the checkout (nothing is written into it) -> its member paths
    below the top folder."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")], cwd=src,
                   check=True, capture_output=True, text=True, timeout=300)
    (archive,) = (tmp_path / "dist").glob("lightface-*.tar.gz")
    with tarfile.open(archive) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_holds_the_op_sources_headers_weights_and_tests(tmp_path):
    names = _sdist_names(tmp_path)
    csrc = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").rglob("*") if p.is_file())
    assert any(n.endswith(".h") for n in csrc)
    missing = [n for n in csrc if n not in names]
    assert not missing, f"the sdist cannot compile lightface._C: it lacks {missing} (MANIFEST.in)"
    shipped = json.loads((WEIGHTS / "manifest.json").read_text())["weights"]
    wanted = ["lightface/weights/manifest.json", "lightface/weights/LICENSE-yunet.txt"]
    wanted += [f"lightface/weights/{w['file']}" for w in shipped]
    wanted += [f"release/{w['name']}.json" for w in shipped if w["task"] != "detection"]  # test_pretrained reads them
    assert any(w["arch"] == "yunet" for w in shipped)
    wanted += ["CMakeLists.txt", "Makefile", "tests/conftest.py", "docs/model_zoo.md"]
    assert not [n for n in wanted if n not in names], "the sdist lacks files it needs"
    assert not [n for n in names if "__pycache__" in n or n.endswith((".so", ".pyc"))]


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
