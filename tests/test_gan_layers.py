"""lightface.nn.gan_layers and the BEGAN auto-encoder discriminator."""
import math

import pytest
import torch

from lightface.models.autoencoder_discriminator import AutoencoderDiscriminator
from lightface.nn.gan_layers import MinibatchDiscrimination, MinibatchStdDev


def test_minibatch_discrimination_hand_value():
    layer = MinibatchDiscrimination(in_features=2, out_features=1, kernel_dims=2)
    with torch.no_grad():
        layer.T.copy_(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))  # M_i = x_i
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    out = layer(x)
    assert out.shape == (3, 3)
    assert torch.equal(out[:, :2], x)
    # L1 distances: d01 = 1, d02 = 3, d12 = 2
    expected = torch.tensor([math.exp(-1) + math.exp(-3), math.exp(-1) + math.exp(-2), math.exp(-3) + math.exp(-2)])
    assert torch.allclose(out[:, 2], expected, atol=1e-6)


def test_minibatch_discrimination_detects_collapse_and_matches_brute_force():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(6, out_features=4, kernel_dims=3).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    m = (x @ layer.T.reshape(6, -1)).reshape(5, 4, 3)
    brute = torch.zeros(5, 4, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            if i != j:
                brute[i] += torch.exp(-(m[i] - m[j]).abs().sum(-1))
    assert torch.allclose(layer(x)[:, 6:], brute)
    collapsed = layer(x[:1].repeat(5, 1))[:, 6:]
    assert torch.allclose(collapsed, torch.full_like(collapsed, 4.0))  # N-1 identical neighbours
    assert (collapsed > layer(x)[:, 6:]).all()
    assert torch.autograd.gradcheck(layer, (x.requires_grad_(),))
    with pytest.raises(ValueError, match="expects"):
        layer(torch.randn(5, 7, dtype=torch.float64))


def test_minibatch_discrimination_is_twice_differentiable():
    """The WGAN-GP gradient penalty differentiates through the layer twice (torch.cdist cannot)."""
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(4, out_features=3, kernel_dims=2).double()
    x = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(layer, (x,))


def test_minibatch_std_hand_value():
    layer = MinibatchStdDev(group_size=2, eps=0.0)
    x = torch.tensor([[1.0, 3.0], [3.0, 3.0], [0.0, 0.0], [5.0, 1.0]])  # (N=4, F=2)
    out = layer(x)
    assert out.shape == (4, 3)
    # groups: sample i in group i % 2 -> {0, 2} and {1, 3}
    g0 = (torch.tensor([0.5, 1.5]).mean())  # std of (1,0)=0.5, of (3,0)=1.5
    g1 = (torch.tensor([1.0, 1.0]).mean())  # std of (3,5)=1, of (3,1)=1
    assert torch.allclose(out[:, 2], torch.stack([g0, g1, g0, g1]))


def test_minibatch_std_images():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 3)
    out = MinibatchStdDev(group_size=4, num_channels=2)(x)
    assert out.shape == (8, 6, 3, 3)
    assert torch.equal(out[:, :4], x)
    stat = out[:, 4:]
    assert torch.allclose(stat, stat[:, :, :1, :1].expand_as(stat))  # constant per map
    grouped = x.reshape(4, 2, 2, 2, 3, 3)
    ref = (grouped.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (2 groups, 2 stats)
    assert torch.allclose(stat[:, :, 0, 0], ref.repeat(4, 1))
    assert MinibatchStdDev(group_size=4)(torch.randn(2, 3, 2, 2)).shape == (2, 4, 2, 2)  # group shrinks to N
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStdDev(group_size=4)(torch.randn(6, 3, 2, 2))


def test_identical_batch_has_zero_std():
    x = torch.randn(1, 3, 2, 2).repeat(4, 1, 1, 1)
    out = MinibatchStdDev(eps=0.0)(x)
    assert torch.all(out[:, 3] == 0)


@pytest.mark.parametrize("mbd,mbstd", [(False, False), (True, True)])
def test_autoencoder_discriminator_contract(mbd, mbstd):
    D = AutoencoderDiscriminator(channels=3, size=16, hidden=4, latent_dim=6,
                                 minibatch_discrimination=mbd, minibatch_std=mbstd)
    x = torch.rand(4, 3, 16, 16)
    rec = D(x)
    assert rec.shape == x.shape
    rec2, feats = D(x, return_features=True)
    assert torch.allclose(rec, rec2) and len(feats) == 1 and feats[-1].shape == (4, 6)
    with pytest.raises(ValueError, match="expects"):
        D(torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        AutoencoderDiscriminator(size=24)


def test_autoencoder_discriminator_in_registry():
    from lightface.models import get_model

    D = get_model("autoencoder_discriminator", channels=1, size=8, hidden=2, latent_dim=2)
    assert isinstance(D, AutoencoderDiscriminator)


def test_minibatch_std_gradcheck_float64():
    x = torch.randn(4, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(MinibatchStdDev(group_size=2), (x,))
