"""``SuperResolver``: upscale aligned face crops or whole photos with a trained Wavelet-SRNet.

Colour contract: numpy images are uint8 BGR (as OpenCV reads them; gray (H, W) accepted);
image paths and PIL images (RGB, converted) are accepted too (:func:`lightface.restore.paste.as_bgr`);
outputs are uint8 BGR; the network itself works on RGB float in [0, 1] (converted here).
"""
import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from ..data.align import affine_scale, align_face, estimate_transform
from ..data.convert import check_unit_tensor, image_to_tensor, tensor_to_image
from ..data.io import write_image
from ..engine.distributed import resolve_device
from ..models.pretrained import DEFAULT_SR_SCALE, sr_alias
from ..models.wavelet_srnet import WaveletSRNet
from .folder import check_batch_size, iter_batches
from .loading import ExportedGenerator, is_exported, load_generator, resolve_detector, shipped_entry
from .paste import as_bgr as _as_bgr  # noqa: F401  (re-exported for lightface.restore.frontalizer)
from .paste import antialiased_align, detect_faces, paste_face, rescale_affine

__all__ = ["SuperResolver", "RestoredFace", "evaluate_super_resolution", "upscale"]

log = logging.getLogger(__name__)

#: the alignment template of the faces evaluate_super_resolution scores (the SR corpus's and upscale_faces' crops)
_TEMPLATE = "lightcnn"
#: restore() reads a face larger in the photo than the model's input crop at its own resolution, and leaves it as
#: the bicubic upscale when the photo holds it more than this many times larger (photo px per input-crop px): on
#: CelebA-HQ photos the shipped 4x / 8x models gain +0.1 / +0.2 dB over the photo's bicubic upscale at 5.7x and
#: lose 0.3 / 0.1 dB at 11.4x (python -m benchmarks.sr_face_size --whole-photo; docs/super_resolution.md)
MAX_FACE_SHRINK = 8.0
#: restore() refuses a photo whose upscaled output would have more pixels than this (16384 x 16384, 0.8 GB as
#: uint8 BGR): a 4000 x 4000 photo at 4x just fits; downscale larger photos, or crop them to the faces, first
MAX_OUTPUT_PIXELS = 16384 * 16384


def _whole_scale(scale) -> Optional[int]:
    """``SuperResolver(scale=...)`` as an int: ``4``, ``"4"`` or ``4.0`` (a value read from a config
    file or an environment variable) -> 4; None stays None.

    Raises:
        ValueError: not a whole number >= 1 (``"4x"``, ``4.5``, ``True``).
    """
    if scale is None:
        return None
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(scale, bool) or not value.is_integer() or value < 1:
        raise ValueError(f"SuperResolver(scale={scale!r}): the scale must be a whole number such as 4 or 8")
    return int(value)


def upscale(model: WaveletSRNet, x: torch.Tensor, flip_ensemble: bool) -> torch.Tensor:
    """What :meth:`SuperResolver.upscale_tensor` computes, and what :func:`lightface.export.export_onnx` writes
    of a super-resolver: ``model`` on (N, 3, h, w) RGB float [0, 1] ``x`` -> (N, 3, h*scale, w*scale) RGB float,
    clamped to [0, 1]; with ``flip_ensemble``, averaged with the flipped-back output of the mirrored input."""
    sr = model(x)
    if flip_ensemble:
        sr = sr.add_(model(x.flip(-1)).flip(-1)).mul_(0.5)
    return sr.clamp_(0, 1)


@dataclass
class RestoredFace:
    """One face of a restored photo.

    box: float32 (4,) x1, y1, x2, y2 in the input photo; landmarks: float32 (5, 2) in the
    input photo; crop: uint8 BGR (s, s, 3) aligned crop the model read: s = the model's input
    size, or for a face larger than that in the photo its own size there (``ceil(input_size *
    shrink)``), so no detail is discarded; restored: uint8 BGR (S, S, 3) super-resolved crop
    (S = s * scale), or, when ``super_resolved`` is False, the photo's own face at the model's
    output size; M: float64 (2, 3) photo -> ``crop`` matrix; shrink: how many times larger the
    photo holds the face than the model's input crop (photo px per input-crop px; <= 1: a small
    face, enlarged); super_resolved: False when ``shrink`` exceeded ``max_face_shrink`` and the
    bicubic upscale was kept (``crop`` and ``M`` then at the input size).
    """

    box: np.ndarray
    landmarks: np.ndarray
    crop: np.ndarray
    restored: np.ndarray
    M: np.ndarray
    shrink: float = 1.0
    super_resolved: bool = True


class SuperResolver:
    """Face super-resolution with a ``wavelet_srnet`` checkpoint.

    Args:
        weights: None (default): the super-resolver that ships with lightface for ``scale``
            (:func:`lightface.models.default_weights` ``("sr4")`` / ``("sr8")``, sha256-checked);
            a :class:`lightface.models.PretrainedError` says so when none ships for that scale.
            Else a checkpoint path (``pipelines.train_super_resolution``'s model file or a
            training checkpoint), the name of a shipped entry
            (:func:`lightface.models.list_pretrained`), a built :class:`WaveletSRNet`, or a
            super-resolver exported by :func:`lightface.export.export_onnx` (an ``.onnx`` file, run
            with ONNX Runtime: CPU, or CUDA when ``device`` is CUDA and onnxruntime-gpu is installed)
            or ``export_torchscript`` (its ``.pt``, run with ``torch.jit.load``): its card gives
            ``scale``, ``input_size`` and ``flip_ensemble``, and every method works on it as on the
            PyTorch model (same pre- and post-processing; outputs within 1e-5 of it).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        detector: for whole photos: a :class:`lightface.data.detect.FaceDetector`, or a model
            spec it accepts (ONNX path, model pack name); None: only aligned crops.
        ema: use the EMA generator weights when the checkpoint has them (default; an exported
            file holds the weights it was exported with: ``ema=False`` is refused there).
        scale: 4 or 8 (any factor a model is trained for): which shipped model ``weights=None``
            loads (default 4: :data:`lightface.models.pretrained.DEFAULT_SR_SCALE`, as for
            ``get_model("wavelet_srnet", pretrained=True)``); with explicit weights, checked against the model's factor.
            A whole number given as text or float (``"4"``, ``4.0``, from a config file) is taken as that integer.
        flip_ensemble: super-resolve each face and its mirror image and average the two
            outputs (the mirrored one flipped back), the self-ensemble of SR benchmarks
            restricted to the flip that keeps an aligned face aligned. Default on: on the
            shipped models it adds 0.02-0.11 dB PSNR and removes 9-17% of the invented dark
            spots (``docs/super_resolution.md``) for twice the compute; False: one pass. None
            (default): on, and for an exported file as it was exported (the ensemble is inside
            its graph; asking for the other setting is refused with a ValueError: export again).
        max_face_shrink: :meth:`restore` reads a face larger in the photo than the model's input
            crop at its own resolution (a 4x model then outputs it 4x larger than 128 px) up to
            this many times the input crop (default :data:`MAX_FACE_SHRINK`, 8); a larger face
            keeps the bicubic upscale, which the shipped models no longer beat there. The same limit holds
            for the aligned crops of :meth:`upscale_faces`, read at their own size.
            ``float("inf")``: restore every face.

    Attributes: ``scale``, ``input_size`` (crop side the model expects), ``output_size``,
    ``flip_ensemble``, ``pretrained`` (the shipped :class:`~lightface.models.PretrainedWeights` in use, or None),
    ``backend`` (``"torch"``, or ``"onnxruntime"`` / ``"torchscript"`` for an exported file), ``card`` (an
    exported file's card, else None), ``model`` (the :class:`WaveletSRNet`; None for an exported file).

    :func:`lightface.export.export_onnx` / ``export_torchscript`` (``export_onnx(sr, "sr.onnx")``) write
    :meth:`upscale_tensor` with this resolver's flip ensemble as one file, for ONNX Runtime / libtorch.

    Example:
        >>> sr = SuperResolver(scale=8, detector="../shared/models/det_500m.onnx")   # the shipped 8x model
        >>> sr = SuperResolver("runs/sr4/model.pt")                                 # your own
        >>> sr = SuperResolver("sr4.onnx")                                          # exported: ONNX Runtime
        >>> face128 = sr.upscale_face(cv2.imread("face32.png"))
        >>> photo4x, faces = sr.restore(cv2.imread("group.jpg"))
    """

    def __init__(self, weights=None, device: str = "auto", detector=None, ema: bool = True,
                 scale: Optional[int] = None, flip_ensemble: Optional[bool] = None,
                 max_face_shrink: float = MAX_FACE_SHRINK):
        if not float(max_face_shrink) > 0:
            raise ValueError(f"max_face_shrink (--max-face-shrink) must be > 0, got {max_face_shrink!r}")
        self.max_face_shrink = float(max_face_shrink)
        self.device = resolve_device(device)
        scale = _whole_scale(scale)
        self._exported = None
        self.card = None
        if is_exported(weights):
            self._load_exported(weights, ema, scale, flip_ensemble)
            self.detector = resolve_detector(detector, self.device)
            return
        wanted = scale or DEFAULT_SR_SCALE
        self.pretrained = shipped_entry(weights, "super_resolution", sr_alias(wanted), f"SuperResolver(scale={wanted})",
                                        "weights= a model file written by python -m pipelines.train_super_resolution "
                                        f"--scale {wanted} (CLI: --weights)", scale=scale)
        if self.pretrained is not None:
            weights = str(self.pretrained.path())  # sha256-checked
        model, ckpt, use_ema = load_generator(weights, "wavelet_srnet", WaveletSRNet, ema,
                                              "the OUT/model.pt written by pipelines.train_super_resolution")
        if ckpt is not None:
            if self.pretrained is not None:
                log.info("SuperResolver: shipped weights %s (%dx, sha256 %s...)", self.pretrained.name,
                         model.scale, self.pretrained.sha256[:12])
            else:
                log.info("SuperResolver: %s (%s weights)", weights, "EMA" if use_ema else "raw")
        if scale is not None and model.scale != scale:
            raise ValueError(f"SuperResolver(scale={scale}): the weights are a {model.scale}x model; pass weights "
                             f"trained with --scale {scale}, or leave weights unset for the shipped {scale}x model")
        self.model = model.float().to(self.device).eval()
        self.backend = "torch"
        self.scale = self.model.scale
        self.input_size = self.model.input_size
        self.output_size = self.model.output_size
        self.flip_ensemble = True if flip_ensemble is None else bool(flip_ensemble)
        self.detector = resolve_detector(detector, self.device)

    def _load_exported(self, path, ema: bool, scale: Optional[int], flip_ensemble: Optional[bool]) -> None:
        """Set up the resolver on a super-resolver file of :mod:`lightface.export` (see ``weights``)."""
        what = f"SuperResolver({os.fspath(path)!r})"
        self._exported = ExportedGenerator(path, "super_resolution", self.device, what, ema)
        self.card = card = self._exported.card
        self.backend = self._exported.backend
        self.pretrained = None
        self.model = None
        self.scale, self.input_size, self.output_size = (int(card[k]) for k in ("scale", "input_size", "output_size"))
        self.flip_ensemble = bool(card["flip_ensemble"])
        if scale is not None and scale != self.scale:
            raise ValueError(f"{what}: scale={scale}, but the file is a {self.scale}x model; export the --scale "
                             f"{scale} model, or leave scale unset")
        if flip_ensemble is not None and bool(flip_ensemble) != self.flip_ensemble:
            raise ValueError(f"{what}: flip_ensemble={bool(flip_ensemble)} (--no-flip-ensemble), but the file was "
                             f"exported with the flip ensemble {'on' if self.flip_ensemble else 'off'}, inside its "
                             "graph; leave it unset, or export again: export_onnx(SuperResolver(weights, "
                             f"flip_ensemble={bool(flip_ensemble)}), path)")

    def __repr__(self) -> str:
        shipped = f"weights={self.pretrained.name!r}, " if self.pretrained is not None else ""
        if self._exported is not None:
            shipped = f"weights={self._exported.path!r}, backend={self.backend!r}, "
        return (f"SuperResolver({shipped}scale={self.scale}, input_size={self.input_size}, "
                f"output_size={self.output_size}, device={str(self.device)!r}, flip_ensemble={self.flip_ensemble}, "
                f"max_face_shrink={self.max_face_shrink}, detector={self.detector!r})")

    @torch.no_grad()
    def upscale_tensor(self, lr: torch.Tensor, flip_ensemble: Optional[bool] = None) -> torch.Tensor:
        """(N, 3, h, w) RGB float [0, 1] -> (N, 3, h*scale, w*scale) RGB float [0, 1] (clamped), on the input's device.

        ``flip_ensemble``: average with the flipped-back output of the mirrored input (default:
        the resolver's ``flip_ensemble``; an exported file runs only its own: another is refused, ValueError).
        A tensor that is not float (TypeError) or holds values outside [0, 1] (ValueError: a 0..255
        tensor) is refused.
        """
        check_unit_tensor(lr, "upscale_tensor input")
        flip = self.flip_ensemble if flip_ensemble is None else flip_ensemble
        if self._exported is not None:
            if bool(flip) != self.flip_ensemble:
                raise ValueError(f"upscale_tensor(flip_ensemble={flip}): {self._exported.path} was exported with the "
                                 f"flip ensemble {'on' if self.flip_ensemble else 'off'}, inside its graph; export "
                                 "again with the other setting")
            return self._exported(lr)
        return upscale(self.model, lr.to(self.device, torch.float32), flip).to(lr.device)

    def aligned_shrink(self, crop) -> float:
        """How many times the model's input crop :meth:`upscale_faces` reads the aligned crop ``crop`` (an array,
        or its shape): its shorter side / ``input_size``, at least 1 (a smaller crop is enlarged to the input
        crop). Above ``max_face_shrink`` the crop is not super-resolved (its bicubic upscale comes back), as
        :meth:`restore` keeps such a face in a photo."""
        shape = crop if isinstance(crop, tuple) else np.shape(crop)
        return max(1.0, min(shape[:2]) / self.input_size)

    def upscale_faces(self, crops: Sequence[np.ndarray], batch_size: int = 16) -> List[np.ndarray]:
        """Aligned face crops (uint8 BGR or gray, any size) -> uint8 BGR crops ``scale`` times their size.

        A crop whose shorter side is below ``input_size`` is first enlarged (bicubic) to make it ``input_size``,
        so a square one comes out ``output_size``; a larger crop is read at its own size (the model is fully
        convolutional: a 4x model turns a 64 px crop into 256 px, a 512 px one is never shrunk to 32 px and
        its detail thrown away), as :meth:`restore` reads a large face. A crop more than ``max_face_shrink``
        times the input crop (:meth:`aligned_shrink`: 256 px at 4x, 128 px at 8x with the default 8) comes
        back as its bicubic upscale, counted in a warning: the shipped models no longer beat bicubic there (such
        a crop holds no detail to super-resolve; ``max_face_shrink=float("inf")`` runs the model anyway).
        A non-square crop keeps its aspect ratio. ``crops`` of one shape are run ``batch_size`` at a time.

        Raises:
            ValueError: a crop whose output would pass :data:`MAX_OUTPUT_PIXELS`.
        """
        check_batch_size(batch_size)
        items = []
        for c in crops:
            c = _as_bgr(c)
            h, w = c.shape[:2]
            if min(h, w) < self.input_size:  # enlarged so that its shorter side is the input crop's
                f = self.input_size / min(h, w)
                c = cv2.resize(c, (max(self.input_size, round(w * f)), max(self.input_size, round(h * f))),
                               interpolation=cv2.INTER_CUBIC)
                h, w = c.shape[:2]
            if h * w * self.scale ** 2 > MAX_OUTPUT_PIXELS:
                raise ValueError(f"a {w}x{h} face crop upscaled {self.scale}x would be {w * self.scale}x"
                                 f"{h * self.scale} pixels, more than SuperResolver makes ({MAX_OUTPUT_PIXELS / 1e6:.0f}"
                                 " MP); downscale the crop first")
            items.append(c)
        out: List[Optional[np.ndarray]] = [None] * len(items)
        by_shape: Dict[Tuple[int, int], List[int]] = {}
        kept = []
        for i, c in enumerate(items):
            if self.aligned_shrink(c) > self.max_face_shrink:
                out[i] = cv2.resize(c, (c.shape[1] * self.scale, c.shape[0] * self.scale), interpolation=cv2.INTER_CUBIC)
                kept.append(i)
            else:
                by_shape.setdefault(c.shape[:2], []).append(i)
        for idx in by_shape.values():  # one batch per crop shape
            for i, up in zip(idx, self._upscale_batches([items[i] for i in idx], batch_size)):
                out[i] = up
        if kept:
            h, w = items[kept[0]].shape[:2]
            log.warning("upscale_faces: %d of %d aligned crop(s) not super-resolved, returned as their bicubic "
                        "upscale: larger than max_face_shrink %g times the model's %d px input crop (e.g. #%d, "
                        "%dx%d), where the model no longer beats bicubic; downscale such crops, or pass "
                        "max_face_shrink=inf (--max-face-shrink inf) to super-resolve them anyway", len(kept),
                        len(items), self.max_face_shrink, self.input_size, kept[0], w, h)
        return out

    def _upscale_batches(self, crops: Sequence[np.ndarray], batch_size: int) -> List[np.ndarray]:
        """uint8 BGR (s, s, 3) crops of one size -> uint8 BGR (s * scale, s * scale, 3), ``batch_size`` at a time."""
        check_batch_size(batch_size)
        out: List[np.ndarray] = []
        for chunk in iter_batches(list(crops), batch_size):
            y = tensor_to_image(self.upscale_tensor(image_to_tensor(list(chunk))))  # BGR uint8 -> RGB float -> BGR
            out.extend(np.ascontiguousarray(img) for img in y)
        return out

    def upscale_face(self, crop: np.ndarray) -> np.ndarray:
        """One aligned face crop (uint8 BGR (h, w, 3) or gray) -> uint8 BGR (h * scale, w * scale, 3), at least
        (output_size, output_size, 3) for a square crop: :meth:`upscale_faces`."""
        return self.upscale_faces([crop])[0]

    def restore(
        self, photo: np.ndarray, only_center_face: bool = False, batch_size: int = 16
    ) -> Tuple[np.ndarray, List[RestoredFace]]:
        """Whole photo -> (photo upscaled by ``scale`` with every face super-resolved, faces).

        Faces are detected, aligned to the Light CNN template at ``input_size``,
        super-resolved, warped back and blended with a feathered mask into the photo
        upscaled by ``scale`` (bicubic). A face larger in the photo than that crop is aligned at
        its own size instead (the model is fully convolutional): squeezed into the input crop, it
        would lose to the bicubic upscale (-0.6 dB at 1.4x the crop, -2.4 dB at 2.1x on CelebA-HQ
        photos). One more than ``max_face_shrink`` times the crop keeps the bicubic upscale
        (``super_resolved`` False). ``photo``: uint8 BGR (H, W, 3), BGRA or gray.
        ``only_center_face``: keep only the photo's main face (the largest, penalised by its distance
        from the image centre: :func:`lightface.data.detect.main_face`).
        A photo without faces comes back bicubic-upscaled with an empty face list.
        """
        check_batch_size(batch_size)
        if self.detector is None:
            raise ValueError("SuperResolver.restore needs a face detector: SuperResolver(weights, detector=...) "
                             "(e.g. '../shared/models/det_500m.onnx'), or use upscale_face for aligned crops")
        bgr = _as_bgr(photo)
        h, w = bgr.shape[:2]
        if h * w * self.scale ** 2 > MAX_OUTPUT_PIXELS:
            raise ValueError(f"a {w}x{h} photo upscaled {self.scale}x would be {w * self.scale}x{h * self.scale} "
                             f"pixels, more than SuperResolver.restore makes ({MAX_OUTPUT_PIXELS / 1e6:.0f} MP); "
                             "downscale the photo or crop it to its faces first")
        detections = detect_faces(self.detector, bgr, only_center_face)
        canvas = cv2.resize(bgr, (w * self.scale, h * self.scale), interpolation=cv2.INTER_CUBIC)
        faces = []
        for det in detections:
            shrink = 1.0 / affine_scale(estimate_transform(det.landmarks, _TEMPLATE, self.input_size))
            own_size = 1 < shrink <= self.max_face_shrink  # the crop enlarges it by less than a pixel, discards nothing
            crop, M = antialiased_align(bgr, det.landmarks, _TEMPLATE,
                                        size=math.ceil(self.input_size * shrink) if own_size else self.input_size)
            if shrink > self.max_face_shrink:
                faces.append(RestoredFace(det.box, det.landmarks, crop, antialiased_align(
                    bgr, det.landmarks, _TEMPLATE, size=self.output_size)[0], M, shrink, False))
            else:
                faces.append(RestoredFace(det.box, det.landmarks, crop, None, M, shrink, True))
        by_size: Dict[int, List[RestoredFace]] = {}
        for face in faces:
            if face.super_resolved:
                by_size.setdefault(face.crop.shape[0], []).append(face)
        for same in by_size.values():  # one batch per crop size
            for face, up in zip(same, self._upscale_batches([f.crop for f in same], batch_size)):
                face.restored = up
                canvas = paste_face(canvas, up, rescale_affine(face.M, self.scale, self.scale))
        return canvas, faces


def _label(img: np.ndarray, *lines: str) -> np.ndarray:
    """A copy of ``img`` (uint8 BGR) with a white caption bar holding ``lines`` under it."""
    bar = np.full((4 + 13 * max(len(lines), 2), img.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(bar, text, (3, 13 + 13 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([img, bar], axis=0)


def _aligned_hr_size(shape: Tuple[int, ...], size: int, scale: int) -> Tuple[int, int]:
    """``(width, height)`` of an aligned HR crop of ``shape`` resized for :func:`evaluate_super_resolution`: its
    shorter side ``size``, its aspect ratio kept, the longer side rounded to a multiple of ``scale`` (so that the
    LR face is whole pixels)."""
    h, w = shape[:2]
    longer = max(size, scale * round(max(h, w) * size / min(h, w) / scale))
    return (longer, size) if w > h else (size, longer)


def _centre_square(img: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` square of a crop whose shorter side is ``size`` (the crop itself if square)."""
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size]


def _px(img: np.ndarray) -> str:
    """``"128 px"`` for a square image, ``"160x128 px"`` (width x height) otherwise."""
    h, w = img.shape[:2]
    return f"{w} px" if w == h else f"{w}x{h} px"


def evaluate_super_resolution(
    resolver: SuperResolver,
    hr_paths: Sequence[Union[str, os.PathLike]],
    aligned: bool = False,
    identity_weights=None,
    sheet_path: Optional[Union[str, os.PathLike]] = None,
    max_sheet_rows: int = 10,
) -> dict:
    """Score super-resolution against ground truth: PSNR, SSIM and identity cosine, SR vs bicubic.

    Each HR image is turned into an ``output_size`` face (``aligned=True``: resized, area
    interpolation, its shorter side to ``output_size`` and its aspect ratio kept, as :meth:`SuperResolver.upscale_faces`
    keeps it (the longer side rounded to a multiple of ``scale``); a crop whose shorter side is below
    ``output_size`` is skipped, listed in ``skipped``:
    enlarged, it would be blurry ground truth, which flatters the scores; else the main detected face,
    :func:`lightface.data.detect.main_face`, aligned to the Light CNN template at
    ``output_size``, antialiased where the crop shrinks the face, so a high-resolution photo
    gives a faithful HR face rather than the aliased point samples of a plain warp:
    :func:`lightface.data.align.align_face` ``antialias=True``), downscaled by ``scale`` (antialiased bicubic,
    :func:`lightface.data.degradation.downscale`), then upscaled by the model and by bicubic
    (Pillow) and compared with the HR face. PSNR / SSIM: all three colour channels, data
    range 255; spots: dark spots the HR face lacks (hallucinated texture,
    :func:`lightface.eval.image_quality.spurious_spots`); blur: perceptual blur of SR, bicubic
    and the HR face itself (0 sharp, 1 blurred, :func:`lightface.eval.image_quality.blur`).
    Identity cosine: :func:`lightface.eval.identity.identity_cosine` with ``identity_weights``
    (a Light CNN checkpoint or module, ``"dlib"`` for dlib's independent recogniser; None
    skips it). The faces are judged as ``lightcnn``-template crops (the super-resolver's
    template), so with ``aligned=True`` the HR crops must be aligned with it; the judges read square
    crops, so a non-square one is judged on its centred ``output_size`` square (HR, SR and bicubic alike).

    Returns ``{"scale", "images": [per-image dict], "mean": {...}, "skipped": [...]}``; writes a
    contact sheet PNG (rows LR | bicubic | SR | HR with their scores) to ``sheet_path`` if given.
    """
    from ..data.degradation import downscale, resize
    from ..data.io import ImageReadError, read_image
    from ..eval.image_quality import blur, psnr, spurious_spots, ssim

    size, scale = resolver.output_size, resolver.scale
    if not aligned and resolver.detector is None:
        raise ValueError("evaluation of unaligned HR images needs a detector (SuperResolver(..., detector=...)), "
                         "or pass aligned=True (--aligned) for face crops")
    net = None
    if identity_weights is not None:
        from ..eval.identity import load_identity_judge

        net = load_identity_judge(identity_weights, template=_TEMPLATE, device=resolver.device)
    records, skipped, rows = [], [], []
    hrs, lrs = [], []
    for path in hr_paths:
        try:
            img = read_image(path, "bgr")
        except ImageReadError as err:
            skipped.append({"input": str(path), "reason": str(err)})
            continue
        if aligned:
            if min(img.shape[:2]) < size:
                skipped.append({"input": str(path), "reason": f"HR crop {img.shape[1]}x{img.shape[0]} smaller than "
                                f"the output size {size}: enlarged, it would be blurry ground truth"})
                continue
            hr = cv2.resize(img, _aligned_hr_size(img.shape, size, scale), interpolation=cv2.INTER_AREA)
        else:
            faces = detect_faces(resolver.detector, img, only_center_face=True)
            if not faces:
                skipped.append({"input": str(path), "reason": "no face detected"})
                continue
            hr, _ = align_face(img, faces[0].landmarks, _TEMPLATE, size=size, antialias=True)
        hrs.append((str(path), hr))
        lrs.append(downscale(hr, scale, "bicubic"))
    if not hrs:
        raise ValueError(f"no usable HR images among {len(hr_paths)} input(s): {skipped}")
    if skipped:
        log.warning("evaluation: skipped %d of %d HR image(s), e.g. %s: %s", len(skipped), len(hr_paths),
                    skipped[0]["input"], skipped[0]["reason"])
    srs = resolver.upscale_faces(lrs)
    bics = [resize(lr, hr.shape[1::-1], "bicubic") for lr, (_, hr) in zip(lrs, hrs)]

    ids = {}
    if net is not None:
        from ..eval.identity import identity_cosine

        def judged(faces):  # BGR uint8 -> RGB float, each face's centred size x size square
            return image_to_tensor([_centre_square(f, size) for f in faces])

        hr_t = judged([h for _, h in hrs])
        ids["sr"] = identity_cosine(net, judged(srs), hr_t, template=_TEMPLATE).cpu().numpy()
        ids["bicubic"] = identity_cosine(net, judged(bics), hr_t, template=_TEMPLATE).cpu().numpy()
    for i, ((name, hr), lr, sr, bic) in enumerate(zip(hrs, lrs, srs, bics)):
        rec = {"input": name, "psnr_sr": psnr(sr, hr), "psnr_bicubic": psnr(bic, hr),
               "ssim_sr": ssim(sr, hr), "ssim_bicubic": ssim(bic, hr),
               "spots_sr": spurious_spots(sr, hr, channel_order="bgr"),
               "spots_bicubic": spurious_spots(bic, hr, channel_order="bgr"),
               "blur_sr": blur(sr, "bgr"), "blur_bicubic": blur(bic, "bgr"), "blur_hr": blur(hr, "bgr")}
        if ids:
            rec["id_cos_sr"] = float(ids["sr"][i])
            rec["id_cos_bicubic"] = float(ids["bicubic"][i])
        records.append({k: (float(v) if not isinstance(v, str) else v) for k, v in rec.items()})
        if sheet_path is not None and len(rows) < max_sheet_rows:
            def caption(kind):
                key = "sr" if kind == "SR" else "bicubic"
                ident = f" id {rec['id_cos_' + key]:.5f}" if f"id_cos_{key}" in rec else ""
                return f"{kind} {rec['psnr_' + key]:.2f} dB", f"SSIM {rec['ssim_' + key]:.3f}{ident}"

            lr_up = cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            rows.append(np.concatenate([
                _label(lr_up, f"LR {_px(lr)} (x{scale})"),
                _label(bic, *caption("bicubic")),
                _label(sr, *caption("SR")),
                _label(hr, f"HR {_px(hr)}"),
            ], axis=1))
    keys = [k for k in records[0] if k != "input"]
    mean = {k: float(np.mean([r[k] for r in records])) for k in keys}
    result = {"scale": scale, "output_size": size, "count": len(records), "mean": mean, "images": records,
              "skipped": skipped}
    if sheet_path is not None and rows:
        width = max(r.shape[1] for r in rows)  # rows of non-square crops differ in width: padded white
        sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                                for r in rows], axis=0)
        write_image(sheet_path, sheet)
        result["contact_sheet"] = str(sheet_path)
    log.info("evaluated %d image(s): PSNR SR %.2f / bicubic %.2f dB, SSIM SR %.4f / bicubic %.4f%s", len(records),
             mean["psnr_sr"], mean["psnr_bicubic"], mean["ssim_sr"], mean["ssim_bicubic"],
             f", identity cosine SR {mean['id_cos_sr']:.4f} / bicubic {mean['id_cos_bicubic']:.4f}" if ids else "")
    return result
