"""The one place where uint8 images become float tensors and back (colour order and rounding).

Conventions (every dataset, trainer, restorer and embedder goes through these two functions):

* **Images** (NumPy) are uint8, ``(H, W)`` gray or ``(H, W, 3)`` colour in **BGR** order, as
  OpenCV reads and writes them (``color="rgb"`` for RGB arrays); a 4th (alpha) channel is
  dropped. Batches are ``(N, H, W)`` gray or ``(N, H, W, C)``.
* **Tensors** are float32 in [0, 1], ``(C, H, W)`` or ``(N, C, H, W)``, colour in **RGB**
  order (C = 3) or gray (C = 1).
* uint8 -> float: ``value / 255`` exactly. Gray from colour is ITU-R 601 luma
  (0.299 R + 0.587 G + 0.114 B) computed by OpenCV on the uint8 image (rounded to uint8,
  then divided), so a gray tensor equals the gray image OpenCV would write.
* float -> uint8: clamp to [0, 1], multiply by 255 and round to the nearest integer
  (ties to even): never truncation, so ``tensor_to_image(image_to_tensor(img)) == img``.
"""
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["image_to_tensor", "tensor_to_image", "check_unit_tensor"]

ImageLike = Union[np.ndarray, Sequence[np.ndarray]]


def _check_color(color: str) -> None:
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")


def image_to_tensor(image: ImageLike, channels: Optional[int] = None, color: str = "bgr",
                    batch: Optional[bool] = None) -> Tensor:
    """uint8 image(s) -> float32 tensor in [0, 1] (see the module docstring for the conventions).

    Args:
        image: ``(H, W)`` gray or ``(H, W, C)`` with C in (1, 3, 4); or a batch: a list of
            same-size images, or an array ``(N, H, W, C)`` (``(N, H, W)`` gray needs
            ``batch=True``, as it is otherwise read as one ``(H, W, C)`` image when its last
            side is 1, 3 or 4).
        channels: ``None`` keeps the image's kind (gray -> 1, colour -> 3), ``1`` converts
            to gray (ITU-R 601), ``3`` gives RGB (gray replicated).
        color: channel order of colour input: ``"bgr"`` (OpenCV, default) or ``"rgb"``.
        batch: force batch (True) or single image (False) interpretation of a 3-D array.
    Returns:
        float32 ``(C, H, W)``, or ``(N, C, H, W)`` for a batch; RGB when C = 3.

    Example:
        >>> bgr = np.zeros((4, 4, 3), np.uint8); bgr[..., 2] = 255   # red in OpenCV order
        >>> image_to_tensor(bgr)[0].min().item()                    # R channel first
        1.0
    """
    _check_color(color)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels}")
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("image_to_tensor: empty list of images")
        arr, is_batch = np.stack([np.asarray(i) for i in image]), True
        if arr.ndim == 3:  # a list of gray images
            arr = arr[..., None]
    else:
        arr = np.asarray(image)
        if batch is None:
            is_batch = arr.ndim == 4
        else:
            is_batch = bool(batch)
        if is_batch and arr.ndim == 3:
            arr = arr[..., None]
    if arr.dtype != np.uint8:
        raise TypeError(f"image_to_tensor expects uint8 images, got {arr.dtype}; convert with "
                        "(x * 255).round().astype(np.uint8) for float images in [0, 1]")
    if not is_batch:
        arr = arr[None] if arr.ndim == 3 else arr[None, ..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        shape = np.asarray(image).shape if not isinstance(image, (list, tuple)) else arr.shape
        raise ValueError(f"expected (H, W) gray or (H, W, 1|3|4) images (or a batch of them), got shape {shape}")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    n, h, w, c = arr.shape
    if channels is None:
        channels = 1 if c == 1 else 3
    if channels == 1 and c == 3:
        code = cv2.COLOR_BGR2GRAY if color == "bgr" else cv2.COLOR_RGB2GRAY
        gray = cv2.cvtColor(np.ascontiguousarray(arr).reshape(n * h, w, 3), code)
        arr = gray.reshape(n, h, w, 1)
    elif channels == 3 and c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif channels == 3 and color == "bgr":
        arr = arr[..., ::-1]
    out = torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))).float().div_(255.0)
    return out if is_batch else out[0]


def tensor_to_image(tensor: Tensor, color: str = "bgr") -> np.ndarray:
    """float tensor in [0, 1] -> uint8 image(s) (see the module docstring for the conventions).

    Args:
        tensor: ``(C, H, W)`` or ``(N, C, H, W)``, C = 1 (gray) or 3 (RGB), any float dtype
            and device; values outside [0, 1] are clamped.
        color: channel order of the colour output: ``"bgr"`` (for ``cv2.imwrite``, default)
            or ``"rgb"``.
    Returns:
        uint8 ``(H, W)`` gray or ``(H, W, 3)`` colour; with a batch, ``(N, H, W)`` /
        ``(N, H, W, 3)``. Values are ``round(255 * x)`` (ties to even).
    """
    _check_color(color)
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.dim() not in (3, 4):
        raise ValueError(f"tensor_to_image expects a float (C, H, W) or (N, C, H, W) tensor, got "
                         f"{getattr(tensor, 'dtype', type(tensor).__name__)} {tuple(getattr(tensor, 'shape', ()))}")
    if tensor.shape[-3] not in (1, 3):
        raise ValueError(f"tensor_to_image expects 1 (gray) or 3 (RGB) channels, got {tensor.shape[-3]}")
    arr = tensor.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
    arr = np.moveaxis(arr, -3, -1)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif color == "bgr":
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr)


#: how far outside [0, 1] :func:`check_unit_tensor` lets values stray (float rounding)
UNIT_TOLERANCE = 1e-3


def check_unit_tensor(x: Tensor, what: str) -> None:
    """Refuse a tensor that is not float in [0, 1], the range of every network input here: a 0..255 float
    tensor (``/ 255`` forgotten) would otherwise run and give a wrong result without a word.

    One min/max pass over ``x``; values within :data:`UNIT_TOLERANCE` of the range pass.
    Raises:
        TypeError: ``x`` is not a floating-point tensor (uint8 ...).
        ValueError: a value lies outside [0, 1]; ``what`` names the input in the message.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{what} must be a float tensor in [0, 1], got {getattr(x, 'dtype', type(x).__name__)}; "
                        "divide uint8 images by 255")
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if lo < -UNIT_TOLERANCE or hi > 1 + UNIT_TOLERANCE:
            raise ValueError(f"{what} must be in [0, 1], got values from {lo:.4g} to {hi:.4g}: divide 0..255 images "
                             "by 255 (map [-1, 1] ones with (x + 1) / 2, clamp interpolated ones to [0, 1])")
