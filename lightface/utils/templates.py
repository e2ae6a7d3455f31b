"""The 5-point face alignment templates (pure NumPy; the bottom layer, so models can use them too).

Reference positions of the 5 landmarks (left eye, right eye, nose tip, left mouth corner,
right mouth corner, as seen in the image) in the crops of :mod:`lightface.data.align`,
which documents the templates and how the Light CNN one was derived.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TEMPLATES", "ALIGNED_TEMPLATES", "ALIGN_METHODS", "template_base_size", "template_points"]

TEMPLATES = ("lightcnn", "lightcnn_train", "arcface", "ffhq")
#: the framings already-aligned crops may come in (``FaceEmbedder(aligned_template=...)``, ``--aligned-template``)
ALIGNED_TEMPLATES = ("auto", "lightcnn", "arcface", "ffhq")
#: :func:`lightface.data.align.align_face`'s ``method`` choices (documented there): ``"similarity"``, the
#: least-squares fit of all 5 points (the default; what the shipped recognisers were trained on), and ``"eyes"``,
#: the original Light CNN recipe (eyes level, eye midpoint and vertical eye-to-mouth distance exactly the
#: template's). Here, in the bottom layer, so that a checkpoint can name the method its recogniser was trained on
ALIGN_METHODS = ("similarity", "eyes")
_BASE_SIZE = {"lightcnn": 128, "lightcnn_train": 144, "arcface": 112, "ffhq": 128}


def template_base_size(template: str) -> int:
    """The crop side a template is defined at: 128 (lightcnn), 144 (lightcnn_train), 112 (arcface), 128 (ffhq)."""
    if template not in _BASE_SIZE:
        raise ValueError(f"unknown alignment template {template!r}; choose one of {TEMPLATES}")
    return _BASE_SIZE[template]


# ArcFace 112x112 reference points (x, y): left eye, right eye, nose, left/right mouth corner
_ARCFACE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))


def _arcface_dst() -> np.ndarray:
    return np.array(_ARCFACE_112, dtype=np.float64)


def _lightcnn_points() -> np.ndarray:
    """The 128x128 Light CNN template derived from the symmetrised ArcFace template."""
    a = _arcface_dst()
    eye_half = (a[1, 0] - a[0, 0]) / 2.0
    mouth_half = (a[4, 0] - a[3, 0]) / 2.0
    eye_y = (a[0, 1] + a[1, 1]) / 2.0
    mouth_y = (a[3, 1] + a[4, 1]) / 2.0
    scale = (88.0 - 40.0) / (mouth_y - eye_y)
    nose_y = 40.0 + scale * (a[2, 1] - eye_y)
    return np.array(
        [
            [64.0 - scale * eye_half, 40.0],
            [64.0 + scale * eye_half, 40.0],
            [64.0, nose_y],
            [64.0 - scale * mouth_half, 88.0],
            [64.0 + scale * mouth_half, 88.0],
        ]
    )


def _ffhq_points() -> np.ndarray:
    """The Light CNN face framed the FFHQ / CelebA-HQ way, at 128x128.

    That alignment (Karras et al.) crops a square of side ``2 * max(2 * eye distance,
    1.8 * eye-to-mouth distance)`` centred ``0.1`` of the eye-to-mouth vector below the eye
    midpoint. On the symmetric Light CNN face (eye distance 41.6 px, eye-to-mouth 48 px)
    the side is 172.8 px, so the face is 0.74x as large as in ``"lightcnn"``: eye midpoint
    (64, 60.4), mouth midpoint (64, 96.0).
    """
    pts = _lightcnn_points()
    eye_mid, mouth_mid = pts[:2].mean(0), pts[3:].mean(0)
    eye_to_mouth = float(np.hypot(*(mouth_mid - eye_mid)))
    side = 2.0 * max(2.0 * float(pts[1, 0] - pts[0, 0]), 1.8 * eye_to_mouth)
    centre = eye_mid + 0.1 * (mouth_mid - eye_mid)
    return (pts - centre) * (128.0 / side) + 64.0


def template_points(template: str = "lightcnn", size: int | None = None) -> np.ndarray:
    """Reference positions of the 5 landmarks in the output crop.

    Args:
        template: ``"lightcnn"``, ``"lightcnn_train"``, ``"arcface"`` or ``"ffhq"``.
        size: crop side in pixels; ``None`` = the template's base size (128, 144, 112, 128). For
            ``"lightcnn"``, a multiple of 144 (not of 128) gives the training crop of DESIGN.md:
            the 128 geometry padded by 8 pixels, eye midpoint (72, 48) and mouth midpoint
            (72, 96) at 144; other sizes scale the 128 template.
    Returns:
        float64 array (5, 2) of ``(x, y)`` in crop pixels, landmark order as in the module doc.
    """
    base = template_base_size(template)
    if size is not None and (int(size) != size or size < 8):
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if template == "lightcnn":
        pts = _lightcnn_points()
        if size is not None and size % 144 == 0 and size % 128 != 0:
            # DESIGN: size=144 is the training crop, the 128 geometry padded by 8 (eyes (72,48), mouth (72,96))
            return (pts + 8.0) * (size / 144.0)
    elif template == "lightcnn_train":
        pts = _lightcnn_points() + 8.0
    elif template == "ffhq":
        pts = _ffhq_points()
    else:
        pts = _arcface_dst()
        if size is not None and size % 112 != 0 and size % 128 == 0:
            ratio = size / 128.0
            return pts * ratio + np.array([8.0 * ratio, 0.0])
    size = base if size is None else int(size)
    return pts * (size / base)
