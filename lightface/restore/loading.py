"""What the restorers (:class:`~lightface.restore.SuperResolver`, :class:`~lightface.restore.Frontalizer`)
load: the shipped default weights, a generator checkpoint, a generator exported by :mod:`lightface.export`
(ONNX, TorchScript), a face detector."""
import logging
import os
from typing import Any, Dict, Optional, Tuple, Type

import numpy as np
import torch
from torch import nn

from ..models.checkpoint import ModelCheckpoint, WrongArchitectureError, build_from_checkpoint, read_model_checkpoint
from ..utils.exported_files import (is_exported, is_onnx_path, load_torchscript, onnx_card, onnx_session,
                                    torchscript_on_device)

__all__ = ["shipped_entry", "load_generator", "resolve_detector", "is_exported", "ExportedGenerator"]

log = logging.getLogger(__name__)

#: what each restorer's exported file is (its card's ``task``) and what exports it, for the errors
_RESTORER = {"super_resolution": "SuperResolver", "frontalization": "Frontalizer"}


def shipped_entry(weights, task: str, alias: str, what: str, hint: str, scale: Optional[int] = None):
    """The shipped :class:`~lightface.models.PretrainedWeights` a restorer loads, or None for explicit weights.

    ``weights=None``: the default for ``alias`` (a :class:`~lightface.models.PretrainedError`
    naming ``what`` and ``hint`` when none ships); otherwise
    :func:`~lightface.models.pretrained.resolve_weights` (the rule every entry point shares): a
    string that is no existing file names a shipped entry of ``task`` (``scale``: a super-resolver's
    factor, for an architecture name), else a ``WeightsNotFoundError`` listing the close shipped
    names; the path of a shipped ``task`` file: its entry, as by its name (its preprocessing, e.g.
    the frontalizer's ``mirror``, lives in the entry, not in the file); anything else: None.
    """
    from ..models.pretrained import require_default, resolve_weights

    if weights is None:
        return require_default(alias, task, what, hint)
    return resolve_weights(weights, task, f"{what}: weights", scale=scale)


def load_generator(weights: Any, arch: str, expect: Type[nn.Module], ema: bool,
                   produced_by: str) -> Tuple[nn.Module, Optional[ModelCheckpoint], bool]:
    """``(model, checkpoint or None, EMA weights used)`` from a built ``expect`` module (returned
    as is) or a checkpoint (path or dict) of architecture ``arch``.

    Args:
        ema: use the checkpoint's EMA weights when it has them.
        produced_by: what the user should pass instead, for the error on another architecture.
    Raises:
        WrongArchitectureError: the checkpoint holds another architecture; NaN weights are
            refused by :func:`~lightface.models.checkpoint.build_from_checkpoint`.
    """
    if isinstance(weights, expect):
        return weights, None, False
    ckpt = read_model_checkpoint(weights)
    if ckpt.arch != arch:
        raise WrongArchitectureError(f"{ckpt.source}: not a {arch} checkpoint (it holds arch {ckpt.arch!r}); pass "
                                     f"{produced_by}")
    use_ema = ema and ckpt.ema_state_dict is not None
    return build_from_checkpoint(ckpt, ema=use_ema, expect=expect), ckpt, use_ema


def resolve_detector(detector: Any, device: torch.device):
    """A :class:`~lightface.data.detect.FaceDetector` (or a detector of your own with ``detect``) as is; a
    model spec (ONNX path, pack name) built on ``device``'s kind; None stays None; anything else is refused
    (:func:`~lightface.data.detect.check_detector_arg`: TypeError)."""
    from ..data.detect import FaceDetector, check_detector_arg

    check_detector_arg(detector)
    if detector is None or not isinstance(detector, (str, os.PathLike)):
        return detector

    return FaceDetector(detector, device="cuda" if device.type == "cuda" else "cpu")


class ExportedGenerator:
    """A super-resolver or frontalizer exported by :func:`lightface.export.export_onnx` / ``export_torchscript``,
    run as the restorer's network: ``(N, C, h, w)`` float32 [0, 1] tensor in (RGB, gray for a 1-channel model)
    -> the file's ``image`` output as a float32 tensor on the input's device (for a super-resolver its flip
    ensemble and clamp inside, for a frontalizer the frontal view, clamped; the card says what the graph holds).

    Args:
        path: the ``.onnx`` file (ONNX Runtime: CUDA when ``device`` is CUDA and onnxruntime-gpu is installed,
            else CPU) or the TorchScript file (``torch.jit.load``, run on ``device``; a file whose trace holds a fixed
            device, as those of a lightface before its exports were device-free, runs on that one, with a warning:
            :func:`~lightface.utils.exported_files.torchscript_on_device`).
        task: the restorer's task (``"super_resolution"``, ``"frontalization"``): the card's must be it.
        device: the restorer's device.
        what: the restorer's call (``"SuperResolver('sr4.onnx')"``), for the errors.
        ema: the restorer's ``ema``: False (a checkpoint's raw weights) is refused, as the file holds one set.

    Attributes: ``card`` (the stored card: see :mod:`lightface.export`), ``backend`` (``"onnxruntime"`` or
    ``"torchscript"``), ``path``.

    Raises:
        ValueError: ``ema=False``; the file carries no lightface card (exported by something else, or a TorchScript file of a
            lightface from before its cards), or the card is of another task (a recogniser, the other restorer).
    """

    def __init__(self, path, task: str, device: torch.device, what: str, ema: bool = True):
        if not ema:
            raise ValueError(f"{what}: ema=False (--no-ema) picks a checkpoint's raw weights, and an exported file "
                             "holds only the weights it was exported with; drop it, or pass the checkpoint")
        self.path = os.fspath(path)
        self.device = device
        if is_onnx_path(path):
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else \
                ["CPUExecutionProvider"]
            self._session = onnx_session(path, providers)
            self._input = self._session.get_inputs()[0].name
            self._module = None
            self.backend = "onnxruntime"
            self.card: Dict[str, Any] = onnx_card(self._session, path)
            export = "export_onnx"
        else:
            self._session = None
            self._module, self.card = load_torchscript(path, map_location="cpu")
            self._run_device = torchscript_on_device(self._module, device, what)
            self.backend = "torchscript"
            export = "export_torchscript"
        found = self.card.get("task", "recognition" if self.card else None)
        if found is None:
            raise ValueError(f"{what}: {self.path} carries no lightface model card, so what it takes and gives "
                             f"(sizes, colours, scale) is unknown: export the {_RESTORER[task]}'s checkpoint or "
                             f"shipped model again with lightface.export.{export} (it stores the card), or pass the "
                             "checkpoint")
        if found != task:
            hint = ("give it to FaceEmbedder" if found == "recognition" else
                    f"give it to {_RESTORER.get(found, 'its own runner')}")
            raise ValueError(f"{what}: {self.path} is an exported {found} model ({self.card.get('arch')}), not "
                             f"{task.replace('_', '-')}: {hint}, or pass a {_RESTORER[task]}'s exported file or "
                             "checkpoint")
        log.info("%s: exported %s %s (%s, card weights=%s)", _RESTORER[task], self.card.get("arch"), self.path,
                 self.backend, self.card.get("weights"))

    def __repr__(self) -> str:
        return f"ExportedGenerator({self.path!r}, backend={self.backend!r})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._module is not None:
            return self._module(x.to(self._run_device, torch.float32)).to(x.device)
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self._session.run(None, {self._input: array})[0]).to(x.device)
