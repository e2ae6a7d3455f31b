"""Paste restored face crops back into a whole image (inverse affine warp + feathered mask).

A face is cut out of a photo with an affine matrix ``M`` (image -> crop, as returned by
:func:`lightface.data.align.align_face`). After a restorer changes the crop's resolution
and/or the photo is upscaled, :func:`rescale_affine` gives the matrix between the new
pixel grids, and :func:`paste_face` warps the restored crop back with the inverse matrix
and blends it in with a mask whose edges fade out (no visible seam).
"""
from typing import Optional, Tuple

import cv2
import numpy as np

from ..data.align import invert_affine

__all__ = ["rescale_affine", "feather_mask", "paste_face"]


def rescale_affine(M: np.ndarray, src_scale: float = 1.0, dst_scale: float = 1.0) -> np.ndarray:
    """Re-express a (2, 3) affine map ``src -> dst`` after resizing src by ``src_scale`` and dst by ``dst_scale``.

    Pixel-centre convention (a pixel ``i`` covers ``[i - 0.5, i + 0.5]``, as in OpenCV's
    resize): ``x_new = s * (x + 0.5) - 0.5``. Returns float64 (2, 3).
    """
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (2, 3):
        raise ValueError(f"expected a (2, 3) affine matrix, got shape {M.shape}")

    def scaling(s: float) -> np.ndarray:
        return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])

    full = np.vstack([M, [0.0, 0.0, 1.0]])
    return (scaling(dst_scale) @ full @ np.linalg.inv(scaling(src_scale)))[:2]


def feather_mask(size: Tuple[int, int], border: float = 0.04, blur: float = 0.06) -> np.ndarray:
    """Float32 (h, w) mask in [0, 1]: 1 inside, fading to 0 at the edges.

    ``border`` (fraction of the crop side) is cut from each edge, then the step is blurred
    with a Gaussian of width ``blur`` x side so the transition is smooth.
    """
    h, w = size
    side = min(h, w)
    mask = np.zeros((h, w), np.float32)
    b = max(1, int(round(border * side)))
    mask[b : h - b, b : w - b] = 1.0
    k = max(3, int(round(blur * side)) | 1)
    return cv2.GaussianBlur(mask, (k, k), 0)


def paste_face(
    canvas: np.ndarray,
    face: np.ndarray,
    M: np.ndarray,
    mask: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Blend ``face`` into ``canvas`` where ``M`` (canvas -> face pixels, (2, 3)) says it came from.

    Args:
        canvas: uint8 (H, W, 3) image (any channel order; ``face`` must use the same).
        face: uint8 (h, w, 3) restored crop.
        M: float (2, 3) map from canvas pixels to face pixels (e.g. ``rescale_affine(M_align,
            scale, face_scale)``).
        mask: optional float (h, w) blend weights in [0, 1]; default :func:`feather_mask`.
    Returns:
        a new uint8 (H, W, 3) image; ``canvas`` is not modified.
    """
    if canvas.dtype != np.uint8 or face.dtype != np.uint8 or canvas.ndim != 3 or face.ndim != 3:
        raise ValueError(f"paste_face expects uint8 (H, W, 3) images, got canvas {canvas.dtype} {canvas.shape}, "
                         f"face {face.dtype} {face.shape}")
    if canvas.shape[2] != face.shape[2]:
        raise ValueError(f"canvas has {canvas.shape[2]} channels, face has {face.shape[2]}")
    H, W = canvas.shape[:2]
    h, w = face.shape[:2]
    if mask is None:
        mask = feather_mask((h, w))
    inv = invert_affine(M)
    warped = cv2.warpAffine(face, inv, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask.astype(np.float32), inv, (W, H), flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
    out = alpha * warped.astype(np.float32) + (1.0 - alpha) * canvas.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
