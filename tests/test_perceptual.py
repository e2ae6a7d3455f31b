"""lightface.losses.perceptual: hand values on a tiny network, Light CNN defaults, freezing."""
import pytest
import torch
from torch import nn

from lightface.losses.perceptual import LIGHTCNN_PERCEPTUAL_LAYERS, PerceptualLoss
from lightface.models import get_model


class Doubler(nn.Module):
    """a = 2x, b = a + 1; returns {"a", "b"}."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Conv2d(1, 1, 1, bias=False)
        self.shift = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.scale.weight.fill_(2.0)
            self.shift.weight.fill_(1.0)
            self.shift.bias.fill_(1.0)

    def forward(self, x):
        a = self.scale(x)
        return {"a": a, "b": self.shift(a)}


def test_hand_values_from_dict_output_and_named_layers():
    fake, real = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    # both outputs differ by 2 * 0.5 = 1 everywhere
    assert PerceptualLoss(Doubler())(fake, real).item() == pytest.approx(2.0)
    assert PerceptualLoss(Doubler(), distance="l2", layer_weights=[1.0, 3.0])(fake, real).item() == pytest.approx(4.0)
    assert PerceptualLoss(Doubler(), layers=["scale"])(fake, real).item() == pytest.approx(1.0)
    assert PerceptualLoss(Doubler(), layers=["scale"], preprocess=lambda t: 3 * t)(fake, real).item() == pytest.approx(3.0)


def test_frozen_and_gradients_reach_fake_only():
    net = Doubler()
    loss_fn = PerceptualLoss(net).train()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    fake = torch.rand(2, 1, 3, 3, requires_grad=True)
    loss_fn(fake, torch.rand(2, 1, 3, 3)).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_lightcnn_default_layers_rgb_input_and_early_stop():
    net = get_model("lightcnn9", num_classes=0)
    loss_fn = PerceptualLoss(net)
    assert loss_fn.layers == tuple(LIGHTCNN_PERCEPTUAL_LAYERS["lightcnn9"])
    calls = []
    net.fc1.register_forward_hook(lambda *a: calls.append(1))
    rgb = torch.rand(2, 3, 64, 64)
    feats = loss_fn.features(rgb)  # RGB -> gray 128x128 inside
    assert [tuple(f.shape[1:]) for f in feats] == [(48, 128, 128), (96, 64, 64), (192, 32, 32), (128, 16, 16)]
    assert calls == []  # forward stopped after the last requested layer
    assert loss_fn(rgb, rgb.clone()).item() == 0.0
    assert loss_fn(rgb, rgb.flip(-1)).item() > 0.0


def test_lightcnn29v2_layers_exist():
    loss_fn = PerceptualLoss(get_model("lightcnn29v2", num_classes=0), layers=["conv1", "group1"])
    assert len(loss_fn.features(torch.rand(1, 1, 128, 128))) == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="not submodules"):
        PerceptualLoss(Doubler(), layers=["nope"])
    with pytest.raises(ValueError, match="layer_weights"):
        PerceptualLoss(Doubler(), layers=["scale"], layer_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="distance"):
        PerceptualLoss(Doubler(), distance="huber")
    with pytest.raises(ValueError, match="same shape"):
        PerceptualLoss(Doubler())(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
