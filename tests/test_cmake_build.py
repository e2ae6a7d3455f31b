"""The CMake build (CMakeLists.txt) produces a library torch.ops.load_library can load, whose
ops agree with the setup.py build (lightface._C), and to which ``import lightface.ops`` adds
autograd and fake kernels (checked fast with a copy of lightface._C loaded by path)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lightface import ops

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not ops.extension_available(), reason="lightface._C is not built (make build)")

# Runs in a fresh interpreter, once per build (in one process the library loaded second
# would replace the first one's kernels). argv[1] is the CMake library, or "lightface._C"
# for the setup.py build; then `import lightface.ops` adds autograd (grad_x below).
CHILD = textwrap.dedent(
    """
    import sys, torch
    if sys.argv[1] == "lightface._C":
        import lightface._C
    else:
        torch.ops.load_library(sys.argv[1])
    from lightface import ops
    assert ops.extension_available() and ("lightface._C" in sys.modules) == (sys.argv[1] == "lightface._C")
    lf = torch.ops.lightface
    inputs = torch.load(sys.argv[2])
    x, img, grad = inputs["x"], inputs["img"], inputs["grad"]
    out, mask = lf._mfm_forward(x, 1)
    out3, mask3 = lf._mfm_3_2_forward(x[:, :6], 1)
    results = {
        "mfm": lf.mfm(x, 1), "mfm_mask": mask, "mfm_backward": lf._mfm_backward(out, mask, 1),
        "mfm_3_2": lf.mfm_3_2(x[:, :6], 1), "mfm_3_2_mask": mask3,
        "mfm_3_2_backward": lf._mfm_3_2_backward(out3, mask3, 1),
        "threads": torch.tensor(lf._parallel_threads()),
    }
    x.requires_grad_(True)
    (lf.mfm(x, 1).square().sum() + lf.mfm_3_2(x[:, :6], 1).sum()).backward()
    results["grad_x"] = x.grad
    for r in ("none", "sum", "mean"):
        g = grad if r == "none" else grad[0]
        results[f"sym_{r}"] = lf.symmetry_loss(img, r)
        results[f"tv_{r}"] = lf.total_variation(img, r)
        results[f"sym_backward_{r}"] = lf._symmetry_loss_backward(g, img, r)
        results[f"tv_backward_{r}"] = lf._total_variation_backward(g, img, r)
    torch.save(results, sys.argv[3])
    """
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_library_loads_and_agrees(tmp_path):
    build = tmp_path / "build"
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    configure = [
        "cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        # -O1 without the per-ISA clones keeps this build short; setup.py builds the real thing.
        "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DLIGHTFACE_NO_SIMD_CLONES", f"-DPython3_EXECUTABLE={sys.executable}",
    ]
    if shutil.which("ninja", path=env["PATH"]):
        configure += ["-G", "Ninja"]
    subprocess.run(configure, check=True, env=env, capture_output=True, text=True, timeout=600)
    subprocess.run(["cmake", "--build", str(build), "--parallel", "2"], check=True, env=env,
                   capture_output=True, text=True, timeout=1200)
    libraries = sorted(build.glob("liblightface_ops.*"))
    assert libraries, f"no liblightface_ops in {build}: {sorted(p.name for p in build.iterdir())}"

    torch.manual_seed(0)
    inputs = {"x": torch.randn(3, 8, 5, 7), "img": torch.rand(2, 3, 9, 11), "grad": torch.randn(2)}
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "child.py").write_text(CHILD)
    env["PYTHONPATH"] = str(ROOT)
    results = {}
    for name, library in (("cmake", str(libraries[0])), ("setup.py", "lightface._C")):
        subprocess.run(
            [sys.executable, str(tmp_path / "child.py"), library, str(tmp_path / "inputs.pt"),
             str(tmp_path / f"{name}.pt")],
            check=True, env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=600,
        )
        results[name] = torch.load(tmp_path / f"{name}.pt")
    got, expected = results["cmake"], results["setup.py"]
    assert got.pop("threads").item() >= 1 and expected.pop("threads").item() >= 1
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-6, msg=lambda m: f"{key}: {m}")


# A stand-in for build/cmake/liblightface_ops.so: a copy of lightface._C (the same op library)
# loaded by path. argv[1]: which library the process loads first.
LOAD_ORDER_CHILD = textwrap.dedent(
    """
    import sys, warnings, torch
    standin = sys.argv[2]
    if sys.argv[1] == "load_library":
        torch.ops.load_library(standin)
        from lightface import ops
        # the loaded ops serve: lightface._C is not imported (a C++-only install need not have it)
        assert "lightface._C" not in sys.modules, "lightface._C was imported too"
    else:
        from lightface import ops
        torch.ops.load_library(standin)  # a second copy of the ops: must not abort the process
    assert ops.extension_available()
    x = torch.tensor([[1.0, 5.0, 3.0, 2.0]], requires_grad=True)
    torch.ops.lightface.mfm(x, 1).sum().backward()  # autograd registered by lightface.ops
    assert x.grad.tolist() == [[0.0, 1.0, 1.0, 0.0]], x.grad
    assert torch.ops.lightface.mfm(torch.empty(2, 4, device="meta"), 1).shape == (2, 2)  # fake kernel
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the reference
        assert ops.mfm(x).tolist() == [[3.0, 5.0]]
    print("ok")
    """
)


@pytest.mark.parametrize("first", ["load_library", "lightface._C"])
def test_library_loaded_by_path_gets_autograd_and_fake_kernels(tmp_path, first):
    """docs/ops.md's CMake recipe: torch.ops.load_library(path), then import lightface.ops; and
    a process that loads both copies of the ops (either order) runs instead of aborting."""
    import lightface._C

    standin = tmp_path / "liblightface_ops.so"
    shutil.copyfile(lightface._C.__file__, standin)
    (tmp_path / "child.py").write_text(LOAD_ORDER_CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LIGHTFACE_DISABLE_EXTENSION", None)
    done = subprocess.run([sys.executable, str(tmp_path / "child.py"), first, str(standin)], env=env,
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])
