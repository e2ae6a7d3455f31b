"""Identity-preserving loss: distances between frozen Light CNN features of generated and
real faces (TP-GAN's identity loss on the last pooling layer and the fc layer; the
wavelet super-resolution generator uses the same judge).

Images are float (N, C, H, W) in [0, 1], C = 1 (gray) or 3 (**RGB**), any size: they
are converted to gray with ITU-R 601 weights and resized to 128x128 inside
(:func:`lightface.models.lightcnn.to_lightcnn_input`), so they should be roughly aligned
like Light CNN crops (eyes level, face filling the frame).
"""
import logging
import os
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.lightcnn import to_lightcnn_input

__all__ = ["IdentityLoss", "load_identity_network", "identity_features", "resolve_identity_weights", "DISTANCES",
           "NO_IDENTITY"]

logger = logging.getLogger(__name__)

DISTANCES = ("l1", "l2", "cosine")
NetworkLike = Union[nn.Module, str, os.PathLike, None]


#: values of ``--identity-weights`` that switch the identity network off explicitly
NO_IDENTITY = ("none", "off")


def resolve_identity_weights(weights: Optional[Union[str, os.PathLike]], purpose: str = "the identity loss") -> Optional[str]:
    """The identity network a generator trainer uses (``--identity-weights``), as a checkpoint path or None (off).

    * a path (or a shipped entry's name, e.g. ``"recognition"``): that network;
    * ``"none"`` / ``"off"``: no identity network (the identity loss and metrics are off);
    * None (flag unset): the recogniser that ships with lightface,
      :func:`lightface.models.default_weights` ``("recognition")`` (its sha256 is checked
      here); when none ships, a warning says so and None is returned (off).

    Args:
        weights: the flag's value.
        purpose: what it is for, in the warning (``"the identity loss"``).
    Returns:
        a checkpoint path, or None.
    Raises:
        lightface.models.PretrainedError: a shipped file is damaged (sha256 mismatch).
    """
    from ..models.pretrained import PretrainedError, default_weights, get_pretrained

    if weights is not None:
        text = os.fspath(weights)
        if text.strip().lower() in NO_IDENTITY:
            logger.info("identity network switched off (--identity-weights %s): %s is off", text, purpose)
            return None
        if not os.path.exists(text):
            try:
                entry = get_pretrained(text)
            except PretrainedError:
                return text  # not a shipped name: the loader reports the missing file
            return str(entry.path())
        return text
    try:
        entry = default_weights("recognition")
    except PretrainedError:
        logger.warning("no --identity-weights and no shipped recogniser ('recognition' in lightface/weights/"
                       "manifest.json): %s is off; pass --identity-weights LIGHTCNN_CHECKPOINT", purpose)
        return None
    path = str(entry.path())  # sha256-checked: a damaged install fails here, not silently
    logger.info("identity network: the shipped recogniser %s (%s, sha256 %s...)", entry.name, entry.arch,
                entry.sha256[:12])
    return path


def load_identity_network(network: NetworkLike, default_arch: str = "lightcnn29v2") -> nn.Module:
    """A frozen recogniser in eval mode from a module, a checkpoint path, or None.

    Args:
        network: an ``nn.Module`` (used as is, frozen in place), a checkpoint path (this
            project's or an official Light CNN release; see
            :func:`lightface.models.checkpoint.build_from_checkpoint`), or ``None``: a
            randomly initialised ``default_arch``, which only makes sense for smoke tests
            (a warning is logged).
    Returns:
        the module, ``requires_grad`` off for every parameter, in eval mode. It must map
        (N,1,128,128) gray in [0,1] to (N,D) features; ``feature_maps(x)`` (Light CNN) gives
        the intermediate ``pool`` features too.
    """
    if network is None:
        from ..models import get_model

        logger.warning("identity network: no weights given, using a randomly initialised %s "
                       "(meaningless except for smoke tests); pass a Light CNN checkpoint", default_arch)
        network = get_model(default_arch, num_classes=0)
    elif isinstance(network, (str, os.PathLike)):
        from ..models.checkpoint import build_from_checkpoint
        from ..models.lightcnn import LightCNN

        network = build_from_checkpoint(network, num_classes=0, expect=LightCNN)  # a recogniser, not a GAN
    elif not isinstance(network, nn.Module):
        raise TypeError(f"identity network must be an nn.Module, a checkpoint path or None, got {type(network).__name__}")
    for p in network.parameters():
        p.requires_grad_(False)
    return network.eval()


def identity_features(network: nn.Module, images: Tensor) -> Dict[str, Tensor]:
    """Features of ``images`` (N, C, H, W) float [0, 1], C = 1 or 3 (RGB), any size, moved to the
    network's device: ``{"pool": (N, 8192), "fc": (N, 256)}`` for Light CNNs, ``{"fc": network(x)}``
    for other recognisers."""
    try:
        device = next(network.parameters()).device
    except StopIteration:
        device = images.device
    x = to_lightcnn_input(images.to(device))
    if hasattr(network, "feature_maps"):
        return network.feature_maps(x)
    return {"fc": network(x)}


class IdentityLoss(nn.Module):
    """Distance between a frozen Light CNN's features of ``fake`` and ``real`` faces.

    Args:
        network: recogniser (module, checkpoint path, or None for random weights; see
            :func:`load_identity_network`). Always frozen and kept in eval mode.
        distance: ``"l1"`` (mean absolute difference, TP-GAN), ``"l2"`` (mean squared
            difference) or ``"cosine"`` (mean of 1 - cosine similarity).
        layers: which features to compare, summed: ``"pool"`` (last pooling, flattened,
            8192-d) and/or ``"fc"`` (256-d). Default both, as TP-GAN.
    Shapes:
        fake, real: (N, C, H, W) float in [0, 1], C = 1 or 3 (RGB), same N (sizes may differ).
        output: scalar; gradients flow to ``fake`` only (``real`` is not differentiated).

    Example:
        >>> loss_fn = IdentityLoss("lightcnn29v2.pt")           # doctest: +SKIP
        >>> loss = loss_fn(generator(lr_faces), hr_faces)       # doctest: +SKIP
    """

    def __init__(self, network: NetworkLike = None, distance: str = "l1", layers: Sequence[str] = ("pool", "fc")):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        layers = tuple(layers)
        if not layers or any(name not in ("pool", "fc") for name in layers):
            raise ValueError(f"layers must be a non-empty subset of ('pool', 'fc'), got {layers}")
        self.network = load_identity_network(network)
        if not hasattr(self.network, "feature_maps") and layers != ("fc",):
            raise ValueError(f"{type(self.network).__name__} has no feature_maps(); use layers=('fc',)")
        self.distance = distance
        self.layers = layers

    def train(self, mode: bool = True) -> "IdentityLoss":
        super().train(mode)
        self.network.eval()  # the judge never switches to training behaviour (dropout)
        return self

    def features(self, x: Tensor) -> Dict[str, Tensor]:
        """``{"pool": (N, 8192), "fc": (N, 256)}`` of images (N, C, H, W) in [0, 1] (C = 1, or 3 RGB)."""
        return identity_features(self.network, x)

    def _dist(self, a: Tensor, b: Tensor) -> Tensor:
        if self.distance == "l1":
            return (a - b).abs().mean()
        if self.distance == "l2":
            return (a - b).pow(2).mean()
        return (1.0 - F.cosine_similarity(a, b, dim=1)).mean()

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        if fake.dim() != 4 or real.dim() != 4 or fake.shape[0] != real.shape[0]:
            raise ValueError(f"IdentityLoss: fake {tuple(fake.shape)} and real {tuple(real.shape)} must be "
                             "(N, C, H, W) batches of the same N")
        f_fake = self.features(fake)
        with torch.no_grad():
            f_real = self.features(real)
        return sum(self._dist(f_fake[k], f_real[k].to(f_fake[k].dtype)) for k in self.layers)

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, layers={self.layers}"
