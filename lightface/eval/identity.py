"""Identity score of generated faces: cosine similarity of Light CNN features."""
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.identity import NetworkLike, identity_features, load_identity_network

__all__ = ["identity_cosine"]


@torch.no_grad()
def identity_cosine(network: Union[NetworkLike, nn.Module], a: Tensor, b: Tensor, batch_size: int = 64) -> Tensor:
    """Per-pair cosine similarity of the 256-d Light CNN features of ``a[i]`` and ``b[i]``.

    Args:
        network: a Light CNN module, a checkpoint path, or None (random weights: smoke tests
            only); frozen and put in eval mode.
        a, b: (N, C, H, W) float in [0, 1], C = 1 (gray) or 3 (RGB), any size (converted to
            gray ITU-R 601 and resized to 128x128); same N.
        batch_size: images per forward pass.
    Returns:
        (N,) float32 in [-1, 1] on the network's device; 1 = same direction (same identity
        to the recogniser).
    """
    if a.dim() != 4 or b.dim() != 4 or a.shape[0] != b.shape[0]:
        raise ValueError(f"identity_cosine expects two (N, C, H, W) batches of the same N, got {tuple(a.shape)} and {tuple(b.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = load_identity_network(network)
    out = []
    for i in range(0, a.shape[0], batch_size):
        fa = identity_features(net, a[i:i + batch_size])["fc"].float()
        fb = identity_features(net, b[i:i + batch_size])["fc"].float()
        out.append(F.cosine_similarity(fa, fb, dim=1))
    if not out:
        return torch.empty(0)
    return torch.cat(out)
