"""What the restorers (:class:`~lightface.restore.SuperResolver`, :class:`~lightface.restore.Frontalizer`)
load: the shipped default weights, a generator checkpoint, a face detector."""
import os
from typing import Any, Optional, Tuple, Type

import torch
from torch import nn

from ..models.checkpoint import ModelCheckpoint, WrongArchitectureError, build_from_checkpoint, read_model_checkpoint

__all__ = ["shipped_entry", "load_generator", "resolve_detector"]


def shipped_entry(weights, task: str, alias: str, what: str, hint: str):
    """The shipped :class:`~lightface.models.PretrainedWeights` a restorer loads, or None for explicit weights.

    ``weights=None``: the default for ``alias`` (a :class:`~lightface.models.PretrainedError`
    naming ``what`` and ``hint`` when none ships); a string that is no existing file but the
    name of a shipped entry: that entry (its task must be ``task``); the path of a shipped
    ``task`` file: its entry, as by its name (its preprocessing, e.g. the frontalizer's
    ``mirror``, lives in the entry, not in the file); anything else: None.
    """
    from ..models.pretrained import PretrainedError, get_pretrained, manifest_entry_for_path, require_default

    if weights is None:
        return require_default(alias, task, what, hint)
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        entry = manifest_entry_for_path(weights)
        return entry if entry is not None and entry.task == task else None
    if isinstance(weights, str) and not os.path.exists(weights):
        try:
            entry = get_pretrained(weights)
        except PretrainedError:
            return None  # not a shipped name: the missing file is reported by the loader
        if entry.task != task:
            raise PretrainedError(f"{what}: shipped weights {entry.name!r} are a {entry.task} model, not {task}; "
                                  f"see lightface.models.list_pretrained({task!r})")
        return entry
    return None


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
