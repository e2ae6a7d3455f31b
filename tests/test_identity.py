"""IdentityLoss and identity_cosine (random Light CNN weights: no official weights here; dlib's
recogniser, the independent judge, on real LFW faces when dlib and ../shared/data are there)."""
import sys

import numpy as np
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


def test_identity_network_of_the_original_code_is_refused_clearly():
    """A network of the original Light CNN code (returns (logits, features)) as the identity judge failed with
    "'tuple' object has no attribute 'to'" from deep inside the loss."""
    from benchmarks._baseline_lightcnn import build_baseline

    loss = IdentityLoss(build_baseline("lightcnn9", num_classes=10), layers=("fc",))
    with pytest.raises(TypeError, match=r"identity network: the model returned a tuple .*'w.pth'"):
        loss(torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128))


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


def test_dlib_face_box_follows_the_template():
    from lightface.models.dlib_recognizer import dlib_face_box
    from lightface.utils.templates import template_points

    # the box the stored teacher embeddings (144 lightcnn_train LMDB crops) were computed with
    assert dlib_face_box("lightcnn_train", 144) == (17, 20, 127, 130)
    assert dlib_face_box("lightcnn", 144) == (17, 20, 127, 130)  # the same crop
    # the 128 lightcnn crops of the super-resolver: eyes at y=40, mouth at y=88, so not the 144 box scaled
    box = dlib_face_box("lightcnn", 128)
    assert box == (9, 12, 119, 122) and box != dlib_face_box("lightcnn_train", 128)
    pts = template_points("lightcnn", 128)
    assert (np.array(box[:2]) < pts.min(0)).all() and (pts.max(0) < np.array(box[2:])).all()  # 5 points inside
    with pytest.raises(ValueError, match="template"):
        dlib_face_box("lightcnn128", 128)


def test_dlib_judge_needs_its_template_and_says_what_to_install(monkeypatch):
    from lightface.eval.identity import load_identity_judge
    from lightface.losses.identity import IdentityLoss

    x = torch.rand(1, 3, 128, 128)
    with pytest.raises(ValueError, match="template='lightcnn'"):
        identity_cosine("dlib", x, x)
    with pytest.raises(ValueError, match="only judges identity"):
        IdentityLoss("dlib")  # no gradients: not an identity loss
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'lightface\[teacher\]'"):
        load_identity_judge("dlib", template="lightcnn")


def test_sr_quality_takes_dlib_as_an_identity_network(tmp_path):
    from benchmarks.sr_quality import _identity_networks

    ckpt = tmp_path / "other.pt"
    ckpt.touch()
    assert _identity_networks(["independent=dlib", "x=DLIB", f"other={ckpt}"]) == {
        "independent": "dlib", "x": "dlib", "other": str(ckpt)}


@pytest.fixture(scope="module")
def dlib_judge():
    pytest.importorskip("dlib")
    from lightface.eval.identity import load_identity_judge

    return load_identity_judge("dlib", template="lightcnn")


@pytest.fixture(scope="module")
def lfw_crops(shared_data):
    """uint8 BGR 128 ``lightcnn`` crops: {"A1", "A2" (another photo of A), "B1" (another person)}."""
    import cv2

    from lightface.data.align import align_face

    root = shared_data / "lfw_identities"
    table = {}
    for line in (root / "landmarks_5pt.txt").read_text().splitlines():
        parts = line.split()
        table[parts[0]] = np.asarray(parts[1:], np.float64).reshape(5, 2)
    a, b = sorted({k.split("/")[0] for k in table})[:2]

    def crop(name, i):
        key = f"{name}/{name}_{i:04d}.jpg"
        return align_face(cv2.imread(str(root / "images" / key)), table[key], template="lightcnn", size=128)[0]

    return {"A1": crop(a, 1), "A2": crop(a, 2), "B1": crop(b, 1)}


def test_dlib_identity_cosine_separates_people(dlib_judge, lfw_crops):
    from lightface.data.convert import image_to_tensor

    a = image_to_tensor([lfw_crops["A1"]] * 3)  # RGB float
    b = image_to_tensor([lfw_crops["A1"], lfw_crops["A2"], lfw_crops["B1"]])
    same_image, same_person, different = identity_cosine("dlib", a, b, batch_size=2, template="lightcnn").tolist()
    assert same_image == pytest.approx(1.0, abs=1e-5)
    assert different < same_person - 0.05  # measured: 0.96 vs 0.83 (dlib descriptors are far from centred)
    gray = image_to_tensor([lfw_crops["A1"], lfw_crops["A2"]], channels=1)
    assert identity_cosine(dlib_judge, gray, gray.flip(0)).shape == (2,)


def test_dlib_reads_rgb_tensors_in_the_right_colour_order(dlib_judge, lfw_crops):
    from lightface.data.convert import image_to_tensor
    from lightface.eval.identity import identity_embeddings

    bgr = lfw_crops["B1"]
    emb = identity_embeddings(dlib_judge, image_to_tensor(bgr)[None])  # RGB tensor -> BGR crop -> dlib's RGB
    assert emb.shape == (1, 128) and emb.dtype == torch.float32
    assert np.allclose(emb[0].numpy(), dlib_judge.embed(bgr), atol=1e-6)
    assert np.linalg.norm(dlib_judge.embed(bgr) - dlib_judge.embed(bgr[..., ::-1].copy())) > 1e-3  # order matters
    with pytest.raises(ValueError, match="built for 'lightcnn'"):
        identity_cosine(dlib_judge, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), template="arcface")
