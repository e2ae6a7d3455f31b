"""lightface.eval.image_quality: PSNR / SSIM conventions (BasicSR's Y channel), input ranges, errors."""
import cv2
import numpy as np
import pytest
import torch

from lightface.eval.image_quality import blur, psnr, ssim, spurious_spots, to_hwc


def _pair(size: int = 64, seed: int = 0):
    """(SR-like, HR) uint8 BGR images: a smooth random HR and its 4x bicubic round trip."""
    rng = np.random.default_rng(seed)
    hr = cv2.resize(rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8), (size, size),
                    interpolation=cv2.INTER_CUBIC)
    lr = cv2.resize(hr, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
    return cv2.resize(lr, (size, size), interpolation=cv2.INTER_CUBIC), hr


def _y_basicsr(bgr: np.ndarray) -> np.ndarray:
    """BasicSR ``bgr2ycbcr(img / 255, y_only=True) * 255``: Y in 16..235, float."""
    return (bgr.astype(np.float64) / 255.0) @ np.array([24.966, 128.553, 65.481]) + 16.0


def _psnr_basicsr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


def _ssim_basicsr(a: np.ndarray, b: np.ndarray) -> float:
    """BasicSR ``_ssim``: 11x11 Gaussian (sigma 1.5), valid region, C1/C2 for data range 255."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(k, k.T)

    def f(x):
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    m1, m2 = f(a), f(b)
    s1, s2, s12 = f(a * a) - m1 ** 2, f(b * b) - m2 ** 2, f(a * b) - m1 * m2
    return float((((2 * m1 * m2 + c1) * (2 * s12 + c2)) / ((m1 ** 2 + m2 ** 2 + c1) * (s1 + s2 + c2))).mean())


def test_y_channel_is_bt601_studio_swing_y_as_basicsr_scores_it():
    # the face-SR protocol: Y of YCbCr (16..235), data range 255. Full-range luma in [0, 1]
    # scored 20 log10(255/219) = 1.32 dB lower on every image, and a different SSIM
    sr, hr = _pair()
    ya, yb = _y_basicsr(sr), _y_basicsr(hr)
    assert psnr(sr, hr, y_channel=True, channel_order="bgr") == pytest.approx(_psnr_basicsr(ya, yb), abs=1e-9)
    assert ssim(sr, hr, y_channel=True, channel_order="bgr") == pytest.approx(_ssim_basicsr(ya, yb), abs=1e-6)
    # the same images as an RGB float batch: the same numbers
    t_sr = torch.from_numpy(sr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    t_hr = torch.from_numpy(hr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    assert psnr(t_sr, t_hr, y_channel=True)[0] == pytest.approx(_psnr_basicsr(ya, yb), abs=1e-4)
    assert ssim(t_sr, t_hr, y_channel=True)[0] == pytest.approx(_ssim_basicsr(ya, yb), abs=1e-5)
    # crop_border, as BasicSR's: the border pixels are left out
    c = 4
    crop = (slice(c, -c), slice(c, -c))
    assert psnr(sr, hr, True, "bgr", crop_border=c) == pytest.approx(_psnr_basicsr(ya[crop], yb[crop]), abs=1e-9)
    assert ssim(sr, hr, True, "bgr", crop_border=c) == pytest.approx(_ssim_basicsr(ya[crop], yb[crop]), abs=1e-6)


def test_crop_border_leaves_the_edges_out_and_is_checked():
    _, hr = _pair()
    edged = hr.copy()
    edged[:3] = 0
    edged[:, -3:] = 255
    assert np.isfinite(psnr(edged, hr)) and ssim(edged, hr) < 1
    assert psnr(edged, hr, crop_border=3) == np.inf and ssim(edged, hr, crop_border=3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="crop_border=32 leaves nothing of a 64x64 image"):
        psnr(edged, hr, crop_border=32)
    with pytest.raises(ValueError, match="crop_border must be an integer >= 0"):
        psnr(edged, hr, crop_border=-1)


def test_integer_images_are_scaled_by_their_dtype_in_any_layout():
    # torch uint8 (read_image's CHW), uint16 and a numpy uint8 (N, 3, H, W) batch were clipped to
    # [0, 1] (nearly all white: PSNR 36.5 dB instead of 24.3) or failed with misleading errors
    sr, hr = _pair()
    ref_p, ref_s = psnr(sr, hr), ssim(sr, hr)
    t_sr, t_hr = (torch.from_numpy(x).permute(2, 0, 1) for x in (sr, hr))
    assert psnr(t_sr, t_hr) == pytest.approx(ref_p) and ssim(t_sr, t_hr) == pytest.approx(ref_s)
    wide_sr, wide_hr = sr.astype(np.uint16) * 257, hr.astype(np.uint16) * 257  # 16-bit PNG of the same pixels
    assert psnr(wide_sr, wide_hr) == pytest.approx(ref_p) and ssim(wide_sr, wide_hr) == pytest.approx(ref_s)
    batch_sr, batch_hr = sr.transpose(2, 0, 1)[None], hr.transpose(2, 0, 1)[None]
    assert psnr(batch_sr, batch_hr).tolist() == pytest.approx([ref_p])
    assert ssim(batch_sr, batch_hr).tolist() == pytest.approx([ref_s])
    assert psnr(batch_sr, batch_hr, y_channel=True, channel_order="bgr")[0] == pytest.approx(
        psnr(sr, hr, y_channel=True, channel_order="bgr"))


def test_other_ranges_need_data_range_and_are_never_clipped():
    sr, hr = _pair()
    f_sr, f_hr = sr.astype(np.float32), hr.astype(np.float32)  # float in 0..255
    with pytest.raises(ValueError, match=r"pred values span \[.*\], outside \[0, 1\].*data_range=255"):
        psnr(f_sr, f_hr)
    with pytest.raises(ValueError, match="outside"):
        ssim(f_sr, f_hr)
    assert psnr(f_sr, f_hr, data_range=255) == pytest.approx(psnr(sr, hr))
    assert ssim(f_sr, f_hr, data_range=255) == pytest.approx(ssim(sr, hr))
    as_int = sr.astype(np.int64), hr.astype(np.int64)
    with pytest.raises(ValueError, match="dtype int64.*give data_range"):
        psnr(*as_int)
    assert psnr(*as_int, data_range=255) == pytest.approx(psnr(sr, hr))
    unclamped = torch.rand(1, 3, 16, 16) * 1.2 - 0.1  # a network's raw output
    with pytest.raises(ValueError, match=r"pred\[0\] values span.*clamp"):
        psnr(unclamped, unclamped.clamp(0, 1))
    with pytest.raises(ValueError, match=r"span \[0, inf\]"):
        psnr(np.r_[np.zeros((15, 16)), np.full((1, 16), np.inf)], np.zeros((16, 16)))
    assert np.isnan(psnr(np.full((16, 16), np.nan), np.zeros((16, 16))))  # a diverged network's output
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        psnr(sr, hr, data_range=0)
    # float rounding just past 1 is not an error
    x = np.linspace(0, 1, 256).reshape(16, 16)
    assert psnr(np.minimum(x * (1 + 1e-7), 1 + 1e-7), x) > 100


def test_channel_order_is_checked():
    # a typo ("garbage", "ycbcr") silently meant RGB, and changed the Y-PSNR of BGR images
    sr, hr = _pair()
    assert psnr(sr, hr, y_channel=True, channel_order="BGR") == psnr(sr, hr, y_channel=True, channel_order="bgr")
    for fn in (lambda: psnr(sr, hr, True, "ycbcr"), lambda: ssim(sr, hr, channel_order="garbage"),
               lambda: spurious_spots(sr, hr, channel_order="brg"), lambda: blur(sr, "bgra"),
               lambda: to_hwc(sr, "gbr")):
        with pytest.raises(ValueError, match="channel_order must be 'rgb' or 'bgr'"):
            fn()


def test_ssim_names_its_minimum_size():
    rng = np.random.default_rng(0)
    for size in (7, 10):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        with pytest.raises(ValueError, match=f"at least 11x11 pixels .*got {size}x{size}"):
            ssim(img, img)
    img = rng.integers(0, 256, (11, 11, 3), dtype=np.uint8)
    assert ssim(img, img) == pytest.approx(1.0)
    big = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    with pytest.raises(ValueError, match="got 10x10 after crop_border=5"):
        ssim(big, big, crop_border=5)
