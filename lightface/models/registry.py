"""Model registry: ``register_model`` decorates a builder, ``get_model`` builds by name."""
import os
from typing import Callable, Dict, List, Optional

from torch import nn

__all__ = ["register_model", "get_model", "list_models", "MODEL_BUILDERS", "MODEL_TASKS"]

MODEL_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
#: what each registered model does: ``recognition`` (a Light CNN: features and a classifier),
#: ``super_resolution``, ``frontalization``, ``discriminator``; None where the builder did not say
MODEL_TASKS: Dict[str, Optional[str]] = {}


def register_model(name: str, task: Optional[str] = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(**kwargs) -> nn.Module`` under ``name`` (lower case, unique), doing ``task``
    (see :data:`MODEL_TASKS`: the trainers and the release tool take only models of their task)."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODEL_BUILDERS:
            raise ValueError(f"model name {name!r} is already registered")
        MODEL_BUILDERS[name] = builder
        MODEL_TASKS[name] = task
        return builder

    return wrap


def list_models(task: Optional[str] = None) -> List[str]:
    """Names accepted by :func:`get_model`, sorted; with ``task``, only the models registered for it."""
    return sorted(n for n in MODEL_BUILDERS if task is None or MODEL_TASKS[n] == task)


def get_model(name: str, weights: Optional[str] = None, num_classes: Optional[int] = None, pretrained: bool = False,
              **kwargs) -> nn.Module:
    """Build model ``name``; load ``weights`` (a checkpoint path) or the shipped weights.

    Args:
        name: a registered architecture (:func:`list_models`).
        weights: a project checkpoint, an official Light CNN release or a state_dict file; a string
            that is no file may name a shipped model of this architecture (sha256-checked; a typo
            lists the close shipped names: :func:`lightface.models.pretrained.resolve_weights`).
        num_classes: passed to builders that take it (classifier size; ``None`` means the
            builder's default, or the checkpoint's when ``weights`` is given).
        pretrained: load the weights that ship with lightface for this architecture
            (:func:`lightface.models.list_pretrained`), sha256-checked; ``name`` may also be
            a shipped entry's name or a default alias (``recognition``, ``sr4``, ...). A
            super-resolver's ``scale`` kwarg picks the shipped default of that factor
            (``get_model("wavelet_srnet", pretrained=True)``: 4x; ``scale=8``: 8x).

    Raises:
        ValueError: unknown name, or both ``weights`` and ``pretrained`` given;
        lightface.models.pretrained.PretrainedError: nothing ships for ``name``.
    """
    key = name.lower()
    if pretrained:
        if weights is not None:
            raise ValueError("give either weights= or pretrained=True, not both")
        from .pretrained import PretrainedError, get_pretrained

        entry = get_pretrained(key, scale=kwargs.get("scale"))
        if entry.arch not in MODEL_BUILDERS:
            hint = " (use lightface.data.detect.FaceDetector('yunet'))" if entry.task == "detection" else ""
            raise PretrainedError(f"shipped weights {entry.name!r} are a {entry.task} model ({entry.arch}), not a "
                                  f"get_model architecture{hint}")
        kwargs = {**entry.model_kwargs, **kwargs}
        key, weights = entry.arch, str(entry.path())
    elif isinstance(weights, (str, os.PathLike)) and key in MODEL_BUILDERS:  # a file, else a shipped name
        from .pretrained import PretrainedError, resolve_weights

        entry = resolve_weights(weights, what=f"get_model({name!r}): weights")
        if entry is not None and not os.path.isfile(weights):  # a shipped name: its file and builder kwargs
            if entry.arch != key:
                raise PretrainedError(f"get_model({name!r}): weights {weights} are the shipped {entry.name!r}, a "
                                      f"{entry.task} model ({entry.arch}); pass weights of a {key!r} model")
            kwargs = {**entry.model_kwargs, **kwargs}
            weights = str(entry.path())
    if key not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = MODEL_BUILDERS[key](**kwargs)
    if weights is not None:
        from .checkpoint import load_weights

        load_weights(model, weights)
    return model
