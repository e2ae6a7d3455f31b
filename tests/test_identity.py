"""IdentityLoss and identity_cosine (random Light CNN weights: no official weights here)."""
import pytest
import torch

from lightface.eval.identity import identity_cosine
from lightface.losses.identity import IdentityLoss
from lightface.models import get_model
from lightface.models.checkpoint import save_model_checkpoint
from lightface.models.lightcnn import to_lightcnn_input


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return get_model("lightcnn9").eval()


def test_identity_loss_zero_on_same_images_and_gradients_to_fake_only(net):
    loss_fn = IdentityLoss(net)
    real = torch.rand(2, 3, 64, 64)
    assert loss_fn(real.clone(), real).item() == pytest.approx(0.0, abs=1e-6)
    fake = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = loss_fn(fake, real)
    assert loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.network.parameters())
    loss_fn.train()
    assert not loss_fn.network.training


def test_identity_loss_terms_match_manual_computation(net):
    fake, real = torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128)
    maps_f, maps_r = net.feature_maps(fake), net.feature_maps(real)
    expected = (maps_f["pool"] - maps_r["pool"]).abs().mean() + (maps_f["fc"] - maps_r["fc"]).abs().mean()
    assert torch.allclose(IdentityLoss(net)(fake, real), expected, atol=1e-6)
    l2 = IdentityLoss(net, distance="l2", layers=["fc"])(fake, real)
    assert torch.allclose(l2, (maps_f["fc"] - maps_r["fc"]).pow(2).mean(), atol=1e-6)
    feats = IdentityLoss(net).features(torch.rand(3, 3, 200, 150))
    assert feats["pool"].shape == (3, 8192) and feats["fc"].shape == (3, 256)


def test_identity_loss_gray_equals_rgb_of_same_luma(net):
    gray = torch.rand(1, 1, 128, 128)
    rgb = gray.expand(1, 3, 128, 128)  # R = G = B -> luma = gray
    loss_fn = IdentityLoss(net, distance="cosine")
    assert loss_fn(rgb, gray).item() == pytest.approx(0.0, abs=1e-5)


def test_identity_loss_bad_arguments(net):
    with pytest.raises(ValueError, match="distance"):
        IdentityLoss(net, distance="l3")
    with pytest.raises(ValueError, match="layers"):
        IdentityLoss(net, layers=("conv1",))
    with pytest.raises(ValueError, match="same N"):
        IdentityLoss(net)(torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        IdentityLoss(net)(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))


def test_identity_from_checkpoint_path_and_cosine(tmp_path, net):
    path = save_model_checkpoint(tmp_path / "n.pt", net, "lightcnn9", {})
    a = torch.rand(3, 3, 96, 96)
    b = a.clone()
    b[1] = torch.rand(3, 96, 96)
    cos = identity_cosine(str(path), a, b, batch_size=2)
    assert cos.shape == (3,)
    assert cos[0].item() == pytest.approx(1.0, abs=1e-5) and cos[2].item() == pytest.approx(1.0, abs=1e-5)
    manual = torch.nn.functional.cosine_similarity(net(to_lightcnn_input(a[1:2])), net(to_lightcnn_input(b[1:2])))
    assert cos[1].item() == pytest.approx(manual.item(), abs=1e-6) and cos[1].item() < 1.0 - 1e-6
    assert torch.allclose(cos, identity_cosine(net, a, b))
    with pytest.raises(ValueError, match="same N"):
        identity_cosine(net, a, b[:2])
