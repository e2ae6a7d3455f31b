"""Image quality metrics for super-resolution: PSNR and SSIM (scikit-image implementations),
a count of spurious dark spots (the dotted texture a generator can hallucinate on skin) and
a perceptual blur score (scikit-image's no-reference blur effect: how soft an image looks).

Accepted inputs (both arguments the same kind and shape), numpy arrays or torch tensors:

* uint8 images (data range 255) and uint16 images (data range 65535);
* float images in [0, 1] (data range 1);
* anything else with an explicit ``data_range`` (the value of white, e.g. ``255`` for float
  images in 0..255): values are divided by it.

Values outside ``[0, data_range]`` are refused with a ``ValueError`` (clamp a network's
output first; only float rounding, 1e-4 of the range, is clipped). NaN pixels give a NaN
score.

Shapes: (H, W) gray, (H, W, C) or (C, H, W) with C = 1 or 3 (3 dims with 1 or 3 leading
channels are read as (C, H, W)), or a batch (N, C, H, W) (or (N, H, W, C)) that gives an
(N,) array. Colour is RGB unless ``channel_order="bgr"`` (OpenCV's order).

Colour images are scored on all channels (SSIM averages the per-channel SSIM, Gaussian
window, sigma 1.5, as in Wang et al. 2004); channel order does not matter then.
``y_channel=True`` scores the Y of ITU-R BT.601 YCbCr only, the usual face-SR protocol, as
MATLAB's ``rgb2ycbcr`` and BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with
``test_y_channel=True`` compute it: studio swing ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``
(R, G, B in [0, 1], Y in 16..235, not rounded), data range 255; gray images are scored as
they are. ``crop_border`` leaves that many pixels at each edge out (BasicSR's argument;
SR papers crop ``scale`` pixels). ``blur`` and ``spurious_spots`` score full-range ITU-R 601
luma (``0.299 R + 0.587 G + 0.114 B``).
"""
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from skimage.measure import blur_effect
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["blur", "psnr", "ssim", "spurious_spots", "to_hwc"]

ArrayLike = Union[np.ndarray, torch.Tensor]

# data range of the integer dtypes read without an explicit data_range
_INT_RANGES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_ROUNDING = 1e-4  # float excess over [0, 1] (after scaling) clipped as rounding, not refused
_SSIM_MIN_SIZE = 11  # the Gaussian window: sigma 1.5 truncated at 3.5 sigma -> 11 px


def _channel_order(channel_order: str) -> str:
    order = str(channel_order).lower()
    if order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    return order


def _numpy(img: ArrayLike, name: str) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu()
        if img.is_floating_point() and img.dtype != torch.float64:
            img = img.float()  # float16 / bfloat16: no exact NumPy twin for bfloat16
        try:
            return img.numpy()
        except TypeError as err:
            raise ValueError(f"{name}: tensors of dtype {img.dtype} are not supported; pass uint8, uint16 or "
                             f"float images") from err
    return np.asarray(img)


def _unit_range(img: np.ndarray, data_range: Optional[float], name: str) -> np.ndarray:
    """``img`` as float64 in [0, 1]: divided by ``data_range`` (None: from its dtype)."""
    if data_range is None:
        if img.dtype in _INT_RANGES:
            data_range = _INT_RANGES[img.dtype]
        elif img.dtype.kind == "f":
            data_range = 1.0
        else:
            raise ValueError(f"{name} has dtype {img.dtype}: pass uint8, uint16 or float images in [0, 1], "
                             f"or give data_range (the value of white, e.g. 255)")
    elif not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number (the value of white), got {data_range!r}")
    if img.dtype.kind not in "uif":
        raise ValueError(f"{name} has dtype {img.dtype}: images must be integers or floats")
    out = img.astype(np.float64) / float(data_range)
    # NaN passes (a diverged network's output scores NaN, which training's NaN guard reads);
    # anything else outside the range, inf included, is refused
    if ((out < -_ROUNDING) | (out > 1 + _ROUNDING)).any():
        lo, hi = np.nanmin(out) * data_range, np.nanmax(out) * data_range
        raise ValueError(
            f"{name} values span [{lo:g}, {hi:g}], outside [0, {data_range:g}] (dtype {img.dtype}): give "
            f"data_range (e.g. data_range=255 for float images in 0..255), or clamp a network's output to "
            f"[0, 1] first")
    if ((out < 0) | (out > 1)).any():
        out = np.clip(out, 0.0, 1.0)  # float rounding only
    return out


def _hwc(img: ArrayLike, channel_order: str, data_range: Optional[float], name: str) -> np.ndarray:
    arr = _numpy(img, name)
    out = _unit_range(arr, data_range, name)
    if out.ndim == 3 and out.shape[0] in (1, 3) and out.shape[2] not in (1, 3):
        out = out.transpose(1, 2, 0)
    if out.ndim == 3 and out.shape[2] == 1:
        out = out[:, :, 0]
    if out.ndim not in (2, 3):
        raise ValueError(f"{name}: expected an (H, W), (H, W, C) or (C, H, W) image, got shape {tuple(arr.shape)}")
    if _channel_order(channel_order) == "bgr" and out.ndim == 3:
        out = out[:, :, ::-1]
    return out


def to_hwc(img: ArrayLike, channel_order: str = "rgb", data_range: Optional[float] = None) -> np.ndarray:
    """One image to an (H, W) or (H, W, C) float64 array in [0, 1], colour in RGB order.

    ``img``: uint8 (divided by 255), uint16 (by 65535) or float in [0, 1], or any of them
    divided by ``data_range`` when given; values outside the range raise a ``ValueError``.
    Tensors/arrays with 3 dims and 1 or 3 leading channels are treated as (C, H, W);
    ``channel_order`` (``"rgb"`` or ``"bgr"``) says what colour data holds.
    """
    return _hwc(img, channel_order, data_range, "image")


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Full-range ITU-R 601 luma (``blur``, ``spurious_spots``): (H, W) in [0, 1]; gray passes."""
    return rgb if rgb.ndim == 2 else rgb @ np.array([0.299, 0.587, 0.114])


def _ycbcr_y(rgb: np.ndarray) -> np.ndarray:
    """Studio-swing ITU-R BT.601 Y (MATLAB ``rgb2ycbcr``, BasicSR ``bgr2ycbcr(y_only=True)``) of
    an (H, W, 3) RGB image in [0, 1], divided by 255: (H, W) in [16/255, 235/255]; gray passes."""
    if rgb.ndim == 2:
        return rgb
    if rgb.shape[2] != 3:
        raise ValueError(f"y_channel=True needs gray or 3-channel colour images, got {rgb.shape[2]} channels")
    return (16.0 + rgb @ np.array([65.481, 128.553, 24.966])) / 255.0


def _pairs(pred: ArrayLike, target: ArrayLike, channel_order: str, crop_border: int = 0,
           data_range: Optional[float] = None, y_channel: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(pred, target) as (H, W[, C]) float64 RGB in [0, 1] (``y_channel``: their studio-swing Y, (H, W)),
    image by image, borders cropped."""
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if int(crop_border) != crop_border or crop_border < 0:
        raise ValueError(f"crop_border must be an integer >= 0, got {crop_border!r}")
    crop_border = int(crop_border)
    batched = pred.ndim == 4
    preds = list(pred) if batched else [pred]
    targets = list(target) if batched else [target]
    for k, (p, t) in enumerate(zip(preds, targets)):
        where = f"[{k}]" if batched else ""
        a = _hwc(p, channel_order, data_range, "pred" + where)
        b = _hwc(t, channel_order, data_range, "target" + where)
        if crop_border:
            h, w = a.shape[:2]
            if 2 * crop_border >= min(h, w):
                raise ValueError(f"crop_border={crop_border} leaves nothing of a {h}x{w} image")
            a = a[crop_border:-crop_border, crop_border:-crop_border]
            b = b[crop_border:-crop_border, crop_border:-crop_border]
        yield (_ycbcr_y(a), _ycbcr_y(b)) if y_channel else (a, b)


def _result(values: List[float], batched: bool):
    return np.asarray(values) if batched else values[0]


def psnr(pred: ArrayLike, target: ArrayLike, y_channel: bool = False, channel_order: str = "rgb",
         crop_border: int = 0, data_range: Optional[float] = None):
    """Peak signal-to-noise ratio in dB (see the module docstring for the accepted inputs).

    Args:
        pred, target: images of the same shape and kind: uint8, uint16 or float in [0, 1]
            (or in [0, ``data_range``]); (H, W), (H, W, C), (C, H, W) or a batch (N, C, H, W).
        y_channel: score the BT.601 studio-swing Y only (BasicSR / MATLAB, data range 255 on
            its 16..235 values); False: all channels.
        channel_order: ``"rgb"`` or ``"bgr"``; matters only for ``y_channel``.
        crop_border: pixels left out at each edge (BasicSR's ``crop_border``).
        data_range: the value of white; None: 255 for uint8, 65535 for uint16, 1 for float.
    Returns:
        a float, or an (N,) array for batches. Identical images give ``inf``.
    """
    vals = []
    with np.errstate(divide="ignore"):  # identical images: inf, as documented
        for a, b in _pairs(pred, target, channel_order, crop_border, data_range, y_channel):
            vals.append(peak_signal_noise_ratio(b, a, data_range=1.0))
    return _result(vals, pred.ndim == 4)


def ssim(pred: ArrayLike, target: ArrayLike, y_channel: bool = False, channel_order: str = "rgb",
         crop_border: int = 0, data_range: Optional[float] = None):
    """Structural similarity in [-1, 1] (1 = identical); Gaussian window, sigma 1.5 (11 px),
    SSIM averaged over the region the window fits in, as in BasicSR's ``calculate_ssim``.

    Arguments as :func:`psnr`. Images must be at least 11x11 pixels after ``crop_border``
    (the window's size). Returns a float, or an (N,) array for (N, C, H, W) batches.
    """
    vals = []
    for a, b in _pairs(pred, target, channel_order, crop_border, data_range, y_channel):
        if min(a.shape[:2]) < _SSIM_MIN_SIZE:
            raise ValueError(f"ssim needs images of at least {_SSIM_MIN_SIZE}x{_SSIM_MIN_SIZE} pixels (its Gaussian "
                             f"window, sigma 1.5, is {_SSIM_MIN_SIZE} px wide), got {a.shape[0]}x{a.shape[1]}"
                             + (f" after crop_border={crop_border}" if crop_border else ""))
        vals.append(
            structural_similarity(
                b, a, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                channel_axis=2 if a.ndim == 3 else None,
            )
        )
    return _result(vals, pred.ndim == 4)


def _dark_spots(luma: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) luma in [0, 1] -> bool mask of dark-spot centres: local minima (5x5) of a
    difference of Gaussians (sigma 0.8 minus sigma 2.5, in 0-255 grey levels) below ``-threshold``."""
    g = (luma * 255.0).astype(np.float32)
    dog = cv2.GaussianBlur(g, (0, 0), 0.8) - cv2.GaussianBlur(g, (0, 0), 2.5)
    return (dog <= cv2.erode(dog, np.ones((5, 5), np.uint8))) & (dog < -threshold)


def spurious_spots(pred: ArrayLike, target: ArrayLike, threshold: float = 3.0, channel_order: str = "rgb"):
    """Number of dark spots in ``pred`` with no dark spot of ``target`` within 2 px (luma).

    A spot is a blob a few pixels wide at least ``threshold`` grey levels (of 255) darker than
    its surroundings (:func:`_dark_spots`). Real skin has few such spots in a 128 px face, and
    those the target has are not counted, so the count measures hallucinated texture, e.g. the
    dotted pattern of an over-textured 8x super-resolver; bicubic upsampling scores low, a
    copy of the target 0. Returns a float, or an (N,) array for (N, C, H, W) batches.
    """
    vals = []
    for a, b in _pairs(pred, target, channel_order):
        a, b = _luma(a), _luma(b)
        near_target = cv2.dilate(_dark_spots(b, threshold).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        vals.append(float(np.count_nonzero(_dark_spots(a, threshold) & ~near_target)))
    return _result(vals, pred.ndim == 4)


def blur(img: ArrayLike, channel_order: str = "rgb"):
    """Perceptual blur of ``img`` in [0, 1]: 0 = sharp, 1 = maximally blurred (no reference needed).

    The blur effect of Crete et al. (SPIE 2007, ``skimage.measure.blur_effect``, re-blurring
    filter 11 px, the larger of the horizontal and vertical scores) on ITU-R 601 luma: it
    measures how much of the image's neighbouring-pixel variation a further blur removes, which
    tracks perceived sharpness. PSNR rewards a soft average, so this is the number that shows
    whether a super-resolver restored detail or only smoothed: compare it with the HR face's
    (the same face photographed sharp). Bicubic upsampling by 4x or 8x scores far above its HR
    face. Accepts the inputs of :func:`psnr` (one image or an (N, C, H, W) batch); returns a
    float or an (N,) array.
    """
    imgs = list(img) if img.ndim == 4 else [img]
    vals = [float(blur_effect(_luma(to_hwc(one, channel_order)), h_size=11)) for one in imgs]
    return _result(vals, img.ndim == 4)
