"""Pure-PyTorch reference implementations of the fused ops.

They are the test oracle for the compiled kernels and the fallback when
``lightface._C`` is not built. Semantics (see ``../shared/DESIGN.md``):

* ``mfm``: ``max(x[:C/2], x[C/2:])`` along ``dim``; gradient to the larger input,
  to the first half on ties; NaN propagates.
* ``mfm_3_2``: the three thirds along ``dim`` give ``cat([max, median])``.
* ``symmetry_loss``: per image ``sum |I[..., x] - I[..., W-1-x]|`` over the left half.
* ``total_variation``: per image anisotropic L1 of horizontal and vertical differences.
"""
import torch
from torch import Tensor

__all__ = ["mfm", "mfm_3_2", "symmetry_loss", "total_variation"]


def mfm(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 2/1 of ``x`` along ``dim`` (size 2C -> C)."""
    a, b = x.chunk(2, dim=dim)
    take_a = (a >= b) | torch.isnan(a)
    return torch.where(take_a, a, b)


def mfm_3_2(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 3/2 of ``x`` along ``dim`` (size 3C -> 2C: ``cat([max, median])``)."""
    stacked = torch.stack(x.chunk(3, dim=dim), dim=0)
    ordered, _ = torch.sort(stacked, dim=0, descending=True, stable=True)
    return torch.cat([ordered[0], ordered[1]], dim=dim)


def _reduce(per_image: Tensor, reduction: str, denominator: int) -> Tensor:
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return per_image.sum()
    return per_image.sum() / max(denominator, 1)


def symmetry_loss(img: Tensor, reduction: str = "mean") -> Tensor:
    """Left-right symmetry L1 of ``img`` (N,C,H,W); ``"none"`` gives (N,)."""
    n, c, h, w = img.shape
    half = w // 2
    left = img[..., :half]
    right = img[..., w - half:].flip(-1)
    per_image = (left - right).abs().flatten(1).sum(1)
    return _reduce(per_image, reduction, n * c * h * half)


def total_variation(img: Tensor, reduction: str = "mean") -> Tensor:
    """Anisotropic L1 total variation of ``img`` (N,C,H,W); ``"none"`` gives (N,)."""
    n, c, h, w = img.shape
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs().flatten(1).sum(1)
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs().flatten(1).sum(1)
    return _reduce(dx + dy, reduction, n * c * h * w)
