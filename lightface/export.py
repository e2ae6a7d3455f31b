"""Export Light CNN recognisers to ONNX and TorchScript, and run the ONNX file.

The fused MFM op is exported through its pure-PyTorch reference formulation
(:func:`lightface.ops.use_reference`: chunk + elementwise max), so the files contain only
standard operators and run without lightface (ONNX Runtime, TensorRT, C++ libtorch).

Both exports take ``input`` float32 (N, 1, 128, 128) gray in [0, 1] (N dynamic) and give
``features`` float32 (N, 256), not normalised (the model's output; L2-normalise for
cosine scores, as :class:`lightface.FaceEmbedder` does).

An ONNX file carries the recogniser's card in its metadata (``metadata_props`` key
:data:`CARD_KEY`, JSON): its ``arch``, and for a shipped recogniser (exported by its name or
its file) the weights' name and sha256, whether the card embeds with flip fusion, and the
verification / identification thresholds with flip fusion on and off. ``FaceEmbedder("x.onnx")``
reads it back, so the exported model embeds and decides as the PyTorch one does.

Example:
    >>> from lightface.export import export_onnx, OnnxRecognizer
    >>> export_onnx("LightCNN_29Layers_V2_checkpoint.pth.tar", "lightcnn29v2.onnx")   # doctest: +SKIP
    >>> feats = OnnxRecognizer("lightcnn29v2.onnx")(batch_numpy)                         # doctest: +SKIP
"""
import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from . import ops
from .models.lightcnn import INPUT_SIZE
from .utils.atomic_write import atomic_file, atomic_path

__all__ = ["export_onnx", "export_torchscript", "OnnxRecognizer", "INPUT_NAME", "OUTPUT_NAME", "CARD_KEY"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "features"
#: the ONNX ``metadata_props`` key holding the recogniser's card (JSON; see the module docstring)
CARD_KEY = "lightface.card"
ModelLike = Union[nn.Module, str, os.PathLike]


class _FeaturesOnly(nn.Module):
    """Wraps a recogniser so the exported graph has exactly one input and one output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _shipped_recogniser(model: ModelLike):
    """The shipped recognition entry ``model`` names (its name, or the path of its file), else None."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    from .models.pretrained import PretrainedError, get_pretrained, manifest_entry_for_path

    if os.path.isfile(model):
        entry = manifest_entry_for_path(model)
    elif isinstance(model, str):
        try:
            entry = get_pretrained(model)
        except PretrainedError:
            return None  # not a shipped name: reported as a missing checkpoint
    else:
        return None
    if entry is not None and entry.task != "recognition":
        raise ValueError(f"shipped weights {entry.name!r} are a {entry.task} model, not a face recogniser; "
                         "see lightface.models.list_pretrained('recognition')")
    return entry


def _refuse_generator(model: nn.Module) -> None:
    """TypeError for a face generator (TP-GAN, Wavelet-SRNet): the exports here are of recognisers,
    (N, 1, 128, 128) gray -> (N, 256); a generator traced with that input failed with its own shape error,
    which told the caller to align their faces."""
    from .models.tpgan import TPGANGenerator
    from .models.wavelet_srnet import WaveletSRNet

    if isinstance(model, (TPGANGenerator, WaveletSRNet)):
        raise TypeError(f"lightface.export exports face recognisers (Light CNN: input (N, 1, 128, 128) gray -> "
                        f"features (N, 256)); {type(model).__name__} is a face generator, which has no ONNX / "
                        "TorchScript export here: run it in PyTorch (lightface.Frontalizer, lightface.SuperResolver)")


def _prepare(model: ModelLike):
    """``(module, card)``: the recogniser to export, on the CPU in eval mode (built from a shipped
    name, a checkpoint path, or a copy of a caller's module, whose device and train/eval mode stay
    as they were), and its card for the file's metadata (see the module docstring)."""
    entry = _shipped_recogniser(model)
    if entry is not None:
        from .models import get_model

        model = get_model(entry.name, pretrained=True, num_classes=0).float()  # sha256-checked; float16 stored
    elif isinstance(model, (str, os.PathLike)):
        from .models.checkpoint import build_from_checkpoint
        from .models.lightcnn import LightCNN

        model = build_from_checkpoint(model, num_classes=0, expect=LightCNN)
    elif isinstance(model, nn.Module):
        model = getattr(model, "_orig_mod", model)
        _refuse_generator(model)
        model = copy.deepcopy(model)
    else:
        raise TypeError(f"expected an nn.Module, a checkpoint path or a shipped recogniser's name, got "
                        f"{type(model).__name__}")
    card: Dict[str, Any] = {"arch": getattr(model, "arch", None)}
    if entry is not None:
        card.update(weights=entry.name, sha256=entry.sha256, flip_fusion=entry.flip_fusion,
                    thresholds={"flip": list(entry.thresholds(True)), "no_flip": list(entry.thresholds(False))})
    return _FeaturesOnly(model).cpu().eval(), card


def export_onnx(
    model: ModelLike, path: Union[str, os.PathLike], opset: int = 18, example_batch: int = 2, check: bool = True,
    dynamo: bool = True,
) -> Path:
    """Export to a single ONNX file with a dynamic batch dimension.

    Args:
        model: a Light CNN module, a checkpoint path (project or official release), or a shipped
            recogniser (its name, e.g. ``"lightcnn29v2_3src_rc15"``, or its file): then the file
            carries the model card's flip fusion and thresholds (:data:`CARD_KEY`), which
            ``FaceEmbedder("x.onnx")`` uses; a module carries only its ``arch``.
        path: the ``.onnx`` file to write (folders are created); weights are stored inside. Written
            atomically: a failed export or check leaves an earlier file at ``path`` as it was.
        opset: ONNX opset version.
        example_batch: batch size of the tracing example (any N works at run time).
        check: run ``onnx.checker`` on the result.
        dynamo: use the ``torch.export``-based exporter (default); False uses the legacy
            TorchScript-based one.
    Returns:
        the path. Graph: ``input`` (N, 1, 128, 128) float32 -> ``features`` (N, 256) float32.
    """
    import onnx

    net, card = _prepare(model)
    path = Path(path)
    example = torch.rand(example_batch, 1, INPUT_SIZE, INPUT_SIZE)
    names = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    with atomic_path(path) as tmp, ops.use_reference(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # static channel checks inside the ops
        if dynamo:
            torch.onnx.export(net, (example,), str(tmp), dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                              dynamo=True, external_data=False, verbose=False, **names)
        else:
            torch.onnx.export(net, (example,), str(tmp), dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              dynamo=False, **names)
        proto = onnx.load(str(tmp))
        kept = [p for p in proto.metadata_props if p.key != CARD_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        proto.metadata_props.add(key=CARD_KEY, value=json.dumps(card))
        onnx.save(proto, str(tmp))
        if check:
            onnx.checker.check_model(proto)
    logger.info("exported ONNX (opset %d, dynamic batch) to %s", opset, path)
    return path


def export_torchscript(model: ModelLike, path: Union[str, os.PathLike], example_batch: int = 2) -> Path:
    """Export a traced TorchScript module (``torch.jit.load(path)(x)`` -> (N, 256) features).

    Traced with the reference MFM (standard aten ops only), so it loads in plain libtorch. Written
    atomically (folders are created): a failed write leaves an earlier file at ``path`` as it was.
    """
    net, _ = _prepare(model)
    path = Path(path)
    example = torch.rand(example_batch, 1, INPUT_SIZE, INPUT_SIZE)
    with ops.use_reference(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, example, check_trace=False)
    with atomic_file(path) as f:  # written by Python: a failed write raises OSError (traced.save(name) aborts)
        f.write(traced.save_to_buffer())
    logger.info("exported TorchScript to %s", path)
    return path


class OnnxRecognizer:
    """Run an exported recogniser with ONNX Runtime.

    Args:
        path: the ``.onnx`` file from :func:`export_onnx`.
        providers: ONNX Runtime providers (default: CUDA when available, else CPU).
        threads: intra-op threads (0: ONNX Runtime's default).
    Call with float (N, 1, 128, 128) gray in [0, 1] (numpy or tensor; run in float32); returns
    float32 numpy (N, 256) features (not normalised). Integer input (uint8 0..255 crops) raises
    ``TypeError``, as the PyTorch model does.

    Attributes:
        card: the card :func:`export_onnx` stored in the file (``arch``; for a shipped recogniser
            ``weights``, ``sha256``, ``flip_fusion``, ``thresholds``), ``{}`` for a file without one.
    """

    def __init__(self, path: Union[str, os.PathLike], providers: Optional[Sequence[str]] = None, threads: int = 0):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), opts, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        stored = self.session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
        try:
            card = json.loads(stored) if stored else {}
        except ValueError:
            card = None
        if not isinstance(card, dict):
            logger.warning("%s: its %r metadata is not a JSON object; ignored", path, CARD_KEY)
            card = {}
        self.card: Dict[str, Any] = card

    def __call__(self, x: Union[np.ndarray, Tensor]) -> np.ndarray:
        if isinstance(x, Tensor):
            x = x.detach().cpu()
            x = x.float().numpy() if x.is_floating_point() else x.numpy()  # numpy has no bfloat16
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"OnnxRecognizer input must be float in [0, 1], got dtype {x.dtype}; "
                            "divide uint8 images by 255")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected gray crops (N, 1, 128, 128), got shape {x.shape}")
        return self.session.run(None, {self.input_name: x})[0]
