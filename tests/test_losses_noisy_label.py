"""lightface.losses.noisy_label: CE and Reed et al. bootstrapping, checked by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from lightface.losses.noisy_label import (
    HardBootstrappingLoss,
    SoftBootstrappingLoss,
    build_classification_loss,
    hard_bootstrap_loss,
    soft_bootstrap_loss,
)

# q = softmax([0, log 3]) = [0.25, 0.75]
LOGITS = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
CE0 = -math.log(0.25)  # label 0 (disagrees with the prediction)
CE1 = -math.log(0.75)  # label 1 (agrees)
ENTROPY = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))


def test_soft_bootstrap_hand_computed():
    assert soft_bootstrap_loss(LOGITS, torch.tensor([0])).item() == pytest.approx(0.95 * CE0 + 0.05 * ENTROPY, abs=1e-12)
    assert soft_bootstrap_loss(LOGITS, torch.tensor([1]), beta=0.5).item() == pytest.approx(0.5 * CE1 + 0.5 * ENTROPY, abs=1e-12)
    # the definition: -sum_k (beta t_k + (1-beta) q_k) log q_k
    direct = -((0.95 * 1.0 + 0.05 * 0.25) * math.log(0.25) + (0.05 * 0.75) * math.log(0.75))
    assert soft_bootstrap_loss(LOGITS, torch.tensor([0])).item() == pytest.approx(direct, abs=1e-12)


def test_hard_bootstrap_hand_computed():
    # argmax is class 1: beta * CE(label) + (1 - beta) * CE(1)
    assert hard_bootstrap_loss(LOGITS, torch.tensor([0])).item() == pytest.approx(0.8 * CE0 + 0.2 * CE1, abs=1e-12)
    assert hard_bootstrap_loss(LOGITS, torch.tensor([1])).item() == pytest.approx(CE1, abs=1e-12)


@pytest.mark.parametrize("fn", [soft_bootstrap_loss, hard_bootstrap_loss])
def test_beta_one_is_cross_entropy_and_reductions(fn):
    logits = torch.randn(6, 5, dtype=torch.float64)
    target = torch.randint(0, 5, (6,))
    assert torch.allclose(fn(logits, target, beta=1.0), F.cross_entropy(logits, target))
    per = fn(logits, target, reduction="none")
    assert per.shape == (6,)
    assert torch.allclose(fn(logits, target, reduction="sum"), per.sum())
    assert torch.allclose(fn(logits, target), per.mean())
    batched = torch.stack([fn(logits[i : i + 1], target[i : i + 1]) for i in range(6)])
    assert torch.allclose(batched, per)


def test_gradients_match_closed_forms():
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0])
    q = logits.detach().softmax(1)
    t = F.one_hot(target, 3).double()
    z = F.one_hot(q.argmax(1), 3).double()
    hard_bootstrap_loss(logits, target, beta=0.8, reduction="sum").backward()
    assert torch.allclose(logits.grad, 0.8 * (q - t) + 0.2 * (q - z))
    # soft: d/dz of beta*CE + (1-beta)*H; H' = -q * (log q - sum q log q)
    logits.grad = None
    soft_bootstrap_loss(logits, target, beta=0.95, reduction="sum").backward()
    logq = q.log()
    grad_h = -q * (logq - (q * logq).sum(1, keepdim=True))
    assert torch.allclose(logits.grad, 0.95 * (q - t) + 0.05 * grad_h)
    torch.autograd.gradcheck(lambda x: soft_bootstrap_loss(x, target), (logits,))


def test_half_precision_inputs_are_computed_in_float32():
    logits = torch.randn(3, 4).to(torch.bfloat16)
    target = torch.tensor([0, 1, 3])
    out = soft_bootstrap_loss(logits, target)
    assert out.dtype == torch.float32
    assert torch.allclose(out, soft_bootstrap_loss(logits.float(), target))


def test_modules_and_factory():
    logits, target = torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert torch.equal(SoftBootstrappingLoss()(logits, target), soft_bootstrap_loss(logits, target, 0.95))
    assert torch.equal(HardBootstrappingLoss(beta=0.7)(logits, target), hard_bootstrap_loss(logits, target, 0.7))
    assert isinstance(build_classification_loss("ce"), torch.nn.CrossEntropyLoss)
    assert build_classification_loss("soft-bootstrap").beta == 0.95
    assert build_classification_loss("hard-bootstrap").beta == 0.8
    assert build_classification_loss("hard-bootstrap", beta=0.6).beta == 0.6
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        build_classification_loss("focal")


@pytest.mark.parametrize(
    "logits, target, kw, err",
    [
        (torch.randn(3), torch.tensor([0, 1, 2]), {}, ValueError),
        (torch.randn(3, 2), torch.tensor([0, 1]), {}, ValueError),
        (torch.randn(3, 2), torch.tensor([0.0, 1.0, 1.0]), {}, TypeError),
        (torch.randn(3, 2), torch.tensor([0, 1, 1]), {"beta": 1.5}, ValueError),
        (torch.randn(3, 2), torch.tensor([0, 1, 1]), {"reduction": "avg"}, ValueError),
    ],
)
def test_bad_inputs(logits, target, kw, err):
    for fn in (soft_bootstrap_loss, hard_bootstrap_loss):
        with pytest.raises(err):
            fn(logits, target, **kw)
