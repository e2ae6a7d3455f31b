"""Cut faces out of photos and paste restored crops back (inverse affine warp + feathered mask).

:func:`detect_and_align` finds the faces of a photo and aligns each to a template crop.

A face is cut out of a photo with an affine matrix ``M`` (image -> crop, as returned by
:func:`lightface.data.align.align_face`). After a restorer changes the crop's resolution
and/or the photo is upscaled, :func:`rescale_affine` gives the matrix between the new
pixel grids, and :func:`paste_face` warps the restored crop back with the inverse matrix
and blends it in with a mask whose edges fade out (no visible seam).
"""
import dataclasses
import os
from typing import List, Optional, Tuple

import cv2
import numpy as np

from ..data.align import align_face, invert_affine
from ..data.detect import main_face
from ..data.io import composite_on_black, is_pil_image, pil_to_array, read_image

__all__ = ["as_bgr", "detect_faces", "detect_and_align", "antialiased_align", "rescale_affine",
           "feather_mask", "paste_face"]


def as_bgr(img) -> np.ndarray:
    """uint8 gray (H, W) / (H, W, 1), BGR (H, W, 3) or BGRA (H, W, 4) -> BGR (H, W, 3) (transparency
    composited onto black, as when an image file is read: :func:`lightface.data.io.composite_on_black`).

    Also takes an image file's path (read as :func:`lightface.data.io.read_image` reads it) and a
    PIL image (RGB order, converted: :func:`lightface.data.io.pil_to_array`)."""
    if isinstance(img, (str, os.PathLike)):
        img = read_image(img, "bgr")
    elif is_pil_image(img):
        img = pil_to_array(img)
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}; convert with (x * 255).round().astype(np.uint8)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return composite_on_black(img)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"expected a gray (H, W), BGR (H, W, 3) or BGRA (H, W, 4) image, got shape {img.shape}")


def detect_faces(detector, bgr: np.ndarray, only_center_face: bool = False) -> list:
    """``detector.detect(bgr)``; when nothing is found, retry once on the image padded by half
    its size on every side (detectors with a fixed input size miss faces that fill the frame,
    e.g. 1024 px CelebA-HQ portraits or 92x112 ORL faces). Returns
    :class:`lightface.data.detect.DetectedFace` in ``bgr``'s pixels, largest first;
    ``only_center_face`` keeps only the photo's main face (the largest, penalised by its distance
    from the image centre: :func:`lightface.data.detect.main_face`)."""
    faces = detector.detect(bgr)
    if not faces:
        h, w = bgr.shape[:2]
        pad = max(h, w) // 2
        padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        faces = [dataclasses.replace(f, box=f.box - np.float32(pad), landmarks=f.landmarks - np.float32(pad))
                 for f in detector.detect(padded)]
    return [main_face(faces, bgr.shape)] if only_center_face and faces else faces


def detect_and_align(
    detector, bgr: np.ndarray, size: int, template: str = "lightcnn", only_center_face: bool = False,
    antialias: bool = False, interpolation: str = "bilinear",
) -> List[tuple]:
    """Detect the faces of ``bgr`` (uint8 (H, W, 3)) and align each to ``template`` at ``size`` px.

    Returns ``[(DetectedFace, crop (size, size, 3) uint8, M (2, 3) image -> crop), ...]``,
    largest face first; ``only_center_face`` keeps only the photo's main face (the largest,
    penalised by its distance from the image centre: :func:`lightface.data.detect.main_face`).
    ``antialias`` / ``interpolation``: as :func:`lightface.data.align.align_face`'s (a face larger
    in the photo than in the crop is blurred to the crop's resolution before the warp, so the
    crop is an antialiased downscale, not the point samples of the plain warp; a super-resolver
    reads :func:`antialiased_align`'s crops: ``antialias=True, interpolation="bicubic"``).
    No face -> ``[]``.
    """
    return [(f, *align_face(bgr, f.landmarks, template, size=size, interpolation=interpolation, antialias=antialias))
            for f in detect_faces(detector, bgr, only_center_face)]


def antialiased_align(img: np.ndarray, landmarks, template: str = "lightcnn", size: Optional[int] = None):
    """The face crop a super-resolver reads: ``(crop, M image -> crop)``, as :func:`lightface.data.align.align_face`
    with ``interpolation="bicubic", antialias=True, border_mode="reflect"``.

    ``align_face``'s default bilinear warp samples the photo at the crop's pixel centres only:
    a face larger than the crop comes out aliased (the LR faces the super-resolvers are not
    trained on: docs/super_resolution.md, "Aliased LR faces"), and any face a little blurred
    by the interpolation. Here the face's region of the photo is first blurred with
    :func:`~lightface.data.align.antialias_sigma` of the shrink factor (none when the face is
    not shrunk), then warped with bicubic interpolation. Where the crop reaches past the photo's edge (a face
    the edge cuts), the photo is mirrored there, not filled with black: a network reading a black band paints its
    ringing, a dark and a bright line, along the photo's edge, and that part of the face is pasted back.
    ``img``: uint8 or float (H, W[, C]). Measured with ``python -m benchmarks.sr_face_size``.
    """
    return align_face(img, landmarks, template, size, interpolation="bicubic", antialias=True, border_mode="reflect")


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
        a new uint8 (H, W, 3) image; ``canvas`` is not modified. Only the face's bounding box on the
        canvas is warped and blended, so a face pasted into a large photo costs memory for its own
        region, not for the whole canvas.
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
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]]) @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, (W, H))
    out = canvas.copy()
    if x0 >= x1 or y0 >= y1:  # the face lies outside the canvas
        return out
    roi = inv.copy()
    roi[:, 2] -= (x0, y0)  # canvas -> ROI pixels: shift the destination by the ROI's corner
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpAffine(face, roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask.astype(np.float32), roi, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(alpha * warped.astype(np.float32) + (1.0 - alpha) * region + 0.5, 0, 255).astype(np.uint8)
    return out
