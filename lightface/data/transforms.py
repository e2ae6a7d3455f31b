"""Albumentations pipelines for Light CNN training and evaluation.

Inputs are the uint8 images an :class:`~lightface.data.LMDBDataset` returns (gray (H,W) or
BGR (H,W,3), normally 144x144 ``lightcnn_train`` crops); outputs are float32 tensors
(C, size, size) in [0, 1] (C = 1 for gray; colour keeps the BGR channel order unless
``rgb=True``). The centred 128 crop of a 144 ``lightcnn_train`` crop is exactly the
128x128 ``lightcnn`` test crop, so train and eval see the same face geometry.

Example:
    >>> ds = LMDBDataset("casia.lmdb", transform=train_transform(blur=0.1, jpeg=0.1))
    >>> ds[0]["image"].shape      # torch.Size([1, 128, 128]), float32 in [0, 1]
"""
from __future__ import annotations

import os
import random
from typing import List

import cv2
import numpy as np
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from .io import composite_on_black  # noqa: E402

__all__ = ["train_transform", "strong_train_transform", "frontal_input_transform", "eval_transform", "BGRToRGB",
           "BGRToGray", "GrayToBGR", "SideLight", "FaceOccluder", "ReseedingCompose"]


class ReseedingCompose(A.Compose):
    """``albumentations.Compose`` whose steps share one random stream, drawn anew in each process it runs in.

    Two faults of albumentations 2 (measured with 2.0.8) that it removes:

    * ``Compose(seed=s)`` and ``set_random_seed(s)`` give every step its own generator seeded
      with the same ``s``, so all steps draw the same numbers: each step's "apply?" draw is the
      same, and a step of probability 0.3 fires only when every step of higher probability
      does (two flips of p = 0.5 in a seeded ``Compose``: 104 neither, 96 both, 0 one of 200).
      Here a seed makes one NumPy and one Python generator that all steps draw from in turn.
    * DataLoader workers are copies of the process that built the pipeline, so every worker
      draws the same augmentations (2 workers: 8 images in 4 equal pairs), and seeding NumPy or
      ``random`` in ``worker_init_fn`` does not reach these generators. The first call in a
      process other than the one that last seeded it reseeds from ``torch.initial_seed()``,
      which PyTorch sets per worker from the loader's generator, so runs stay reproducible.

    An explicit :meth:`set_random_seed` (e.g. the per-sample seeds of
    :class:`lightface.data.recognition.SampleTransformDataset`) wins in the process that calls it.

    A uint8 image with an alpha channel (H, W, 4; BGRA as OpenCV reads it) is composited onto black
    first (:func:`lightface.data.io.composite_on_black`, as every image file is when read), so the
    steps, which expect gray or 3-channel images, give the documented channels.
    """

    def set_random_seed(self, seed) -> None:
        self.seed = seed
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def set_random_state(self, random_generator, py_random) -> None:
        # also reached from an enclosing pipeline's seed: a nested pipeline then keeps the stream it was given
        super().set_random_state(random_generator, py_random)
        self._seeded_in = os.getpid()

    def __call__(self, *args, **kwargs):
        if os.getpid() != self._seeded_in:
            self.set_random_seed(torch.initial_seed() % 2**32)
        image = kwargs.get("image")
        if isinstance(image, np.ndarray) and image.dtype == np.uint8:
            kwargs["image"] = composite_on_black(image)
        return super().__call__(*args, **kwargs)


class BGRToRGB(A.ImageOnlyTransform):
    """Swap BGR (OpenCV order, as stored) to RGB; gray images pass through."""

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return img[..., ::-1].copy() if img.ndim == 3 and img.shape[2] == 3 else img

    def get_transform_init_args_names(self):
        return ()


class BGRToGray(A.ImageOnlyTransform):
    """BGR colour (H,W,3) to gray (H,W) with ITU-R 601 luma (OpenCV's BGR2GRAY); gray passes through."""

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 and img.shape[2] == 3 else img

    def get_transform_init_args_names(self):
        return ()


class GrayToBGR(A.ImageOnlyTransform):
    """Gray (H,W) to 3-channel (H,W,3) so colour augmentations apply; colour passes through."""

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 or img.shape[-1] == 1 else img

    def get_transform_init_args_names(self):
        return ()


class SideLight(A.ImageOnlyTransform):
    """A hard light from one side, shaded on a face-sized ellipsoid (Lambertian, no cast shadows).

    The face is an ellipsoid centred at (W/2, 0.45 H) with semi-axes of about 0.45 W and 0.6 H;
    its normals outside the ellipse are those of its rim. The light comes from an azimuth of
    40-90 degrees to the left or right of the camera axis and an elevation of -20 to 30
    degrees; a pixel's gain is ``ambient + (lit - ambient) * max(0, n . l) / e`` (at most ``lit``)
    with ambient 0.05-0.3 (the shadowed side), lit 1.0-1.3 and ``e`` the 90th percentile of
    ``max(0, n . l)`` on the face (the camera's exposure for the lit side), so the terminator
    falls where the surface turns away from the light. Uint8 gray (H, W) or colour (H, W, C)
    in and out.
    """

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def get_params(self):
        r = self.py_random
        return {"azimuth": np.radians(r.uniform(40, 90)) * r.choice((-1, 1)),
                "elevation": np.radians(r.uniform(-20, 30)), "ambient": r.uniform(0.05, 0.3),
                "lit": r.uniform(1.0, 1.3), "size": r.uniform(0.9, 1.1)}

    def apply(self, img: np.ndarray, azimuth: float = 0.0, elevation: float = 0.0, ambient: float = 0.2,
              lit: float = 1.0, size: float = 1.0, **params) -> np.ndarray:
        h, w = img.shape[:2]
        u = ((np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (0.45 * w * size))[None, :]
        v = ((np.arange(h, dtype=np.float32) + 0.5 - 0.45 * h) / (0.6 * h * size))[:, None]
        r = np.sqrt(u * u + v * v)
        scale = np.where(r > 0.999, 0.999 / np.maximum(r, 1e-6), 1.0)  # the rim's normal outside the ellipse
        nx, ny = u * scale, v * scale
        nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
        light = (np.sin(azimuth) * np.cos(elevation), -np.sin(elevation), np.cos(azimuth) * np.cos(elevation))
        shade = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
        exposure = max(float(np.quantile(shade[r < 1.0], 0.9)), 0.05)  # the camera exposes for the lit side
        shade = np.clip(shade / exposure, 0.0, 1.0)
        gain = ambient + (lit - ambient) * shade
        out = img.astype(np.float32) * (gain[..., None] if img.ndim == 3 else gain)
        return np.clip(out, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self):
        return ()


class FaceOccluder(A.ImageOnlyTransform):
    """Something worn or held over a face, drawn where it sits on a ``lightcnn_train`` crop.

    The crop (any size; the layout scales with its width) has the eye midpoint at
    (0.5 W, 0.33 H), eyes about 0.29 W apart and the mouth midpoint at (0.5 W, 0.67 H).
    One of, each with a placement jitter of a few pixels and its own size:

    * glasses: two elliptical lenses over the eyes with a bridge and temples; dark
      (sunglasses, opacity 0.75-1) or a clear tint over a dark frame;
    * a face mask: a light, dark or coloured cloth from the nose bridge over the chin, with
      a curved upper edge and soft folds;
    * a hand: a skin-coloured (or any coloured) ellipse from the left or right edge over
      30-55% of the width, tilted up to 25 degrees, shaded towards its rim.

    Apply it before geometric augmentation so that the occluder moves with the face and then
    meets the same camera (blur, noise, JPEG) as the face. Uint8 gray (H, W) or colour
    (H, W, C) in and out.
    """

    KINDS = ("glasses", "mask", "hand")

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def get_params(self):
        r = self.py_random
        return {"kind": r.choice(self.KINDS), "seed": r.randrange(2 ** 31)}

    def apply(self, img: np.ndarray, kind: str = "glasses", seed: int = 0, **params) -> np.ndarray:
        rng = np.random.default_rng(seed)
        s = img.shape[1] / 144.0
        paint = np.zeros(img.shape[:2], np.float32)  # coverage in [0, 1]
        colour = np.zeros(img.shape[:2] + (3,), np.float32)
        dx, dy = rng.uniform(-4, 4, 2) * s
        if kind == "glasses":
            _draw_glasses(paint, colour, rng, s, 72 * s + dx, 48 * s + dy)
        elif kind == "mask":
            _draw_mask(paint, colour, rng, s, 72 * s + dx, 48 * s + dy)
        else:
            _draw_hand(paint, colour, rng, s, 48 * s + dy)
        base = img.astype(np.float32)
        if img.ndim == 2:
            colour, paint_c = colour.mean(2), paint
        else:
            colour, paint_c = colour[..., :img.shape[2]], paint[..., None]
        return np.clip(base * (1 - paint_c) + colour * paint_c, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self):
        return ()


def _fill(paint: np.ndarray, colour: np.ndarray, shape: np.ndarray, bgr, opacity: float) -> None:
    """Paint the anti-aliased ``shape`` mask (H, W) float in [0, 1] with ``bgr`` ((3,) or a
    per-pixel (H, W, 3) colour) at ``opacity``."""
    a = shape * opacity
    colour[:] = colour * (1 - a[..., None]) + np.asarray(bgr, np.float32) * a[..., None]
    paint[:] = paint + a * (1 - paint)


def _ellipse(shape_hw, centre, axes, angle: float = 0.0, thickness: int = -1) -> np.ndarray:
    """An anti-aliased filled (or outlined) ellipse as an (H, W) float mask in [0, 1]."""
    m = np.zeros(shape_hw, np.uint8)
    shift = 4  # sub-pixel precision
    c = tuple(int(round(v * 16)) for v in centre)
    ax = tuple(max(1, int(round(v * 16))) for v in axes)
    cv2.ellipse(m, c, ax, angle, 0, 360, 255, thickness, cv2.LINE_AA, shift)
    return m.astype(np.float32) / 255.0


def _draw_glasses(paint, colour, rng, s, cx, cy) -> None:
    hw = paint.shape
    half = rng.uniform(19, 23) * s  # half the distance between the lens centres
    axes = (rng.uniform(14, 20) * s, rng.uniform(10, 16) * s)
    tilt = rng.uniform(-5, 5)
    frame = rng.uniform(0, 60, 3)
    sun = rng.random() < 0.7
    lens_colour = rng.uniform(0, 50, 3) if sun else rng.uniform(120, 230, 3)
    lens_opacity = rng.uniform(0.75, 1.0) if sun else rng.uniform(0.15, 0.35)
    thick = max(1, int(round(rng.uniform(1.5, 4) * s)))
    for side in (-1, 1):
        centre = (cx + side * half, cy + rng.uniform(-1, 1) * s)
        _fill(paint, colour, _ellipse(hw, centre, axes, tilt), lens_colour, lens_opacity)
        _fill(paint, colour, _ellipse(hw, centre, axes, tilt, thick), frame, 1.0)
        temple = np.zeros(hw, np.uint8)
        x0 = int(centre[0] + side * axes[0])
        cv2.line(temple, (x0, int(centre[1] - axes[1] * 0.3)), (x0 + side * int(30 * s), int(centre[1])), 255, thick,
                 cv2.LINE_AA)
        _fill(paint, colour, temple.astype(np.float32) / 255.0, frame, 1.0)
    bridge = np.zeros(hw, np.uint8)
    cv2.line(bridge, (int(cx - half + axes[0]), int(cy)), (int(cx + half - axes[0]), int(cy)), 255, thick, cv2.LINE_AA)
    _fill(paint, colour, bridge.astype(np.float32) / 255.0, frame, 1.0)


def _draw_mask(paint, colour, rng, s, cx, cy) -> None:
    h, w = paint.shape
    top = cy + rng.uniform(12, 24) * s  # the nose bridge; the mouth is at cy + 48 s
    half = rng.uniform(44, 54) * s
    sag = rng.uniform(6, 14) * s  # the upper edge drops towards the cheeks
    pts = np.array([(cx - half, top + sag), (cx - half * 0.5, top + sag * 0.2), (cx, top),
                    (cx + half * 0.5, top + sag * 0.2), (cx + half, top + sag), (cx + half * 0.85, top + 62 * s),
                    (cx, top + 80 * s), (cx - half * 0.85, top + 62 * s)])
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    cloth = rng.choice(3)
    bgr = (rng.uniform(190, 250, 3) if cloth == 0 else rng.uniform(10, 70, 3) if cloth == 1
           else rng.uniform(40, 230, 3))
    folds = 1.0 + rng.uniform(0.03, 0.1) * np.sin(np.arange(h, dtype=np.float32) / (rng.uniform(3, 7) * s)
                                                  + rng.uniform(0, 6.3))
    _fill(paint, colour, m.astype(np.float32) / 255.0, bgr[None, None, :] * folds[:, None, None], 1.0)


def _draw_hand(paint, colour, rng, s, cy) -> None:
    h, w = paint.shape
    cover = rng.uniform(0.3, 0.55) * w
    rx = rng.uniform(0.28, 0.4) * w
    side = rng.choice((-1, 1))
    centre_x = cover - rx if side < 0 else w - cover + rx
    centre = (centre_x, cy + rng.uniform(10, 40) * s)
    axes = (rx, rng.uniform(0.45, 0.65) * h)
    shape = _ellipse(paint.shape, centre, axes, rng.uniform(-25, 25))
    skin = rng.random() < 0.7
    red = rng.uniform(90, 240)
    bgr = (red * np.array([rng.uniform(0.5, 0.7), rng.uniform(0.68, 0.82), 1.0]) if skin else rng.uniform(20, 230, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rim = np.sqrt(((xx - centre[0]) / axes[0]) ** 2 + ((yy - centre[1]) / axes[1]) ** 2)
    shade = np.clip(1.1 - 0.45 * rim ** 2, 0.5, 1.1)
    _fill(paint, colour, shape, bgr[None, None, :] * shade[..., None], 1.0)


def _check_prob(name: str, p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return float(p)


def _tail(to_tensor: bool, rgb: bool) -> List[A.BasicTransform]:
    out: List[A.BasicTransform] = [BGRToRGB()] if rgb else []
    if to_tensor:
        out += [A.ToFloat(max_value=255.0), ToTensorV2()]
    return out


def train_transform(
    size: int = 128,
    flip: float = 0.5,
    blur: float = 0.0,
    noise: float = 0.0,
    jpeg: float = 0.0,
    downscale: float = 0.0,
    rgb: bool = False,
    to_tensor: bool = True,
) -> A.Compose:
    """Light CNN training augmentation: random ``size`` crop (from the 144 training crop),
    horizontal flip, and optional degradations, each applied with the given probability.

    Args:
        size: output side (128 for Light CNN); smaller inputs are zero-padded first.
        flip: probability of a horizontal flip.
        blur: probability of a Gaussian blur (kernel 3-7, sigma 0.5-2).
        noise: probability of Gaussian noise (std 2-8% of the range).
        jpeg: probability of JPEG re-compression (quality 30-90).
        downscale: probability of down- and up-scaling (factor 0.35-0.75).
        rgb: convert BGR colour images to RGB.
        to_tensor: end with a float32 (C, size, size) tensor in [0, 1]; otherwise uint8 numpy.
    Returns:
        an ``albumentations.Compose``; call as ``t(image=img)["image"]`` (LMDBDataset does).
    """
    steps: List[A.BasicTransform] = [
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.RandomCrop(size, size),
        A.HorizontalFlip(p=_check_prob("flip", flip)),
    ]
    if blur:
        steps.append(A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.5, 2.0), p=_check_prob("blur", blur)))
    if downscale:
        steps.append(A.Downscale(scale_range=(0.35, 0.75), p=_check_prob("downscale", downscale)))
    if noise:
        steps.append(A.GaussNoise(std_range=(0.02, 0.08), p=_check_prob("noise", noise)))
    if jpeg:
        steps.append(A.ImageCompression(quality_range=(30, 90), p=_check_prob("jpeg", jpeg)))
    return ReseedingCompose(steps + _tail(to_tensor, rgb))


def _camera_steps() -> List[A.BasicTransform]:
    """What another camera, light or file makes of the same face: colour and lighting
    (brightness/contrast, gamma or CLAHE; hue/saturation; directional side lighting or a cast
    shadow), then blur, down-scaling, noise or JPEG. Uint8 BGR (H, W, 3) in and out."""
    return [
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3),
                 A.RandomGamma(gamma_limit=(60, 160)), A.CLAHE(clip_limit=3.0)], p=0.6),
        A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=30, val_shift_limit=0, p=0.3),
        A.OneOf([A.Illumination(mode="linear", intensity_range=(0.1, 0.2), effect_type="both"),
                 A.RandomShadow(shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 1), shadow_dimension=4,
                                shadow_intensity_range=(0.3, 0.7))], p=0.3),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.5, 2.0)), A.MotionBlur(blur_limit=(3, 7)),
                 A.Downscale(scale_range=(0.3, 0.7))], p=0.3),
        A.GaussNoise(std_range=(0.02, 0.06), p=0.15),
        A.ImageCompression(quality_range=(30, 95), p=0.3),
    ]


def frontal_input_transform() -> A.Compose:
    """Augmentation of a frontalizer's input face (``train_frontalization --augment``): the
    camera, lighting and file changes of :func:`strong_train_transform` and a small alignment
    error (scale 0.95-1.05, shift 2%, rotation 5 degrees), with no flip (the input's facing
    side is fixed by ``--mirror``), crop or occlusion.

    Returns:
        an ``albumentations.Compose`` from uint8 BGR (or gray) (S, S[, 3]) to uint8 BGR (S, S, 3);
        call as ``t(image=img)["image"]``.
    """
    return ReseedingCompose([
        GrayToBGR(),
        A.Affine(scale=(0.95, 1.05), translate_percent=(-0.02, 0.02), rotate=(-5, 5),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        *_camera_steps(),
    ])


def _hard_capture_steps(size: int, p: float) -> List[A.BasicTransform]:
    """Hard capture conditions, one of them with probability ``p``: a hard side light
    (:class:`SideLight`) or a large occluder of one random flat colour (a band across the
    whole face, as sunglasses, a scarf or a mask make, or a column over 35-50% of its width,
    as a hand does). On a uint8 BGR (size, size, 3) crop."""
    # (1, 1): a plain 1 means "0 or 1" masks to XYMasking
    band = A.XYMasking(num_masks_y=(1, 1), mask_y_length=(int(0.18 * size), int(0.35 * size)), fill="random_uniform",
                       p=1.0)
    column = A.XYMasking(num_masks_x=(1, 1), mask_x_length=(int(0.35 * size), int(0.5 * size)), fill="random_uniform",
                         p=1.0)
    return [A.OneOf([SideLight(), A.OneOf([band, column], p=1.0)], p=_check_prob("hard", p))]


def strong_train_transform(size: int = 128, flip: float = 0.5, gray: bool = True, to_tensor: bool = True,
                           hard: float = 0.0, worn: float = 0.0) -> A.Compose:
    """The augmentation small, noisy face sets need (used by ``train_lightcnn --augment strong``).

    On a 144 ``lightcnn_train`` crop (uint8 BGR or gray): a small random similarity
    (scale 0.9-1.1, shift 4%, rotation 10 degrees), a random ``size`` crop, flip; colour
    and lighting (brightness/contrast, gamma or CLAHE; hue/saturation; directional side
    lighting or a cast shadow); blur, down-scaling, noise or JPEG; and an occluding rectangle. With
    ``hard`` > 0, that share of the faces also meets a hard side light or a large occluder
    (``train_lightcnn --augment hard``; see :func:`_hard_capture_steps`). With ``worn`` > 0,
    that share of the faces first get glasses, a face mask or a hand (:class:`FaceOccluder`,
    placed on the ``lightcnn_train`` layout, before the geometry and the camera;
    ``--augment hard_face``). Colour
    changes act before the final BGR -> gray conversion (``gray=True``), so they reach the
    Light CNN as the luma changes a real camera produces.

    Returns:
        an ``albumentations.Compose`` giving a float32 (1, size, size) tensor in [0, 1]
        (``gray=True``) or (3, size, size) BGR.
    """
    worn_steps = [FaceOccluder(p=_check_prob("worn", worn))] if worn else []  # none: the stream stays as before
    steps: List[A.BasicTransform] = [
        GrayToBGR(),
        *worn_steps,
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.04, 0.04), rotate=(-10, 10), border_mode=cv2.BORDER_REFLECT_101,
                 p=0.7),
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.RandomCrop(size, size),
        A.HorizontalFlip(p=_check_prob("flip", flip)),
        *_camera_steps(),
        A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.15, 0.35), hole_width_range=(0.15, 0.35),
                        fill="random_uniform", p=0.3),
    ]
    if hard:
        steps += _hard_capture_steps(size, hard)
    if gray:
        steps.append(BGRToGray())
    return ReseedingCompose(steps + _tail(to_tensor, False))


def eval_transform(size: int = 128, rgb: bool = False, to_tensor: bool = True) -> A.Compose:
    """Evaluation: the centred ``size`` crop (the 128 ``lightcnn`` crop of a 144 training
    crop), then a float32 (C, size, size) tensor in [0, 1] (see :func:`train_transform`)."""
    steps: List[A.BasicTransform] = [
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.CenterCrop(size, size),
    ]
    return ReseedingCompose(steps + _tail(to_tensor, rgb))
