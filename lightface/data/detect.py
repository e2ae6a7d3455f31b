"""Face detection with 5 landmarks: InsightFace (SCRFD / RetinaFace ONNX, model packs) or OpenCV YuNet.

Every backend returns the same :class:`DetectedFace` records, largest face first, with
landmarks in the project order (left eye, right eye, nose tip, left mouth corner, right
mouth corner, as seen in the image), ready for :func:`lightface.data.align.align_face`.
Where a photo is about one person (embedding, enrolment, dataset building), :func:`main_face`
picks that person: the largest face (its area weighted by its detection score), penalised by its
distance from the image centre.

Offline fallback: a small YuNet detector (OpenCV Zoo ``face_detection_yunet_2023mar``,
MIT licence, 232 KB) ships inside the package (``lightface/weights/``, sha256-checked,
the ``"detection"`` entry of :func:`lightface.models.list_pretrained`). When an InsightFace
model pack given by name (the default ``"buffalo_l"``) cannot be loaded, typically because
it cannot be downloaded on an offline machine, :class:`FaceDetector` logs a warning saying
why and runs the shipped YuNet instead, so whole photos still work. ``"yunet"`` selects it
directly; ``fallback=False`` raises instead.
"""
from __future__ import annotations

import logging
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .io import is_pil_image, pil_to_array, to_bgr

__all__ = ["DetectedFace", "FaceDetector", "DetectorError", "main_face", "shipped_detector_path", "SHIPPED_DETECTOR",
           "MIN_THRESHOLD", "check_detector_options", "check_detector_arg"]

logger = logging.getLogger(__name__)


#: the name that selects the YuNet detector shipped inside lightface
SHIPPED_DETECTOR = "yunet"
#: the lowest score ``FaceDetector.detect(threshold=...)`` can ask for: the detectors keep
#: candidates down to it (the result at a higher threshold is unchanged by that: NMS keeps
#: the highest-scoring box of each overlap)
MIN_THRESHOLD = 0.2


class DetectorError(RuntimeError):
    """A detector that cannot be found, downloaded or loaded."""


def shipped_detector_path() -> Path:
    """The YuNet ONNX file that ships inside lightface (the manifest's ``"detection"`` default).

    Raises:
        DetectorError: the file is missing or its sha256 differs (a damaged install).
    """
    from ..models.pretrained import PretrainedError, default_weights

    try:
        return default_weights("detection").path()
    except PretrainedError as err:
        raise DetectorError(f"the face detector shipped with lightface is unusable: {err}") from err


@dataclass(frozen=True)
class DetectedFace:
    """One detected face.

    Attributes:
        box: float32 (4,) ``x1, y1, x2, y2`` in image pixels.
        score: detection confidence in [0, 1].
        landmarks: float32 (5, 2) ``(x, y)``: left eye, right eye, nose, left mouth corner,
            right mouth corner (as seen in the image).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def main_face(faces: Sequence[DetectedFace], image_shape: Sequence[int]) -> Optional[DetectedFace]:
    """The face a photo of one person is about, or None when ``faces`` is empty.

    Each face scores its box area times its detection score, minus twice the squared distance
    (in px^2) of its box centre from the image centre (the rule InsightFace's detectors use to
    keep their main faces, there with the bare area), so a bystander's bigger face at the border
    loses to the centred subject. On the 776 LFW fold-2 photos of
    ``pairs_dev.txt`` (138 with several faces) the largest ``det_500m`` face is someone else in
    4 photos; this rule picks the subject in all. The score weighs in for near-profile photos,
    where YuNet also offers the ear and hair as a slightly bigger, more central, less sure
    face (``cfp/Images/470/profile/01.jpg``: 0.76 against the face's 0.89): on 1,069 real photos
    (CFP frontal and profile, LFW, CelebA-HQ, whole real photos) it changes the choice of
    4 YuNet profiles, each to the real face, and none of ``det_500m``'s or of any frontal photo;
    on the 776 LFW fold-2 photos, none of ``det_500m``'s and one of YuNet's, to the subject.

    Args:
        faces: detections in the image's pixels (any order).
        image_shape: the image's ``(H, W[, C])``.
    """
    if not faces:
        return None
    cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0

    def centred_area(face: DetectedFace) -> float:
        x1, y1, x2, y2 = (float(v) for v in face.box[:4])
        return face.area * float(face.score) - 2.0 * (((x1 + x2) / 2.0 - cx) ** 2 + ((y1 + y2) / 2.0 - cy) ** 2)

    return max(faces, key=centred_area)


def _providers_for(device: str, providers: Optional[Sequence[str]]) -> List[str]:
    if providers is not None:
        return list(providers)
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise DetectorError(
            f"device='cuda' but onnxruntime offers only {available}; install onnxruntime-gpu "
            "or pass device='cpu'"
        )
    return ["CPUExecutionProvider"]


def _as_bgr(image) -> np.ndarray:
    if is_pil_image(image):  # RGB(A) in PIL's order: read as its file would be (BGR, EXIF orientation applied)
        return np.ascontiguousarray(to_bgr(pil_to_array(image)))
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise TypeError(f"detector input must be a uint8 image (BGR or gray), got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    try:
        return np.ascontiguousarray(to_bgr(img))
    except ValueError:
        raise ValueError(f"detector input must be (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, "
                         f"got shape {img.shape}") from None


#: YuNet's outputs (OpenCV Zoo ``face_detection_yunet_2023mar``, what ``cv2.FaceDetectorYN`` runs) at stride 8
_YUNET_OUTPUTS = {"cls_8", "obj_8", "bbox_8", "kps_8"}
#: InsightFace SCRFD / RetinaFace output counts (3 or 5 strides x scores, boxes[, landmarks]) and whether
#: they hold landmarks
_INSIGHTFACE_OUTPUTS = {6: False, 9: True, 10: False, 15: True}
#: the strides of InsightFace's detectors: their input side must be a multiple of the largest
_INSIGHTFACE_STRIDE = 32


def _onnx_detector_kind(path: Path) -> str:
    """``"yunet"`` or ``"insightface"`` (SCRFD / RetinaFace with 5 landmarks), told from the ONNX graph's
    outputs (the file name says nothing).

    Raises:
        DetectorError: not an ONNX file, or a graph that is neither (a recogniser, a detector without
            landmarks).
    """
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # onnx raises DecodeError and friends
        raise DetectorError(f"{path}: not an ONNX model ({type(err).__name__}: {err})") from err
    outputs = [o.name for o in graph.output]
    if _YUNET_OUTPUTS <= set(outputs):
        return "yunet"
    if _INSIGHTFACE_OUTPUTS.get(len(outputs)):
        return "insightface"
    if len(outputs) in _INSIGHTFACE_OUTPUTS:
        raise DetectorError(f"{path}: an InsightFace detector without landmarks ({len(outputs)} outputs); lightface "
                            "aligns faces with 5 landmarks: use a 5-point model such as det_500m.onnx or det_10g.onnx")
    shown = ", ".join(outputs[:6]) + (", ..." if len(outputs) > 6 else "")
    raise DetectorError(
        f"{path}: not a face detector lightface can run: its graph has {len(outputs)} outputs ({shown}); expected "
        f"an InsightFace SCRFD / RetinaFace with landmarks (9 or 15 outputs, e.g. det_500m.onnx) or an OpenCV "
        f"YuNet (outputs {', '.join(sorted(_YUNET_OUTPUTS))}, e.g. face_detection_yunet_2023mar.onnx)")


def _check_det_size(det_size: int, backend: str, model: str) -> None:
    """Refuse a ``det_size`` that ``backend`` cannot run: InsightFace's anchor grid needs a multiple of 32."""
    if backend == "insightface" and det_size % _INSIGHTFACE_STRIDE:
        low = max(det_size // _INSIGHTFACE_STRIDE * _INSIGHTFACE_STRIDE, _INSIGHTFACE_STRIDE)
        raise ValueError(
            f"det_size must be a multiple of {_INSIGHTFACE_STRIDE} for the InsightFace detector {model} (its "
            f"strides are 8, 16 and 32), got {det_size}: use {low} or {low + _INSIGHTFACE_STRIDE} (YuNet takes any size)")


def _check_scalars(det_size, threshold) -> None:
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if int(det_size) < 32:
        raise ValueError(f"det_size must be >= 32, got {det_size}")


def check_detector_options(model: Union[str, os.PathLike], det_size: int = 640, threshold: float = 0.5) -> None:
    """Refuse, without loading any model, the options that ``FaceDetector(model, det_size=det_size,
    threshold=threshold)`` would refuse: the threshold's and ``det_size``'s ranges, a ``det_size``
    that is not a multiple of 32 for an InsightFace detector (a detector ``.onnx`` told from its graph,
    or a model pack), a detector file that is missing or not a 5-point face detector.

    For tools that check their options before their work starts (``build_lmdb``).

    Raises:
        ValueError: ``threshold`` outside [0, 1]; a ``det_size`` under 32, or not a multiple of 32 for
            an InsightFace detector.
        DetectorError: ``model`` names a detector file that is missing or not a detector.
    """
    _check_scalars(det_size, threshold)
    kind, _ = _detector_spec(str(model))
    _check_det_size(int(det_size), "insightface" if kind in ("insightface", "pack") else "yunet", str(model))


def _detector_spec(spec: str) -> Tuple[str, Optional[Path]]:
    """What a detector spec names, checked without loading it: ``("shipped", None)`` (``"yunet"``),
    ``("yunet", file)`` (``"yunet:<path>"`` or a YuNet ``.onnx``), ``("insightface", file)`` (an
    InsightFace detector ``.onnx``) or ``("pack", None)`` (a model pack name or folder).

    Raises:
        DetectorError: a detector file that is missing or not a 5-point face detector.
    """
    if spec.lower() == SHIPPED_DETECTOR:
        return "shipped", None
    if spec.startswith("yunet:"):
        path = Path(spec[len("yunet:"):]).expanduser()
        _yunet_file(path)
        return "yunet", path
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".onnx" or path.is_file():
        if not path.is_file():
            raise DetectorError(f"detector file not found: {path}")
        return _onnx_detector_kind(path), path
    return "pack", None


def _yunet_file(path: Path) -> None:
    """Refuse a ``yunet:<path>`` that is missing or holds another kind of detector."""
    if not path.is_file():
        raise DetectorError(f"YuNet model file not found: {path}")
    if _onnx_detector_kind(path) != "yunet":
        raise DetectorError(f"{path} is an InsightFace detector, not a YuNet one: pass the path without the "
                            "'yunet:' prefix")


def _is_pack_name(spec: str) -> bool:
    """A bare InsightFace pack name ("buffalo_l"), not a path to a file or folder."""
    return "/" not in spec and "\\" not in spec and not Path(spec).expanduser().exists()


def _reason(err: BaseException) -> str:
    cause = err.__cause__ or err
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text[:200]}" + ("..." if len(text) > 200 else "")


def check_detector_arg(detector: Any, name: str = "detector") -> None:
    """Refuse a ``detector=`` argument (of :class:`lightface.FaceEmbedder`, the restorers) that is none of:
    None, a model spec for :class:`FaceDetector` (str or ``os.PathLike``), a :class:`FaceDetector`, or an
    object of your own whose ``detect(bgr)`` returns a list of :class:`DetectedFace`.

    Raises:
        TypeError: another type (a number, ...), or a detector object of InsightFace or OpenCV
            (``insightface``'s ``SCRFD`` / ``FaceAnalysis``, ``cv2.FaceDetectorYN``), whose results are
            arrays in another layout: the message says to pass the model's ``.onnx`` path instead.
    """
    if detector is None or isinstance(detector, (str, os.PathLike, FaceDetector)):
        return
    kind = type(detector)
    if kind.__module__.split(".")[0] in ("insightface", "cv2"):
        path = getattr(detector, "model_file", None) or getattr(getattr(detector, "det_model", None), "model_file", None)
        use = f"{name}={str(path)!r}" if path else f"{name}= the detector's .onnx path"
        raise TypeError(f"{name}: got an object of {kind.__module__}.{kind.__name__}, whose results are arrays that "
                        f"lightface does not read; pass {use} instead (or FaceDetector(path, det_size=..., "
                        "threshold=...) for other settings)")
    if callable(getattr(detector, "detect", None)):
        return
    raise TypeError(f"{name} must be None, a FaceDetector, an InsightFace model pack name or a detector .onnx path "
                    f"(str or Path), got {kind.__name__} {reprlib.repr(detector)}")


class FaceDetector:
    """Detect faces and their 5 landmarks.

    Args:
        model: one of
            - an InsightFace model pack name (``"buffalo_l"``, ``"buffalo_s"``, ...): loaded
              through ``insightface.app.FaceAnalysis`` from ``root`` (downloaded there on a
              connected machine);
            - a model pack folder (holding a detection ``.onnx``);
            - a path to a detector ``.onnx``: an InsightFace SCRFD / RetinaFace with 5 landmarks
              (e.g. ``det_500m.onnx``) or an OpenCV YuNet (``face_detection_yunet_2023mar.onnx``),
              told apart by the graph's outputs whatever the file is called (``"yunet:<path>"``
              also works, and is refused for a file that is not a YuNet); a file that is neither
              is refused with :class:`DetectorError`;
            - ``"yunet"``: the YuNet detector shipped inside lightface (offline, sha256-checked).
        det_size: the image is resized (keeping its aspect ratio, padded) to fit
            ``det_size x det_size`` for detection; coordinates are returned in the
            original image. At least 32, and a multiple of 32 for InsightFace detectors
            (their strides are 8, 16 and 32; YuNet takes any size).
        threshold: minimum detection score in [0, 1]; :meth:`detect` may ask for a lower one
            per call, down to :data:`MIN_THRESHOLD`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (ONNX Runtime providers for InsightFace
            models; YuNet runs on OpenCV's CPU backend).
        providers: explicit ONNX Runtime providers (overrides ``device``).
        root: InsightFace model root for pack names.
        pad_retry: when nothing is found, detect again on the image padded with black
            borders of ``pad_retry * max(H, W)`` on every side (face-filling crops, e.g.
            512x512 aligned faces, are often missed otherwise); 0 disables the retry.
        fallback: when ``model`` is an InsightFace pack name that cannot be loaded (not
            installed, no network to download it, a broken pack), log a warning and run the
            shipped YuNet instead (``False``: raise :class:`DetectorError`). Explicit file or
            folder paths never fall back.

    Attributes:
        backend: ``"insightface"`` or ``"yunet"`` (the detector that actually runs).
        model: what runs: the pack name or file given, or ``"yunet"`` (shipped).
        fallback_reason: why the requested pack was replaced by the shipped YuNet, else None.

    Example:
        >>> det = FaceDetector("../shared/models/det_500m.onnx")
        >>> faces = det.detect(cv2.imread("group.jpg"))      # largest first
        >>> crop, M = align_face(img, faces[0].landmarks)
    """

    def __init__(
        self,
        model: Union[str, os.PathLike] = "buffalo_l",
        det_size: int = 640,
        threshold: float = 0.5,
        device: str = "auto",
        providers: Optional[Sequence[str]] = None,
        root: Union[str, os.PathLike] = "~/.insightface",
        pad_retry: float = 0.25,
        fallback: bool = True,
    ):
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        _check_scalars(det_size, threshold)
        if not 0.0 <= float(pad_retry) <= 2.0:
            raise ValueError(f"pad_retry must be in [0, 2], got {pad_retry}")
        self.pad_retry = float(pad_retry)
        self.det_size = int(det_size)
        self.threshold = float(threshold)
        self._floor = min(self.threshold, MIN_THRESHOLD)  # the score the detectors keep candidates down to
        self.model = str(model)
        self.fallback_reason: Optional[str] = None
        spec = str(model)
        self._yunet = None
        self._insight = None
        kind, path = _detector_spec(spec)
        if kind == "shipped":
            self._load_yunet(shipped_detector_path())
        elif kind == "yunet":
            self._load_yunet(path)
        elif kind == "insightface":
            self._load_insightface_onnx(path, _providers_for(device, providers))
        elif fallback and _is_pack_name(spec):
            chosen = _providers_for(device, providers)
            try:
                self._load_pack(spec, root, chosen)
            except (DetectorError, ImportError) as err:
                self._fall_back(spec, err)
        else:
            self._load_pack(spec, root, _providers_for(device, providers))
        self.backend = "yunet" if self._yunet is not None else "insightface"
        logger.info("face detector %s (%s), det_size=%d, threshold=%.2f", self.model, self.backend,
                    self.det_size, self.threshold)

    # -- loading ---------------------------------------------------------------------
    def _fall_back(self, pack: str, err: BaseException) -> None:
        """Run the shipped YuNet instead of the pack that could not be loaded (logged as a warning)."""
        path = shipped_detector_path()
        self._load_yunet(path)
        self.model = SHIPPED_DETECTOR
        self.fallback_reason = f"the InsightFace model pack {pack!r} could not be loaded ({_reason(err)})"
        logger.warning("face detector: %s; running the YuNet detector shipped with lightface instead (%s, OpenCV "
                       "FaceDetectorYN, offline). For the best alignment pass detector= (the CLIs' --detector, "
                       "build_lmdb's --detect) an InsightFace pack folder or a detector .onnx such as det_500m.onnx",
                       self.fallback_reason, path.name)

    def _load_yunet(self, path: Path) -> None:
        if not path.is_file():
            raise DetectorError(f"YuNet model file not found: {path}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise DetectorError(f"this OpenCV ({cv2.__version__}) has no FaceDetectorYN; install opencv-python>=4.8")
        try:
            self._yunet = cv2.FaceDetectorYN.create(str(path), "", (self.det_size, self.det_size),
                                                    self._floor, 0.3, 5000)
        except cv2.error as err:
            raise DetectorError(f"{path}: OpenCV cannot load it as a YuNet detector ({err})") from err

    def _prepare_insight(self, det, providers: List[str]) -> None:
        _check_det_size(self.det_size, "insightface", self.model)
        ctx_id = 0 if providers and providers[0] == "CUDAExecutionProvider" else -1
        det.prepare(ctx_id, input_size=(self.det_size, self.det_size), det_thresh=self._floor)
        self._insight = det

    def _load_insightface_onnx(self, path: Path, providers: List[str]) -> None:
        from insightface.model_zoo import get_model

        try:
            det = get_model(str(path), providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise DetectorError(f"{path}: cannot load as an InsightFace model ({type(err).__name__}: {err})") from err
        if det is None or getattr(det, "taskname", None) != "detection":
            raise DetectorError(
                f"{path}: not an InsightFace face detector (found task "
                f"{getattr(det, 'taskname', None)!r}); pass a detection model such as det_500m.onnx / "
                "det_10g.onnx, or a YuNet .onnx"
            )
        self._prepare_insight(det, providers)

    def _load_pack(self, name: str, root, providers: List[str]) -> None:
        # insightface imports albumentations, whose update check blocks for minutes on an offline machine
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        try:
            from insightface.app import FaceAnalysis
        except ImportError as err:
            raise DetectorError(f"cannot load the InsightFace model pack {name!r}: insightface is not installed "
                                f"({err}); pip install insightface, or pass a YuNet .onnx / 'yunet'") from err

        try:
            app = FaceAnalysis(name=name, root=str(root), allowed_modules=["detection"], providers=providers)
        except Exception as err:
            raise DetectorError(
                f"could not load the InsightFace model pack {name!r} from {Path(root).expanduser()} "
                f"({type(err).__name__}: {err}). Without network access a pack cannot be downloaded: "
                "pass a path to a detector ONNX file instead (e.g. det_500m.onnx or "
                "face_detection_yunet_2023mar.onnx), or a folder holding the pack."
            ) from err
        self._prepare_insight(app.det_model, providers)

    # -- detection -------------------------------------------------------------------
    def detect(self, image, max_faces: int = 0, threshold: Optional[float] = None) -> List[DetectedFace]:
        """Detect faces in one image.

        Args:
            image: uint8 BGR (H, W, 3) as OpenCV reads it, BGRA (H, W, 4), gray (H, W), or a PIL
                image (converted as its file would be read: RGB to BGR, EXIF orientation applied).
            max_faces: keep at most this many (the largest); 0 keeps all.
            threshold: minimum score for this call (default: the detector's ``threshold``);
                at least ``min(threshold, MIN_THRESHOLD)`` of the constructor.
        Returns:
            list of :class:`DetectedFace`, sorted by box area, largest first (empty when
            no face scores above the threshold). An image so elongated that fitting its long side
            to ``det_size`` leaves its short side under 2 px (a 6000 x 8 banner) holds no face
            the detector could see: ``[]`` without running it.
        Raises:
            ValueError: an image smaller than 2 x 2 px.
        """
        thr = self.threshold if threshold is None else float(threshold)
        if not self._floor <= thr <= 1.0:
            raise ValueError(f"threshold must be in [{self._floor:g}, 1] for this detector, got {threshold}")
        bgr = _as_bgr(image)
        h, w = bgr.shape[:2]
        if h < 2 or w < 2:
            raise ValueError(f"image too small for detection ({w}x{h} px; at least 2x2)")
        if self.det_size * min(h, w) < 2 * max(h, w):  # InsightFace would resize it to 0 px high (an OpenCV error)
            return []
        boxes, scores, kps = self._detect_raw(bgr)
        if not (scores >= thr).any() and self.pad_retry > 0:
            pad = max(int(round(self.pad_retry * max(bgr.shape[:2]))), 1)
            padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            boxes, scores, kps = self._detect_raw(padded)
            boxes = boxes - np.float32(pad)
            kps = kps - np.float32(pad)
        faces = [
            DetectedFace(np.asarray(b, np.float32), float(s), np.asarray(k, np.float32).reshape(5, 2))
            for b, s, k in zip(boxes, scores, kps)
            if s >= thr
        ]
        faces.sort(key=lambda f: -f.area)
        return faces[:max_faces] if max_faces > 0 else faces

    def _detect_raw(self, bgr: np.ndarray):
        if self._yunet is not None:
            return self._detect_yunet(bgr)
        det, kpss = self._insight.detect(bgr, max_num=0)
        if kpss is None and len(det):
            raise DetectorError(f"{self.model}: this detector gives no landmarks; use a 5-point model")
        kps = kpss if kpss is not None else np.zeros((0, 5, 2), np.float32)
        return det[:, :4], det[:, 4], kps

    def _detect_yunet(self, bgr: np.ndarray):
        h, w = bgr.shape[:2]
        scale = self.det_size / max(h, w)
        nh, nw = max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)
        resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._yunet.setInputSize((nw, nh))
        _, out = self._yunet.detect(resized)
        if out is None or len(out) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        out = np.asarray(out, np.float32) / np.float32(scale)
        boxes = np.stack([out[:, 0], out[:, 1], out[:, 0] + out[:, 2], out[:, 1] + out[:, 3]], 1)
        kps = out[:, 4:14].reshape(-1, 5, 2)
        scores = out[:, 14] * np.float32(scale)  # the score column is not a coordinate
        return boxes, scores, kps

    def __repr__(self) -> str:
        fb = ", fallback=True" if self.fallback_reason else ""
        return (f"FaceDetector({self.model!r}, backend={self.backend}, det_size={self.det_size}, "
                f"threshold={self.threshold}{fb})")
