"""TP-GAN generator / discriminator and the frontal synthesis loss (tiny widths, batch 2)."""
import argparse

import pytest
import torch
import torch.nn.functional as F

from lightface import ops
from lightface.data.align import template_points
from lightface.engine.gan import GANObjective
from pipelines._cli import add_gan_arguments
from lightface.losses.frontal import IP_DISTANCES, IP_REFERENCES, FrontalLoss, prefix_terms
from lightface.models import get_model
from lightface.models.checkpoint import build_from_checkpoint, save_model_checkpoint
from lightface.models.tpgan import PATCH_SIZES, TPGANDiscriminator, TPGANGenerator, frontal_patch_centres, patch_boxes


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return TPGANGenerator(width=8, noise_dim=8, feature_dim=16)


def test_patch_centres_follow_alignment_template():
    pts = template_points("lightcnn", 128)
    c = frontal_patch_centres(128)
    assert c["left_eye"] == pytest.approx(tuple(pts[0]))
    assert c["right_eye"] == pytest.approx(tuple(pts[1]))
    assert c["nose"] == pytest.approx(tuple(pts[2]))
    assert c["mouth"] == pytest.approx(tuple((pts[3] + pts[4]) / 2))
    boxes = patch_boxes(c)
    for name, (y0, x0, h, w) in boxes.items():
        assert (h, w) == PATCH_SIZES[name]
        assert 0 <= y0 and y0 + h <= 128 and 0 <= x0 and x0 + w <= 128
    # eyes mirror each other on the canvas
    assert boxes["left_eye"][1] + 40 + boxes["right_eye"][1] == 128


def test_generator_outputs(gen):
    x = torch.rand(2, 3, 128, 128)
    out = gen(x)
    for key, s in (("img128", 128), ("img64", 64), ("img32", 32)):
        assert out[key].shape == (2, 3, s, s)
        assert out[key].min() >= 0 and out[key].max() <= 1
    assert out["local"].shape == (2, 3, 128, 128)
    assert {k: tuple(v.shape[2:]) for k, v in out["patches"].items()} == PATCH_SIZES
    assert out["feature"].shape == (2, 16)
    assert "logits" not in out


def test_generator_noise_train_vs_eval(gen):
    x = torch.rand(1, 3, 128, 128)
    gen.train()
    a, b = gen(x)["img128"], gen(x)["img128"]
    assert not torch.allclose(a, b)  # fresh noise each call
    gen.eval()
    a, b = gen(x)["img128"], gen(x)["img128"]
    assert torch.equal(a, b)
    assert torch.equal(gen.frontalize(x), a)
    gen.train()


def test_generator_bad_input(gen):
    with pytest.raises(ValueError, match="128"):
        gen(torch.rand(2, 3, 112, 112))
    with pytest.raises(ValueError, match=r"\(N, 3, 128, 128\)"):
        gen(torch.rand(2, 1, 128, 128))
    with pytest.raises(ValueError, match="multiple of 8"):
        TPGANGenerator(width=12)


def test_fuse_on_canvas_is_max_and_zero_outside(gen):
    patches = {name: torch.full((1, 1, h, w), -float(i + 1)) for i, (name, (h, w)) in enumerate(PATCH_SIZES.items())}
    canvas = gen.fuse_on_canvas(patches)
    for i, (name, (y0, x0, h, w)) in enumerate(gen.boxes.items()):
        region = canvas[0, 0, y0 : y0 + h, x0 : x0 + w]
        assert region.max() <= -1  # negative values survive (no max with the zero background)
    covered = torch.zeros(128, 128, dtype=torch.bool)
    for y0, x0, h, w in gen.boxes.values():
        covered[y0 : y0 + h, x0 : x0 + w] = True
    assert torch.all(canvas[0, 0][~covered] == 0)
    # nose and mouth boxes overlap: the overlap takes the larger value (nose -3 > mouth -4)
    ny, nx, nh, nw = gen.boxes["nose"]
    my, mx, mh, mw = gen.boxes["mouth"]
    if ny + nh > my:
        assert canvas[0, 0, my, nx + 1].item() == -3.0


def test_classifier_and_registry():
    g = get_model("tpgan", width=8, noise_dim=0, num_classes=5)
    out = g(torch.rand(2, 3, 128, 128))
    assert out["logits"].shape == (2, 5)
    g1 = get_model("tpgan", in_channels=1, width=8)
    assert g1(torch.rand(2, 1, 128, 128))["img128"].shape == (2, 1, 128, 128)


def test_checkpoint_roundtrip(tmp_path, gen):
    kwargs = dict(width=8, noise_dim=8, feature_dim=16)
    path = save_model_checkpoint(tmp_path / "g.pth", gen, "tpgan", kwargs, ema_state_dict=gen.state_dict())
    g2 = build_from_checkpoint(path, ema=True)
    x = torch.rand(1, 3, 128, 128)
    gen.eval()
    assert torch.allclose(g2.frontalize(x), gen.frontalize(x))
    gen.train()


@pytest.mark.parametrize("mbd,mbstd", [(False, False), (True, True)])
def test_discriminator_contract(mbd, mbstd):
    d = TPGANDiscriminator(width=8, minibatch_discrimination=mbd, minibatch_std=mbstd)
    x = torch.rand(2, 3, 128, 128)
    logits = d(x)
    assert logits.shape == (2, 1, 4, 4)
    logits2, feats = d(x, return_features=True)
    assert torch.allclose(logits, logits2)
    assert feats[-1].shape == (2, 64)
    assert get_model("tpgan_discriminator", width=8)(x).shape == (2, 1, 4, 4)


def _objective(*flags):
    p = argparse.ArgumentParser()
    add_gan_arguments(p)
    return GANObjective.from_args(p.parse_args(list(flags)))


def test_frontal_loss_terms_and_weights(gen):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)
    d = TPGANDiscriminator(width=8)
    identity = get_model("lightcnn9", num_classes=0).eval()
    from lightface.losses.identity import IdentityLoss

    crit = FrontalLoss(IdentityLoss(identity), _objective("--adversarial", "hinge"))
    out = gen(x)
    loss, terms = crit(out, y, d, patch_boxes=gen.boxes)
    assert set(terms) == {"l_g_pix", "l_g_patch", "l_g_sym", "l_g_adv", "l_g_ip", "l_g_tv", "l_g_total"}
    expected = (terms["l_g_pix"] + terms["l_g_patch"] + 0.3 * terms["l_g_sym"] + 1e-3 * terms["l_g_adv"]
                + 3e-3 * terms["l_g_ip"] + 1e-4 * terms["l_g_tv"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    sym = sum(ops.symmetry_loss(out[k]).item() for k in ("img128", "img64", "img32")) / 3
    assert terms["l_g_sym"] == pytest.approx(sym, rel=1e-5)
    assert terms["l_g_tv"] == pytest.approx(ops.total_variation(out["img128"]).item(), rel=1e-5)
    loss.backward()
    assert gen.out128.weight.grad is not None and gen.local["mouth"].to_img.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())  # D frozen during the generator loss
    gen.zero_grad()


def test_frontal_loss_pixel_zero_on_target():
    y = torch.rand(2, 3, 128, 128)
    out = {"img128": y, "img64": torch.nn.functional.interpolate(y, size=64, mode="area"),
           "img32": torch.nn.functional.interpolate(y, size=32, mode="area")}
    crit = FrontalLoss(lambda_sym=0, lambda_tv=0)
    loss, terms = crit(out, y)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert set(terms) == {"l_g_pix", "l_g_total"}


def test_frontal_loss_pixel_weight_scales_each_sample(gen):
    """pixel_weight (the trainer's --profile-pixel) scales each sample's pixel and patch L1: weight 0 drops a
    sample's pixel target (FNM's profiles), all ones is the plain loss, and the gradient follows the weights."""
    torch.manual_seed(3)
    x, y = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)
    out = gen(x)
    crit = FrontalLoss(lambda_sym=0, lambda_tv=0)
    plain = crit(out, y, patch_boxes=gen.boxes)[1]
    ones = crit(out, y, patch_boxes=gen.boxes, pixel_weight=torch.ones(2))[1]
    assert ones["l_g_pix"] == pytest.approx(plain["l_g_pix"], rel=1e-6)
    assert ones["l_g_patch"] == pytest.approx(plain["l_g_patch"], rel=1e-6)
    # sample 0 alone, at weight 1 (half the batch mean), equals the one-sample loss divided by 2
    only0 = crit(out, y, patch_boxes=gen.boxes, pixel_weight=torch.tensor([1.0, 0.0]))[1]
    single = crit({k: v[:1] for k, v in out.items() if k in ("img128", "img64", "img32")}, y[:1])[1]
    assert only0["l_g_pix"] == pytest.approx(single["l_g_pix"] / 2, rel=1e-5)
    loss, _ = crit(out, y, patch_boxes=gen.boxes, pixel_weight=torch.tensor([0.0, 1.0]))
    grad = torch.autograd.grad(loss, out["img128"])[0]
    assert grad[0].abs().sum() == 0 and grad[1].abs().sum() > 0
    with pytest.raises(ValueError, match="one weight per sample"):
        crit(out, y, pixel_weight=torch.ones(3))


def test_frontal_loss_identity_reference_and_distance():
    """ip_reference picks what L_ip compares with: zero against the image itself, the mean of both for 'both'."""
    from lightface.losses.identity import IdentityLoss

    torch.manual_seed(2)
    identity = IdentityLoss(get_model("lightcnn9", num_classes=0).eval())
    fake, target = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)
    out = {"img128": fake, "img64": torch.nn.functional.interpolate(fake, size=64, mode="area"),
           "img32": torch.nn.functional.interpolate(fake, size=32, mode="area")}
    for distance in IP_DISTANCES:
        ip = {}
        for reference in IP_REFERENCES:
            crit = FrontalLoss(identity, lambda_sym=0, lambda_tv=0, lambda_ip=1.0, ip_distance=distance,
                               ip_reference=reference)
            ip[reference] = crit(out, target, source=fake)[1]["l_g_ip"]
        assert ip["input"] == pytest.approx(0.0, abs=1e-5)  # the fake against itself
        assert ip["target"] > 1e-4
        assert ip["both"] == pytest.approx((ip["target"] + ip["input"]) / 2, rel=1e-4)  # input: ~1e-8, not 0
    # the judge's features of the input, when the caller has them (a generator conditioned on this judge), are
    # read instead of a second pass over the input: same loss, one judge pass fewer
    passes, features = [], identity.features
    identity.features = lambda images: passes.append(images) or features(images)  # counts the judge's passes
    for reference in ("input", "both"):
        crit = FrontalLoss(identity, lambda_sym=0, lambda_tv=0, lambda_ip=1.0, ip_distance="cosine",
                           ip_reference=reference)
        source = torch.rand(2, 3, 128, 128)
        passes.clear()
        fresh = crit(out, target, source=source)[1]["l_g_ip"]
        computed = len(passes)
        with torch.no_grad():
            known = identity.features(source)
        passes.clear()
        assert crit(out, target, source=source, source_features=known)[1]["l_g_ip"] == pytest.approx(fresh, rel=1e-5)
        assert len(passes) == computed - 1
    with pytest.raises(ValueError, match="source="):
        FrontalLoss(identity, ip_reference="input")(out, target)
    with pytest.raises(ValueError, match="ip_distance"):
        FrontalLoss(ip_distance="l3")
    with pytest.raises(ValueError, match="ip_reference"):
        FrontalLoss(ip_reference="gallery")


def test_frontal_loss_identity_jitter():
    """ip_jitter: the judge sees a randomly shifted / scaled fake; a flat image is unchanged by it, a textured one
    is not, gradients still reach the fake, and the amount is checked."""
    from lightface.losses.identity import IdentityLoss

    torch.manual_seed(3)
    identity = IdentityLoss(get_model("lightcnn9", num_classes=0).eval())
    crit = FrontalLoss(identity, lambda_sym=0, lambda_tv=0, lambda_ip=1.0, ip_distance="cosine",
                       ip_reference="input", ip_jitter=0.05)
    flat = torch.full((2, 3, 128, 128), 0.4)
    assert crit.identity_preserving(flat, flat).item() == pytest.approx(0.0, abs=1e-5)
    fake = torch.rand(2, 3, 128, 128, requires_grad=True)
    ip = crit.identity_preserving(fake, fake.detach())
    assert ip.item() > 1e-4  # the judge saw a moved copy
    ip.backward()
    assert fake.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ip_jitter"):
        FrontalLoss(identity, ip_jitter=0.6)


def test_frontal_loss_extra_judges_average():
    """extra_identity: L_ip is the mean of every judge's own distance; extra judges need the main one."""
    from lightface.losses.identity import IdentityLoss

    torch.manual_seed(4)
    a = IdentityLoss(get_model("lightcnn9", num_classes=0).eval())
    b = IdentityLoss(get_model("lightcnn29v2", num_classes=0).eval())
    fake, real = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)
    single = [FrontalLoss(j, ip_distance="cosine").identity_preserving(fake, real).item() for j in (a, b)]
    both = FrontalLoss(a, ip_distance="cosine", extra_identity=[b]).identity_preserving(fake, real).item()
    assert both == pytest.approx(sum(single) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="main identity judge"):
        FrontalLoss(None, extra_identity=[b])


def test_frontal_loss_identity_ranking():
    """lambda_ip_rank: cross-entropy of the judge's cosines to the identity banks; a face is ranked by its
    own row (low loss) against another's (high), gradients reach it, and banks and labels are required."""
    from lightface.losses.identity import IdentityLoss

    torch.manual_seed(5)
    judge = IdentityLoss(get_model("lightcnn9", num_classes=0).eval())
    faces = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        bank = F.normalize(judge.features(faces)["fc"], dim=1)
    crit = FrontalLoss(judge, lambda_ip=0.0, lambda_ip_rank=1.0, identity_banks=[bank], ip_temperature=0.1)
    fake = faces.clone().requires_grad_(True)
    own = crit.identity_terms(fake, (faces,), torch.tensor([0, 1, 2]))[1]
    expected = F.cross_entropy(bank @ bank.T / 0.1, torch.tensor([0, 1, 2]))
    assert own.item() == pytest.approx(expected.item(), rel=1e-4)
    assert crit.identity_terms(faces, (faces,), torch.tensor([1, 2, 0]))[1].item() > own.item()
    own.backward()
    assert fake.grad.abs().sum() > 0
    out = {"img128": faces, "img64": F.avg_pool2d(faces, 2), "img32": F.avg_pool2d(faces, 4)}
    _, terms = crit(out, faces, labels=torch.tensor([0, 1, 2]))
    assert terms["l_g_ip_rank"] == pytest.approx(expected.item(), rel=1e-4)
    with pytest.raises(ValueError, match="needs labels"):
        crit(out, faces)
    with pytest.raises(ValueError, match="one \\(K, 256\\) bank per judge \\(2\\)"):
        FrontalLoss(judge, extra_identity=[judge], lambda_ip_rank=1.0, identity_banks=[bank])
    with pytest.raises(ValueError, match="needs an identity judge"):
        FrontalLoss(None, lambda_ip_rank=1.0)


def test_frontal_loss_errors(gen):
    out = gen(torch.rand(2, 3, 128, 128))
    with pytest.raises(ValueError, match="target must match"):
        FrontalLoss()(out, torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="discriminator"):
        FrontalLoss(objective=_objective())(out, torch.rand(2, 3, 128, 128))
    with pytest.raises(ValueError, match="num_classes"):
        FrontalLoss(lambda_ce=1.0)(out, torch.rand(2, 3, 128, 128))
    with pytest.raises(ValueError, match="lambda_sym"):
        FrontalLoss(lambda_sym=-1)


def test_prefix_terms():
    assert prefix_terms({"g_adv": 1, "d_gp": 2.0, "l_g_x": 3}) == {"l_g_adv": 1.0, "l_d_gp": 2.0, "l_g_x": 3.0}


def test_conditioned_generator_starts_from_an_unconditioned_one():
    """--identity-condition fine-tunes from an unconditioned generator: with the new decoder inputs at zero
    weight it is exactly the saved model, whatever the condition; the recogniser stays out of its weights."""
    import copy

    torch.manual_seed(0)
    kwargs = dict(width=8, noise_dim=4, feature_dim=8)
    plain = TPGANGenerator(**kwargs).eval()
    cond = TPGANGenerator(**kwargs, condition_network="some_recogniser").eval()
    judge = get_model("lightcnn9", num_classes=0).eval()
    cond.set_condition_network(judge)
    # the judge is not part of the generator's weights: only the FiLM layers are new
    assert {k.split(".")[0] for k in set(cond.state_dict()) - set(plain.state_dict())} == {"film"}
    cond.load_state_dict(cond.adapt_finetune_state(plain.state_dict(), {}))
    x = torch.rand(2, 3, 128, 128)
    c = cond.condition(x)
    assert c.shape == (2, 256) and torch.allclose(c.norm(dim=1), torch.full((2,), 16.0))  # unit RMS entries
    from lightface.models.identity import identity_features  # a trainer that has the judge's features already
    torch.testing.assert_close(cond.condition_from_fc(identity_features(judge, x)["fc"]), c)
    with pytest.raises(ValueError, match=r"gives \(128,\) features"):
        cond.condition_from_fc(torch.zeros(2, 128))
    # equal up to float summation order (the decoder seed's matmul is wider)
    torch.testing.assert_close(cond.frontalize(x), plain.frontalize(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(cond(x, condition=torch.randn(2, 256))["img128"], cond(x)["img128"], atol=1e-6, rtol=0)
    # once trained, the condition changes the output; the EMA copy shares the judge
    with torch.no_grad():
        cond.film.d16.weight.normal_(0, 0.1)
    assert (cond(x)["img128"] - cond(x, condition=-c)["img128"]).abs().max() > 1e-5  # 100x the float noise above
    assert copy.deepcopy(cond)._condition.network is judge
    with pytest.raises(ValueError, match=r"condition must be \(2, 256\)"):
        cond(x, condition=torch.zeros(2, 128))
    with pytest.raises(ValueError, match="--identity-condition"):
        plain.adapt_finetune_state(cond.state_dict(), {"condition_network": "some_recogniser"})
    # a generator conditioned on one recogniser does not silently start reading another one's features
    assert set(cond.adapt_finetune_state(cond.state_dict(), {"condition_network": "some_recogniser"})) \
        == set(cond.state_dict())
    with pytest.raises(ValueError, match="pass --identity-weights other_recogniser"):
        cond.adapt_finetune_state(cond.state_dict(), {"condition_network": "other_recogniser"})
    with pytest.raises(ValueError, match="without condition_network"):
        plain.set_condition_network(judge)
