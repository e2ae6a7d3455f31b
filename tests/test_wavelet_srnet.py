"""Wavelet-SRNet generator, discriminators, wavelet losses, image quality, degradation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightface.data.degradation import Degradation, downscale, resize
from lightface.eval.image_quality import blur, psnr, spurious_spots, ssim
from lightface.losses.wavelet import WaveletSRLoss, subband_weights, texture_loss, wavelet_prediction_loss
from lightface.models import get_model
from lightface.models.discriminators import ImageDiscriminator, WaveletDiscriminator
from lightface.models.wavelet_srnet import WaveletSRNet
from lightface.nn import WaveletPacket2d

TINY = dict(channels=8, num_blocks=1, head_channels=8)


@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_generator_shapes_and_pyramid(scale):
    net = get_model("wavelet_srnet", scale=scale, output_size=64, **TINY)
    lr = torch.rand(2, 3, 64 // scale, 64 // scale)
    out = net.forward_all(lr)
    assert out.sr.shape == (2, 3, 64, 64)
    assert out.coeffs.shape == (2, 3 * 4 ** net.levels, 64 // scale, 64 // scale)
    assert sorted(out.pyramid) == [2**k for k in range(net.levels + 1)]
    for f, img in out.pyramid.items():
        assert img.shape == (2, 3, lr.shape[2] * f, lr.shape[3] * f)
    torch.testing.assert_close(net(lr), out.sr)


def test_untrained_residual_model_is_bicubic_and_pyramid_is_area_downscale():
    net = WaveletSRNet(scale=4, output_size=32, **TINY).eval()
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out = net.forward_all(lr)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    torch.testing.assert_close(out.sr, bicubic, atol=1e-5, rtol=0)
    # coarser outputs are the area-downscaled SR image
    torch.testing.assert_close(out.pyramid[2], F.avg_pool2d(out.sr, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pyramid[1], F.avg_pool2d(out.sr, 4), atol=1e-5, rtol=0)


def test_generator_learns_and_heads_group_subbands():
    torch.manual_seed(0)
    net = WaveletSRNet(scale=2, output_size=8, residual="none", head_groups=2, **TINY)
    hr = torch.rand(2, 3, 8, 8)
    lr = F.avg_pool2d(hr, 2)
    loss_fn = WaveletSRLoss(1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(20):
        out = net.forward_all(lr)
        loss, terms = loss_fn(out.coeffs, out.sr, hr)
        assert set(terms) == {"l_g_wavelet", "l_g_texture", "l_g_pix"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_generator_bad_args():
    with pytest.raises(ValueError, match="scale"):
        WaveletSRNet(scale=3)
    with pytest.raises(ValueError, match="head_groups"):
        WaveletSRNet(scale=2, head_groups=3)
    with pytest.raises(ValueError, match="divisible"):
        WaveletSRNet(scale=8, output_size=100)
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        WaveletSRNet(scale=2, **TINY)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("cls", [ImageDiscriminator, WaveletDiscriminator])
@pytest.mark.parametrize("mbd,mbstd", [(False, False), (True, True)])
def test_discriminator_contract(cls, mbd, mbstd):
    d = cls(channels=8, num_blocks=2, minibatch_discrimination=mbd, minibatch_std=mbstd)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    logits = d(x)
    assert logits.shape == (4, 1)
    logits2, feats = d(x, return_features=True)
    torch.testing.assert_close(logits, logits2)
    assert isinstance(feats, list) and feats[-1].dim() == 2 and feats[-1].shape[0] == 4
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_wavelet_discriminator_ignores_approximation_when_detail_only():
    d = WaveletDiscriminator(channels=8, num_blocks=1, levels=1)
    x = torch.rand(2, 3, 16, 16)
    flat = torch.full_like(x, 0.3)  # only approximation energy
    assert torch.allclose(d(flat), d(torch.full_like(x, 0.9)))


def test_wavelet_losses_hand_values():
    w = subband_weights(1)
    torch.testing.assert_close(w, torch.tensor([0.01, 0.99, 0.99, 0.99]))
    target = torch.zeros(1, 4, 2, 2)
    pred = torch.zeros(1, 4, 2, 2)
    pred[:, 0] = 1.0  # approximation error 1 everywhere
    pred[:, 2] = 2.0  # one detail subband error 2 everywhere
    # per-band: each subband's mean, summed; paper: one mean over the approximation, one over all detail coefficients
    torch.testing.assert_close(wavelet_prediction_loss(pred, target, w, "per-band"), torch.tensor(0.01 * 1 + 0.99 * 4))
    torch.testing.assert_close(wavelet_prediction_loss(pred, target, w), torch.tensor(0.01 * 1 + 0.99 * 4 / 3))
    with pytest.raises(ValueError, match="paper, per-band"):
        wavelet_prediction_loss(pred, target, w, "sum")
    # texture: SR detail energy below alpha * HR energy is penalised, above is free
    hr = torch.zeros(1, 4, 2, 2)
    hr[:, 1:] = 1.0
    assert texture_loss(torch.zeros_like(hr), hr, 4).item() == pytest.approx(1.2)
    assert texture_loss(2 * hr, hr, 4).item() == 0.0
    assert texture_loss(hr, hr, 4, alpha=1.0).item() == 0.0


@pytest.mark.parametrize("levels,per_band_ratio", [(2, 148.6), (3, 634.0)])
def test_the_papers_weights_keep_the_papers_balance_at_every_scale(levels, per_band_ratio):
    """Wavelet-SRNet (paper and official code: 0.99 detail, 0.01 approximation, 0.1 image, each a mean): with the
    same error on every coefficient the wavelet term is 10x the image term at 4x and at 8x. The per-subband sum of
    earlier runs (normalization="per-band", kept for them) grows with the 4**levels subbands."""
    hr = torch.rand(2, 3, 8 * 2**levels, 8 * 2**levels, generator=torch.Generator().manual_seed(0))
    sr = hr + 0.01 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(1))
    wpt = WaveletPacket2d(levels)
    _, terms = WaveletSRLoss(levels, texture_weight=0)(wpt(sr), sr, hr)
    assert (terms["l_g_wavelet"] / terms["l_g_pix"]).item() == pytest.approx(10.0, rel=0.05)
    _, terms = WaveletSRLoss(levels, texture_weight=0, normalization="per-band")(wpt(sr), sr, hr)
    assert (terms["l_g_wavelet"] / terms["l_g_pix"]).item() == pytest.approx(per_band_ratio, rel=0.05)
    with pytest.raises(ValueError, match="normalization"):
        WaveletSRLoss(levels, normalization="mean")


def test_wavelet_sr_loss_zero_at_identity_and_weights():
    hr = torch.rand(2, 3, 16, 16)
    wpt = WaveletPacket2d(2)
    loss, terms = WaveletSRLoss(2, texture_alpha=1.0)(wpt(hr), hr, hr)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    _, terms = WaveletSRLoss(2, texture_weight=0)(wpt(hr) + 0.1, hr + 0.1, hr)
    assert set(terms) == {"l_g_wavelet", "l_g_pix"}
    assert terms["l_g_pix"].item() == pytest.approx(0.1 * 0.01, rel=1e-4)


def test_psnr_ssim_uint8_and_float():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-5, 6, a.shape), 0, 255).astype(np.uint8)
    assert psnr(a, a) == np.inf and ssim(a, a) == pytest.approx(1.0)
    p8, s8 = psnr(b, a), ssim(b, a)
    mse = ((a.astype(float) - b) ** 2).mean()
    assert p8 == pytest.approx(10 * np.log10(255**2 / mse))
    # the same images as RGB float tensors (N, C, H, W) give the same numbers
    ta = torch.from_numpy(a[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    tb = torch.from_numpy(b[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    assert psnr(tb, ta)[0] == pytest.approx(p8, rel=1e-5)
    assert ssim(tb, ta)[0] == pytest.approx(s8, rel=1e-4)
    assert psnr(b, a, y_channel=True, channel_order="bgr") != p8
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:16])


def test_spurious_spots_count_dark_dots_the_target_lacks(shared_data):
    import cv2

    photo = sorted((shared_data / "celeba_hq").rglob("*.jpg"))[0]
    face = cv2.resize(cv2.imread(str(photo)), (128, 128), interpolation=cv2.INTER_AREA)
    assert spurious_spots(face, face) == 0
    # a 4 x 4 grid of small dark dots on the cheeks and forehead: most are counted
    dotted = face.copy()
    for y in range(20, 100, 20):
        for x in range(30, 110, 20):
            cv2.circle(dotted, (x, y), 1, tuple(int(v) - 40 for v in dotted[y, x]), -1)
    n_dotted = spurious_spots(dotted, face)
    assert 8 <= n_dotted <= 16
    # a blurred copy has lost detail but gained few dark spots (minima that moved)
    assert spurious_spots(cv2.GaussianBlur(face, (0, 0), 1.5), face) <= n_dotted - 5
    # RGB float batches give per-image counts; the dots the target has are not spurious
    t = torch.from_numpy(np.stack([face, dotted])[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    counts = spurious_spots(t, t[[0, 0]])
    assert counts.shape == (2,) and counts[0] == 0 and counts[1] == n_dotted
    assert spurious_spots(dotted, dotted) == 0



def test_blur_ranks_a_face_sharper_than_its_bicubic_upscales(shared_data):
    import cv2

    photo = sorted((shared_data / "celeba_hq").rglob("*.jpg"))[0]
    face = cv2.resize(cv2.imread(str(photo)), (128, 128), interpolation=cv2.INTER_AREA)
    up4, up8 = (cv2.resize(cv2.resize(face, (s, s), interpolation=cv2.INTER_AREA), (128, 128),
                           interpolation=cv2.INTER_CUBIC) for s in (32, 16))
    b_hr, b4, b8 = blur(face, "bgr"), blur(up4, "bgr"), blur(up8, "bgr")
    assert 0.0 <= b_hr < b4 - 0.05 and b4 < b8 - 0.05 and b8 <= 1.0
    # no reference, luma only: the channel order does not change a gray image's score,
    # and an RGB float batch gives per-image scores equal to the uint8 ones
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    assert blur(gray) == pytest.approx(blur(np.stack([gray] * 3, -1), "bgr"), abs=0.01)
    t = torch.from_numpy(np.stack([face, up8])[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    scores = blur(t)
    assert scores.shape == (2,)
    assert scores == pytest.approx([b_hr, b8], abs=1e-6)

def test_degradation_pairs():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lr, hr2 = Degradation(4)(hr)
    assert lr.shape == (16, 16, 3) and lr.dtype == np.uint8 and hr2 is hr
    clean = Degradation(4, methods=("bicubic",), blur_prob=0, noise_prob=0, jpeg_prob=0)
    np.testing.assert_array_equal(clean(hr)[0], downscale(hr, 4, "bicubic"))
    flat = np.full((32, 32), 77, np.uint8)
    for m in ("bicubic", "bilinear", "area", "bicubic_aliased", "bilinear_aliased"):
        assert (resize(flat, (8, 8), m) == 77).all()
    with pytest.raises(ValueError, match="divisible"):
        downscale(hr[:63], 4)


def test_aliased_downscales_are_those_of_opencv_and_keep_the_noise():
    """LR faces made by cv2.resize / torch interpolate (no antialiasing) are in the training mix."""
    import cv2

    noise = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(downscale(noise, 4, "bicubic_aliased"),
                                  cv2.resize(noise, (32, 32), interpolation=cv2.INTER_CUBIC))
    np.testing.assert_array_equal(downscale(noise, 8, "bilinear_aliased"),
                                  cv2.resize(noise, (16, 16), interpolation=cv2.INTER_LINEAR))
    t = torch.from_numpy(noise).permute(2, 0, 1)[None].float()
    by_torch = F.interpolate(t, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 255).round()
    assert np.abs(by_torch[0].permute(1, 2, 0).numpy() - downscale(noise, 4, "bicubic_aliased")).max() <= 1
    # antialiased kernels average the pixel noise away; the aliased ones sample it
    assert downscale(noise, 8, "bicubic").std() < 0.5 * downscale(noise, 8, "bicubic_aliased").std()


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_downscale_tensor_is_each_kernels_twin(scale):
    """downscale_tensor (differentiable, on float tensors) repeats downscale's kernel for every method, to the
    rounding of the uint8 result; a single torch kernel for all of them (the cycle loss before) does not."""
    from lightface.data.degradation import RESIZE_METHODS, downscale_tensor

    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    t = torch.from_numpy(noise).permute(2, 0, 1)[None].float()
    for method in RESIZE_METHODS:
        want = torch.from_numpy(downscale(noise, scale, method).copy()).permute(2, 0, 1)[None].float()
        diff = (downscale_tensor(t, scale, method).clamp(0, 255) - want).abs()
        assert diff.mean() < 0.35 and diff.max() <= 3, method
        if method != "bicubic" and scale > 2:
            assert (downscale_tensor(t, scale, "bicubic") - want).abs().mean() > 1, method
    with pytest.raises(ValueError, match="divisible"):
        downscale_tensor(t[..., :63], scale)
    with pytest.raises(ValueError, match="resize method"):
        downscale_tensor(t, scale, "lanczos")


def test_the_cycle_of_a_perfect_sr_output_is_only_rounding_whatever_kernel_made_the_lr():
    """train_super_resolution --cycle: the SR output is downscaled with the kernel its LR was made with
    (SRPairDataset return_method=True), so the HR face itself reproduces every clean LR input; antialiased
    bicubic when the kernel is unknown."""
    from lightface.data.degradation import RESIZE_METHODS, SRPairDataset
    from lightface.engine.sr_trainer import cycle_downscale
    from lightface.losses.gan_regularizers import cycle_consistency_loss

    yy, xx = np.mgrid[0:64, 0:64]
    faces = [np.stack([(127 + 120 * np.sin(xx / (3 + i) + yy / (5 + c))).astype(np.uint8) for c in range(3)], -1)
             for i in range(10)]
    ds = SRPairDataset(faces, 64, Degradation(4, blur_prob=0, noise_prob=0, jpeg_prob=0), seed=0, return_method=True)
    items = [ds[i] for i in range(len(ds))]
    lr, hr = torch.stack([a for a, _, _ in items]), torch.stack([b for _, b, _ in items])
    methods = [m for _, _, m in items]
    assert set(methods) <= set(RESIZE_METHODS) and len(set(methods)) >= 3
    assert cycle_consistency_loss(lr, cycle_downscale(hr, 4, methods)) < 1.5 / 255
    assert cycle_consistency_loss(lr, cycle_downscale(hr, 4)) > 2 / 255  # one kernel for all: not the LR's
    hr.requires_grad_(True)
    cycle_downscale(hr, 4, methods).sum().backward()
    assert hr.grad is not None and hr.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="3 downscale methods for 10 images"):
        cycle_downscale(hr, 4, methods[:3])


def test_sr_pair_dataset_sources():
    from lightface.data.degradation import SRPairDataset

    bgr = np.zeros((40, 50, 3), np.uint8)
    bgr[:, :, 0] = 255  # pure blue in BGR
    gray = np.full((36, 36), 128, np.uint8)
    ds = SRPairDataset([{"image": bgr, "label": 0}, gray], 32, Degradation(4, blur_prob=0, noise_prob=0, jpeg_prob=0))
    lr, hr = ds[0]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32) and hr.dtype == torch.float32
    assert hr[2].min() > 0.99 and hr[0].max() < 0.01  # RGB order: blue is channel 2
    lr, hr = ds[1]
    torch.testing.assert_close(hr[0], hr[1])
    torch.testing.assert_close(hr[1], hr[2])
    with pytest.raises(ValueError, match="divisible"):
        SRPairDataset([gray], 30, Degradation(4))
