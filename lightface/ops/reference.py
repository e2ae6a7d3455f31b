"""Pure-PyTorch reference implementations of the fused ops.

They are the test oracle for the compiled kernels, the fallback when ``lightface._C``
is not built, and what :func:`lightface.ops.use_reference` selects (plain aten ops, so a
model traces and exports, e.g. to ONNX). Semantics (``../shared/DESIGN.md``):

* ``mfm``: ``max(x[:C/2], x[C/2:])`` along ``dim``; the gradient goes to the selected
  input, to the first half on ties; NaN propagates (a NaN input is selected).
* ``mfm_3_2``: the three thirds along ``dim`` give ``cat([max, median])``, ranked like a
  stable descending sort with NaN largest; gradient to the selected inputs.
* ``symmetry_loss``: per image ``S_n = sum_{c,y} sum_{x<floor(W/2)} |I[c,y,x] - I[c,y,W-1-x]|``.
* ``total_variation``: per image the anisotropic L1 of horizontal and vertical differences.
* reductions: ``"none"`` -> (N,), ``"sum"`` -> sum over images, ``"mean"`` -> that sum
  divided by ``N*C*H*floor(W/2)`` for the symmetry loss (its number of compared pairs)
  and by ``N*C*H*W`` for total variation: the number of pixels, as DESIGN.md fixes, not
  the ``N*C*(H*(W-1) + (H-1)*W)`` differences actually summed. NaN when that divisor is
  0, like ``torch.mean`` of an empty tensor.

The losses accumulate in float32 (float64 for float64 input) and return the input dtype,
so float16/bfloat16 sums neither overflow nor lose the small terms. The gradient of
``|0|`` is 0, as in torch.
"""
import torch
from torch import Tensor

__all__ = ["mfm", "mfm_3_2", "symmetry_loss", "total_variation"]


def _beats(a: Tensor, b: Tensor) -> Tensor:
    """Where ``b`` ranks above ``a``: strictly larger, or NaN while ``a`` is not."""
    return (b > a) | (torch.isnan(b) & ~torch.isnan(a))


def mfm(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 2/1 of ``x`` along ``dim`` (size 2C -> C)."""
    a, b = x.chunk(2, dim=dim)
    return torch.where(_beats(a, b), b, a)


def mfm_3_2(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 3/2 of ``x`` along ``dim`` (size 3C -> 2C: ``cat([max, median])``).

    Written with comparisons and ``torch.where`` (no sort), so it exports to ONNX.
    """
    a, b, c = x.chunk(3, dim=dim)
    b_over_a = _beats(a, b)
    max_ab = torch.where(b_over_a, b, a)
    c_is_max = _beats(max_ab, c)
    maximum = torch.where(c_is_max, c, max_ab)
    # The median is the higher-ranked of the two thirds that are not the maximum.
    med_if_b_max = torch.where(_beats(a, c), c, a)
    med_if_a_max = torch.where(_beats(b, c), c, b)
    median = torch.where(c_is_max, max_ab, torch.where(b_over_a, med_if_b_max, med_if_a_max))
    return torch.cat([maximum, median], dim=dim)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _reduce(per_image: Tensor, reduction: str, denominator: int, dtype: torch.dtype) -> Tensor:
    if reduction == "none":
        out = per_image
    elif reduction == "sum":
        out = per_image.sum()
    else:  # "mean": 0/0 -> NaN when there is no term, like torch.mean of an empty tensor
        out = per_image.sum() / denominator
    return out.to(dtype)


def symmetry_loss(img: Tensor, reduction: str = "mean") -> Tensor:
    """Left-right symmetry L1 of ``img`` (N,C,H,W); ``"none"`` gives (N,), else a scalar.

    ``"mean"`` divides the sum by ``N*C*H*floor(W/2)``, the number of compared pairs.
    """
    n, c, h, w = img.shape
    half = w // 2
    x = img.to(_accumulation_dtype(img.dtype))
    left = x[..., :half]
    right = x[..., w - half:].flip(-1)
    per_image = (left - right).abs().sum(dim=(1, 2, 3))
    return _reduce(per_image, reduction, n * c * h * half, img.dtype)


def total_variation(img: Tensor, reduction: str = "mean") -> Tensor:
    """Anisotropic L1 total variation of ``img`` (N,C,H,W); ``"none"`` gives (N,), else a scalar.

    ``"mean"`` divides the sum by ``N*C*H*W``, the number of pixels (not the number of
    differences, ``N*C*(H*(W-1) + (H-1)*W)``), as DESIGN.md specifies.
    """
    n, c, h, w = img.shape
    x = img.to(_accumulation_dtype(img.dtype))
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().sum(dim=(1, 2, 3))
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().sum(dim=(1, 2, 3))
    return _reduce(dx + dy, reduction, n * c * h * w, img.dtype)
