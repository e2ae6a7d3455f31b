"""Image quality metrics for super-resolution: PSNR and SSIM (scikit-image implementations),
a count of spurious dark spots (the dotted texture a generator can hallucinate on skin) and
a perceptual blur score (scikit-image's no-reference blur effect: how soft an image looks).

Accepted inputs (both arguments the same kind and shape):

* numpy uint8 images, (H, W) gray or (H, W, 3) colour in any channel order (BGR as OpenCV
  reads them is fine: both metrics treat channels alike), data range 255;
* float tensors or arrays in [0, 1]: (H, W), (C, H, W) or a batch (N, C, H, W) (RGB by
  project convention), data range 1. Values are clamped to [0, 1] first.

Colour images are scored on all channels (SSIM averages the per-channel SSIM, Gaussian
window, sigma 1.5, as in Wang et al. 2004). ``y_channel=True`` scores ITU-R 601 luma only,
the usual face-SR protocol. ``blur`` always scores luma.
"""
from typing import List, Union

import cv2
import numpy as np
import torch
from skimage.measure import blur_effect
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["blur", "psnr", "ssim", "spurious_spots", "to_hwc"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def to_hwc(img: ArrayLike, channel_order: str = "rgb") -> np.ndarray:
    """One image to an (H, W) or (H, W, C) float64 array in [0, 1] (uint8 is divided by 255).

    Tensors/arrays with 3 dims and 1 or 3 leading channels are treated as (C, H, W);
    ``channel_order`` says whether colour data is ``"rgb"`` or ``"bgr"`` (used for luma).
    """
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy()
    img = np.asarray(img)
    if img.dtype == np.uint8:
        out = img.astype(np.float64) / 255.0
    else:
        out = np.clip(img.astype(np.float64), 0.0, 1.0)
        if out.ndim == 3 and out.shape[0] in (1, 3) and out.shape[2] not in (1, 3):
            out = out.transpose(1, 2, 0)
    if out.ndim == 3 and out.shape[2] == 1:
        out = out[:, :, 0]
    if out.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W), (H, W, C) or (C, H, W) image, got shape {img.shape}")
    if channel_order == "bgr" and out.ndim == 3:
        out = out[:, :, ::-1]
    return out


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.ndim == 2 else rgb @ np.array([0.299, 0.587, 0.114])


def _pairs(pred: ArrayLike, target: ArrayLike, y_channel: bool, channel_order: str):
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    batched = pred.ndim == 4
    preds = list(pred) if batched else [pred]
    targets = list(target) if batched else [target]
    for p, t in zip(preds, targets):
        a, b = to_hwc(p, channel_order), to_hwc(t, channel_order)
        if y_channel:
            a, b = _luma(a), _luma(b)
        yield a, b


def _result(values: List[float], batched: bool):
    return np.asarray(values) if batched else values[0]


def psnr(pred: ArrayLike, target: ArrayLike, y_channel: bool = False, channel_order: str = "rgb"):
    """Peak signal-to-noise ratio in dB (data range 1 after scaling to [0, 1]).

    Returns a float, or an (N,) array for (N, C, H, W) batches. Identical images give ``inf``.
    """
    with np.errstate(divide="ignore"):  # identical images: inf, as documented
        vals = [peak_signal_noise_ratio(b, a, data_range=1.0) for a, b in _pairs(pred, target, y_channel, channel_order)]
    return _result(vals, pred.ndim == 4)


def ssim(pred: ArrayLike, target: ArrayLike, y_channel: bool = False, channel_order: str = "rgb"):
    """Structural similarity in [-1, 1] (1 = identical); Gaussian window, sigma 1.5.

    Returns a float, or an (N,) array for (N, C, H, W) batches. Images must be at least 7x7.
    """
    vals = []
    for a, b in _pairs(pred, target, y_channel, channel_order):
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
    for a, b in _pairs(pred, target, True, channel_order):
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
