"""Face embeddings with a Light CNN: :class:`FaceEmbedder` and :func:`similarity`.

Colour and alignment contract
-----------------------------
* **numpy arrays** are uint8, **BGR** ``(H, W, 3)`` as OpenCV reads them, BGRA
  ``(H, W, 4)`` (alpha dropped) or gray ``(H, W)`` / ``(H, W, 1)``. A 4-D uint8 array
  ``(N, H, W, C)`` is a batch of such images (pass a list for a batch of gray images). Float arrays are refused (ambiguous range).
* **PIL images** are converted from their own mode (RGB, L, RGBA, 16-bit gray, ...) as their
  file would be read (:func:`lightface.data.io.pil_to_array`: an EXIF orientation is applied);
  32-bit ``"I"`` and float ``"F"`` images are refused (ambiguous range).
* **paths** (str / ``os.PathLike``) are read with :func:`lightface.data.io.read_image`.
* **tensors** are float ``(N, 1, 128, 128)`` (or ``(1, 128, 128)``) gray in [0, 1], already
  aligned: exactly the network input. Values outside [0, 1] (a 0..255 tensor) and 3-channel
  tensors are refused (convert colour with :func:`lightface.models.lightcnn.to_lightcnn_input`,
  which assumes RGB).
* Colour is converted to gray with the ITU-R 601 weights (0.299 R + 0.587 G + 0.114 B),
  the conversion the released Light CNN models were trained with.

``aligned=True`` (default): images are Light CNN crops (5-point alignment to the
``"lightcnn"`` template of :func:`lightface.data.align.align_face`: eye midpoint (64, 40),
mouth midpoint (64, 88) in 128x128). Size policy: 128x128 is used as is; 144x144 (the
``"lightcnn_train"`` crop) is centre-cropped to 128x128, which is exactly the test crop;
112x112 is taken for InsightFace's ArcFace crop (the ``"arcface"`` template, the usual
format of aligned face datasets) and re-aligned to the Light CNN template (logged once);
any other size is resized to 128x128 (area / bilinear) and a warning is logged, because
an unaligned or differently framed face gives poorer embeddings. ``aligned_template``
(:class:`FaceEmbedder`) names the framing explicitly: crops aligned to another template
of :mod:`lightface.data.align` (``"arcface"``, ``"ffhq"``, any size) are re-aligned from it.

``aligned=False``: every image goes through the face detector (its main face: the largest,
penalised by its distance from the image centre, :func:`lightface.data.detect.main_face`) and is
aligned to the Light CNN template first (``align_method``: the least-squares 5-point fit the
shipped recognisers were trained on, or, for an official Light CNN release, a checkpoint trained on
a corpus built with ``--align-method eyes`` (or an ``.onnx`` exported from either), the official recipe
it was trained on: eyes level, eye midpoint (64, 40), mouth midpoint 48 px below;
:func:`lightface.data.align.align_face`); :meth:`FaceEmbedder.embed_faces` returns every
face of one image. The default detector is InsightFace's ``"buffalo_l"`` pack; when it
cannot be loaded (offline, not installed) the YuNet detector shipped inside lightface
runs instead and a warning says so (see :mod:`lightface.data.detect`). A main face so small
that the 128x128 crop enlarges it more than :data:`SMALL_FACE_ENLARGEMENT` times (eyes closer
than about 10 px) is still embedded, with a warning: accuracy falls with face size. So is a main
face cut by the image border (landmarks on its border; the crop's missing part is black, as
InsightFace fills it), with a warning: half a face embeds far from the whole one.

Weights
-------
``FaceEmbedder()`` with no ``weights`` loads the recogniser that ships inside lightface
(:func:`lightface.models.default_weights` ``("recognition")``, sha256-checked; see
``docs/model_zoo.md``) and logs its name and sha256 prefix. An explicit ``weights`` (a
checkpoint path, an official Light CNN release, an exported ``.onnx`` or TorchScript file, an
``nn.Module``, or the name of a shipped entry) always wins. :attr:`FaceEmbedder.weights_info` names the
weights that made the embeddings (name, sha256, arch), for records such as a gallery.

Verification threshold
----------------------
The shipped recogniser's threshold comes from its model card (``threshold`` of its
manifest entry: the cosine threshold calibrated on its development pairs). For other
weights, a checkpoint that stores ``verification_threshold`` (a float entry of a
lightface checkpoint) gives it; otherwise :data:`VERIFICATION_THRESHOLD` (cosine 0.35),
a starting point only, not calibrated on any released model.
``python -m pipelines.evaluate`` reports the accuracy-maximising threshold of your model
on your pairs (``threshold`` in report.json); pass it as ``FaceEmbedder(..., threshold=...)``.
See docs/recognition.md.

Speed
-----
On a CPU the network runs on chunks of at most :data:`FORWARD_CHUNK` faces
(:data:`FORWARD_CHUNK_SINGLE_THREAD` when PyTorch uses one thread) whatever ``batch_size``
is (``batch_size`` only sets how many images are read and prepared at a time): a large
batch is memory-bound (the first layer's output is ~6 MB per face), so smaller chunks
cost less CPU time per face, while with several threads very small chunks lose to
thread synchronisation. On CUDA whole batches run. Float32 throughout. Chosen by
measurement (chunk size and precision) in docs/benchmarks.md (Embedding).
"""
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from .data.align import ALIGN_METHODS, affine_scale, align_face, crop_outside_fraction, landmarks_at_border, template_points
from .data.convert import check_unit_tensor
from .data.io import (ImageReadError, composite_on_black, is_pil_image, opencv_error_text, pil_to_array, read_image,
                      to_gray)
from .engine.distributed import resolve_device
from .models.lightcnn import FEATURE_DIM, INPUT_SIZE, check_features
from .models.pretrained import PretrainedError, PretrainedWeights
from .utils.exported_files import is_exported, is_onnx_path, load_torchscript, torchscript_on_device
from .utils.precision import PRECISIONS, native_bf16
from .utils.repeated_warnings import repeated_warnings_summarised
from .utils.state_hash import state_sha256
from .utils.templates import ALIGNED_TEMPLATES

__all__ = [
    "FaceEmbedder",
    "EmbeddedFace",
    "EmbedResult",
    "NoFaceError",
    "similarity",
    "settings_changes",
    "VERIFICATION_THRESHOLD",
    "RESCUE_THRESHOLD",
    "RESCUE_MIN_FACE",
    "FORWARD_CHUNK",
    "FORWARD_CHUNK_SINGLE_THREAD",
    "SMALL_FACE_ENLARGEMENT",
    "WeightsInfo",
    "prepare_aligned",
    "ALIGNED_TEMPLATES",
]

logger = logging.getLogger(__name__)

VERIFICATION_THRESHOLD = 0.35
#: FaceEmbedder's default ``rescue_threshold``: the detector score a photo's best face needs
#: when none reaches the detector's own threshold (aligned=False)
RESCUE_THRESHOLD = 0.25
#: the shorter box side (px) a rescued candidate needs: on random-noise images det_500m offers 2-4 px
#: "faces" scoring 0.34-0.44; the smallest real faces it finds (LFW photos shrunk to 25 px) are about 10 px
RESCUE_MIN_FACE = 8
#: CPU faces per forward pass with several intra-op threads (chosen by measurement, docs/benchmarks.md, Embedding);
#: FaceEmbedder(chunk_size=...) overrides
FORWARD_CHUNK = 16
#: CPU faces per forward pass when PyTorch runs one intra-op thread (torch.get_num_threads() == 1)
FORWARD_CHUNK_SINGLE_THREAD = 2
#: aligned=False warns when the Light CNN crop enlarges a photo's main face more than this (its eyes
#: closer than about 10 px): on LFW fold-2 pairs the shipped recogniser scores 0.952 at the usual 1.7x,
#: 0.947 at 3.5x, 0.907 at 5.2x and 0.848 at 6.9x (python -m benchmarks.small_faces; docs/recognition.md)
SMALL_FACE_ENLARGEMENT = 4.0
_TRAIN_CROP = 144
ImageLike = Union[str, os.PathLike, np.ndarray, Tensor, Any]


class NoFaceError(ValueError):
    """The detector found no face in an image (``aligned=False``)."""


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights an embedder runs (:attr:`FaceEmbedder.weights_info`).

    Attributes:
        name: the shipped entry's name (e.g. ``"lightcnn9_lf3src"``); for other weights the
            file name, or the module's class name.
        sha256: hex sha256 of the weights file; for an ``nn.Module``, of its state
            (every key, dtype, shape and value, in key order).
        arch: the registry architecture (``"lightcnn9"``, ...), or None when unknown (an exported file
            without a card).
        source: ``"shipped"``, ``"file"``, ``"onnx"``, ``"torchscript"`` or ``"module"``.
        path: the weights file, or None for a module.
    """

    name: str
    sha256: str
    arch: Optional[str]
    source: str
    path: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        """A JSON-safe dict of the fields."""
        return {"name": self.name, "sha256": self.sha256, "arch": self.arch, "source": self.source, "path": self.path}


@dataclass
class EmbeddedFace:
    """One face found by :meth:`FaceEmbedder.embed_faces`.

    Attributes:
        box: float32 (4,) ``x1, y1, x2, y2`` in image pixels.
        score: detection confidence in [0, 1].
        landmarks: float32 (5, 2): left eye, right eye, nose, left/right mouth corner (as seen).
        embedding: float32 (256,), L2-normalised.
        crop: the aligned gray 128x128 uint8 crop that was embedded.
        landmarks_at_border: how many landmarks lie on the image border or beyond it
            (:func:`lightface.data.align.landmarks_at_border`): above 0, a face cut by the
            border, whose crop is partly black fill and whose embedding is less reliable.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray
    crop: np.ndarray
    landmarks_at_border: int = 0


@dataclass
class EmbedResult:
    """Outcome of :meth:`FaceEmbedder.try_embed`: row ``i`` belongs to input ``i``.

    Attributes:
        embeddings: float32 (N, 256), L2-normalised; rows of failed inputs are NaN.
        errors: ``{input index: message}`` for inputs that could not be embedded.
    """

    embeddings: np.ndarray
    errors: Dict[int, str] = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        """bool (N,): True where the embedding is valid."""
        ok = np.ones(len(self.embeddings), bool)
        ok[list(self.errors)] = False
        return ok


def _card_number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _describe(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return f"input {index} ({type(item).__name__})"


def _to_uint8_image(item: Any, index: int) -> np.ndarray:
    """Any supported single image -> uint8 gray (H, W) or BGR (H, W, 3)."""
    if isinstance(item, (str, os.PathLike)):
        return read_image(item, color="bgr")
    if isinstance(item, np.ndarray):
        img = item
    elif is_pil_image(item):
        return pil_to_array(item)
    elif isinstance(item, Tensor):
        raise TypeError(f"{_describe(item, index)}: a tensor of shape {tuple(item.shape)} where an image was "
                        "expected; a tensor is taken only whole, as one float (N, 1, 128, 128) batch of aligned crops "
                        "(embed(x)): stack the crops into one (torch.stack), or pass paths, uint8 BGR/gray numpy "
                        "arrays or PIL images")
    else:
        raise TypeError(f"{_describe(item, index)}: unsupported image type; pass a path, a uint8 BGR/gray numpy "
                        "array, a PIL image or a float tensor (N, 1, 128, 128)")
    if img.dtype != np.uint8:
        raise TypeError(f"{_describe(item, index)}: numpy images must be uint8 (BGR or gray, 0..255), got dtype "
                        f"{img.dtype}; use (img * 255).round().astype(np.uint8) for float images in [0, 1]")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = composite_on_black(img)  # BGRA, as a file with alpha is read
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or min(img.shape[:2]) < 1:
        raise ValueError(f"{_describe(item, index)}: expected a gray (H, W) or BGR (H, W, 3) image, got shape {img.shape}")
    return img


def _crops_tensor(x: Any) -> Tensor:
    """A tensor of gray aligned crops as (N, 1, 128, 128) (a single (1, 128, 128) crop gets N = 1).

    Raises:
        TypeError: not a tensor. ValueError: another shape (the shape given is in the message).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    given = tuple(x.shape)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        if x.dim() == 4 and x.shape[1] == 3:
            hint = (" (3 channels: convert RGB with lightface.models.lightcnn.to_lightcnn_input, "
                    "or pass uint8 BGR numpy images)")
        elif given == (INPUT_SIZE, INPUT_SIZE):
            hint = " (one crop: add its channel and batch axes, x[None, None])"
        else:
            hint = ""
        raise ValueError(f"tensor input must be gray aligned crops (N, 1, 128, 128), got {given}{hint}")
    return x


_ARCFACE_SIZE = 112
_logged_arcface = False


def _check_aligned_template(template: str) -> None:
    if template not in ALIGNED_TEMPLATES:
        raise ValueError(f"aligned_template must be one of {ALIGNED_TEMPLATES}, got {template!r}")


def prepare_aligned(gray: np.ndarray, source: str = "image", template: str = "auto") -> np.ndarray:
    """Apply the aligned-input policy to a gray uint8 crop; returns (128, 128) uint8.

    ``template`` says how the crop is framed. ``"lightcnn"``: 128x128 unchanged;
    144x144 (training crop): centre 128x128; other sizes: resized to 128x128 with a logged
    warning (area interpolation when shrinking, else bilinear). ``"arcface"`` / ``"ffhq"``:
    a square crop aligned to that template of :mod:`lightface.data.align` (at its own
    size), warped to the Light CNN template. ``"auto"`` (default): ``"lightcnn"``, except
    that a 112x112 crop is InsightFace's ArcFace crop (logged once): re-aligning it instead
    of resizing it raises LFW fold-2 accuracy from 0.822 to 0.903 with the shipped model
    (0.907 on crops aligned to the Light CNN template directly; ``docs/recognition.md``).
    """
    global _logged_arcface
    _check_aligned_template(template)
    h, w = gray.shape[:2]
    if template == "auto" and (h, w) == (_ARCFACE_SIZE, _ARCFACE_SIZE):
        template = "arcface"
        if not _logged_arcface:
            logger.info("%s: 112x112 aligned input taken for an InsightFace ArcFace crop and re-aligned to the "
                        "Light CNN template (FaceEmbedder(aligned_template=...) to say otherwise)", source)
            _logged_arcface = True
    if template in ("arcface", "ffhq"):
        if h != w:
            raise ValueError(f"{source}: an aligned_template={template!r} crop must be square, got {w}x{h}")
        return align_face(gray, template_points(template, w), template="lightcnn", size=INPUT_SIZE)[0]
    if (h, w) == (INPUT_SIZE, INPUT_SIZE):
        return gray
    if (h, w) == (_TRAIN_CROP, _TRAIN_CROP):
        o = (_TRAIN_CROP - INPUT_SIZE) // 2
        return gray[o:o + INPUT_SIZE, o:o + INPUT_SIZE]
    logger.warning("%s: aligned input is %dx%d, not a 128x128 (or 144x144) Light CNN crop; resizing to 128x128. "
                   "Align faces with lightface.data.align.align_face or use aligned=False (the CLIs: leave out "
                   "--aligned; evaluate: --detector or --landmarks)", source, w, h)
    interp = cv2.INTER_AREA if min(h, w) > INPUT_SIZE else cv2.INTER_LINEAR
    return cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def similarity(a, b, pairwise: bool = False) -> Union[float, np.ndarray]:
    """Cosine similarity of embeddings (normalised here, so raw features work too).

    Args:
        a, b: (D,) or (N, D) numpy arrays or tensors.
        pairwise: False: row-wise (``a[i]`` vs ``b[i]``, broadcasting a single vector);
            True: every row of ``a`` vs every row of ``b``.
    Returns:
        a float for two vectors; (N,) row-wise; (N, M) pairwise. Values in [-1, 1];
        compare with :data:`VERIFICATION_THRESHOLD` (same person when >=).
    """
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, dtype=np.float64)
    if a.ndim not in (1, 2) or b.ndim not in (1, 2) or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"similarity expects (D,) or (N, D) embeddings of the same D, got {a.shape} and {b.shape}")
    a, b = _l2_normalise(a), _l2_normalise(b)
    if pairwise:
        return np.atleast_2d(a) @ np.atleast_2d(b).T
    if a.ndim == 2 and b.ndim == 2 and len(a) != len(b):
        raise ValueError(f"row-wise similarity needs the same number of rows, got {len(a)} and {len(b)}; "
                         "use pairwise=True for all pairs")
    out = (a * b).sum(-1)
    return float(out) if out.ndim == 0 else out


def settings_changes(recorded: Optional[Mapping[str, Any]], current: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """``(key, recorded value, current value)`` for each setting of two :meth:`FaceEmbedder.settings` dicts that
    differs; the detector's are ``"detector.det_size"`` and so on (``"detector"`` itself when one of them has none).

    A key that one of the two lacks is not compared: a record written by an earlier lightface (a ``.feat``
    manifest, a gallery) holds fewer settings, and those it holds still count. A detector ``model`` is compared
    by file name (earlier manifests kept the path as given: ``models/det_500m.onnx`` and
    ``/abs/models/det_500m.onnx`` are one detector).
    """
    if not isinstance(recorded, Mapping):
        return []
    changes = []
    for key in sorted(set(recorded) & set(current)):
        old, new = recorded[key], current[key]
        if key == "detector" and isinstance(old, Mapping) and isinstance(new, Mapping):
            for sub in sorted(set(old) & set(new)):
                a, b = old[sub], new[sub]
                if sub == "model" and a is not None and b is not None:
                    a, b = Path(str(a)).name, Path(str(b)).name
                if a != b:
                    changes.append((f"detector.{sub}", a, b))
        elif old != new:
            changes.append((key, old, new))
    return changes


class FaceEmbedder:
    """Light CNN face embeddings: images in, L2-normalised float32 (N, 256) out.

    See the module docstring for the colour / alignment contract and size policy.

    Args:
        weights: ``None`` (default): the recogniser shipped inside lightface
            (``lightface.models.default_weights("recognition")``, sha256-checked; its name
            and sha256 prefix are logged); raises :class:`lightface.models.PretrainedError`
            when this install ships none. Otherwise, and always winning over the default: a
            checkpoint path (this project's, or an official Light CNN release), an exported
            ``.onnx`` file (ONNX Runtime backend) or TorchScript file
            (:func:`lightface.export.export_torchscript`: ``torch.jit.load``, run on ``device``; both
            with the card the export stores), an ``nn.Module`` mapping (N,1,128,128)
            gray [0,1] to (N,256), or the name of a shipped entry
            (:func:`lightface.models.list_pretrained`).
        arch: registry name to build (``"lightcnn9"``, ``"lightcnn29"``, ``"lightcnn29v2"``);
            needed only for bare state_dicts; otherwise checked against the checkpoint.
            With ``weights=None`` it picks the shipped recogniser of that architecture.
        device: ``"auto"`` (CUDA when available, logged), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        detector: for ``aligned=False``: a :class:`lightface.data.detect.FaceDetector`, an
            InsightFace model pack name (``"buffalo_l"``), a detector ``.onnx`` path
            (InsightFace SCRFD/RetinaFace, or OpenCV YuNet), ``"yunet"`` (the detector
            shipped inside lightface), or an object of your own whose ``detect(bgr)`` returns a
            list of :class:`~lightface.data.detect.DetectedFace`. ``None``: ``"buffalo_l"``,
            loaded on first use, and the shipped YuNet when that pack cannot be loaded
            (offline; a warning says so). InsightFace's or OpenCV's own detector objects are
            refused (TypeError): pass their ``.onnx`` file.
        flip: flip fusion by default: embed the face and its mirror image, average the two
            features, then normalise (twice the compute; can be overridden per call).
            ``None``: the shipped model card's setting (``flip_fusion``: on for the shipped
            LightCNN-29v2, whose thresholds are fitted to it; ``flip=False`` takes the card's
            thresholds fitted without it; an ``.onnx`` or TorchScript file exported from a shipped
            recogniser carries its card, :func:`lightface.export.export_onnx`), off for other weights.
        threshold: cosine decision threshold for :meth:`verify` (default: the shipped
            model's calibrated threshold, else the checkpoint's ``verification_threshold``
            when stored, else :data:`VERIFICATION_THRESHOLD`).
        channels_last: run the network in channels-last memory format.
        compile: run the network through ``torch.compile`` (inductor, with weight freezing:
            the weights are treated as constants, so do not modify ``model`` afterwards);
            the first batch of each new size compiles (slow, once), later batches run
            faster; same features within float rounding.
        chunk_size: faces per forward pass, independent of ``embed(batch_size=...)``.
            ``None`` (default): on CPU :data:`FORWARD_CHUNK`, or
            :data:`FORWARD_CHUNK_SINGLE_THREAD` when ``torch.get_num_threads() == 1`` (both
            measured, docs/benchmarks.md); on CUDA whole batches. 0 runs each batch whole.
        precision: ``"float32"`` (default) or ``"bfloat16"`` (autocast; PyTorch backend:
            the shipped recogniser's embeddings within cosine 0.99985 of float32 on real faces,
            1.8x faster at batch 64 on a CPU with AVX512_BF16 and AMX). On CPUs without
            native bf16 (AVX2; AVX-512 without AVX512_BF16/AMX) bfloat16 is about 20 times
            slower (measured, docs/benchmarks.md), and a warning says so.
        aligned_template: how ``aligned=True`` crops are framed (:func:`prepare_aligned`):
            ``"auto"`` (default: Light CNN crops, and 112x112 taken for InsightFace's ArcFace
            crop), ``"lightcnn"``, ``"arcface"`` or ``"ffhq"`` (re-aligned from that template).
        rescue_threshold: ``aligned=False`` on a photo where the detector finds no face at its
            own threshold: use the best candidate scoring at least this (a warning names the
            photo and the score) instead of failing with :class:`NoFaceError`. Occluded faces
            (sunglasses, masks, a hand) are where this matters: on LFW photos with such
            occlusions det_500m scores 3% of the faces 0.25-0.5, under its 0.5, and all of them
            at this floor, nearly all with their landmarks within a few pixels
            (docs/recognition.md). Candidates smaller than :data:`RESCUE_MIN_FACE` (8 px) are
            not rescued (random noise gives 2-4 px ones). None: no rescue. Applies to
            :class:`~lightface.data.detect.FaceDetector` detectors (at least its
            :data:`~lightface.data.detect.MIN_THRESHOLD`).
        align_method: how ``aligned=False`` (and :meth:`align`) crops a detected face
            (:func:`lightface.data.align.align_face` ``method``): ``"similarity"`` (the least-squares
            5-point fit the shipped recognisers and lightface checkpoints were trained on), ``"eyes"``
            (the original Light CNN recipe: eyes level, eye midpoint (64, 40), mouth midpoint 48 px
            below it, as the official releases were trained) or ``"auto"`` (default): the method the
            weights were trained on: ``"eyes"`` for an official Light CNN release
            (``LightCNN_29Layers_V2_checkpoint.pth.tar`` and the like), the method a lightface checkpoint
            records (``train_lightcnn`` writes its training LMDBs' ``build_lmdb --align-method``, a release
            keeps it: :func:`lightface.models.checkpoint.checkpoint_align_method`), the method an
            ``.onnx`` or TorchScript file's card names (:func:`lightface.export.export_onnx` records it),
            ``"similarity"`` for everything else (an ``nn.Module``, checkpoints from before the record).
            The attribute holds the method in use.
        antialias: ``aligned=False``: a face larger in the photo than in the 128-px crop (eyes
            more than about 42 px apart: any face of a phone photo) is blurred to the crop's
            resolution before the warp (:func:`lightface.data.align.align_face`), so its
            embedding does not depend on the photo's resolution: the same faces embedded from
            the photo and from the photo shrunk 4x agree to a mean cosine of 0.992 with it and
            0.986 without (docs/recognition.md, "Large faces"). Faces the crop enlarges (most
            web photos, LFW) are aligned identically either way.
        detector_options: keywords of the :class:`~lightface.data.detect.FaceDetector` made from a
            ``detector`` name or path (or the default): ``det_size`` (default 640; a photo is
            shrunk to fit it, and a face narrower than about 15 px at that scale is missed: a
            56-px face in a 4000-px group photo is found by det_500m at 1280, not at 640),
            ``threshold`` (0.5), ``pad_retry``, ``fallback``, ``root``, ``providers``. Checked
            when the embedder is made; the detector loads on first use.

    Attributes:
        weights_info: :class:`WeightsInfo` (name, sha256, arch) of the weights in use.
        threshold: the cosine decision threshold of :meth:`verify`.
        identification_threshold: the shipped model card's open-set identification
            threshold (the best of many gallery matches must reach it, so it is higher than
            ``threshold``), or None (explicit weights); :class:`lightface.FaceGallery`'s
            ``identify`` uses it by default.

    Backends: a ``.onnx`` ``weights`` file (from :func:`lightface.export.export_onnx`) runs
    with ONNX Runtime (CPU, or CUDA when ``device`` is CUDA and onnxruntime-gpu is
    installed); a TorchScript file (:func:`lightface.export.export_torchscript`) runs its
    traced graph on ``device`` (``"torchscript"``; not with ``compile=True``); anything else
    runs in PyTorch (eager, or ``compile=True``). ``backend`` says which. The fastest CPU
    path measured is in docs/benchmarks.md.

    Example:
        >>> emb = FaceEmbedder()                                   # the shipped recogniser  # doctest: +SKIP
        >>> e = emb.embed(["a.jpg", "b.jpg"], aligned=False)       # whole photos            # doctest: +SKIP
        >>> lightface.similarity(e[0], e[1]) >= emb.threshold       # same person?            # doctest: +SKIP
        >>> FaceEmbedder("LightCNN_29Layers_V2_checkpoint.pth.tar")  # explicit weights win    # doctest: +SKIP
    """

    def __init__(
        self,
        weights: Union[str, os.PathLike, nn.Module, None] = None,
        arch: Optional[str] = None,
        device: str = "auto",
        detector: Any = None,
        flip: Optional[bool] = None,
        threshold: Optional[float] = None,
        channels_last: bool = False,
        compile: bool = False,
        chunk_size: Optional[int] = None,
        precision: str = "float32",
        aligned_template: str = "auto",
        rescue_threshold: Optional[float] = RESCUE_THRESHOLD,
        antialias: bool = True,
        detector_options: Optional[Dict[str, Any]] = None,
        align_method: str = "auto",
    ):
        _check_aligned_template(aligned_template)
        if align_method not in ("auto",) + ALIGN_METHODS:
            raise ValueError(f"align_method must be 'auto' or one of {ALIGN_METHODS}, got {align_method!r}")
        from .data.detect import MIN_THRESHOLD, check_detector_arg

        if rescue_threshold is not None and not MIN_THRESHOLD <= float(rescue_threshold) <= 1.0:
            raise ValueError(f"rescue_threshold must be None or in [{MIN_THRESHOLD}, 1], got {rescue_threshold}")
        self.rescue_threshold = None if rescue_threshold is None else float(rescue_threshold)
        self.aligned_template = aligned_template
        self.antialias = bool(antialias)
        self.device = resolve_device(device)
        self.channels_last = bool(channels_last)
        if chunk_size is not None and int(chunk_size) < 0:
            raise ValueError(f"chunk_size must be >= 0 (0: whole batches), got {chunk_size}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self._onnx = None
        stored_threshold = identification_threshold = None
        self.pretrained: Optional[PretrainedWeights] = self._shipped_entry(weights, arch)
        self._weights_src = weights
        self._weights_info: Optional[WeightsInfo] = None
        card_flip = self.pretrained is not None and self.pretrained.flip_fusion
        self.flip = card_flip if flip is None else bool(flip)
        if self.pretrained is not None:
            weights = self._load_shipped(self.pretrained)
            stored_threshold, identification_threshold = self.pretrained.thresholds(self.flip)
        self._card: Optional[Dict[str, Any]] = None  # an exported file's card (lightface.export)
        if is_exported(weights):  # an .onnx, or a TorchScript file (export_torchscript): with the card they carry
            if is_onnx_path(weights):
                from .export import OnnxRecognizer

                providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device.type == "cuda"
                             else ["CPUExecutionProvider"])
                if precision != "float32":
                    raise ValueError(f"precision={precision!r} needs the PyTorch backend; an .onnx model runs in "
                                     "float32")
                self._onnx = OnnxRecognizer(weights, providers=providers)
                self.model = None
                self.backend = "onnxruntime"
                card = self._onnx.card
            else:
                self.model, card = self._load_torchscript(weights, compile)
                self.backend = "torchscript"
            self._card = card
            if "flip_fusion" in card:  # exported from a shipped recogniser: its card's flip fusion and thresholds
                self.flip = bool(card["flip_fusion"]) if flip is None else bool(flip)
                pair = (card.get("thresholds") or {}).get("flip" if self.flip else "no_flip") or [None, None]
                stored_threshold, identification_threshold = (_card_number(v) for v in pair[:2])
            elif flip is None or threshold is None:
                logger.info("FaceEmbedder: %s carries no shipped model card (an export of a module or checkpoint): "
                            "flip=%s, threshold %s; export a shipped recogniser by its name to keep its card",
                            weights, self.flip, VERIFICATION_THRESHOLD if threshold is None else threshold)
            carded = card.get("align_method")  # how the exported recogniser needs its faces cropped (lightface.export)
            if align_method == "auto" and carded in ALIGN_METHODS:
                align_method = carded
            elif align_method == "auto" and carded is not None:
                logger.warning("FaceEmbedder: %s: its card's align_method %r is none of %s (a newer lightface?); "
                               "whole photos are aligned with 'similarity': pass align_method= to choose",
                               weights, carded, ALIGN_METHODS)
        else:
            self.model, from_ckpt, trained_on = self._load(weights, arch)
            if self.pretrained is not None:  # a shipped recogniser: the crops its card names (release_weights)
                trained_on = self.pretrained.align_method
            if align_method == "auto" and trained_on == "eyes":
                align_method = "eyes"
                logger.info("FaceEmbedder: %s was trained on the original Light CNN recipe's crops (an official "
                            "release, or a corpus built with --align-method eyes): whole photos are aligned as it was "
                            "trained (align_method='eyes': eyes level, eye midpoint (64, 40), mouth 48 px below)",
                            weights)
            stored_threshold = from_ckpt if stored_threshold is None else stored_threshold
            self.model = self.model.to(self.device).eval()
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.backend = "torch.compile" if compile else "torch"
        self._net = self.model
        if compile and self.backend == "torch.compile":
            # inference only: freezing lets inductor constant-fold and pre-pack the conv weights
            self._net = torch.compile(self.model, options={"freezing": True})
        logger.info("FaceEmbedder: running on %s (%s, %s)", self.device, self.backend, precision)
        if precision == "bfloat16" and not native_bf16(self.device):
            logger.warning("FaceEmbedder: precision='bfloat16' on %s, which has no native bf16 (a CPU needs "
                           "AVX512_BF16 or AMX): about 20 times slower than float32 there (docs/benchmarks.md); use "
                           "precision='float32'", self.device)
        check_detector_arg(detector)
        self._detector_options = self._check_detector_options(detector, detector_options)
        self._detector_spec = detector
        self._detector = None if detector is None or isinstance(detector, (str, os.PathLike)) else detector
        if threshold is None:
            threshold = VERIFICATION_THRESHOLD if stored_threshold is None else stored_threshold
        self.threshold = float(threshold)
        self.identification_threshold = identification_threshold
        self.align_method = "similarity" if align_method == "auto" else align_method

    @staticmethod
    def _check_detector_options(detector: Any, options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """``detector_options`` checked: a dict of :class:`~lightface.data.detect.FaceDetector` keywords, for a
        detector given by name or path (or None) only; ``det_size`` and ``threshold`` are checked without
        loading the detector (:func:`~lightface.data.detect.check_detector_options`)."""
        if options is None:
            return {}
        if not isinstance(options, dict):
            raise TypeError(f"detector_options must be a dict of FaceDetector keywords, got {type(options).__name__}")
        if detector is not None and not isinstance(detector, (str, os.PathLike)):
            raise ValueError("detector_options apply to a detector given by name or path (or None); this detector "
                             f"is an object ({type(detector).__name__}): give it those settings where it is made")
        import inspect

        from .data.detect import FaceDetector, check_detector_options

        known = set(inspect.signature(FaceDetector).parameters) - {"model"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"detector_options: unknown FaceDetector keyword(s) {unknown}; known: {sorted(known)}")
        check_detector_options("buffalo_l" if detector is None else detector, options.get("det_size", 640),
                               options.get("threshold", 0.5))
        return dict(options)

    @staticmethod
    def _shipped_entry(weights, arch: Optional[str]) -> Optional[PretrainedWeights]:
        """The shipped recognition entry to load: the default (``weights=None``), else
        :func:`~lightface.models.pretrained.resolve_weights`: the entry a string names when it is
        not an existing file (a ``WeightsNotFoundError`` listing the close shipped names when it
        names none), or the entry whose shipped file a path is (so that it gets the model card's
        flip fusion and thresholds, as its name does); None for other explicit weights."""
        from .models.pretrained import default_weights, get_pretrained, resolve_weights

        if weights is None:
            try:
                entry = default_weights("recognition") if arch is None else get_pretrained(arch)
            except PretrainedError:
                from .models.pretrained import MANIFEST, list_pretrained

                what = "face recogniser" if arch is None else f"{arch!r} face recogniser"
                shipped = [w["name"] for w in list_pretrained("recognition")]
                raise PretrainedError(
                    f"FaceEmbedder(): no {what} ships with this lightface install ({MANIFEST} lists "
                    f"{', '.join(shipped) or 'none'}). Pass weights= (CLI: --weights): a lightface checkpoint (train one "
                    "with python -m pipelines.train_lightcnn), an official Light CNN release (LightCNN_29Layers_V2_checkpoint.pth.tar), "
                    "an exported .onnx, or an nn.Module") from None
            if entry.task != "recognition":
                raise PretrainedError(f"FaceEmbedder(arch={arch!r}): the shipped {entry.name!r} is a {entry.task} "
                                      "model, not a face recogniser; see "
                                      "lightface.models.list_pretrained('recognition')")
        else:  # the rule every entry point shares: a file, else a shipped name (a typo lists the close ones)
            entry = resolve_weights(weights, "recognition", "FaceEmbedder(): weights")
            if entry is None:
                return None
        if arch is not None and entry.arch != arch:
            raise PretrainedError(f"shipped weights {entry.name!r} are a {entry.arch!r} model but arch={arch!r} was given")
        return entry

    @staticmethod
    def _load_shipped(entry: PretrainedWeights) -> nn.Module:
        """Build the shipped recogniser (sha256-checked file, float16 weights loaded as float32)."""
        from .models import get_model

        kwargs = {**entry.model_kwargs, "num_classes": 0}
        model = get_model(entry.arch, weights=str(entry.path()), **kwargs)  # entry.path() checks the sha256
        logger.info("FaceEmbedder: shipped weights %s (%s, sha256 %s...)", entry.name, entry.arch, entry.sha256[:12])
        return model.float()

    @property
    def weights_info(self) -> WeightsInfo:
        """:class:`WeightsInfo` of the weights in use: name, sha256 and arch (files are hashed on first access)."""
        if self._weights_info is None:
            from .models.pretrained import manifest_entry_for_path, sha256_of

            src = self._weights_src
            arch = self._card.get("arch") if self._card is not None else getattr(self.model, "arch", None)
            if self.pretrained is not None:
                e = self.pretrained
                info = WeightsInfo(e.name, e.sha256, e.arch, "shipped", str(e.path(verify=False)))
            elif isinstance(src, nn.Module):
                info = WeightsInfo(type(src).__name__, state_sha256(self.model), arch, "module")
            else:
                path = os.path.abspath(os.fspath(src))
                entry = manifest_entry_for_path(path)
                if entry is not None:  # a shipped file given by its path
                    info = WeightsInfo(entry.name, sha256_of(path), entry.arch, "shipped", path)
                else:
                    source = "file" if self._card is None else "onnx" if self._onnx is not None else "torchscript"
                    info = WeightsInfo(os.path.basename(path), sha256_of(path), arch, source, path)
            self._weights_info = info
        return self._weights_info

    def _load_torchscript(self, path, compile: bool) -> Tuple[nn.Module, Dict[str, Any]]:
        """``(module, card)`` of a recogniser's TorchScript file (:func:`lightface.export.export_torchscript`),
        the module on the device it runs on (the embedder's, which changes to the CPU for a graph traced with
        the CPU as a constant: :func:`~lightface.utils.exported_files.torchscript_on_device`). A generator's file
        is refused (ValueError), as :class:`~lightface.export.OnnxRecognizer` refuses its ``.onnx``."""
        from .export import check_recogniser_card

        if compile:
            raise ValueError(f"compile=True: {path} is a TorchScript file, which runs as its traced graph (compile "
                             "applies to a PyTorch network): drop compile=True, or give the checkpoint it was "
                             "exported from")
        module, card = load_torchscript(path, map_location="cpu")
        check_recogniser_card(card, path)
        self.device = torchscript_on_device(module, self.device, f"FaceEmbedder({os.fspath(path)!r})")
        for p in module.parameters():
            p.requires_grad_(False)
        return module, card

    @staticmethod
    def _load(weights, arch: Optional[str]):
        """(model, the checkpoint's ``verification_threshold`` or None, the alignment it was trained on:
        :func:`~lightface.models.checkpoint.checkpoint_align_method`; None for an ``nn.Module``)."""
        if isinstance(weights, nn.Module):
            return weights, None, None
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be a checkpoint path or an nn.Module, got {type(weights).__name__}")
        from .models import get_model
        from .models.checkpoint import build_from_checkpoint, checkpoint_align_method, load_weights, read_model_checkpoint
        from .models.lightcnn import LightCNN

        ckpt = read_model_checkpoint(weights)
        stored = ckpt.extra.get("verification_threshold")
        stored = float(stored) if isinstance(stored, (int, float)) else None
        if arch is None:  # a TP-GAN or super-resolution checkpoint is refused here, naming its arch
            return build_from_checkpoint(ckpt, num_classes=0, expect=LightCNN), stored, checkpoint_align_method(ckpt)
        if ckpt.arch and ckpt.arch != arch:
            raise ValueError(f"{weights}: the checkpoint holds a {ckpt.arch!r} model but arch={arch!r} was given")
        return load_weights(get_model(arch, num_classes=0), ckpt), stored, checkpoint_align_method(ckpt)

    # -- detector ------------------------------------------------------------------------
    @property
    def detector(self):
        """The face detector (created on first use from the ``detector`` argument)."""
        if self._detector is None:
            from .data.detect import FaceDetector

            spec = "buffalo_l" if self._detector_spec is None else self._detector_spec
            dev = "cpu" if self.device.type == "cpu" else "auto"
            self._detector = FaceDetector(spec, **{"device": dev, **self._detector_options})
        return self._detector

    def _detect(self, img: np.ndarray, source: str, threshold: Optional[float] = None) -> list:
        """``self.detector.detect(img)`` (at ``threshold`` when given), its errors naming ``source``, which the
        detector does not know: an image too small (ValueError) or one OpenCV fails on (``cv2.error``) becomes
        ``ValueError("source: ...")``, that input's failure."""
        try:
            return self.detector.detect(img) if threshold is None else self.detector.detect(img, threshold=threshold)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err
        except cv2.error as err:
            raise ValueError(f"{source}: {opencv_error_text(err)}") from err

    def _rescue_floor(self) -> Optional[float]:
        """The score a photo's best candidate needs when no face reaches the detector's threshold: ``rescue_threshold``
        where it applies (a :class:`~lightface.data.detect.FaceDetector` whose threshold is above it), else None."""
        from .data.detect import FaceDetector

        if (self.rescue_threshold is None or not isinstance(self.detector, FaceDetector)
                or self.rescue_threshold >= self.detector.threshold):
            return None
        return self.rescue_threshold

    def _rescue(self, img: np.ndarray, source: str) -> list:
        """The best candidate at ``rescue_threshold`` when nothing reached the detector's threshold ([] if none);
        candidates smaller than :data:`RESCUE_MIN_FACE` px are not faces but texture (noise, foliage)."""
        if self._rescue_floor() is None:
            return []
        found = [f for f in self._detect(img, source, self.rescue_threshold)
                 if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= RESCUE_MIN_FACE]
        if not found:
            return []
        best = max(found, key=lambda f: f.score)
        logger.warning("%s: no face scored %.2f (the detector's threshold); using its best candidate, score %.2f "
                       "(FaceEmbedder(rescue_threshold=%.2f), the CLIs' --rescue-threshold; None (--rescue-threshold "
                       "none) turns this off)", source,
                       self.detector.threshold, best.score, self.rescue_threshold)
        return [best]

    def settings(self, aligned: bool) -> Dict[str, Any]:
        """What, besides the weights (:attr:`weights_info`) and the image, decides the embedding that
        ``embed(image, aligned=aligned)`` gives: the one description of an embedder's settings that an
        extraction records (``python -m pipelines.extract_embeddings``: the ``.feat`` folder's manifest, the npz,
        the progress file a rerun continues) and a gallery records with its first faces
        (:class:`lightface.FaceGallery`, which warns when photos are searched or enrolled with other ones);
        :func:`settings_changes` compares two. JSON-safe.

        Args:
            aligned: the inputs are aligned crops (True) or whole photos through the detector (False; the
                detector is loaded now, so after a pack's fallback it is the one that runs).
        Returns:
            ``{"aligned", "aligned_template", "flip", "precision", "detector"}``. ``detector`` is None for aligned
            crops, else ``{"model"``: its file or pack name (``"det_500m.onnx"``, ``"yunet"``, ``"buffalo_l"``),
            ``"backend"``, ``"det_size"``, ``"threshold"``, ``"rescue_threshold"`` (the score a photo's best
            candidate needs when no face reaches ``threshold``; None: no rescue), ``"antialias"``,
            ``"align_method"}``; what a detector object of your own does not say is None.
        """
        detector = None
        if not aligned:
            det = self.detector
            model = getattr(det, "model", None)
            size, threshold = getattr(det, "det_size", None), getattr(det, "threshold", None)
            detector = {"model": type(det).__name__ if model is None else Path(str(model)).name,
                        "backend": getattr(det, "backend", None), "det_size": None if size is None else int(size),
                        "threshold": None if threshold is None else float(threshold),
                        "rescue_threshold": self._rescue_floor(), "antialias": self.antialias,
                        "align_method": self.align_method}
        return {"aligned": bool(aligned), "aligned_template": self.aligned_template, "flip": bool(self.flip),
                "precision": self.precision, "detector": detector}

    def align(self, img: np.ndarray, landmarks) -> Tuple[np.ndarray, np.ndarray]:
        """A photo's face as this embedder crops it for ``aligned=False``: ``(crop, M)``, the
        (128, 128[, C]) Light CNN crop of ``img`` (any colour order, kept) from the face's 5
        ``landmarks`` and the (2, 3) image -> crop matrix (:func:`lightface.data.align.align_face`
        with this embedder's ``antialias`` and ``align_method``)."""
        return align_face(img, landmarks, template="lightcnn", size=INPUT_SIZE, antialias=self.antialias,
                          method=self.align_method)

    def _main_face_crop(self, img: np.ndarray, source: str) -> Tuple[Any, np.ndarray, int]:
        """The photo's main face as ``aligned=False`` embeds it: ``(DetectedFace, gray (128, 128)
        uint8 crop, faces detected)``; rescued when none reaches the detector's threshold, a
        warning when it is small; :class:`NoFaceError` when there is none."""
        from .data.detect import main_face

        faces = self._detect(img, source) or self._rescue(img, source)
        if not faces:
            raise NoFaceError(f"{source}: no face detected (detector {self.detector!r})")
        face = main_face(faces, img.shape)
        crop, M = self.align(img, face.landmarks)
        cut = landmarks_at_border(face.landmarks, img.shape)
        if cut:
            logger.warning("%s: face cut by the image border (%d of its 5 landmarks on the border of the %dx%d photo; "
                           "%.0f%% of the crop is black fill): the embedding holds only part of the face and is less "
                           "reliable (docs/recognition.md, 'Faces cut by the border')", source, cut, img.shape[1],
                           img.shape[0], 100 * crop_outside_fraction(M, img.shape, INPUT_SIZE))
        enlargement = affine_scale(M)
        if enlargement > SMALL_FACE_ENLARGEMENT:
            eyes = float(np.linalg.norm(np.subtract(face.landmarks[0], face.landmarks[1])))
            logger.warning("%s: small face (eyes %.0f px apart; the %d-px crop enlarges it %.1fx): accuracy falls "
                           "beyond %gx (docs/recognition.md, 'Small faces')", source, eyes, INPUT_SIZE,
                           enlargement, SMALL_FACE_ENLARGEMENT)
        return face, to_gray(crop), len(faces)

    # -- core ----------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_tensor(self, x: Tensor, flip: Optional[bool] = None) -> Tensor:
        """Embed a float batch (N, 1, 128, 128) gray in [0, 1] (aligned); returns (N, 256) float32
        L2-normalised, on the embedder's device. The network runs on chunks of ``chunk_size``."""
        x = _crops_tensor(x)
        check_unit_tensor(x, "tensor input")
        flip = self.flip if flip is None else flip
        x = x.to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self._forward(x)
        if flip:
            feats = feats + self._forward(x.flip(-1))
        return torch.nn.functional.normalize(feats, dim=1)

    def _chunk(self) -> int:
        """Faces per forward pass now (0: whole batch); see ``chunk_size``."""
        if self.chunk_size is not None:
            return self.chunk_size
        if self.device.type != "cpu":
            return 0
        return FORWARD_CHUNK_SINGLE_THREAD if torch.get_num_threads() == 1 else FORWARD_CHUNK

    def _forward(self, x: Tensor) -> Tensor:
        step = self._chunk() or len(x)
        if len(x) > step:  # bounded chunks: large CPU batches are memory-bound (docs/benchmarks.md)
            return torch.cat([self._forward_once(x[i:i + step]) for i in range(0, len(x), step)])
        return self._forward_once(x)

    def _forward_once(self, x: Tensor) -> Tensor:
        if self._onnx is not None:
            return torch.from_numpy(self._onnx(x.cpu().numpy())).to(self.device)
        if self.precision == "bfloat16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return check_features(self._net(x), len(x), "FaceEmbedder").float()
        return check_features(self._net(x), len(x), "FaceEmbedder").float()

    def _prepare(self, item: Any, index: int, aligned: bool) -> np.ndarray:
        source = _describe(item, index)
        img = _to_uint8_image(item, index)
        if aligned:
            return prepare_aligned(to_gray(img), source, self.aligned_template)
        return self._main_face_crop(img, source)[1]

    @staticmethod
    def _as_items(images: Any) -> List[Any]:
        if isinstance(images, (str, os.PathLike)) or type(images).__module__.startswith("PIL."):
            return [images]
        if isinstance(images, np.ndarray):
            if images.ndim == 4:
                return list(images)
            return [images]
        if isinstance(images, (list, tuple)):
            return list(images)
        raise TypeError(f"unsupported input {type(images).__name__}: pass a path, an image, a list of them, "
                        "or a float tensor (N, 1, 128, 128)")

    def _run(self, images: Any, aligned: bool, batch_size: int, flip: Optional[bool], strict: bool,
             progress: bool) -> EmbedResult:
        with repeated_warnings_summarised(logger):  # per-input warnings: three of a kind, then a count
            return self._embed_items(images, aligned, batch_size, flip, strict, progress)

    def _embed_items(self, images: Any, aligned: bool, batch_size: int, flip: Optional[bool], strict: bool,
                     progress: bool) -> EmbedResult:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(images, Tensor):
            if not aligned:
                raise ValueError("tensor inputs must be aligned crops (N, 1, 128, 128); pass images as numpy/PIL/paths "
                                 "with aligned=False to detect faces")
            x = _crops_tensor(images)  # the shape as given, before the batches cut it
            out = [self.embed_tensor(x[i:i + batch_size], flip).cpu() for i in range(0, len(x), batch_size)]
            return EmbedResult(torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32))
        items = self._as_items(images)
        if not items:
            raise ValueError("embed: got an empty list of images")
        result = EmbedResult(np.full((len(items), FEATURE_DIM), np.nan, np.float32))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="embedding", unit="img")
        for start in range(0, len(items), batch_size):
            crops, rows = [], []
            for i in range(start, min(start + batch_size, len(items))):
                try:
                    crops.append(self._prepare(items[i], i, aligned))
                    rows.append(i)
                except (ImageReadError, NoFaceError, TypeError, ValueError, OSError) as err:
                    if strict:
                        raise
                    result.errors[i] = str(err)
                    logger.warning("skipping %s", err)
            if crops:
                batch = torch.from_numpy(np.stack(crops)).unsqueeze(1).float().div_(255.0)
                result.embeddings[rows] = self.embed_tensor(batch, flip).cpu().numpy()
            if bar is not None:
                bar.update(min(batch_size, len(items) - start))
        if bar is not None:
            bar.close()
        return result

    def try_embed(
        self, images: Any, aligned: bool = True, batch_size: int = 64, flip: Optional[bool] = None, progress: bool = False
    ) -> EmbedResult:
        """Embed many images without stopping at bad ones.

        Args:
            images: one image or a sequence (paths, numpy, PIL; see the module docstring),
                or a float tensor (N, 1, 128, 128).
            aligned: inputs are Light CNN crops (True) or need detection + alignment (False).
            batch_size: images read and prepared at a time (the network itself runs chunks
                of the embedder's ``chunk_size``, the fastest measured).
            flip: flip fusion (default: the embedder's ``flip``).
            progress: show a tqdm bar.
        Returns:
            :class:`EmbedResult`: (N, 256) float32 (NaN rows for failures) and
            ``{index: message}`` for unreadable files, bad shapes/dtypes, or no face found.
        """
        return self._run(images, aligned, batch_size, flip, strict=False, progress=progress)

    def embed(
        self,
        images: Any,
        aligned: bool = True,
        batch_size: int = 64,
        flip: Optional[bool] = None,
        on_error: str = "raise",
        progress: bool = False,
    ) -> np.ndarray:
        """Embed one image or many; returns float32 (N, 256), L2-normalised, row i = input i.

        Args:
            images: see :meth:`try_embed` and the module docstring (colour contract).
            aligned: True: Light CNN crops (size policy in the module docstring); False:
                detect the main face (the largest, penalised by its distance from the
                image centre) and align it.
            batch_size: images read and prepared at a time (the network runs chunks of
                the embedder's ``chunk_size``).
            flip: flip fusion (default: the embedder's ``flip``).
            on_error: ``"raise"``: the first bad input raises (``ImageReadError`` for
                files, ``NoFaceError``, ``TypeError``/``ValueError`` for bad arrays) naming
                it; ``"nan"``: its row is NaN and a warning is logged (use
                :meth:`try_embed` to get the messages).
            progress: show a tqdm bar.
        """
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
        result = self._run(images, aligned, batch_size, flip, strict=on_error == "raise", progress=progress)
        if result.errors:
            logger.warning("embed: %d of %d inputs failed (NaN rows): %s", len(result.errors), len(result.embeddings),
                           "; ".join(list(result.errors.values())[:3]))
        return result.embeddings

    def embed_faces(self, image: Any, flip: Optional[bool] = None, rescue: bool = False) -> List[EmbeddedFace]:
        """Detect every face in one image and embed each.

        Args:
            image: a path, uint8 BGR/gray numpy array, or PIL image (whole photo).
            flip: flip fusion (default: the embedder's ``flip``).
            rescue: when no face reaches the detector's threshold, embed the photo's best candidate
                scoring at least ``rescue_threshold`` (with a warning), as ``embed(aligned=False)`` and
                :meth:`lightface.FaceGallery.enroll` take an occluded face; default False: the
                detector's threshold only.
        Returns:
            list of :class:`EmbeddedFace` (box, score, landmarks, embedding, crop), largest
            face first; empty when no face is found.
        Raises:
            ImageReadError / TypeError / ValueError for unreadable or malformed input.
        """
        img = _to_uint8_image(image, 0)
        source = _describe(image, 0)
        faces = self._detect(img, source)
        if not faces and rescue:
            faces = self._rescue(img, source)
        found = [(f, to_gray(self.align(img, f.landmarks)[0])) for f in faces]
        if not found:
            return []
        crops = np.stack([c for _, c in found])
        emb = self.embed_tensor(torch.from_numpy(crops).unsqueeze(1).float().div_(255.0), flip).cpu().numpy()
        return [EmbeddedFace(f.box, f.score, f.landmarks, e, c, landmarks_at_border(f.landmarks, img.shape))
                for (f, c), e in zip(found, emb)]

    def verify(self, a: Any, b: Any, aligned: bool = True) -> bool:
        """True when images ``a`` and ``b`` (one face each) show the same person:
        cosine similarity >= ``self.threshold``."""
        emb = self.embed([a, b], aligned=aligned)
        return bool(similarity(emb[0], emb[1]) >= self.threshold)

    def __repr__(self) -> str:
        if self._card is not None:
            arch = self._card.get("arch")
        else:
            arch = getattr(self.model, "arch", type(self.model).__name__)
        shipped = f"weights={self.pretrained.name!r}, " if self.pretrained is not None else ""
        return (f"FaceEmbedder({shipped}arch={arch!r}, backend={self.backend!r}, device={str(self.device)!r}, "
                f"flip={self.flip}, threshold={self.threshold})")
