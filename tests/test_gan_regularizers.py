"""lightface.losses.gan_regularizers: hand-computed values and the BEGAN k_t update."""
import itertools
import math

import pytest
import torch

from lightface.losses.gan_regularizers import (
    BEGANController,
    autoencoder_loss,
    cycle_consistency_loss,
    feature_matching_loss,
    pull_away_term,
)


def test_feature_matching_hand_value():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # mean (1, 1)
    assert feature_matching_loss(real, fake).item() == pytest.approx(1.0 + 4.0)
    # list of layers: mean over layers; conv maps are flattened per sample
    conv_r = torch.ones(2, 1, 2, 2)
    conv_f = torch.zeros(2, 1, 2, 2)
    assert feature_matching_loss([real, conv_r], [fake, conv_f]).item() == pytest.approx((5.0 + 4.0) / 2)
    assert feature_matching_loss(real, real.clone()).item() == 0.0


def test_feature_matching_gradient_only_to_fake():
    real = torch.randn(4, 3, requires_grad=True)
    fake = torch.randn(4, 3, requires_grad=True)
    feature_matching_loss(real, fake).backward()
    assert real.grad is None and fake.grad is not None
    with pytest.raises(ValueError):
        feature_matching_loss([real], [fake, fake])
    with pytest.raises(ValueError):
        feature_matching_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_pull_away_hand_value():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    cos = {(0, 1): 1 / math.sqrt(2), (0, 2): 0.0, (1, 2): 1 / math.sqrt(2)}
    expected = 2 * sum(c * c for c in cos.values()) / (3 * 2)
    assert pull_away_term(s).item() == pytest.approx(expected, rel=1e-6)
    # brute force on a random batch, straight from the formula
    x = torch.randn(5, 4, dtype=torch.float64)
    brute = sum((x[i] @ x[j] / (x[i].norm() * x[j].norm())) ** 2
                for i, j in itertools.permutations(range(5), 2)) / 20
    assert pull_away_term(x).item() == pytest.approx(brute.item(), rel=1e-10)


def test_pull_away_extremes_and_errors():
    assert pull_away_term(torch.eye(3)).item() == pytest.approx(0.0)
    assert pull_away_term(torch.tensor([[1.0, 2.0], [2.0, 4.0], [-3.0, -6.0]])).item() == pytest.approx(1.0)
    assert pull_away_term(torch.randn(4, 2, 3)).shape == ()  # flattened
    with pytest.raises(ValueError, match="at least 2"):
        pull_away_term(torch.randn(1, 3))
    s = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pull_away_term, (s,))


def test_cycle_consistency_hand_values():
    x = torch.tensor([[0.0, 1.0]])
    x_rec = torch.tensor([[0.5, 0.0]])
    assert cycle_consistency_loss(x, x_rec).item() == pytest.approx(0.75)
    y = torch.zeros(1, 2)
    y_rec = torch.tensor([[0.0, 2.0]])
    assert cycle_consistency_loss(x, x_rec, y, y_rec).item() == pytest.approx(0.75 + 1.0)
    with pytest.raises(ValueError, match="both y and y_rec"):
        cycle_consistency_loss(x, x_rec, y)
    with pytest.raises(ValueError, match="shape"):
        cycle_consistency_loss(x, torch.zeros(1, 3))


def test_autoencoder_loss():
    x = torch.zeros(2, 1, 2, 2)
    assert autoencoder_loss(x, torch.full_like(x, -0.5)).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reconstruct"):
        autoencoder_loss(x, torch.zeros(2, 1))


def test_began_update_hand_values():
    ctl = BEGANController(gamma=0.5, lambda_k=0.1)
    assert ctl.k == 0.0
    # k1 = 0 + 0.1 * (0.5*1.0 - 0.2) = 0.03
    assert ctl.update(1.0, 0.2) == pytest.approx(0.03)
    # k2 = 0.03 + 0.1 * (0.5*1.0 - 0.8) = 0.0 (clipped below at 0)
    assert ctl.update(1.0, 0.8) == 0.0
    ctl.k = 0.99
    assert ctl.update(1.0, 0.0) == 1.0  # clipped above at 1
    assert ctl.convergence(1.0, 0.2) == pytest.approx(1.0 + abs(0.5 - 0.2))
    ctl.k = 0.25
    assert ctl.discriminator_loss(torch.tensor(1.0), torch.tensor(2.0)).item() == pytest.approx(0.5)


def test_began_k_tracks_gamma_equilibrium():
    """With L(G(z)) responding to k (a higher k pushes fakes' reconstruction error up), k settles where ratio = gamma."""
    ctl = BEGANController(gamma=0.4, lambda_k=0.05)
    for _ in range(2000):
        loss_real = 1.0
        loss_fake = 0.8 * ctl.k  # toy response of the system to the controller
        ctl.update(loss_real, loss_fake)
    assert 0.8 * ctl.k / 1.0 == pytest.approx(0.4, abs=1e-3)


def test_began_state_roundtrip_and_validation():
    ctl = BEGANController(gamma=0.7)
    ctl.k = 0.3
    other = BEGANController(gamma=0.7)
    other.load_state_dict(ctl.state_dict())
    assert other.k == 0.3
    with pytest.raises(ValueError):
        other.load_state_dict({"k_t": 2.0})
    with pytest.raises(ValueError):
        BEGANController(gamma=0.0)
    with pytest.raises(FloatingPointError):
        ctl.update(float("nan"), 1.0)
