"""WaveletPacket2d against PyWavelets and its exact inverse."""
import numpy as np
import pytest
import torch

from lightface.nn import WaveletPacket2d
from lightface.nn.wavelet import haar_packet_filters, subband_paths

pywt = pytest.importorskip("pywt")


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_matches_pywavelets_nodes(levels):
    x = torch.rand(2, 3, 32, 48, dtype=torch.float64)
    coeffs = WaveletPacket2d(levels)(x)
    assert coeffs.shape == (2, 3 * 4**levels, 32 // 2**levels, 48 // 2**levels)
    paths = subband_paths(levels)
    for n in range(2):
        for c in range(3):
            wp = pywt.WaveletPacket2D(x[n, c].numpy(), "haar", mode="periodization")
            assert [node.path for node in wp.get_level(levels)] == paths
            for k, path in enumerate(paths):
                np.testing.assert_allclose(coeffs[n, c * 4**levels + k].numpy(), wp[path].data, atol=1e-12)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_exact_inverse(levels, dtype, atol):
    wpt = WaveletPacket2d(levels)
    x = torch.rand(2, 3, 32, 16, dtype=dtype)
    c = wpt(x)
    assert c.dtype == dtype
    torch.testing.assert_close(wpt.inverse(c), x, atol=atol, rtol=0)
    # the inverse is also a left inverse on the coefficient side (orthonormal basis)
    torch.testing.assert_close(wpt(wpt.inverse(c)), c, atol=atol * 4**levels, rtol=0)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_filters_orthonormal(levels):
    w = haar_packet_filters(levels).flatten(1)
    torch.testing.assert_close(w @ w.T, torch.eye(4**levels, dtype=torch.float64))


def test_hand_computed_level1():
    x = torch.tensor([[[[0.0, 1.0], [5.0, 5.0]]]])
    c = WaveletPacket2d(1)(x).flatten()
    torch.testing.assert_close(c, torch.tensor([5.5, -4.5, -0.5, -0.5]))


def test_constant_image_has_no_detail():
    c = WaveletPacket2d(2)(torch.full((1, 1, 8, 8), 0.5))
    torch.testing.assert_close(c[:, 0], torch.full((1, 2, 2), 0.5 * 4))
    assert c[:, 1:].abs().max() == 0


def test_gradients_flow_and_no_parameters():
    wpt = WaveletPacket2d(2)
    assert list(wpt.parameters()) == [] and "weight" not in wpt.state_dict()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: wpt.inverse(wpt(t) * 2.0), (x,))


def test_bad_inputs():
    with pytest.raises(ValueError, match="levels"):
        WaveletPacket2d(5)
    with pytest.raises(ValueError, match="divisible by 4"):
        WaveletPacket2d(2)(torch.rand(1, 1, 6, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        WaveletPacket2d(1)(torch.rand(8, 8))
    with pytest.raises(TypeError):
        WaveletPacket2d(1)(torch.ones(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="C\\*16"):
        WaveletPacket2d(2).inverse(torch.rand(1, 15, 2, 2))
