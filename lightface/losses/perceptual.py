"""Perceptual (feature reconstruction) loss on a frozen network, Light CNN by default.

``L = sum_l w_l * dist(phi_l(G(z)), phi_l(y))`` over chosen intermediate activations
``phi_l`` of a frozen network (Johnson et al., "Perceptual Losses for Real-Time Style
Transfer and Super-Resolution", ECCV 2016; Ledig et al. "SRGAN", CVPR 2017). With a
face recogniser as the network, the features are face-specific: the default is a Light
CNN (gray 128x128 input), whose convolutional stages give feature maps from edges
(conv1) to identity parts (group4).
"""
import os
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..models.lightcnn import LightCNN, to_lightcnn_input
from .identity import load_identity_network

__all__ = ["PerceptualLoss", "LIGHTCNN_PERCEPTUAL_LAYERS"]

#: default feature layers (submodule names, MFM outputs before each pooling) per Light CNN arch.
LIGHTCNN_PERCEPTUAL_LAYERS: Dict[str, Sequence[str]] = {
    "lightcnn9": ("features.0", "features.2", "features.4", "features.7"),
    "lightcnn29": ("conv1", "group1", "group2", "group4"),
    "lightcnn29v2": ("conv1", "group1", "group2", "group4"),
}

NetworkLike = Union[nn.Module, str, os.PathLike, None]


class _Captured(Exception):
    """Raised by the last hook: every requested activation is in hand, skip the rest of the forward."""


def _as_feature_list(out) -> List[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        feats = list(out.values())
    elif isinstance(out, (list, tuple)):
        feats = list(out)
    else:
        feats = []
    if not feats or not all(isinstance(f, Tensor) for f in feats):
        raise TypeError(
            f"the perceptual network must return a tensor, a dict or a list of tensors, got {type(out).__name__}; "
            "or name its layers with layers=[...]"
        )
    return feats


class PerceptualLoss(nn.Module):
    """Distance between a frozen network's features of generated and target images.

    Args:
        network: an ``nn.Module`` (frozen in place, eval mode), a checkpoint path (built
            with :func:`lightface.losses.identity.load_identity_network`), or ``None``: a
            randomly initialised LightCNN-29v2 (a warning is logged; pass trained weights).
        layers: names of submodules (``dict(network.named_modules())`` keys) whose outputs
            are compared, captured with forward hooks. ``None``: the Light CNN defaults
            (:data:`LIGHTCNN_PERCEPTUAL_LAYERS`) for Light CNNs, otherwise the network's own
            output (a tensor, or every tensor of the dict / list it returns).
        layer_weights: one weight per layer (default 1 each).
        distance: ``"l1"`` (mean absolute difference) or ``"l2"`` (mean squared difference), per layer.
        preprocess: callable applied to both image batches before the network, ``"auto"``
            (Light CNNs: :func:`lightface.models.lightcnn.to_lightcnn_input`, i.e. ITU-R 601 gray
            and 128x128 resize; other networks: no change) or ``None``.

    Shapes:
        ``forward(fake, real)``: (N, C, H, W) float; for Light CNNs values in [0, 1] with
        C = 1 (gray) or 3 (**RGB**), any H, W. Returns a scalar; gradients reach ``fake``
        only (the target's features are computed without grad).

    Example:
        >>> loss_fn = PerceptualLoss("lightcnn29v2.pt")     # doctest: +SKIP
        >>> loss = loss_fn(sr_faces, hr_faces)             # doctest: +SKIP
    """

    def __init__(
        self,
        network: NetworkLike = None,
        layers: Optional[Sequence[str]] = None,
        layer_weights: Optional[Sequence[float]] = None,
        distance: str = "l1",
        preprocess: Union[str, Callable[[Tensor], Tensor], None] = "auto",
    ):
        super().__init__()
        if distance not in ("l1", "l2"):
            raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
        self.network = load_identity_network(network)
        is_lightcnn = isinstance(self.network, LightCNN)
        if layers is None and is_lightcnn:
            layers = LIGHTCNN_PERCEPTUAL_LAYERS.get(self.network.arch)
        self.layers = tuple(layers) if layers is not None else None
        if self.layers is not None:
            modules = dict(self.network.named_modules())
            missing = [name for name in self.layers if name not in modules]
            if not self.layers or missing:
                raise ValueError(
                    f"perceptual layers {missing or list(self.layers)} are not submodules of "
                    f"{type(self.network).__name__}; choose from {[n for n in modules if n][:40]}"
                )
            self._modules_by_name = {name: modules[name] for name in self.layers}
        n = len(self.layers) if self.layers is not None else None
        if layer_weights is not None:
            layer_weights = [float(w) for w in layer_weights]
            if n is not None and len(layer_weights) != n:
                raise ValueError(f"{len(layer_weights)} layer_weights for {n} layers {list(self.layers)}")
        self.layer_weights = layer_weights
        if preprocess == "auto":
            preprocess = to_lightcnn_input if is_lightcnn else None
        elif preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be 'auto', a callable or None, got {preprocess!r}")
        self.preprocess = preprocess
        self.distance = distance

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.network.eval()  # frozen feature extractor: never training-mode dropout / batch norm
        return self

    def features(self, images: Tensor) -> List[Tensor]:
        """The compared activations of ``images`` (N, C, H, W), in ``layers`` order."""
        try:
            device = next(self.network.parameters()).device
            images = images.to(device)
        except StopIteration:
            pass
        x = self.preprocess(images) if self.preprocess is not None else images
        if self.layers is None:
            return _as_feature_list(self.network(x))
        captured: Dict[str, Tensor] = {}

        def make_hook(name):
            def hook(_module, _inputs, output):
                captured.setdefault(name, output)
                if len(captured) == len(self.layers):
                    raise _Captured

            return hook

        handles = [m.register_forward_hook(make_hook(name)) for name, m in self._modules_by_name.items()]
        try:
            self.network(x)
        except _Captured:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [name for name in self.layers if name not in captured]
        if missing:
            raise RuntimeError(f"perceptual layers {missing} were not executed by {type(self.network).__name__}.forward")
        return [captured[name] for name in self.layers]

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        if not isinstance(fake, Tensor) or not isinstance(real, Tensor) or fake.shape != real.shape:
            raise ValueError(
                f"PerceptualLoss: fake {tuple(getattr(fake, 'shape', ()))} and real "
                f"{tuple(getattr(real, 'shape', ()))} must be tensors of the same shape"
            )
        f_fake = self.features(fake)
        with torch.no_grad():
            f_real = self.features(real)
        weights = self.layer_weights or [1.0] * len(f_fake)
        if len(weights) != len(f_fake):
            raise ValueError(f"{len(weights)} layer_weights for {len(f_fake)} network outputs")
        total = None
        for w, a, b in zip(weights, f_fake, f_real):
            diff = a - b.to(a.dtype)
            term = diff.abs().mean() if self.distance == "l1" else diff.pow(2).mean()
            total = w * term if total is None else total + w * term
        return total

    def extra_repr(self) -> str:
        return f"layers={self.layers}, distance={self.distance!r}"
