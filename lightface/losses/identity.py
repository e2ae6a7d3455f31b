"""Identity-preserving loss: distances between frozen Light CNN features of generated and
real faces (TP-GAN's identity loss on the last pooling layer and the fc layer; the
wavelet super-resolution generator uses the same judge). The judge itself (loading,
features, the shipped default) lives in :mod:`lightface.models.identity`; its names are
re-exported here.

Images are float (N, C, H, W) in [0, 1], C = 1 (gray) or 3 (**RGB**), any size: they
are converted to gray with ITU-R 601 weights and resized to 128x128 inside
(:func:`lightface.models.lightcnn.to_lightcnn_input`), so they should be roughly aligned
like Light CNN crops (eyes level, face filling the frame).
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.identity import (  # noqa: F401  (re-exported)
    NO_IDENTITY,
    NetworkLike,
    identity_features,
    load_identity_network,
    resolve_identity_weights,
)

__all__ = ["IdentityLoss", "load_identity_network", "identity_features", "resolve_identity_weights", "DISTANCES",
           "NO_IDENTITY"]

DISTANCES = ("l1", "l2", "cosine")


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
