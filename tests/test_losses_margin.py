"""CosFace and ArcFace on a cosine classifier: the target logit they build, the loss value,
the fallback past pi, finite gradients, and the classifier they read."""
import math

import pytest
import torch
import torch.nn.functional as F

from lightface.losses.margin import MARGIN_LOSSES, ArcFaceLoss, CosFaceLoss
from lightface.losses.noisy_label import build_classification_loss
from lightface.models import get_model
from lightface.models.lightcnn import CosineClassifier


def _cosines(n=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats, weight = torch.randn(n, 16, generator=g), torch.randn(c, 16, generator=g)
    cos = F.normalize(feats, dim=1) @ F.normalize(weight, dim=1).t()
    return cos, torch.arange(n) % c


def test_cosface_is_cross_entropy_of_scaled_cosines_less_the_margin_at_the_target():
    cos, target = _cosines()
    expected = F.cross_entropy(30.0 * (cos - 0.35 * F.one_hot(target, cos.shape[1])), target)
    assert CosFaceLoss()(cos, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert CosFaceLoss(margin=0.0, scale=10)(cos, target).item() == pytest.approx(
        F.cross_entropy(10 * cos, target).item(), rel=1e-6)


def test_arcface_adds_the_margin_to_the_angle():
    loss = ArcFaceLoss(margin=0.5, scale=1.0)
    cos = torch.tensor([[0.9], [0.3], [-0.5]])
    moved = loss.target_logit(cos)
    for c, m in zip(cos.ravel().tolist(), moved.ravel().tolist()):
        if math.acos(c) + 0.5 < math.pi:
            assert m == pytest.approx(math.cos(math.acos(c) + 0.5), abs=1e-6)
    # past pi the target logit keeps falling instead of rising again with cos(t + m)
    far = torch.linspace(-1.0, math.cos(math.pi - 0.5), 50).unsqueeze(1)
    values = loss.target_logit(far).ravel()
    assert (values[1:] >= values[:-1]).all()  # monotonic in cos: larger angle, smaller logit
    assert (loss.target_logit(torch.tensor([[1.0], [-1.0]])) <= 1.0).all()


@pytest.mark.parametrize("name", sorted(MARGIN_LOSSES))
def test_margin_raises_the_loss_and_gradients_stay_finite(name):
    cos, target = _cosines()
    cos = cos.clone().requires_grad_(True)
    with_margin = build_classification_loss(name)(cos, target)
    without = build_classification_loss(name, margin=0.0)(cos, target)
    assert with_margin.item() > without.item()  # the target must win by the margin
    with_margin.backward()
    assert torch.isfinite(cos.grad).all()
    edge = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], requires_grad=True)  # cosines at the poles
    build_classification_loss(name)(edge, torch.tensor([0, 0])).backward()
    assert torch.isfinite(edge.grad).all()


def test_margin_losses_refuse_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="margin must be >= 0 and scale > 0"):
        CosFaceLoss(margin=-0.1)
    with pytest.raises(ValueError, match="expected cosine"):
        ArcFaceLoss()(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_cosine_classifier_gives_cosines_whatever_the_feature_length():
    clf = CosineClassifier(16, 5)
    x = torch.randn(4, 16)
    out = clf(x)
    expected = F.normalize(x, dim=1) @ F.normalize(clf.weight, dim=1).t()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(clf(7.0 * x), out)
    model = get_model("lightcnn9", num_classes=5, cosine_classifier=True)
    assert isinstance(model.classifier, CosineClassifier) and not hasattr(model.classifier, "bias")
    logits, feats = model.eval()(torch.rand(2, 1, 128, 128), return_logits=True)
    assert logits.shape == (2, 5) and feats.shape == (2, 256) and logits.abs().max() <= 1 + 1e-5
