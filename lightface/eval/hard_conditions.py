"""Hard capture conditions drawn onto aligned faces, for measuring identification under them.

Each condition takes a 144x144 uint8 BGR ``lightcnn_train`` crop (eye midpoint at (72, 48),
mouth midpoint at (72, 96)) and a ``numpy.random.Generator``, and returns a new crop of the
same shape and dtype:

* ``side_light``: hard directional light from the left or right. The far half of the face
  falls to 12-25% of its brightness across a narrow terminator near the nose line, the lit
  half is brightened 1.15-1.35x (clipped), and the shadowed side takes a warm or cool cast.
* ``occlusion``: one of sunglasses (a dark band over both eyes), a surgical mask (a flat
  light-coloured block from below the nose to the chin), or a hand / object covering one
  side of the face (a skin-to-dark block over 35-50% of the width).

They are written independently of the training augmentation
(:func:`lightface.data.transforms.strong_train_transform`), so a model is not scored on
exactly the perturbations it was trained with.
"""
from typing import Callable, Dict

import numpy as np

__all__ = ["HARD_CONDITIONS", "OCCLUDERS", "side_light", "occlusion", "occluder_kind"]

#: the occluders :func:`occlusion` draws from, in its order
OCCLUDERS = ("sunglasses", "mask", "hand")

_EYE_Y, _MOUTH_Y, _CX = 48, 96, 72


def side_light(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard side lighting (see the module docstring); (144, 144, 3) uint8 BGR in and out."""
    h, w = crop.shape[:2]
    x = np.arange(w, dtype=np.float32)
    edge = _CX * w / 144 + rng.uniform(-8, 8)
    width = rng.uniform(4, 10)
    lit = 1.0 / (1.0 + np.exp(-(x - edge) / width))  # 0 -> 1 from left to right
    if rng.random() < 0.5:
        lit = lit[::-1]
    dark, bright = rng.uniform(0.12, 0.25), rng.uniform(1.15, 1.35)
    gain = dark + (bright - dark) * lit  # (W,)
    tint = np.ones(3, np.float32) + (1 - lit[:, None]) * rng.uniform(-0.15, 0.15, 3).astype(np.float32)
    out = crop.astype(np.float32) * gain[None, :, None] * tint[None, :, :]
    return np.clip(out, 0, 255).astype(np.uint8)


def occluder_kind(rng: np.random.Generator) -> str:
    """The occluder (one of :data:`OCCLUDERS`) that :func:`occlusion` draws first from ``rng``
    (a generator seeded as the one given to :func:`occlusion` tells which one it drew)."""
    return OCCLUDERS[int(rng.integers(len(OCCLUDERS)))]


def occlusion(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sunglasses, a mask or a hand over one side (see the module docstring); (144, 144, 3) uint8 BGR."""
    out = crop.copy()
    h, w = crop.shape[:2]
    s = w / 144
    kind = occluder_kind(rng)
    if kind == "sunglasses":  # a dark band over both eyes
        y0, y1 = int((_EYE_Y - 11) * s), int((_EYE_Y + 12) * s)
        out[y0:y1, int(24 * s):int(120 * s)] = rng.integers(5, 40)
    elif kind == "mask":  # a surgical mask: light, nearly flat, from below the nose to the chin
        y0 = int((_EYE_Y + 0.55 * (_MOUTH_Y - _EYE_Y)) * s)
        x0, x1 = int(20 * s), int(124 * s)
        colour = rng.integers(170, 250, 3)
        block = np.broadcast_to(colour, (h - y0, x1 - x0, 3)).astype(np.float32)
        block = block * (0.9 + 0.1 * rng.random((h - y0, 1, 1)))  # a few folds
        out[y0:, x0:x1] = np.clip(block, 0, 255).astype(np.uint8)
    else:  # "hand": a hand or an object over one side of the face
        cover = int(w * rng.uniform(0.35, 0.5))
        colour = rng.integers(20, 200, 3)
        cols = slice(0, cover) if rng.random() < 0.5 else slice(w - cover, w)
        out[int(20 * s):, cols] = colour
    return out


#: name -> condition; ``clean`` leaves the crop as it is
HARD_CONDITIONS: Dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "clean": lambda crop, rng: crop,
    "side_light": side_light,
    "occlusion": occlusion,
}
