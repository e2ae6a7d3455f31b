"""lightface.losses.adversarial: hand-computed values, sign conventions, gradient penalty, clipping."""
import math

import pytest
import torch
from torch import nn

from lightface.losses.adversarial import (
    ADVERSARIAL_LOSSES,
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    NonSaturatingLoss,
    WassersteinLoss,
    clip_weights,
    get_adversarial_loss,
    gradient_penalty,
)

REAL = torch.tensor([[2.0], [0.0]])
FAKE = torch.tensor([[-1.0], [1.0]])


def log_sigmoid(v):
    return math.log(1.0 / (1.0 + math.exp(-v)))


def test_minimax_hand_values():
    loss = MinimaxLoss()
    d = -(log_sigmoid(2) + log_sigmoid(0)) / 2 - (math.log(1 - 1 / (1 + math.e)) + math.log(1 - 1 / (1 + math.exp(-1)))) / 2
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    g = (math.log(1 - 1 / (1 + math.e)) + math.log(1 - 1 / (1 + math.exp(-1)))) / 2
    assert loss.g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)
    assert loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)  # forward is d_loss


def test_nsgan_hand_values_and_one_sided_smoothing():
    g = -(log_sigmoid(-1) + log_sigmoid(1)) / 2
    assert NonSaturatingLoss().g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)
    # smoothing s: real target 1 - s; BCE(l, t) = -(t log sig(l) + (1 - t) log(1 - sig(l)))
    s = 0.1
    real_term = sum(-((1 - s) * log_sigmoid(v) + s * log_sigmoid(-v)) for v in (2.0, 0.0)) / 2
    fake_term = sum(-log_sigmoid(-v) for v in (-1.0, 1.0)) / 2  # fake target stays 0
    assert NonSaturatingLoss(label_smoothing=s).d_loss(REAL, FAKE).item() == pytest.approx(real_term + fake_term, rel=1e-6)
    with pytest.raises(ValueError):
        NonSaturatingLoss(label_smoothing=1.0)


def test_wgan_hinge_lsgan_hand_values():
    # E D(fake) - E D(real) = 0 - 1
    assert WassersteinLoss().d_loss(REAL, FAKE).item() == pytest.approx(-1.0)
    assert WassersteinLoss().g_loss(FAKE).item() == pytest.approx(0.0)
    # relu(1-2)=0, relu(1-0)=1 -> 0.5 ; relu(1-1)=0, relu(1+1)=2 -> 1.0
    assert HingeLoss().d_loss(REAL, FAKE).item() == pytest.approx(1.5)
    assert HingeLoss().g_loss(torch.tensor([3.0, -1.0])).item() == pytest.approx(-1.0)
    # 0.5*mean((2-1)^2, (0-1)^2) + 0.5*mean(1, 1) = 0.5 + 0.5
    assert LeastSquaresLoss().d_loss(REAL, FAKE).item() == pytest.approx(1.0)
    # 0.5*mean((-1-1)^2, (1-1)^2) = 1
    assert LeastSquaresLoss().g_loss(FAKE).item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(ADVERSARIAL_LOSSES))
def test_sign_conventions(name):
    """G's loss decreases as D is fooled; D's loss decreases as D separates real from fake."""
    loss = get_adversarial_loss(name)
    fooled = [loss.g_loss(torch.full((4, 1), v)).item() for v in (-3.0, -1.0, 0.0, 0.5, 0.9)]
    assert all(a > b for a, b in zip(fooled, fooled[1:])), fooled
    d_confused = loss.d_loss(torch.zeros(4, 1), torch.zeros(4, 1)).item()
    d_right = loss.d_loss(torch.full((4, 1), 0.9), torch.full((4, 1), -0.9)).item()
    d_wrong = loss.d_loss(torch.full((4, 1), -0.9), torch.full((4, 1), 0.9)).item()
    assert d_right < d_confused < d_wrong
    # gradient wrt the fake logits points towards "more real" for G
    fake = torch.zeros(3, 1, requires_grad=True)
    loss.g_loss(fake).backward()
    assert (fake.grad < 0).all()


def test_patch_logits_and_bad_inputs():
    patch = torch.randn(2, 1, 3, 3)
    assert HingeLoss().d_loss(patch, patch).shape == ()
    with pytest.raises(TypeError):
        HingeLoss().g_loss(torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError):
        HingeLoss().g_loss(torch.tensor(1.0))
    with pytest.raises(ValueError, match="unknown adversarial"):
        get_adversarial_loss("vanilla")
    with pytest.raises(ValueError, match="label smoothing"):
        get_adversarial_loss("lsgan", label_smoothing=0.1)


def test_gradient_penalty_hand_value_linear_critic():
    """D(x) = w.x has gradient w everywhere: penalty = (|w| - 1)^2 whatever the interpolation."""
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.randn(5, 2), torch.randn(5, 2)
    gp, norms = gradient_penalty(critic, real, fake, return_norm=True)
    assert gp.item() == pytest.approx(16.0)
    assert torch.allclose(norms, torch.full((5,), 5.0))
    gp.backward()
    # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    assert torch.allclose(critic.weight.grad, torch.tensor([[2 * 4 * 3 / 5, 2 * 4 * 4 / 5]]))


def test_gradient_penalty_patch_critic_uses_per_sample_mean():
    """A patch critic (N,1,2,2) of w.x in every cell has per-sample mean w.x: same penalty as the scalar critic."""

    class Patch(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.6, 0.0]))

        def forward(self, x):
            return (x @ self.w).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2)

    gp = gradient_penalty(Patch(), torch.randn(3, 2), torch.randn(3, 2))
    assert gp.item() == pytest.approx(0.16, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(Patch(), torch.randn(3, 2), torch.randn(4, 2))


@pytest.mark.parametrize("scale", [0.1, 4.0])
def test_gradient_penalty_drives_gradient_norm_to_one(scale):
    """Training a toy MLP critic on the penalty alone brings its gradient norm near 1 (from below and above)."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(scale)
    real = torch.randn(64, 2) + 2.0
    fake = torch.randn(64, 2) - 2.0
    _, start = gradient_penalty(critic, real, fake, return_norm=True)
    opt = torch.optim.Adam(critic.parameters(), lr=2e-2)
    for _ in range(60):
        gp = gradient_penalty(critic, real, fake)
        opt.zero_grad()
        gp.backward()
        opt.step()
    _, end = gradient_penalty(critic, real, fake, return_norm=True)
    assert abs(start.mean().item() - 1.0) > 0.8
    assert end.mean().item() == pytest.approx(1.0, abs=0.1)


def test_clip_weights():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(5.0)
        lin.bias.fill_(-0.001)
    clip_weights(lin, 0.01)
    assert torch.all(lin.weight == 0.01) and torch.all(lin.bias == -0.001)
    with pytest.raises(ValueError):
        clip_weights(lin, 0.0)
