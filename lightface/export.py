"""Export Light CNN recognisers and the face generators (super-resolver, frontalizer) to ONNX and
TorchScript, and run an exported recogniser.

The fused MFM op is exported through its pure-PyTorch reference formulation
(:func:`lightface.ops.use_reference`: chunk + elementwise max), and the Haar wavelet-packet
transforms of Wavelet-SRNet are fixed convolutions / matrix products, so the files contain
only standard operators and run without lightface (ONNX Runtime, TensorRT, C++ libtorch).

What the graphs take and give (``N`` is dynamic in both exports):

* a recogniser (Light CNN): ``input`` float32 (N, 1, 128, 128) gray in [0, 1] -> ``features``
  float32 (N, 256), not normalised (the model's output; L2-normalise for cosine scores, as
  :class:`lightface.FaceEmbedder` does);
* a super-resolver (``wavelet_srnet``: a :class:`~lightface.SuperResolver`, a shipped
  super-resolver's name or file, a checkpoint, a :class:`~lightface.models.wavelet_srnet.WaveletSRNet`):
  ``input`` float32 (N, 3, h, w) **RGB** in [0, 1] (h, w dynamic too; ``input_size``, e.g. 32, for
  an aligned face) -> ``image`` float32 (N, 3, h * scale, w * scale) RGB in [0, 1]: exactly
  :meth:`SuperResolver.upscale_tensor`, clamped, with its flip ensemble (the mirrored input's
  output flipped back and averaged) when the resolver has it on: a ``SuperResolver``'s own
  setting, on for the others (``SuperResolver``'s default);
* a frontalizer (``tpgan``: a :class:`~lightface.Frontalizer`, the shipped frontalizer's name
  or file, a checkpoint, a :class:`~lightface.models.tpgan.TPGANGenerator`): ``input`` float32
  (N, C, 128, 128) RGB (C = 3; gray for a 1-channel model) in [0, 1], aligned to the
  ``lightcnn`` template -> ``image`` float32 (N, C, 128, 128) in [0, 1], the frontal view with
  zero noise, as :meth:`Frontalizer.frontalize_tensor`. A generator conditioned on a recogniser
  (the shipped one) carries that recogniser inside the graph. The mirroring of faces that look
  away from the model's training direction (card ``mirror``) is the caller's: flip such a crop
  left-right before and after (:func:`lightface.data.pose_pairs.facing` tells the direction
  from the landmarks).

Images from OpenCV are uint8 BGR: convert to RGB and divide by 255 before, and back after
(``docs/super_resolution.md`` shows it with ONNX Runtime), or give the file to
:class:`~lightface.SuperResolver` / :class:`~lightface.Frontalizer` (and the ``--weights`` of their CLIs),
which run it with their own pre- and post-processing, detection, mirroring and paste-back.

An ONNX file carries the model's card in its metadata (``metadata_props`` key
:data:`CARD_KEY`, JSON): its ``arch``, and for a shipped model (exported by its name or
its file) the weights' name and sha256. A recogniser's card of a shipped model adds whether
it embeds with flip fusion, and the verification / identification thresholds with flip fusion
on and off. A recogniser's card also says how whole photos are cropped for it
(``align_method``, :func:`lightface.data.align.align_face`'s ``method``): ``"eyes"`` for an
official Light CNN release (the original recipe it was trained on), the method a shipped model or a
lightface checkpoint records (:func:`lightface.models.checkpoint.checkpoint_align_method`: its training
corpus's ``--align-method``; ``"similarity"`` when it records none), the embedder's own for a
:class:`~lightface.FaceEmbedder`; absent for a module (unknown: ``FaceEmbedder`` then crops as
for any module, ``"similarity"``). ``FaceEmbedder("x.onnx")`` (and ``FaceEmbedder("x.pt")`` of
:func:`export_torchscript`) reads the card back, so the exported model crops, embeds and decides as the
PyTorch one does. A generator's card adds its ``task`` (``"super_resolution"`` /
``"frontalization"``), what ``input`` and ``output`` hold, and ``scale``, ``input_size``,
``output_size``, ``flip_ensemble`` (super-resolver) or ``size``, ``mirror``,
``condition_network`` (frontalizer), and ``channels``; :class:`OnnxRecognizer` (and so ``FaceEmbedder``)
refuses such a file. :func:`export_torchscript` stores the same card as the archive's extra file
:data:`CARD_KEY`.

Example:
    >>> from lightface.export import export_onnx, OnnxRecognizer
    >>> export_onnx("LightCNN_29Layers_V2_checkpoint.pth.tar", "lightcnn29v2.onnx")   # doctest: +SKIP
    >>> feats = OnnxRecognizer("lightcnn29v2.onnx")(batch_numpy)                         # doctest: +SKIP
    >>> export_onnx("wavelet_srnet_x4_c48_framing", "sr4.onnx")                         # doctest: +SKIP
"""
import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from . import ops
from .models.lightcnn import INPUT_SIZE, LightCNN, check_features
from .utils.atomic_write import atomic_file, atomic_path
from .utils.exported_files import CARD_KEY, onnx_card, onnx_session

__all__ = ["export_onnx", "export_torchscript", "OnnxRecognizer", "INPUT_NAME", "OUTPUT_NAME", "IMAGE_NAME",
           "CARD_KEY"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
#: the output of an exported recogniser: its (N, 256) features
OUTPUT_NAME = "features"
#: the output of an exported face generator (super-resolver, frontalizer): the (N, C, H, W) image
IMAGE_NAME = "image"
#: the manifest tasks of the shipped generators this module exports
GENERATOR_TASKS = ("super_resolution", "frontalization")
ModelLike = Union[nn.Module, str, os.PathLike, Any]  # Any: a SuperResolver or Frontalizer


class _FeaturesOnly(nn.Module):
    """Wraps a recogniser so the exported graph has exactly one input and one output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class _Upscale(nn.Module):
    """A super-resolver as one graph: :func:`lightface.restore.super_resolver.upscale` (clamped, flip ensemble)."""

    def __init__(self, model: nn.Module, flip_ensemble: bool):
        super().__init__()
        self.model = model
        self.flip_ensemble = bool(flip_ensemble)

    def forward(self, x: Tensor) -> Tensor:
        from .restore.super_resolver import upscale

        return upscale(self.model, x, self.flip_ensemble)


class _Frontalize(nn.Module):
    """A frontalizer as one graph: :meth:`TPGANGenerator.frontalize` (zero noise), clamped as
    :meth:`Frontalizer.frontalize_tensor`; a conditioned generator's recogniser is a submodule here, so its
    weights are in the graph."""

    def __init__(self, generator: nn.Module, recogniser: Optional[nn.Module]):
        super().__init__()
        self.generator = generator
        self.recogniser = recogniser

    def forward(self, x: Tensor) -> Tensor:
        from .models.identity import identity_features

        condition = None
        if self.recogniser is not None:
            condition = self.generator.condition_from_fc(identity_features(self.recogniser, x)["fc"])
        return self.generator.frontalize(x, condition).clamp(0, 1)


def _shipped_entry(model: ModelLike):
    """The shipped recogniser, super-resolver or frontalizer ``model`` names (its name, or the path of its
    file), else None."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    from .models.pretrained import resolve_weights

    entry = resolve_weights(model, what="export: model")  # a typo of a shipped name lists the close ones
    if entry is not None and entry.task not in ("recognition",) + GENERATOR_TASKS:
        raise ValueError(f"shipped weights {entry.name!r} are a {entry.task} model, which lightface.export does not "
                         "export (it exports face recognisers, super-resolvers and frontalizers); see "
                         "lightface.models.list_pretrained()")
    return entry


def _restorer(task: str, weights) -> Any:
    """The :class:`~lightface.SuperResolver` / :class:`~lightface.Frontalizer` of ``weights``, on the CPU."""
    from .restore.frontalizer import Frontalizer
    from .restore.super_resolver import SuperResolver

    return (SuperResolver if task == "super_resolution" else Frontalizer)(weights, device="cpu")


def _generator_card(model: nn.Module, entry, **settings) -> Dict[str, Any]:
    """The card of an exported generator (see the module docstring)."""
    from .models.wavelet_srnet import WaveletSRNet

    if isinstance(model, WaveletSRNet):
        card: Dict[str, Any] = {
            "arch": "wavelet_srnet", "task": "super_resolution", "scale": model.scale, "channels": model.in_channels,
            "input_size": model.input_size, "output_size": model.output_size,
            "input": f"(N, {model.in_channels}, h, w) float32 RGB in [0, 1] (h = w = {model.input_size}: a face "
                     "aligned to the lightcnn template)",
            "output": f"(N, {model.in_channels}, h*{model.scale}, w*{model.scale}) float32 RGB in [0, 1]"}
    else:
        colour = "RGB" if model.in_channels == 3 else "gray"
        card = {
            "arch": "tpgan", "task": "frontalization", "size": model.size, "channels": model.in_channels,
            "condition_network": model.condition_network,
            "input": f"(N, {model.in_channels}, {model.size}, {model.size}) float32 {colour} in [0, 1], aligned to "
                     "the lightcnn template",
            "output": f"(N, {model.in_channels}, {model.size}, {model.size}) float32 {colour} in [0, 1], the frontal "
                      "view (zero noise)"}
    card.update(settings)
    if entry is not None:
        card.update(weights=entry.name, sha256=entry.sha256)
    return card


def _is_face_embedder(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`~lightface.FaceEmbedder`, told by what it has (``lightface.embed`` imports this
    module, which so does not import it): its network ``model`` (None for an ``.onnx`` one), ``align_method``,
    ``pretrained`` and ``weights_info``."""
    return (not isinstance(obj, nn.Module) and callable(getattr(obj, "embed", None))
            and all(hasattr(obj, k) for k in ("model", "align_method", "pretrained"))
            and isinstance(getattr(type(obj), "weights_info", None), property))  # not read: it hashes the weights


def _prepare(model: ModelLike, who: str) -> Tuple[nn.Module, Dict[str, Any], Tuple[int, ...], str]:
    """``(module, card, example shape, output name)``: the graph to export, on the CPU in eval mode
    (built from a shipped name, a checkpoint path, a restorer, or a copy of a caller's module, whose
    device and train/eval mode stay as they were; a :class:`~lightface.FaceEmbedder`'s network, its
    ``align_method`` on the card), its card for the file's metadata (see the module
    docstring), the shape of one input (batch 1) and the name of the output. A caller's recogniser module
    must return the features alone (checked on a probe batch; ``who`` names the caller in the error): a
    ``(logits, features)`` tuple was exported with its logits as ``features``."""
    from .models.checkpoint import ModelCheckpoint, build_from_checkpoint, checkpoint_align_method, read_model_checkpoint
    from .models.tpgan import TPGANGenerator
    from .models.wavelet_srnet import WaveletSRNet
    from .restore.frontalizer import Frontalizer
    from .restore.super_resolver import SuperResolver

    align_method = None  # how whole photos are cropped for the recogniser (card "align_method"); None: unknown
    if _is_face_embedder(model):
        if model.backend in ("onnxruntime", "torchscript"):
            kind = ".onnx" if model.backend == "onnxruntime" else "TorchScript file"
            raise ValueError(f"{who}: this FaceEmbedder runs an exported {kind} already ({model.weights_info.path}); "
                             "export the weights it was made from, or use that file")
        align_method = model.align_method
        model = model.pretrained.name if model.pretrained is not None else model.model
    entry = _shipped_entry(model)
    if entry is not None and entry.task in GENERATOR_TASKS:
        model = _restorer(entry.task, entry.name)
    elif entry is None and isinstance(model, (str, os.PathLike)):
        ckpt = read_model_checkpoint(model)
        if ckpt.arch in ("wavelet_srnet", "tpgan"):
            model = _restorer("super_resolution" if ckpt.arch == "wavelet_srnet" else "frontalization", model)
        else:
            model = ckpt
            if align_method is None:  # as FaceEmbedder(align_method="auto") resolves it for this checkpoint
                align_method = checkpoint_align_method(ckpt)
    if isinstance(model, nn.Module):
        model = getattr(model, "_orig_mod", model)
        if isinstance(model, WaveletSRNet):
            model = SuperResolver(copy.deepcopy(model), device="cpu")  # SuperResolver's default flip ensemble
        elif isinstance(model, TPGANGenerator):
            model = Frontalizer(copy.deepcopy(model), device="cpu", mirror=None)
    if isinstance(model, (SuperResolver, Frontalizer)) and model.model is None:
        shipped = (model.card or {}).get("weights")
        raise ValueError(f"{who}: this {type(model).__name__} runs an exported file ({model.backend}), which holds a "
                         "graph, not the PyTorch network; export the checkpoint or shipped model it was exported from"
                         + (f" (its card names the shipped {shipped!r})" if shipped else ""))
    if isinstance(model, SuperResolver):
        net = copy.deepcopy(model.model)
        card = _generator_card(net, model.pretrained, flip_ensemble=model.flip_ensemble)
        return (_Upscale(net, model.flip_ensemble).cpu().eval(), card, (1, net.in_channels, net.input_size,
                net.input_size), IMAGE_NAME)
    if isinstance(model, Frontalizer):
        net = copy.deepcopy(model.model)
        recogniser = None
        if net.condition_network is not None:
            recogniser = copy.deepcopy(model.model.condition_recogniser())  # the copy shares the loaded one
        card = _generator_card(net, model.pretrained, mirror=model.mirror)
        return _Frontalize(net, recogniser).cpu().eval(), card, (1, net.in_channels, net.size, net.size), IMAGE_NAME
    if entry is not None:
        from .models import get_model

        model = get_model(entry.name, pretrained=True, num_classes=0).float()  # sha256-checked; float16 stored
    elif isinstance(model, ModelCheckpoint):
        model = build_from_checkpoint(model, num_classes=0, expect=LightCNN)
    elif isinstance(model, nn.Module):
        model = copy.deepcopy(model)
    else:
        raise TypeError(f"expected an nn.Module, a checkpoint path, a shipped model's name, a FaceEmbedder, a "
                        f"SuperResolver or a Frontalizer, got {type(model).__name__}")
    card: Dict[str, Any] = {"arch": getattr(model, "arch", None)}
    if entry is not None:
        card.update(weights=entry.name, sha256=entry.sha256, flip_fusion=entry.flip_fusion,
                    thresholds={"flip": list(entry.thresholds(True)), "no_flip": list(entry.thresholds(False))})
        align_method = align_method or entry.align_method  # as FaceEmbedder(align_method="auto") resolves it
    if align_method is not None:
        card["align_method"] = align_method
    net = _FeaturesOnly(model).cpu().eval()
    if not isinstance(model, LightCNN):
        with torch.no_grad():
            check_features(net(torch.rand(2, 1, INPUT_SIZE, INPUT_SIZE)), 2, who)
    return net, card, (1, 1, INPUT_SIZE, INPUT_SIZE), OUTPUT_NAME


def export_onnx(
    model: ModelLike, path: Union[str, os.PathLike], opset: int = 18, example_batch: int = 2, check: bool = True,
    dynamo: bool = True,
) -> Path:
    """Export to a single ONNX file with a dynamic batch dimension.

    Args:
        model: a recogniser: a Light CNN module, a checkpoint path (project or official release),
            a :class:`~lightface.FaceEmbedder` (its network), or a shipped recogniser (its name, e.g.
            ``"lightcnn29v2_3src_rc15"``, or its file): then the file carries the model card's flip
            fusion and thresholds (:data:`CARD_KEY`), which ``FaceEmbedder("x.onnx")`` uses; the card
            names the alignment the recogniser needs (``align_method``: ``"eyes"`` for an official
            release, the embedder's for a FaceEmbedder), which ``FaceEmbedder("x.onnx")`` (its
            ``align_method="auto"``) follows; a module carries only its ``arch``.
            Or a face generator: a :class:`~lightface.SuperResolver` / :class:`~lightface.Frontalizer`
            (with its flip ensemble / training direction), a shipped super-resolver or frontalizer
            (its name, e.g. ``"wavelet_srnet_x4_c48_framing"``, or its file), a ``wavelet_srnet`` /
            ``tpgan`` checkpoint path (its EMA weights when saved, as the restorers load it), or
            a :class:`~lightface.models.wavelet_srnet.WaveletSRNet` /
            :class:`~lightface.models.tpgan.TPGANGenerator` module (see the module docstring for
            their graphs and cards).
        path: the ``.onnx`` file to write (folders are created); weights are stored inside. Written
            atomically: a failed export or check leaves an earlier file at ``path`` as it was.
        opset: ONNX opset version.
        example_batch: batch size of the tracing example (any N works at run time).
        check: run ``onnx.checker`` on the result.
        dynamo: use the ``torch.export``-based exporter (default); False uses the legacy
            TorchScript-based one.
    Returns:
        the path. Graph: ``input`` (N, 1, 128, 128) float32 -> ``features`` (N, 256) float32 for a
        recogniser; ``input`` (N, 3, h, w) RGB -> ``image`` (N, 3, h * scale, w * scale) for a
        super-resolver (h, w dynamic); ``input`` (N, 3, 128, 128) RGB -> ``image`` (N, 3, 128, 128)
        for a frontalizer; images float32 in [0, 1].
    """
    import onnx

    net, card, shape, output = _prepare(model, "export_onnx")
    path = Path(path)
    example = torch.rand(example_batch, *shape[1:])
    spatial = output == IMAGE_NAME and card["task"] == "super_resolution"  # fully convolutional: any h, w
    names = dict(input_names=[INPUT_NAME], output_names=[output], opset_version=opset)
    with atomic_path(path) as tmp, ops.use_reference(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # static channel checks inside the ops
        if dynamo:
            dims = {0: torch.export.Dim("batch")}
            if spatial:
                dims.update({2: torch.export.Dim("height"), 3: torch.export.Dim("width")})
            torch.onnx.export(net, (example,), str(tmp), dynamic_shapes={"x": dims},
                              dynamo=True, external_data=False, verbose=False, **names)
        else:
            axes = {0: "batch", 2: "height", 3: "width"} if spatial else {0: "batch"}
            out_axes = {0: "batch", 2: "out_height", 3: "out_width"} if spatial else {0: "batch"}
            torch.onnx.export(net, (example,), str(tmp), dynamic_axes={INPUT_NAME: axes, output: out_axes},
                              dynamo=False, **names)
        proto = onnx.load(str(tmp))
        kept = [p for p in proto.metadata_props if p.key != CARD_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        proto.metadata_props.add(key=CARD_KEY, value=json.dumps(card))
        onnx.save(proto, str(tmp))
        if check:
            onnx.checker.check_model(proto)
    logger.info("exported ONNX (opset %d, dynamic batch%s) to %s", opset, ", height and width" if spatial else "",
                path)
    return path


def export_torchscript(model: ModelLike, path: Union[str, os.PathLike], example_batch: int = 2) -> Path:
    """Export a traced TorchScript module: ``torch.jit.load(path)(x)`` -> (N, 256) features for a recogniser,
    the (N, C, H, W) image for a super-resolver or frontalizer (``model`` and the graphs as for
    :func:`export_onnx`; a super-resolver's takes any h, w).

    Traced with the reference MFM (standard aten ops only), so it loads in plain libtorch. The traced graph names
    no device (the models make their tensors from the input's: ``type_as``, ``new_zeros``), so a file traced on
    the CPU runs on any device its weights are moved to (``torch.jit.load(path, map_location="cuda")``). The
    model's card (as :func:`export_onnx` stores it) is the archive's extra file :data:`CARD_KEY`, which
    :class:`~lightface.FaceEmbedder` (a recogniser's) and :class:`~lightface.SuperResolver` /
    :class:`~lightface.Frontalizer` read when given the file (``torch.jit.load(path, _extra_files={CARD_KEY: ""})``
    reads it too). Written atomically (folders are
    created): a failed write leaves an earlier file at ``path`` as it was.
    """
    net, card, shape, _ = _prepare(model, "export_torchscript")
    path = Path(path)
    example = torch.rand(example_batch, *shape[1:])
    with ops.use_reference(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, example, check_trace=False)
    with atomic_file(path) as f:  # written by Python: a failed write raises OSError (traced.save(name) aborts)
        f.write(traced.save_to_buffer(_extra_files={CARD_KEY: json.dumps(card)}))
    logger.info("exported TorchScript to %s", path)
    return path


def check_recogniser_card(card: Dict[str, Any], path: Union[str, os.PathLike]) -> None:
    """Refuse the exported file ``path`` (ValueError naming what it is and what runs it) when its ``card`` is
    a face generator's (a super-resolver, a frontalizer): what :class:`OnnxRecognizer` and
    :class:`~lightface.FaceEmbedder` check before running a file as a recogniser."""
    task = card.get("task", "recognition")
    if task != "recognition":
        runner = {"super_resolution": "SuperResolver", "frontalization": "Frontalizer"}.get(task, "its own runner")
        raise ValueError(f"{path} is an exported {task} model ({card.get('arch')}: {card.get('input')} "
                         f"-> {card.get('output')}), not a face recogniser: run it with {runner}(path) "
                         "(docs/super_resolution.md, docs/frontalization.md), or give FaceEmbedder a "
                         "recogniser's exported file (.onnx or TorchScript)")


class OnnxRecognizer:
    """Run an exported recogniser with ONNX Runtime (an exported generator's file is refused: ValueError).

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
        self.session = onnx_session(path, providers, threads)
        self.input_name = self.session.get_inputs()[0].name
        card = onnx_card(self.session, path)
        check_recogniser_card(card, path)
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
