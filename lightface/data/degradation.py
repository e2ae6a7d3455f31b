"""Synthetic low-resolution inputs for face super-resolution: (LR, HR) pairs made on the fly.

A degradation is an albumentations pipeline applied to the HR face (uint8, (H, W, 3), any
channel order, or (H, W) gray): optional Gaussian blur, a downscale by ``scale`` with a
randomly chosen kernel (antialiased bicubic or bilinear, area, or the aliased bicubic and
bilinear of ``cv2.resize`` and ``torch.nn.functional.interpolate``), optional Gaussian noise and optional
JPEG compression, so that a model trained on it also copes with real low-quality photos.
:func:`downscale` is the deterministic downscale used for evaluation; :func:`downscale_tensor`
is each kernel's differentiable twin on float tensors (the SR trainer's ``--cycle``).
"""
import random
from typing import Optional, Sequence, Tuple

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .convert import image_to_tensor
from .io import ImageReadError
from ..utils.seeding import sample_seed
from .transforms import ReseedingCompose, _check_prob

__all__ = ["RESIZE_METHODS", "resize", "downscale", "downscale_tensor", "RandomDownscale", "Degradation",
           "SRPairDataset"]

RESIZE_METHODS = ("bicubic", "bilinear", "area", "bicubic_aliased", "bilinear_aliased")
_PIL = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_CV2 = {"area": cv2.INTER_AREA, "bicubic_aliased": cv2.INTER_CUBIC, "bilinear_aliased": cv2.INTER_LINEAR}
#: F.interpolate settings of each method's torch twin (:func:`downscale_tensor`)
_TORCH = {"bicubic": ("bicubic", True), "bilinear": ("bilinear", True), "area": ("area", False),
          "bicubic_aliased": ("bicubic", False), "bilinear_aliased": ("bilinear", False)}


def resize(img: np.ndarray, size: Tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize a uint8 (H, W) or (H, W, C) image to ``size = (width, height)``.

    ``"bicubic"`` / ``"bilinear"`` use Pillow's kernels, which widen with the reduction factor
    (antialiased, like MATLAB's ``imresize``); ``"area"`` is OpenCV's ``INTER_AREA`` pixel
    averaging; ``"bicubic_aliased"`` / ``"bilinear_aliased"`` are OpenCV's ``INTER_CUBIC`` /
    ``INTER_LINEAR``, whose kernels keep their width when shrinking (no antialiasing: what
    ``cv2.resize`` and ``torch.nn.functional.interpolate`` do by default, so many LR faces in
    the wild are made this way). Enlarging with ``"area"`` is bilinear. Channel order is preserved.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, C) image, got {img.dtype} {img.shape}")
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"target size must be positive, got {size}")
    if method in _CV2:
        flag = cv2.INTER_LINEAR if method == "area" and w >= img.shape[1] else _CV2[method]
        return cv2.resize(img, (w, h), interpolation=flag)
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        return np.stack([resize(img[:, :, i], size, method) for i in range(img.shape[2])], axis=2)
    return np.asarray(Image.fromarray(img).resize((w, h), _PIL[method]))


def downscale(img: np.ndarray, scale: int, method: str = "bicubic") -> np.ndarray:
    """Shrink a uint8 image by the integer ``scale`` (H and W must be divisible by it)."""
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"image size {w}x{h} is not divisible by the scale {scale}; crop or resize it first")
    return resize(img, (w // scale, h // scale), method)


def downscale_tensor(x: torch.Tensor, scale: int, method: str = "bicubic") -> torch.Tensor:
    """Shrink float images (N, C, H, W) by the integer ``scale`` with the kernel of :func:`downscale`'s ``method``
    (differentiable; any channel order and value range).

    ``torch.nn.functional.interpolate`` twins: Pillow's bicubic / bilinear are the antialiased
    modes, OpenCV's ``INTER_AREA`` is ``"area"`` (the pixel average), ``INTER_CUBIC`` /
    ``INTER_LINEAR`` the plain modes (both keep half-pixel centres and edge replication). On
    uint8 images the two differ by a quarter of a grey level on average (the rounding of the
    uint8 result; Pillow also rounds and clips between its two passes: up to 3 levels on pixel
    noise).
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected float images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {w}x{h} is not divisible by the scale {scale}; crop or resize it first")
    mode, antialias = _TORCH[method]
    size = (h // scale, w // scale)
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1 (the LR side is the HR side / scale), got {scale!r}")
    return int(scale)


def _check_range(name: str, value, low: float, high: Optional[float], open_low: bool = False) -> Tuple[float, float]:
    """``(a, b)`` with ``low <= a <= b <= high`` (``low < a`` when ``open_low``), else a ValueError naming ``name``."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from None
    bounds = f"{'(' if open_low else '['}{low}, {'inf)' if high is None else f'{high}]'}"
    low_ok = a > low if open_low else a >= low
    if not (low_ok and a <= b and (high is None or b <= high)):  # NaN fails too
        raise ValueError(f"{name} must be a (min, max) pair with min <= max in {bounds}, got {value!r}")
    return a, b


class RandomDownscale(A.ImageOnlyTransform):
    """albumentations transform: shrink by ``scale`` with a kernel drawn uniformly from ``methods``."""

    def __init__(self, scale: int, methods: Sequence[str] = RESIZE_METHODS, p: float = 1.0):
        super().__init__(p=p)
        bad = [m for m in methods if m not in RESIZE_METHODS]
        if bad or not methods:
            raise ValueError(f"methods must be a non-empty subset of {RESIZE_METHODS}, got {methods}")
        self.scale = _check_scale(scale)
        self.methods = tuple(methods)

    def get_params(self):
        return {"method": self.py_random.choice(self.methods)}

    def apply(self, img: np.ndarray, method: str = "bicubic", **params) -> np.ndarray:
        return downscale(img, self.scale, method)

    def get_transform_init_args_names(self):
        return ("scale", "methods")


class Degradation:
    """Callable ``hr -> (lr, hr)`` building a training pair; both uint8, same channel order.

    Args:
        scale: downscale factor (the SR model's scale); HR H and W must be divisible by it.
        methods: downscale kernels to draw from (see :func:`resize`).
        blur_prob, blur_sigma: Gaussian blur before downscaling (sigma range in HR pixels).
        noise_prob, noise_std: additive Gaussian noise after downscaling (std range as a
            fraction of 255).
        jpeg_prob, jpeg_quality: JPEG re-compression of the LR image (quality range).

    ``Degradation(scale, blur_prob=0, noise_prob=0, jpeg_prob=0, methods=("bicubic",))``
    is the clean bicubic degradation used for validation. :meth:`degrade` also says which
    downscale kernel it drew.
    """

    def __init__(
        self,
        scale: int,
        methods: Sequence[str] = RESIZE_METHODS,
        blur_prob: float = 0.3,
        blur_sigma: Tuple[float, float] = (0.2, 1.5),
        noise_prob: float = 0.3,
        noise_std: Tuple[float, float] = (0.0, 0.03),
        jpeg_prob: float = 0.3,
        jpeg_quality: Tuple[int, int] = (50, 95),
    ):
        self.scale = _check_scale(scale)
        blur_sigma = _check_range("blur_sigma", blur_sigma, 0.0, None, open_low=True)
        noise_std = _check_range("noise_std", noise_std, 0.0, 1.0)
        jpeg_quality = _check_range("jpeg_quality", jpeg_quality, 1, 100)
        self.pipeline = ReseedingCompose(
            [
                A.GaussianBlur(blur_limit=0, sigma_limit=blur_sigma, p=_check_prob("blur_prob", blur_prob)),
                RandomDownscale(self.scale, methods),
                A.GaussNoise(std_range=noise_std, p=_check_prob("noise_prob", noise_prob)),
                A.ImageCompression(quality_range=(int(jpeg_quality[0]), int(jpeg_quality[1])),
                                   p=_check_prob("jpeg_prob", jpeg_prob)),
            ],
            save_applied_params=True,  # the kernel each LR was made with (degrade)
        )

    def set_random_seed(self, seed: int) -> None:
        """Seed the next draws (the per-sample seeds of :class:`SRPairDataset`)."""
        self.pipeline.set_random_seed(seed)

    def degrade(self, hr: np.ndarray) -> Tuple[np.ndarray, str]:
        """uint8 HR (H, W[, 3]) -> (LR (H/scale, W/scale[, 3]) uint8, the downscale method drawn: one of
        :data:`RESIZE_METHODS`)."""
        out = self.pipeline(image=hr)
        method = next(params["method"] for name, params in out["applied_transforms"] if name == "RandomDownscale")
        return out["image"], method

    def __call__(self, hr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 HR (H, W[, 3]) -> (LR (H/scale, W/scale[, 3]) uint8, HR unchanged)."""
        return self.degrade(hr)[0], hr


def _square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (bicubic); no-op when already that size."""
    h, w = img.shape[:2]
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    if img.shape[0] != size:
        img = resize(img, (size, size), "bicubic")
    return img


class SRPairDataset:
    """(LR, HR) training / validation pairs from a dataset of HR faces (torch ``Dataset`` protocol).

    Args:
        base: indexable HR source; ``base[i]`` is a uint8 BGR (H, W, 3) or gray (H, W)
            image, or a dict with one under ``"image"`` (:class:`lightface.data.LMDBDataset` items).
        hr_size: HR side in pixels; non-square images are centre-cropped, others resized (bicubic).
        degradation: a :class:`Degradation` (its ``scale`` sets the LR size).
        flip: random horizontal flips (training).
        seed: base seed of per-sample random draws (flip and degradation): each sample's draws are
            seeded from ``(seed, epoch, i)`` (:meth:`set_epoch`), so a training run repeats, and a
            resumed run continues, exactly, with any number of DataLoader workers. None: the draws
            follow the degradation's own stream and Python's ``random`` (seed those yourself).
        return_method: items are ``(lr, hr, method)``, ``method`` the downscale kernel the LR was
            made with (one of :data:`RESIZE_METHODS`; :func:`downscale_tensor` repeats it).

    ``dataset[i]`` -> ``(lr, hr)`` float32 tensors, RGB, in [0, 1]: (3, hr_size/scale, hr_size/scale)
    and (3, hr_size, hr_size). Gray sources are replicated to 3 channels. A source item that raises
    :class:`~lightface.data.io.ImageReadError` (an image folder's truncated file; the source reports it) is
    replaced by the next readable one, ``base[i + 1]``, ``base[i + 2]`` ... (wrapping around): the same sample in
    every DataLoader worker and after a resume, drawn with sample ``i``'s flip and degradation. Other errors (an
    LMDB's damaged record) stop the run.
    """

    def __init__(self, base, hr_size: int, degradation: "Degradation", flip: bool = False,
                 seed: Optional[int] = None, return_method: bool = False):
        if hr_size % degradation.scale:
            raise ValueError(f"hr_size {hr_size} is not divisible by the scale {degradation.scale}")
        self.base = base
        self.hr_size = hr_size
        self.degradation = degradation
        self.flip = flip
        self.seed = None if seed is None else int(seed)
        self.return_method = return_method
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw other flips and degradations in each epoch (the engine calls this)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def hr_image(self, index: int) -> np.ndarray:
        """HR face ``index`` as uint8 RGB (hr_size, hr_size, 3) (the next readable one where ``base[index]`` is not)."""
        n = len(self.base)
        for k in range(n):
            try:
                item = self.base[(index + k) % n]
                break
            except ImageReadError as err:
                if k == n - 1:
                    raise ImageReadError(f"{err}; no other HR image of its set ({n} image(s)) can be read in its "
                                         "place") from err
        img = item["image"] if isinstance(item, dict) else item
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return _square_resize(img, self.hr_size)

    def __getitem__(self, index: int):
        hr = self.hr_image(index)
        if self.seed is None:
            flip = self.flip and random.random() < 0.5
        else:
            seed = sample_seed(self.seed, self.epoch, int(index))
            flip = self.flip and np.random.default_rng(seed).random() < 0.5
            self.degradation.set_random_seed(seed)
        if flip:
            hr = np.ascontiguousarray(hr[:, ::-1])
        lr, method = self.degradation.degrade(hr)
        pair = image_to_tensor(lr, color="rgb"), image_to_tensor(hr, color="rgb")
        return (*pair, method) if self.return_method else pair
