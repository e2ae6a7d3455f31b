"""``Frontalizer``: frontal views of aligned face crops or of every face in a photo, with TP-GAN.

Colour contract: numpy images are uint8 BGR (as OpenCV reads them; gray (H, W) and BGRA
accepted; image paths and PIL images, RGB, are converted: :func:`lightface.restore.paste.as_bgr`),
outputs are uint8 BGR 128x128; the network works on RGB (or gray, for a
1-channel model) float in [0, 1] (converted here). Inputs are aligned to the 128x128
``lightcnn`` template (:func:`lightface.data.align.align_face`), the alignment the model
was trained with.

Pose direction: a model trained with ``--mirror left`` has only seen faces that look to
the image's left. Faces whose landmarks say they look the other way are flipped before
frontalization and the result flipped back (:func:`lightface.data.pose_pairs.facing`).
Aligned crops carry no landmarks, so they are used as given unless ``facing`` is passed:
``"left"`` / ``"right"``, or ``"auto"``, the way the landmarks that the Frontalizer's detector
finds on the crop say it looks (:meth:`Frontalizer.crop_facing`), for a set of crops that look
both ways.
"""
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch

from ..data.convert import check_unit_tensor, image_to_tensor, tensor_to_image
from ..data.pose_pairs import facing as face_direction
from ..engine.distributed import resolve_device
from ..eval.frontal_pose import crop_landmarks
from ..models.tpgan import TPGANGenerator
from .folder import check_batch_size, iter_batches
from .loading import ExportedGenerator, is_exported, load_generator, resolve_detector, shipped_entry
from .paste import as_bgr, detect_and_align, paste_face

__all__ = ["Frontalizer", "FrontalizedFace"]

log = logging.getLogger(__name__)

SIZE = 128


def _released_preprocessing(ckpt) -> dict:
    """The preprocessing (``mirror`` ...) of the shipped entry a released file records as its
    ``pretrained_name`` (a copy of a shipped file holds no training config of its own), else {}."""
    from ..models.pretrained import PretrainedError, get_pretrained

    name = ckpt.extra.get("pretrained_name")
    if not isinstance(name, str):
        return {}
    try:
        entry = get_pretrained(name)
    except PretrainedError:
        log.warning("Frontalizer: %s was released as %r, which this install does not ship; its training direction "
                    "is unknown, so faces are used as given: pass mirror='left' or 'right' (frontalize: --mirror "
                    "left / right)", ckpt.source, name)
        return {}
    if entry.task != "frontalization" or entry.arch != ckpt.arch:
        return {}
    log.info("Frontalizer: %s is a copy of the shipped %s: its preprocessing (mirror=%r) applies", ckpt.source,
             name, entry.preprocessing.get("mirror"))
    return dict(entry.preprocessing)


@dataclass
class FrontalizedFace:
    """One face of a photo.

    box: float32 (4,) x1, y1, x2, y2 in the photo; landmarks: float32 (5, 2) in the photo;
    crop: uint8 BGR (128, 128, 3) aligned input crop; frontal: uint8 BGR (128, 128, 3)
    synthesised frontal view; M: float64 (2, 3) photo -> crop matrix; flipped: whether the
    face was mirrored to match the model's training direction.
    """

    box: np.ndarray
    landmarks: np.ndarray
    crop: np.ndarray
    frontal: np.ndarray
    M: np.ndarray
    flipped: bool


class Frontalizer:
    """Face frontalization with a ``tpgan`` checkpoint.

    Args:
        weights: None (default): the frontalizer that ships with lightface
            (:func:`lightface.models.default_weights` ``("frontalization")``, sha256-checked;
            a :class:`lightface.models.PretrainedError` says so when none ships). Else a
            checkpoint path (the final checkpoint of ``pipelines.train_frontalization``), the
            name of a shipped entry, a loaded checkpoint dict, or a built
            :class:`~lightface.models.tpgan.TPGANGenerator`. A shipped file given by its path
            is that shipped entry; a copy of one (it records its entry's name) takes that
            entry's preprocessing (``mirror``). Or a frontalizer exported by
            :func:`lightface.export.export_onnx` (an ``.onnx`` file, run with ONNX Runtime: CPU, or
            CUDA when ``device`` is CUDA and onnxruntime-gpu is installed) or ``export_torchscript``
            (its ``.pt``, run with ``torch.jit.load`` on the CPU): its card gives the channels and
            ``mirror``, and every method works on it as on the PyTorch model (same alignment,
            mirroring and colour conversion; outputs within 1e-5 of it).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        detector: for whole photos: a :class:`lightface.data.detect.FaceDetector` or a model
            spec it accepts (ONNX path such as ``../shared/models/det_500m.onnx``, model pack
            name); None: aligned crops only.
        ema: use the EMA generator weights when the checkpoint has them (default; an exported
            file holds the weights it was exported with: ``ema=False`` is refused there).
        mirror: the direction the model was trained on (``"left"``, ``"right"`` or None);
            default: read from the checkpoint's training config, or from the shipped entry's
            ``preprocessing["mirror"]`` (also for the shipped file given by its path or copied;
            None when absent), or from an exported file's card.

    Attributes: ``channels``, ``mirror``, ``pretrained`` (the shipped
    :class:`~lightface.models.PretrainedWeights` in use, or None), ``backend`` (``"torch"``, or
    ``"onnxruntime"`` / ``"torchscript"`` for an exported file), ``card`` (an exported file's card, else None),
    ``model`` (the :class:`~lightface.models.tpgan.TPGANGenerator`; None for an exported file).

    :func:`lightface.export.export_onnx` / ``export_torchscript`` (``export_onnx(fr, "frontal.onnx")``) write
    :meth:`frontalize_tensor` (with a conditioned generator's recogniser) as one file; the mirroring by
    ``mirror`` stays the caller's.

    Example:
        >>> fr = Frontalizer(detector="../shared/models/det_500m.onnx")           # the shipped model
        >>> fr = Frontalizer("runs/tpgan/model.pt")                  # your own
        >>> fr = Frontalizer("frontal.onnx")                         # exported: ONNX Runtime
        >>> frontal = fr.frontalize_face(cv2.imread("aligned_profile.png"))   # uint8 BGR 128x128
        >>> faces = fr.frontalize(cv2.imread("photo.jpg"))                    # list of FrontalizedFace
    """

    def __init__(self, weights=None, device: str = "auto", detector=None, ema: bool = True,
                 mirror: Optional[str] = "auto"):
        self.device = resolve_device(device)
        self._exported = None
        self.card = None
        if is_exported(weights):
            config = self._load_exported(weights, ema)
        else:
            config = self._load(weights, ema, mirror)
        if mirror == "auto":
            if self.pretrained is not None and "mirror" not in config:
                log.warning("Frontalizer: the shipped %s records no training direction (preprocessing 'mirror'); "
                            "faces are used as given, unmirrored: pass mirror='left' or 'right' (frontalize: --mirror "
                            "left / right) if it was trained on one direction", self.pretrained.name)
            mirror = config.get("mirror")
            mirror = None if mirror in (None, "none") else mirror
        if mirror not in (None, "left", "right"):
            raise ValueError(f"mirror must be 'left', 'right' or None, got {mirror!r}")
        self.mirror = mirror
        self.detector = resolve_detector(detector, self.device)

    def _load_exported(self, path, ema: bool) -> dict:
        """Set up on a frontalizer file of :mod:`lightface.export` (see ``weights``); returns its card, whose
        ``mirror`` is the training direction."""
        what = f"Frontalizer({os.fspath(path)!r})"
        self._exported = ExportedGenerator(path, "frontalization", self.device, what, ema)
        self.card = card = self._exported.card
        self.backend = self._exported.backend
        self.pretrained = None
        self.model = None
        if int(card.get("size", SIZE)) != SIZE:
            raise ValueError(f"{what}: the file frontalizes {card['size']} px crops; Frontalizer works on the "
                             f"{SIZE} px lightcnn template")
        # the channel count: the card's (since session 50), else what its input line says (session 49's cards)
        self.channels = int(card.get("channels", 1 if str(card.get("input", "")).startswith("(N, 1,") else 3))
        return card

    def _load(self, weights, ema: bool, mirror: Optional[str]) -> dict:
        """Set up on PyTorch weights (see ``weights``); returns the preprocessing config (``mirror``: a released
        checkpoint's recorded direction is read only for ``mirror="auto"``)."""
        config = {}
        self.backend = "torch"
        self.pretrained = shipped_entry(weights, "frontalization", "frontalization", "Frontalizer()",
                                        "weights= the final checkpoint of python -m pipelines.train_frontalization "
                                        "(CLI: --weights)")
        if self.pretrained is not None:
            weights = str(self.pretrained.path())  # sha256-checked
            config = dict(self.pretrained.preprocessing)
        model, ckpt, use_ema = load_generator(weights, "tpgan", TPGANGenerator, ema,
                                              "OUT/model.pt (or OUT/last.pt) written by pipelines.train_frontalization")
        if ckpt is not None:
            config = config or ckpt.extra.get("config") or (_released_preprocessing(ckpt) if mirror == "auto" else {})
            if self.pretrained is not None:
                log.info("Frontalizer: shipped weights %s (sha256 %s...)", self.pretrained.name,
                         self.pretrained.sha256[:12])
                status = str(self.pretrained.meta.get("status", ""))
                if status.startswith("release candidate"):
                    log.warning("Frontalizer: the shipped %s is a %s; its held-out scores are in docs/model_zoo.md",
                                self.pretrained.name, status)
            else:
                log.info("Frontalizer: %s (%s weights)",
                         weights if isinstance(weights, (str, os.PathLike)) else "checkpoint", "EMA" if use_ema else "raw")
        self.model = model.float().to(self.device).eval()
        self.channels = self.model.in_channels
        return config

    def __repr__(self) -> str:
        shipped = f"weights={self.pretrained.name!r}, " if self.pretrained is not None else ""
        if self._exported is not None:
            shipped = f"weights={self._exported.path!r}, backend={self.backend!r}, "
        return (f"Frontalizer({shipped}channels={self.channels}, device={str(self.device)!r}, mirror={self.mirror!r}, "
                f"detector={self.detector!r})")

    # -- tensors -----------------------------------------------------------------------
    @torch.no_grad()
    def frontalize_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 128, 128) float [0, 1] (RGB, or gray for a 1-channel model) -> same shape, zero noise, clamped.

        A tensor that is not float (TypeError) or holds values outside [0, 1] (ValueError: a 0..255
        tensor) is refused."""
        check_unit_tensor(x, "frontalize_tensor input")
        if self._exported is not None:
            return self._exported(x)
        return self.model.frontalize(x.to(self.device, torch.float32)).clamp_(0, 1).to(x.device)

    # -- numpy crops -------------------------------------------------------------------
    @staticmethod
    def _resized(crop: np.ndarray) -> np.ndarray:
        """uint8 BGR (SIZE, SIZE, 3) from a BGR / gray / BGRA crop of any size (ValueError: an empty one)."""
        if np.asarray(crop).size == 0:
            raise ValueError(f"Frontalizer: got an empty crop (shape {np.asarray(crop).shape}); pass an aligned face "
                             "image, e.g. a 128x128 crop")
        c = as_bgr(crop)
        if c.shape[:2] != (SIZE, SIZE):
            interp = cv2.INTER_AREA if c.shape[0] > SIZE else cv2.INTER_CUBIC
            c = cv2.resize(c, (SIZE, SIZE), interpolation=interp)
        return c

    def crop_facing(self, crop: np.ndarray) -> Optional[str]:
        """The way the face of an aligned crop looks, ``"left"`` or ``"right"``
        (:func:`lightface.data.pose_pairs.facing`), from the 5 landmarks that the Frontalizer's detector
        finds on it (:func:`lightface.eval.frontal_pose.crop_landmarks`); None when it finds no face.
        With the shipped YuNet (``detector="yunet"``), 139 of the 140 aligned CFP profiles of people
        451-485 read the way their hand-annotated fiducials look.

        Raises:
            ValueError: the Frontalizer has no detector (``Frontalizer(weights, detector=...)``).
        """
        if self.detector is None:
            raise ValueError("Frontalizer: telling which way an aligned crop looks (facing='auto') needs a face "
                             "detector: Frontalizer(weights, detector=...) (e.g. 'yunet', the one that ships, or "
                             "'../shared/models/det_500m.onnx'), or pass facing='left' / 'right'")
        landmarks = crop_landmarks(self._resized(crop), self.detector)
        return None if landmarks is None else face_direction(landmarks)

    def frontalize_faces(
        self, crops: Sequence[np.ndarray], facings: Optional[Sequence[Optional[str]]] = None, batch_size: int = 16
    ) -> List[np.ndarray]:
        """Aligned crops (uint8 BGR / gray / BGRA, resized to 128 when needed) -> uint8 BGR (128, 128, 3) frontal views.

        ``facings``: per crop ``"left"`` / ``"right"`` (the way the face looks, e.g. from
        :func:`lightface.data.pose_pairs.facing` on its landmarks), ``"auto"`` (read from the crop by
        the detector: :meth:`crop_facing`; used as given when it finds no face) or None (unknown: used
        as given). A crop facing away from the model's training direction is mirrored
        before and after.
        """
        check_batch_size(batch_size)
        crops = list(crops)
        facings = list(facings) if facings is not None else [None] * len(crops)
        if len(facings) != len(crops):
            raise ValueError(f"got {len(crops)} crops but {len(facings)} facings")
        bad = [f for f in facings if f not in ("left", "right", "auto", None)]
        if bad:
            raise ValueError(f"facing must be 'left', 'right', 'auto' or None (unknown), got {bad[0]!r}")
        facings = [self.crop_facing(c) if f == "auto" else f for c, f in zip(crops, facings)]
        flips = [self.mirror is not None and f is not None and f != self.mirror for f in facings]
        out: List[np.ndarray] = []
        for idx in iter_batches(list(range(len(crops))), batch_size):
            imgs = [self._resized(crops[i]) for i in idx]
            imgs = [img[:, ::-1] if flips[i] else img for img, i in zip(imgs, idx)]
            x = image_to_tensor(imgs, channels=self.channels)  # RGB (or gray) float in [0, 1]
            y = tensor_to_image(self.frontalize_tensor(x))  # uint8 BGR (N, H, W, 3) or gray (N, H, W)
            for img, i in zip(y, idx):
                img = img[:, ::-1] if flips[i] else img
                out.append(np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img))
        return out

    def frontalize_face(self, crop: np.ndarray, facing: Optional[str] = None) -> np.ndarray:
        """One aligned crop -> uint8 BGR (128, 128, 3) frontal view (see :meth:`frontalize_faces`)."""
        return self.frontalize_faces([crop], [facing])[0]

    # -- photos ------------------------------------------------------------------------
    def frontalize(
        self, photo: np.ndarray, only_center_face: bool = False, batch_size: int = 16
    ) -> List[FrontalizedFace]:
        """Whole photo (uint8 BGR (H, W, 3), BGRA or gray) -> one :class:`FrontalizedFace` per detected face.

        Faces are detected (largest first), aligned to the 128x128 ``lightcnn`` template with
        their 5 landmarks (antialiased where the crop shrinks the face, so the frontal view does
        not depend on the photo's resolution: docs/frontalization.md), mirrored to the model's
        direction when needed and frontalized.
        ``only_center_face`` keeps the photo's main face (the largest, penalised by its
        distance from the image centre: :func:`lightface.data.detect.main_face`). No face -> [].
        """
        check_batch_size(batch_size)
        if self.detector is None:
            raise ValueError("Frontalizer.frontalize needs a face detector: Frontalizer(weights, detector=...) "
                             "(e.g. '../shared/models/det_500m.onnx'), or use frontalize_face for aligned crops")
        found = detect_and_align(self.detector, as_bgr(photo), SIZE, "lightcnn", only_center_face, antialias=True)
        facings = [face_direction(f.landmarks) for f, _, _ in found]
        frontals = self.frontalize_faces([c for _, c, _ in found], facings, batch_size) if found else []
        return [
            FrontalizedFace(d.box, d.landmarks, crop, fr, M, self.mirror is not None and fc != self.mirror)
            for (d, crop, M), fr, fc in zip(found, frontals, facings)
        ]

    @staticmethod
    def paste_back(photo: np.ndarray, faces: Sequence[FrontalizedFace]) -> np.ndarray:
        """The photo with every frontal view warped back over its face (feathered blend), uint8 BGR."""
        canvas = as_bgr(photo)
        for f in faces:
            canvas = paste_face(canvas, f.frontal, f.M)
        return canvas
