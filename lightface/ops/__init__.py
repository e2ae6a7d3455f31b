"""Fused ops: MFM, symmetry loss and total variation (``torch.ops.lightface.*``).

Until the compiled library is wired in, these call the pure-PyTorch reference.
"""
from typing import Optional

import torch
from torch import Tensor

from . import reference

__all__ = ["mfm", "mfm_3_2", "symmetry_loss", "total_variation", "extension_available"]


def extension_available() -> bool:
    """True when the compiled library ``lightface._C`` is loaded."""
    return False


def mfm(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 2/1: ``max(x[:C/2], x[C/2:])`` along ``dim``."""
    return reference.mfm(x, dim)


def mfm_3_2(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 3/2: ``cat([max, median])`` of the three thirds along ``dim``."""
    return reference.mfm_3_2(x, dim)


def symmetry_loss(img: Tensor, reduction: str = "mean") -> Tensor:
    """Left-right symmetry L1 loss of images (N,C,H,W)."""
    return reference.symmetry_loss(img, reduction)


def total_variation(img: Tensor, reduction: str = "mean") -> Tensor:
    """Anisotropic L1 total variation of images (N,C,H,W)."""
    return reference.total_variation(img, reduction)
