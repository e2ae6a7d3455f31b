"""Without the compiled library (LIGHTFACE_DISABLE_EXTENSION=1), lightface.ops falls back to
the reference with exactly one warning and gives the compiled kernels' results."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lightface import ops

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import sys, warnings, torch
    from lightface import ops, nn
    assert not ops.extension_available()
    inputs = torch.load(sys.argv[1])
    x = inputs["x"].requires_grad_(True)
    img = inputs["img"].requires_grad_(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = {"mfm": ops.mfm(x), "mfm_3_2": ops.mfm_3_2(x[:, :6]), "module": nn.MFM()(x)}
        for r in ("none", "sum", "mean"):
            results[f"sym_{r}"] = ops.symmetry_loss(img, r)
            results[f"tv_{r}"] = ops.total_variation(img, r)
        total = sum(v.double().sum() for v in results.values())
        gx, gimg = torch.autograd.grad(total, (x, img))
    results = {k: v.detach() for k, v in results.items()}
    results["grad_x"], results["grad_img"] = gx, gimg
    results["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    torch.save(results, sys.argv[2])
    """
)


@pytest.mark.skipif(not ops.extension_available(), reason="needs lightface._C to compare against")
def test_fallback_warns_once_and_matches_kernels(tmp_path):
    torch.manual_seed(0)
    inputs = {"x": torch.randn(3, 12, 5, 7), "img": torch.rand(2, 3, 9, 11)}
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "child.py").write_text(CHILD)
    env = dict(os.environ, LIGHTFACE_DISABLE_EXTENSION="1", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "out.pt")], check=True, env=env, cwd=str(tmp_path), timeout=600)
    got = torch.load(tmp_path / "out.pt")

    messages = got.pop("warnings")
    assert len(messages) == 1, messages
    assert "compiled op library is not available" in messages[0] and "LIGHTFACE_DISABLE_EXTENSION" in messages[0]

    x = inputs["x"].clone().requires_grad_(True)
    img = inputs["img"].clone().requires_grad_(True)
    expected = {"mfm": ops.mfm(x), "mfm_3_2": ops.mfm_3_2(x[:, :6]), "module": ops.mfm(x)}
    for r in ("none", "sum", "mean"):
        expected[f"sym_{r}"] = ops.symmetry_loss(img, r)
        expected[f"tv_{r}"] = ops.total_variation(img, r)
    total = sum(v.double().sum() for v in expected.values())
    expected["grad_x"], expected["grad_img"] = torch.autograd.grad(total, (x, img))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value.detach(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
