"""lightface.nn MFM layers equal the functional ops (and the official split+max formulation)."""
import pytest
import torch
import torch.nn.functional as F

from lightface import nn as lnn
from lightface import ops


@pytest.mark.parametrize("dim", [1, -1])
def test_mfm_modules_equal_functions(dim):
    x = torch.randn(2, 12, 4, 6, requires_grad=True)
    torch.testing.assert_close(lnn.MFM(dim)(x), ops.mfm(x, dim), rtol=0, atol=0)
    torch.testing.assert_close(lnn.MFM3_2(dim)(x), ops.mfm_3_2(x, dim), rtol=0, atol=0)
    assert repr(lnn.MFM(dim)) == f"MFM(dim={dim})"


def test_mfm_equals_official_split_max():
    """The original Light CNN code: torch.split(x, C, 1) then torch.max of the two halves."""
    x = torch.randn(3, 16, 5, 5)
    a, b = torch.split(x, 8, 1)
    torch.testing.assert_close(ops.mfm(x), torch.max(a, b), rtol=0, atol=0)


def test_mfm_conv2d_is_conv_then_mfm():
    layer = lnn.MFMConv2d(3, 8, kernel_size=3, stride=1, padding=1)
    assert layer.filter.out_channels == 16
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 8, 10, 10)
    torch.testing.assert_close(y, ops.mfm(F.conv2d(x, layer.filter.weight, layer.filter.bias, padding=1)))
    y.sum().backward()
    assert x.grad.shape == x.shape and layer.filter.weight.grad is not None


def test_mfm_linear_and_3_2_variants():
    lin = lnn.MFMLinear(10, 4)
    x = torch.randn(5, 10)
    torch.testing.assert_close(lin(x), ops.mfm(lin.filter(x)))
    conv = lnn.MFMConv2d3_2(3, 8, 3, 1, 1)
    assert conv.filter.out_channels == 12 and conv(torch.randn(1, 3, 6, 6)).shape == (1, 8, 6, 6)
    lin3 = lnn.MFMLinear3_2(10, 6)
    torch.testing.assert_close(lin3(x), ops.mfm_3_2(lin3.filter(x)))
    with pytest.raises(ValueError, match="even"):
        lnn.MFMLinear3_2(10, 5)


@pytest.mark.parametrize("three_halves", [False, True])
def test_mfm_layers_take_what_their_inner_layer_takes(three_halves):
    """Unbatched (in, H, W) images and (*, in) features: MFM reduces the channels / features, as for
    a batch (MFM along dim 1 used to halve the height, or the sequence, without a word)."""
    conv = (lnn.MFMConv2d3_2 if three_halves else lnn.MFMConv2d)(3, 4)
    image = torch.randn(3, 8, 6)
    torch.testing.assert_close(conv(image), conv(image[None])[0], rtol=0, atol=0)
    assert conv(image).shape == (4, 8, 6)
    lin = (lnn.MFMLinear3_2 if three_halves else lnn.MFMLinear)(10, 4)
    tokens = torch.randn(2, 6, 10)
    torch.testing.assert_close(lin(tokens), lin(tokens.reshape(12, 10)).reshape(2, 6, 4), rtol=0, atol=0)
    torch.testing.assert_close(lin(tokens[0, 0]), lin(tokens[0, :1])[0], rtol=0, atol=0)
