"""Model checkpoint files: this project's format and the official Light CNN releases.

Project format (written by :func:`save_model_checkpoint`, read by everything)::

    {"format": "lightface", "arch": <registry name>, "model_kwargs": {...builder kwargs...},
     "state_dict": {...}, optional "ema_state_dict": {...}, plus any training state}

Official Light CNN releases (``LightCNN_9Layers_checkpoint.pth.tar``,
``LightCNN_29Layers_checkpoint.pth.tar``, ``LightCNN_29Layers_V2_checkpoint.pth.tar``):
``{"state_dict": {"module.<key>": tensor}, ...}`` with the classifier under ``fc2``
(79,077 classes for 9/29 layers, 80,013 for 29v2). Keys are normalised on load: the
``module.`` (DataParallel / DDP) and ``_orig_mod.`` (``torch.compile``) prefixes are
stripped and ``fc2.*`` becomes ``classifier.*``. A bare ``state_dict`` is accepted too.

A recogniser trained by ``train_lightcnn`` records how its corpus's faces were cropped
(``"align_method"``, :func:`lightface.data.align.align_face`'s ``method``, from the LMDB
metadata's ``alignment``); :func:`checkpoint_align_method` reads it (files without it:
``"eyes"`` for an official release, ``"similarity"`` otherwise).

Every file is read with ``torch.load(weights_only=True)`` (via
:func:`lightface.utils.checkpoint_io.load_checkpoint`): a checkpoint never runs code.
Loading is all-or-nothing: a key or shape mismatch raises :class:`CheckpointMismatchError`
naming the expected and found keys/shapes. The only deliberate exceptions are the
classifier rules documented in :func:`load_weights`. A checkpoint of another kind of
model (a TP-GAN generator given as a face recogniser) raises
:class:`WrongArchitectureError` naming both; weights holding NaN or infinity (a diverged
run) raise :class:`NonFiniteWeightsError` instead of giving black images.
"""
import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

import torch
from torch import Tensor, nn

from ..utils.checkpoint_io import load_checkpoint, save_atomic
from ..utils.templates import ALIGN_METHODS
from .registry import MODEL_BUILDERS, get_model

__all__ = [
    "CheckpointMismatchError",
    "WrongArchitectureError",
    "NonFiniteWeightsError",
    "check_finite",
    "ModelCheckpoint",
    "read_model_checkpoint",
    "checkpoint_align_method",
    "save_model_checkpoint",
    "load_weights",
    "build_from_checkpoint",
    "infer_lightcnn_arch",
    "unsupported_lightcnn",
]

logger = logging.getLogger(__name__)

PathOrState = Union[str, os.PathLike, Mapping[str, Any], "ModelCheckpoint"]
FORMAT = "lightface"
_RESERVED = ("format", "arch", "model_kwargs", "state_dict")
_CLASSIFIER = "classifier."


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model (nothing was loaded)."""


class WrongArchitectureError(CheckpointMismatchError):
    """The checkpoint holds another kind of model than the one asked for (nothing was built)."""


class NonFiniteWeightsError(ValueError):
    """The checkpoint's weights hold NaN or infinite values (nothing was loaded)."""


ExpectedType = Union[Type[nn.Module], Tuple[Type[nn.Module], ...]]


def _arch_class(arch: Optional[str]) -> Optional[type]:
    """The class a registered builder returns (the builder itself, or its return annotation), else None."""
    builder = MODEL_BUILDERS.get(str(arch).lower()) if arch else None
    if builder is None:
        return None
    if isinstance(builder, type):
        return builder
    try:
        hint = typing.get_type_hints(builder).get("return")
    except Exception:  # unresolvable annotations: decided after building
        return None
    return hint if isinstance(hint, type) else None


def _expected_names(expect: ExpectedType) -> str:
    classes = expect if isinstance(expect, tuple) else (expect,)
    archs = sorted(a for a in MODEL_BUILDERS if (c := _arch_class(a)) is not None and issubclass(c, classes)
                   and not a.startswith("test_"))
    kinds = " or ".join(c.__name__ for c in classes)
    return f"a {kinds} model" + (f" (arch {', '.join(archs)})" if archs else "")


def _describe_arch(arch: Optional[str]) -> str:
    cls = _arch_class(arch)
    return f"a {arch!r} model" + (f" ({cls.__name__})" if cls is not None else "")


def check_finite(state: Mapping[str, Any], source: str = "<state>", what: str = "weights") -> None:
    """Raise :class:`NonFiniteWeightsError` when a floating tensor of ``state`` holds NaN or +-inf.

    A run that diverged saves such weights; loaded silently they turn every output into
    NaN (black images, NaN embeddings).
    """
    bad = [k for k, v in state.items()
           if isinstance(v, Tensor) and (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" ... (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise NonFiniteWeightsError(
            f"{source}: {len(bad)} of {len(state)} {what} tensors hold NaN or infinite values ({shown}); the "
            "training run that saved it diverged. Nothing was loaded: use an earlier checkpoint (or the EMA "
            "weights, ema=True), or retrain with a lower learning rate")


@dataclass
class ModelCheckpoint:
    """A checkpoint read into memory.

    Attributes:
        kind: ``"lightface"`` (project format), ``"official"`` (released Light CNN file) or
            ``"state_dict"`` (a bare mapping of tensors).
        arch: registry name when known (stored, or inferred from official Light CNN keys).
        model_kwargs: builder kwargs (the classifier size is filled in for official files).
        state_dict: normalised keys (no ``module.`` prefix, ``fc2`` renamed ``classifier``).
        ema_state_dict: the EMA weights when saved (normalised the same way), else None.
        extra: every other entry of the file (epoch, optimizer state, ...).
        source: the path, or ``"<state>"``.
    """

    kind: str
    arch: Optional[str]
    model_kwargs: Dict[str, Any]
    state_dict: Dict[str, Tensor]
    ema_state_dict: Optional[Dict[str, Tensor]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    source: str = "<state>"


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model) if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    return getattr(model, "_orig_mod", model)


def _normalise_keys(state: Mapping[str, Any]) -> Dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("fc2."):
            key = _CLASSIFIER + key[len("fc2."):]
        out[key] = value
    return out


def infer_lightcnn_arch(state: Mapping[str, Any]) -> Optional[str]:
    """``"lightcnn9"`` / ``"lightcnn29"`` / ``"lightcnn29v2"`` from (normalised) Light CNN keys, else None
    (also for the official LightCNN-V4 release, which has none of these trunks: see :func:`unsupported_lightcnn`)."""
    if "features.0.filter.weight" in state and "fc1.filter.weight" in state:
        return "lightcnn9"
    if "conv1.filter.weight" in state and "block1.0.conv1.filter.weight" in state and "group1.conv.filter.weight" in state:
        if "fc.filter.weight" in state:
            return "lightcnn29"
        if "fc.weight" in state:
            return "lightcnn29v2"
    return None


def unsupported_lightcnn(state: Mapping[str, Any]) -> Optional[str]:
    """What a (normalised) state_dict of a Light CNN release that lightface has no architecture for is, else None.

    The official LightCNN-V4 release (``LightCNN-V4_checkpoint.pth.tar``, 2022) shares the
    29-layer names ``conv1`` / ``blockK`` / ``fc`` but takes RGB input through a 3x3 ``conv1``
    and has single MFM convs ``conv2`` .. ``conv5`` where LightCNN-29 has ``groupK``, and no
    classifier: none of its weights fit LightCNN-29v2.
    """
    if "conv5.filter.weight" in state and "block1.0.conv1.filter.weight" in state and "group1.conv.filter.weight" not in state:
        return ("an official LightCNN-V4 release (RGB input, conv2..conv5 where LightCNN-29 has groups, no "
                "classifier), an architecture lightface does not implement: nothing was loaded; use the LightCNN-9 / "
                "29 / 29v2 releases (e.g. LightCNN_29Layers_V2_checkpoint.pth.tar) or a lightface checkpoint")
    return None


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def read_model_checkpoint(path_or_state: PathOrState, map_location: Union[str, torch.device] = "cpu") -> ModelCheckpoint:
    """Read a project checkpoint, an official Light CNN file or a bare state_dict.

    Args:
        path_or_state: a file path, an already loaded checkpoint dict / state_dict, or a
            ``ModelCheckpoint`` (returned as is).
        map_location: device for the tensors when reading a file.
    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a weights-only checkpoint or holds no state_dict.
    """
    if isinstance(path_or_state, ModelCheckpoint):
        return path_or_state
    if isinstance(path_or_state, (str, os.PathLike)):
        source = str(path_or_state)
        raw = load_checkpoint(Path(path_or_state), map_location=map_location)
    elif isinstance(path_or_state, Mapping):
        source, raw = "<state>", path_or_state
    else:
        raise TypeError(f"expected a checkpoint path or a dict, got {type(path_or_state).__name__}")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: expected a checkpoint dict, found {type(raw).__name__}")
    if raw.get("format") == FORMAT:
        missing = [k for k in _RESERVED if k not in raw]
        if missing:
            raise ValueError(f"{source}: lightface checkpoint lacks {missing}; re-save it with save_model_checkpoint")
        ema = raw.get("ema_state_dict")
        extra = {k: v for k, v in raw.items() if k not in _RESERVED and k != "ema_state_dict"}
        return ModelCheckpoint(
            "lightface", raw["arch"], dict(raw["model_kwargs"]), _normalise_keys(raw["state_dict"]),
            _normalise_keys(ema) if ema is not None else None, extra, source,
        )
    if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        kind, state = "official", _normalise_keys(raw["state_dict"])
        extra = {k: v for k, v in raw.items() if k != "state_dict"}
    elif _is_tensor_mapping(raw):
        kind, state, extra = "state_dict", _normalise_keys(raw), {}
    else:
        raise ValueError(
            f"{source}: no weights found: expected a lightface checkpoint (format='lightface'), a dict with "
            f"'state_dict' (official Light CNN release) or a state_dict; found keys {sorted(map(str, raw))[:10]}"
        )
    arch = infer_lightcnn_arch(state)
    kwargs: Dict[str, Any] = {}
    if arch is not None:
        w = state.get(_CLASSIFIER + "weight")
        kwargs["num_classes"] = int(w.shape[0]) if w is not None else 0
    return ModelCheckpoint(kind, arch, kwargs, state, None, extra, source)


def checkpoint_align_method(ckpt: ModelCheckpoint) -> str:
    """How whole photos are cropped for the recogniser in ``ckpt`` (:func:`lightface.data.align.align_face`'s
    ``method``), as it was trained: the ``"align_method"`` the checkpoint records (``train_lightcnn`` writes the
    method its training LMDBs were built with, ``build_lmdb --align-method``; a release keeps it), else ``"eyes"``
    for an official Light CNN release (trained on the original recipe's crops) and ``"similarity"`` for everything
    else (checkpoints from before the record, all trained on least-squares crops). A record that is none of
    :data:`~lightface.utils.templates.ALIGN_METHODS` (a newer lightface?) gives ``"similarity"`` with a warning."""
    recorded = ckpt.extra.get("align_method")
    if recorded in ALIGN_METHODS:
        return recorded
    if recorded is not None:
        logger.warning("%s: its align_method %r is none of %s (a newer lightface?); whole photos are aligned with "
                       "'similarity': pass align_method= to choose", ckpt.source, recorded, ALIGN_METHODS)
    return "eyes" if ckpt.kind == "official" else "similarity"


def save_model_checkpoint(
    path: Union[str, os.PathLike], model: nn.Module, arch: str, model_kwargs: Optional[Mapping[str, Any]] = None, **extra: Any
) -> Path:
    """Save ``model`` in the project format, atomically.

    Args:
        path: destination file (folders are created).
        model: the model (DDP / ``torch.compile`` wrappers are unwrapped); tensors are saved on CPU.
        arch: its registry name (``get_model(arch, **model_kwargs)`` must rebuild it).
        model_kwargs: the builder kwargs; plain numbers / strings / lists / dicts only.
        **extra: more entries, e.g. ``ema_state_dict=ema.state_dict()``, ``epoch=3``,
            ``optimizer=opt.state_dict()``; must be weights-only loadable.
    Returns:
        the path written.
    """
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ValueError(f"save_model_checkpoint: {clash} are reserved checkpoint keys; pass them as arguments")
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    ckpt = {"format": FORMAT, "arch": arch, "model_kwargs": dict(model_kwargs or {}), "state_dict": state}
    if isinstance(extra.get("ema_state_dict"), Mapping):
        extra["ema_state_dict"] = {k: v.detach().cpu() for k, v in extra["ema_state_dict"].items()}
    ckpt.update(extra)
    return save_atomic(ckpt, path)


def _fmt_keys(keys: List[str], shapes: Mapping[str, Any], limit: int = 8) -> str:
    shown = [f"{k} {tuple(shapes[k].shape)}" if k in shapes else k for k in keys[:limit]]
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more


def _cosine_classifier(ckpt: ModelCheckpoint) -> Optional[bool]:
    """Whether a Light CNN checkpoint's classifier is a cosine one (True) or a linear one (False); None when its
    file does not say (a bare state_dict without a classifier bias)."""
    if ckpt.kind == "lightface":
        return bool(ckpt.model_kwargs.get("cosine_classifier", False))
    if ckpt.kind == "official" or _CLASSIFIER + "bias" in ckpt.state_dict:
        return False  # the releases' fc2 is a linear layer; a CosineClassifier has no bias
    return None


def _classifier_kind(cosine: bool) -> str:
    return "cosine (CosineClassifier, for the margin losses)" if cosine else "linear"


def _handle_classifier(model: nn.Module, state: Dict[str, Tensor], ignore_classifier: bool, source: str,
                       cosine: Optional[bool] = None) -> Dict[str, Tensor]:
    """Apply the classifier rules of :func:`load_weights` to models with ``reset_classifier``; ``cosine``: the
    checkpoint's classifier kind (:func:`_cosine_classifier`), None when unknown."""
    if not hasattr(model, "reset_classifier"):
        return state
    ckpt_keys = [k for k in state if k.startswith(_CLASSIFIER)]
    ckpt_w = state.get(_CLASSIFIER + "weight")
    has_model_cls = getattr(model, "classifier", None) is not None
    if ignore_classifier:
        if ckpt_keys:
            logger.info("%s: classifier (%s) not loaded (ignore_classifier=True)", source, tuple(ckpt_w.shape) if ckpt_w is not None else "?")
        return {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER)}
    model_cosine = bool(getattr(model, "cosine_classifier", False))
    loads = has_model_cls or getattr(model, "num_classes_unset", False)
    if ckpt_w is not None and loads and cosine is not None and cosine != model_cosine:
        raise CheckpointMismatchError(
            f"{source}: its classifier is {_classifier_kind(cosine)}"
            + (" (as in every official Light CNN release)" if not cosine else "")
            + f", the model's {_classifier_kind(model_cosine)}: its weights would give logits of another meaning; "
            f"nothing was loaded. Build the model with cosine_classifier={cosine} (build_from_checkpoint(path) "
            "does), or load only the backbone: num_classes=0 (no classifier) or load_weights(model, path, "
            "ignore_classifier=True) (fine-tuning)")
    if ckpt_w is not None and not has_model_cls:
        if getattr(model, "num_classes_unset", False):
            model.reset_classifier(int(ckpt_w.shape[0]))  # size taken from the checkpoint
        else:
            logger.info("%s: model built with num_classes=0; the checkpoint's %d-class classifier is not loaded",
                        source, ckpt_w.shape[0])
            return {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER)}
    elif ckpt_w is not None and has_model_cls and model.classifier.weight.shape != ckpt_w.shape:
        raise CheckpointMismatchError(
            f"{source}: classifier size differs: checkpoint {tuple(ckpt_w.shape)}, model "
            f"{tuple(model.classifier.weight.shape)}; build the model with num_classes={ckpt_w.shape[0]} (or None), "
            f"or load only the backbone (fine-tuning): load_weights(model, path, ignore_classifier=True) or "
            f"build_from_checkpoint(path, num_classes={model.classifier.weight.shape[0]}) (get_model has no "
            "ignore_classifier)"
        )
    return state


def load_weights(
    model: nn.Module,
    path_or_state: PathOrState,
    *,
    ema: bool = False,
    ignore_classifier: bool = False,
    map_location: Union[str, torch.device] = "cpu",
) -> nn.Module:
    """Load weights into ``model`` (in place) from any supported checkpoint; all or nothing.

    Args:
        model: the target (DDP / ``torch.compile`` wrappers are unwrapped).
        path_or_state: a path, a loaded checkpoint dict, or a state_dict.
        ema: load ``ema_state_dict`` instead of ``state_dict`` (project checkpoints).
        ignore_classifier: Light CNN only: skip the checkpoint's classifier and keep the
            model's (fine-tuning on other classes); the backbone must still match exactly.
        map_location: device for reading a file (tensors are copied into the model's).
    Classifier rules (Light CNN models): a model built with ``num_classes=None`` takes the
    checkpoint's classifier size; ``num_classes=0`` deliberately drops a saved classifier
    (logged); a different non-zero size raises unless ``ignore_classifier=True``.
    Returns:
        ``model``.
    Raises:
        CheckpointMismatchError: missing / unexpected keys or shape mismatches (message lists
            the expected and found keys and shapes); the model is left unchanged.
        NonFiniteWeightsError: a weight holds NaN or infinity; the model is left unchanged.
    """
    ckpt = read_model_checkpoint(path_or_state, map_location)
    target = _unwrap(model)
    state = ckpt.state_dict
    if ema:
        if ckpt.ema_state_dict is None:
            raise ValueError(f"{ckpt.source}: ema=True but the checkpoint holds no ema_state_dict")
        state = ckpt.ema_state_dict
    model_arch = getattr(target, "arch", None)
    arch_differs = bool(ckpt.arch and model_arch and ckpt.arch != model_arch)
    if not arch_differs:
        state = _handle_classifier(target, dict(state), ignore_classifier, ckpt.source, _cosine_classifier(ckpt))
    expected = target.state_dict()
    if ignore_classifier:
        expected = {k: v for k, v in expected.items() if not k.startswith(_CLASSIFIER)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong or arch_differs:
        lines = [f"{ckpt.source} does not match {type(target).__name__}"
                 + (f" (checkpoint arch {ckpt.arch!r})" if ckpt.arch else "") + "; nothing was loaded."]
        unsupported = unsupported_lightcnn(state) if ckpt.arch is None else None
        if unsupported is not None:
            lines.append(f"  the checkpoint is {unsupported}")
        if arch_differs:
            lines.append(f"  the checkpoint is a {ckpt.arch!r} model, the target a {model_arch!r}: build it with "
                         f"get_model({ckpt.arch!r}) or build_from_checkpoint(path)")
        if missing:
            lines.append(f"  expected but missing ({len(missing)}): {_fmt_keys(missing, expected)}")
        if unexpected:
            lines.append(f"  found but unexpected ({len(unexpected)}): {_fmt_keys(unexpected, state)}")
        for k in wrong[:8]:
            lines.append(f"  shape of {k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}")
        if missing and all(k.startswith(_CLASSIFIER) for k in missing) and not (unexpected or wrong):
            lines.append("  the checkpoint has no classifier: pass ignore_classifier=True to keep the model's "
                         "(fine-tuning), or build the model with num_classes=None")
        raise CheckpointMismatchError("\n".join(lines))
    check_finite(state, ckpt.source, "EMA weight" if ema else "weight")
    target.load_state_dict(state, strict=not ignore_classifier)
    return model


def build_from_checkpoint(
    path_or_state: PathOrState,
    *,
    ema: bool = False,
    num_classes: Optional[int] = None,
    map_location: Union[str, torch.device] = "cpu",
    expect: Optional[ExpectedType] = None,
) -> nn.Module:
    """Build the model a checkpoint describes and load it; returned in eval mode on ``map_location``.

    Works for project checkpoints (``arch`` + ``model_kwargs``) and official Light CNN
    files (architecture inferred from the keys).

    Args:
        ema: load the EMA weights (project checkpoints that saved them).
        num_classes: models with a classifier (Light CNN): override its size (0 drops it,
            any other differing size keeps a fresh classifier and loads the backbone);
            ignored for models without one.
        expect: the model class(es) the caller needs (e.g. ``LightCNN`` for a face
            recogniser); a checkpoint of another kind raises before anything is built.
    Raises:
        WrongArchitectureError: the checkpoint holds another kind of model than ``expect``,
            or its ``model_kwargs`` do not fit its architecture's builder.
        NonFiniteWeightsError: the weights hold NaN or infinity.
        CheckpointLoadError / FileNotFoundError: the file cannot be read (see
            :func:`lightface.utils.checkpoint_io.load_checkpoint`).
    """
    ckpt = read_model_checkpoint(path_or_state, map_location)
    if ckpt.arch is None:
        unsupported = unsupported_lightcnn(ckpt.state_dict)
        if unsupported is not None:
            raise WrongArchitectureError(f"{ckpt.source} holds {unsupported}")
        raise ValueError(
            f"{ckpt.source}: cannot tell which model these weights belong to (not a lightface checkpoint and not "
            "a Light CNN state_dict); build the model with get_model(name) and call load_weights(model, path)"
        )
    if ckpt.arch.lower() not in MODEL_BUILDERS:
        raise WrongArchitectureError(
            f"{ckpt.source}: the checkpoint's arch {ckpt.arch!r} is not a registered model "
            f"(known: {', '.join(sorted(MODEL_BUILDERS))})")
    if expect is not None:
        cls = _arch_class(ckpt.arch)
        if cls is not None and not issubclass(cls, expect):
            raise WrongArchitectureError(
                f"{ckpt.source} holds {_describe_arch(ckpt.arch)}, not {_expected_names(expect)} as needed here")
    kwargs = dict(ckpt.model_kwargs)
    ignore = False
    if num_classes is not None and ("num_classes" in kwargs or _accepts(ckpt.arch, "num_classes")):
        ignore = num_classes != 0 and kwargs.get("num_classes") not in (None, num_classes)
        kwargs["num_classes"] = num_classes
    try:
        model = get_model(ckpt.arch, **kwargs)
    except TypeError as err:
        raise WrongArchitectureError(
            f"{ckpt.source}: its model_kwargs {kwargs} do not fit {_describe_arch(ckpt.arch)} ({err}); "
            "the checkpoint was written for another architecture or another lightface version") from err
    if expect is not None and not isinstance(model, expect):
        raise WrongArchitectureError(
            f"{ckpt.source} holds {_describe_arch(ckpt.arch)} ({type(model).__name__}), not "
            f"{_expected_names(expect)} as needed here")
    load_weights(model, ckpt, ema=ema, ignore_classifier=ignore)
    return model.to(map_location).eval()


def _accepts(arch: str, name: str) -> bool:
    """Whether the builder of ``arch`` (or the class it returns) takes keyword ``name``."""
    import inspect

    for fn in (MODEL_BUILDERS.get(arch.lower()), _arch_class(arch)):
        if fn is None:
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if name in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return False
