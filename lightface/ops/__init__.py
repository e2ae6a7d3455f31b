"""Fused ops: Max-Feature-Map, symmetry loss and total variation (``torch.ops.lightface.*``).

Each public function validates its arguments, then runs the compiled kernel of
``lightface._C`` (CPU, and CUDA when built with it) or, when the library is missing or
inside :func:`use_reference`, the pure-PyTorch reference of :mod:`lightface.ops.reference`
(same results; the first fallback caused by a missing library warns once).

All ops take float16, bfloat16, float32 or float64 tensors of any strides (non-contiguous
inputs are made contiguous), work under autograd, ``torch.compile(fullgraph=True)`` and
``torch.library.opcheck``, and return contiguous outputs of the input's dtype. Forward-mode
AD and ``torch.func`` transforms (``jvp``, ``grad``, ``vmap``, ...) run the reference, whose
aten ops support them (the compiled ops' autograd is reverse-mode only); so do the raw
``torch.ops.lightface.*`` public ops, which also have vmap batching rules.

Example:
    >>> import torch
    >>> from lightface import ops
    >>> x = torch.tensor([[1.0, 5.0, 3.0, 2.0]])      # halves [1, 5] and [3, 2]
    >>> ops.mfm(x)
    tensor([[3., 5.]])
    >>> img = torch.tensor([[[[1.0, 2.0, 4.0]]]])       # (N, C, H, W) = (1, 1, 1, 3)
    >>> ops.symmetry_loss(img, reduction="sum"), ops.total_variation(img, reduction="sum")
    (tensor(3.), tensor(3.))
"""
import contextlib
import warnings
from typing import Iterator

import torch
from torch import Tensor, nn

from . import _library, reference

__all__ = [
    "mfm",
    "mfm_3_2",
    "symmetry_loss",
    "total_variation",
    "extension_available",
    "use_reference",
    "SymmetryLoss",
    "TotalVariation",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_REDUCTIONS = ("none", "sum", "mean")

# > 0 inside `use_reference()`. A plain module global: torch.compile guards on it.
_reference_depth = 0
_warned = set()


def extension_available() -> bool:
    """True when the compiled ops are loaded (in ``torch.ops.lightface``): from ``lightface._C``, or from
    a library registered with ``torch.ops.load_library`` before this module was imported (the CMake build)."""
    return _library.HAS_OPS


@contextlib.contextmanager
def use_reference() -> Iterator[None]:
    """Run the public ops with the pure-PyTorch reference inside this ``with`` block.

    The reference is made of plain aten ops, so a model using MFM / the losses can be
    traced or exported (``torch.onnx.export``, ``torch.export``) without custom ops, and
    kernels can be compared with the oracle while debugging. Results are the same as the
    compiled kernels (up to float rounding in the loss sums). Nests; not thread-local.

    Example:
        >>> import torch
        >>> from lightface import ops
        >>> with ops.use_reference():
        ...     y = ops.mfm(torch.randn(2, 8, 4, 4))
    """
    global _reference_depth
    _reference_depth += 1
    try:
        yield
    finally:
        _reference_depth -= 1


def _warn_fallback(key: str, message: str) -> None:
    if key in _warned or torch.compiler.is_compiling():
        return
    _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _use_kernels(t: Tensor) -> bool:
    """Whether the compiled kernels serve ``t``; warns once when falling back (not when a
    transform, see :func:`._library.under_transform`, needs the reference)."""
    if _reference_depth > 0 or _library.under_transform(t):
        return False
    if t.device.type in _library.KERNEL_DEVICES:
        return True
    if not _library.HAS_OPS:
        _warn_fallback(
            "missing",
            "lightface.ops: the compiled op library is not available; using the pure-PyTorch reference "
            f"implementation (same results, slower, more memory). Why: {_library.LOAD_ERROR}",
        )
    else:
        _warn_fallback(
            t.device.type,
            f"lightface.ops: lightface._C has no kernels for device '{t.device.type}' "
            f"(built for {sorted(_library.KERNEL_DEVICES - {'meta'})}); using the pure-PyTorch reference there. "
            "For CUDA kernels rebuild with a CUDA torch and CUDA_HOME set (or FORCE_CUDA=1).",
        )
    return False


# ---- argument checks ----------------------------------------------------------------------


def _check_float_tensor(t, name: str, op: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{op}: {name} must be a float16, bfloat16, float32 or float64 tensor, got dtype {t.dtype} "
            f"(convert it first, e.g. {name}.float())"
        )


def _split_dim(x, dim, parts: int, op: str) -> int:
    """Validated, non-negative ``dim`` along which ``x`` splits into ``parts`` equal chunks."""
    _check_float_tensor(x, "x", op)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least one dimension, got a 0-d tensor")
    if not -x.dim() <= dim < x.dim():
        raise IndexError(f"{op}: dim={dim} is out of range for x of shape {tuple(x.shape)} ({x.dim()}-D)")
    d = dim % x.dim()
    if x.shape[d] % parts != 0:
        what = "even" if parts == 2 else f"divisible by {parts}"
        raise ValueError(f"{op}: x.shape[{d}] must be {what} (dim={dim}), got x of shape {tuple(x.shape)}")
    return d


def _check_image_loss(img, reduction, op: str) -> None:
    _check_float_tensor(img, "img", op)
    if img.dim() != 4:
        raise ValueError(f"{op}: img must be a 4-D tensor (N, C, H, W), got shape {tuple(img.shape)}")
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of 'none', 'sum', 'mean', got {reduction!r}")


def _needs_grad(t: Tensor) -> bool:
    return t.requires_grad and torch.is_grad_enabled()


# ---- ops ----------------------------------------------------------------------------------


def mfm(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 2/1: the element-wise max of the two halves of ``x`` along ``dim``.

    ``out = max(x[:C], x[C:])`` (first half vs second half, not neighbouring channels),
    as in Light CNN (Wu et al., 2018, eq. 2). The gradient goes to the selected input;
    on ties to the first half. NaN propagates (a NaN input is selected). For backward the
    compiled op saves only a 1-byte selection mask per output element.

    Args:
        x: (..., 2C, ...) float16/bfloat16/float32/float64 tensor, any strides.
        dim: the dimension to halve (default 1, the channels of (N, 2C, H, W) or (N, 2C)).

    Returns:
        Tensor of ``x``'s dtype and device with size C along ``dim``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor or ``dim`` not an int.
        ValueError: ``x.shape[dim]`` is odd (or ``x`` is 0-d).
        IndexError: ``dim`` is out of range.

    Example:
        >>> import torch
        >>> mfm(torch.tensor([[1.0, 5.0, 3.0, 2.0]]))
        tensor([[3., 5.]])
    """
    d = _split_dim(x, dim, 2, "mfm")
    if _use_kernels(x):
        if _needs_grad(x):
            return torch.ops.lightface._mfm_forward(x, d)[0]
        return torch.ops.lightface.mfm(x, d)
    return reference.mfm(x, d)


def mfm_3_2(x: Tensor, dim: int = 1) -> Tensor:
    """Max-Feature-Map 3/2: ``cat([max, median])`` of the three thirds of ``x`` along ``dim``.

    Output channels ``[0, C)`` hold the maximum of ``x[:C], x[C:2C], x[2C:]`` and
    ``[C, 2C)`` the median. Ranking is a stable descending sort with NaN largest (ties go
    to the earlier third). The gradient goes to the selected inputs; the compiled op saves
    one byte per input triple (both indices) for backward.

    Args:
        x: (..., 3C, ...) float16/bfloat16/float32/float64 tensor, any strides.
        dim: the dimension to split into thirds (default 1).

    Returns:
        Tensor of ``x``'s dtype and device with size 2C along ``dim``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor or ``dim`` not an int.
        ValueError: ``x.shape[dim]`` is not divisible by 3 (or ``x`` is 0-d).
        IndexError: ``dim`` is out of range.

    Example:
        >>> import torch
        >>> mfm_3_2(torch.tensor([[1.0, 9.0, 5.0, 2.0, 3.0, 4.0]]))  # thirds [1,9] [5,2] [3,4]
        tensor([[5., 9., 3., 4.]])
    """
    d = _split_dim(x, dim, 3, "mfm_3_2")
    if _use_kernels(x):
        if _needs_grad(x):
            return torch.ops.lightface._mfm_3_2_forward(x, d)[0]
        return torch.ops.lightface.mfm_3_2(x, d)
    return reference.mfm_3_2(x, d)


def symmetry_loss(img: Tensor, reduction: str = "mean") -> Tensor:
    """Left-right symmetry L1 loss of a batch of images (TP-GAN's symmetry loss).

    Per image ``S_n = sum_{c,y} sum_{x < floor(W/2)} |I[c,y,x] - I[c,y,W-1-x]|`` (the
    middle column of an odd width is not compared). Accumulated in float32 (float64 for
    float64 input); the gradient of ``|0|`` is 0.

    Args:
        img: (N, C, H, W) float16/bfloat16/float32/float64 images, any channel order and
            value range, any strides.
        reduction: ``"none"`` -> (N,) per-image ``S_n``; ``"sum"`` -> scalar ``sum_n S_n``;
            ``"mean"`` (default) -> scalar ``sum_n S_n / (N*C*H*floor(W/2))`` (NaN when
            that count is 0, like ``torch.mean`` of nothing).

    Returns:
        Tensor of ``img``'s dtype: (N,) or a 0-d scalar.

    Raises:
        TypeError: ``img`` is not a floating-point tensor.
        ValueError: ``img`` is not 4-D, or ``reduction`` is unknown.

    Example:
        >>> import torch
        >>> symmetry_loss(torch.tensor([[[[1.0, 2.0, 4.0]]]]), reduction="none")
        tensor([3.])

    Reference:
        Huang et al., "Beyond Face Rotation: Global and Local Perception GAN for
        Photorealistic and Identity Preserving Frontal View Synthesis", ICCV 2017.
    """
    _check_image_loss(img, reduction, "symmetry_loss")
    if _use_kernels(img):
        return torch.ops.lightface.symmetry_loss(img, reduction)
    return reference.symmetry_loss(img, reduction)


def total_variation(img: Tensor, reduction: str = "mean") -> Tensor:
    """Anisotropic L1 total variation of a batch of images.

    Per image ``T_n = sum |I[..,y,x+1] - I[..,y,x]| + sum |I[..,y+1,x] - I[..,y,x]|`` over
    all channels. Accumulated in float32 (float64 for float64 input); the gradient of
    ``|0|`` is 0.

    Args:
        img: (N, C, H, W) float16/bfloat16/float32/float64 images, any strides.
        reduction: ``"none"`` -> (N,) per-image ``T_n``; ``"sum"`` -> scalar ``sum_n T_n``;
            ``"mean"`` (default) -> scalar ``sum_n T_n / (N*C*H*W)``: divided by the number of
            pixels, not by the number of differences ``N*C*(H*(W-1) + (H-1)*W)`` (NaN for an
            empty batch).

    Returns:
        Tensor of ``img``'s dtype: (N,) or a 0-d scalar.

    Raises:
        TypeError: ``img`` is not a floating-point tensor.
        ValueError: ``img`` is not 4-D, or ``reduction`` is unknown.

    Example:
        >>> import torch
        >>> total_variation(torch.tensor([[[[0.0, 1.0], [3.0, 1.0]]]]), reduction="sum")
        tensor(6.)

    Reference:
        Rudin, Osher and Fatemi, "Nonlinear total variation based noise removal
        algorithms", Physica D 1992.
    """
    _check_image_loss(img, reduction, "total_variation")
    if _use_kernels(img):
        return torch.ops.lightface.total_variation(img, reduction)
    return reference.total_variation(img, reduction)


# ---- modules ------------------------------------------------------------------------------


class _ImageLoss(nn.Module):
    _fn = None  # set by subclasses: the functional form

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of 'none', 'sum', 'mean', got {reduction!r}"
            )
        self.reduction = reduction

    def forward(self, img: Tensor) -> Tensor:
        return type(self)._fn(img, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class SymmetryLoss(_ImageLoss):
    """Module form of :func:`symmetry_loss`: ``forward(img (N,C,H,W)) -> (N,) or scalar``."""

    _fn = staticmethod(symmetry_loss)


class TotalVariation(_ImageLoss):
    """Module form of :func:`total_variation`: ``forward(img (N,C,H,W)) -> (N,) or scalar``."""

    _fn = staticmethod(total_variation)
