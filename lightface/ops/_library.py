"""Loading of the compiled op library ``lightface._C`` and its Python-side registrations.

``import lightface._C`` loads the shared library whose ``TORCH_LIBRARY_FRAGMENT(lightface, ...)``
block defines the schemas and whose ``TORCH_LIBRARY_IMPL`` blocks add the CPU (and, when
built with CUDA, CUDA) kernels; when the ops are already registered (the CMake build,
loaded with ``torch.ops.load_library`` first) that library is used instead. This module
then registers, from Python:

* fake (meta) kernels (``torch.library.register_fake``) for ``torch.compile``/export. They
  check their arguments like the C++ kernels (``torch._check_value`` / ``_check_type`` /
  ``_check_index``: the same error types and messages), so a shape the real kernel
  rejects (an odd MFM size, a non-4-D image, an unknown reduction) raises under
  ``torch.compile`` and on meta tensors too, instead of producing a silently wrong shape;
* autograd (``torch.library.register_autograd``): the backward of every op is itself an
  op (``_mfm_backward``, ``_symmetry_loss_backward``, ...), so AOTAutograd traces it, and
  the backward ops have autograd formulas too, so double backward (an R1 / WGAN-GP
  gradient penalty through MFM layers, a penalty on a loss gradient) is exact. Every
  backward op is linear in its incoming gradient, with a derivative of 0 (almost
  everywhere) with respect to the saved input: MFM's routes the gradient by a selection
  mask, the losses' multiply it by a pattern of signs.

Setting ``LIGHTFACE_DISABLE_EXTENSION=1`` hides the library (the ops then run the
pure-PyTorch reference), which is how the fallback path is tested.
"""
import logging
import os
from typing import FrozenSet, Optional, Tuple

import torch
from torch import Tensor

log = logging.getLogger(__name__)

DISABLE_ENV = "LIGHTFACE_DISABLE_EXTENSION"

__all__ = ["HAS_OPS", "LOAD_ERROR", "KERNEL_DEVICES", "DISABLE_ENV"]


def _load() -> Tuple[bool, Optional[str]]:
    """Load the op library unless it is disabled; ``(loaded, why not)``.

    Ops already in ``torch.ops.lightface`` (the CMake build's library, loaded with
    ``torch.ops.load_library`` before this import) are used as they are: ``lightface._C``
    is then not imported, and may be missing.
    """
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False, f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    if hasattr(torch.ops.lightface, "_mfm_forward"):
        log.debug("lightface ops already registered (torch.ops.load_library); not importing lightface._C")
        return True, None
    try:
        from lightface import _C  # noqa: F401  (loading registers torch.ops.lightface.*)
    except (ImportError, OSError) as exc:
        return False, f"import lightface._C failed: {exc}"
    if not hasattr(torch.ops.lightface, "_mfm_forward"):
        return False, "lightface._C is stale (ops missing); rebuild it"
    return True, None


HAS_OPS, LOAD_ERROR = _load()


def _has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``op`` has a kernel registered for ``dispatch_key`` (public APIs only)."""
    get_kernel = getattr(torch.library, "get_kernel", None)  # torch >= 2.9
    if get_kernel is None:
        namespace, name = op.split("::")
        return getattr(getattr(torch.ops, namespace), name).default.has_kernel_for_dispatch_key(dispatch_key)
    try:
        get_kernel(op, dispatch_key)
    except RuntimeError:  # "no kernel for CUDA for lightface::mfm"
        return False
    return True


def _kernel_devices() -> FrozenSet[str]:
    if not HAS_OPS:
        return frozenset()
    devices = {"cpu", "meta"}
    if _has_kernel("lightface::mfm", "CUDA"):
        devices.add("cuda")
    return frozenset(devices)


# Device types the compiled library serves ("meta" through the fake kernels).
KERNEL_DEVICES = _kernel_devices()

if HAS_OPS:
    log.debug("lightface ops loaded; kernels for %s", sorted(KERNEL_DEVICES))
else:
    log.debug("lightface._C not loaded: %s", LOAD_ERROR)


# ---- fake kernels -------------------------------------------------------------------------
# Each one checks what the C++ kernel checks (csrc/common.h), with the same error type
# and message (and the same op name in it), before computing the output's shape: on meta/fake tensors and under
# torch.compile the real kernel does not run, so these checks are the only ones.


def _resized(shape, dim: int, size) -> list:
    out = list(shape)
    out[dim] = size
    return out


def _check_floating(t, op: str, name: str) -> None:
    torch._check_type(
        t.dtype.is_floating_point,
        lambda: f"{op}: {name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
        f"got {t.dtype}",
    )


def _split_dim(t, dim: int, parts: int, op: str, name: str = "x") -> int:
    """``dim`` normalised, after checking that ``t`` splits into ``parts`` equal chunks along it."""
    ndim = t.dim()
    torch._check_value(ndim > 0, lambda: f"{op}: {name} must have at least one dimension, got a 0-d tensor")
    torch._check_index(
        -ndim <= dim < ndim,
        lambda: f"{op}: dim {dim} is out of range for {name} of shape {list(t.shape)} ({ndim}-D)",
    )
    d = dim % ndim
    torch._check_value(
        t.shape[d] % parts == 0,
        lambda: f"{op}: {name}.size({d}) must be divisible by {parts}, got {name} of shape {list(t.shape)}",
    )
    return d


def _check_mask_shape(grad, mask, d: int, piece, op: str) -> None:
    expected = _resized(grad.shape, d, piece)
    torch._check_value(
        mask.dim() == grad.dim() and all(a == b for a, b in zip(mask.shape, expected)),
        lambda: f"{op}: mask {list(mask.shape)} does not match grad {list(grad.shape)} "
        f"(expected size {piece} along dim {d})",
    )


_REDUCTIONS = ("none", "sum", "mean")


def _check_image(img, reduction: str, op: str) -> None:
    torch._check_value(
        img.dim() == 4, lambda: f"{op}: img must be a 4-D tensor (N, C, H, W), got shape {list(img.shape)}"
    )
    _check_floating(img, op, "img")
    torch._check_value(
        reduction in _REDUCTIONS,
        lambda: f"{op}: unknown reduction '{reduction}'; expected 'none', 'sum' or 'mean'",
    )


def _check_loss_grad(grad, img, reduction: str, op: str) -> None:
    _check_floating(grad, op, "grad")
    if reduction == "none":
        torch._check_value(
            grad.dim() == 1 and grad.shape[0] == img.shape[0],
            lambda: f"{op}: with reduction='none' grad must have shape (N,) = ({img.shape[0]},), "
            f"got {list(grad.shape)}",
        )
    else:
        torch._check_value(
            grad.numel() == 1,
            lambda: f"{op}: grad must hold one element for reduction 'sum'/'mean', got shape {list(grad.shape)}",
        )
    torch._check_value(
        grad.device == img.device, lambda: f"{op}: grad is on {grad.device} but img is on {img.device}"
    )


def _register_fakes() -> None:
    def _mfm_out(x, dim, parts, op):
        _check_floating(x, op, "x")
        d = _split_dim(x, dim, parts, op)
        piece = x.shape[d] // parts
        return d, piece, x.new_empty(_resized(x.shape, d, (parts - 1) * piece))

    @torch.library.register_fake("lightface::mfm")
    def _mfm_fake(x, dim=1):
        return _mfm_out(x, dim, 2, "mfm")[2]

    @torch.library.register_fake("lightface::_mfm_forward")
    def _mfm_forward_fake(x, dim):
        d, piece, out = _mfm_out(x, dim, 2, "mfm")
        return out, x.new_empty(_resized(x.shape, d, piece), dtype=torch.uint8)

    @torch.library.register_fake("lightface::mfm_3_2")
    def _mfm_3_2_fake(x, dim=1):
        return _mfm_out(x, dim, 3, "mfm_3_2")[2]

    @torch.library.register_fake("lightface::_mfm_3_2_forward")
    def _mfm_3_2_forward_fake(x, dim):
        d, piece, out = _mfm_out(x, dim, 3, "mfm_3_2")
        return out, x.new_empty(_resized(x.shape, d, piece), dtype=torch.uint8)

    def _mfm_backward_out(grad, mask, dim, parts, op):
        _check_floating(grad, op, "grad")
        torch._check_type(mask.dtype == torch.uint8, lambda: f"{op}: mask must be uint8, got {mask.dtype}")
        torch._check_value(
            grad.device == mask.device, lambda: f"{op}: grad is on {grad.device} but mask is on {mask.device}"
        )
        d = _split_dim(grad, dim, parts - 1, op, "grad")
        piece = grad.shape[d] // (parts - 1)
        _check_mask_shape(grad, mask, d, piece, op)
        return grad.new_empty(_resized(grad.shape, d, parts * piece))

    @torch.library.register_fake("lightface::_mfm_backward")
    def _mfm_backward_fake(grad, mask, dim):
        return _mfm_backward_out(grad, mask, dim, 2, "mfm_backward")

    @torch.library.register_fake("lightface::_mfm_3_2_backward")
    def _mfm_3_2_backward_fake(grad, mask, dim):
        return _mfm_backward_out(grad, mask, dim, 3, "mfm_3_2_backward")

    def _loss_fake(op):
        def fake(img, reduction="mean"):
            _check_image(img, reduction, op)
            return img.new_empty((img.shape[0],) if reduction == "none" else ())

        return fake

    def _loss_backward_fake(op):
        def fake(grad, img, reduction):
            _check_image(img, reduction, op)
            _check_loss_grad(grad, img, reduction, op)
            return img.new_empty(img.shape)

        return fake

    torch.library.register_fake("lightface::symmetry_loss")(_loss_fake("symmetry_loss"))
    torch.library.register_fake("lightface::total_variation")(_loss_fake("total_variation"))
    torch.library.register_fake("lightface::_symmetry_loss_backward")(_loss_backward_fake("symmetry_loss_backward"))
    torch.library.register_fake("lightface::_total_variation_backward")(
        _loss_backward_fake("total_variation_backward")
    )


# ---- autograd -----------------------------------------------------------------------------
# `_mfm_forward` / `_mfm_3_2_forward` save only their uint8 selection mask. The public
# `mfm` / `mfm_3_2` ops (called directly as torch.ops.lightface.*) save their input and
# recompute the mask in backward; lightface.ops.mfm routes training calls through the
# mask-saving variant.
#
# Second order: each backward op is linear in `grad` and piecewise constant in what it
# saved (a mask, or the signs of the image's differences), so its own backward returns
# the transposed map for `grad` and nothing (zero almost everywhere) for the rest. These
# formulas are plain aten ops (where / cat / sum) plus the ops themselves, so a third
# derivative works too and torch.compile traces them.


def _mfm_route(grad_x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Transpose of ``_mfm_backward``: gather, per output element, the half the mask selected."""
    first, second = grad_x.chunk(2, dim)
    return torch.where(mask.bool(), second, first)


def _mfm_3_2_route(grad_x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Transpose of ``_mfm_3_2_backward``: gather the max's and the median's thirds (``mask = max | median << 2``)."""
    thirds = grad_x.chunk(3, dim)

    def pick(index: Tensor) -> Tensor:
        return torch.where(index == 0, thirds[0], torch.where(index == 1, thirds[1], thirds[2]))

    return torch.cat([pick(mask & 3), pick((mask >> 2) & 3)], dim)


def _loss_columns(op: str, width: int) -> int:
    """Terms per image row: floor(W/2) pairs for the symmetry loss, W for total variation (DESIGN)."""
    return width // 2 if op == "symmetry_loss" else width


def _register_autograd() -> None:
    ops = torch.ops.lightface

    def _setup_masked(ctx, inputs, output):
        _, dim = inputs
        _, mask = output
        ctx.dim = dim
        ctx.save_for_backward(mask)

    def _mfm_forward_backward(ctx, grad, _grad_mask):
        (mask,) = ctx.saved_tensors
        return ops._mfm_backward(grad, mask, ctx.dim), None

    def _mfm_3_2_forward_backward(ctx, grad, _grad_mask):
        (mask,) = ctx.saved_tensors
        return ops._mfm_3_2_backward(grad, mask, ctx.dim), None

    torch.library.register_autograd("lightface::_mfm_forward", _mfm_forward_backward, setup_context=_setup_masked)
    torch.library.register_autograd(
        "lightface::_mfm_3_2_forward", _mfm_3_2_forward_backward, setup_context=_setup_masked
    )

    def _setup_input(ctx, inputs, output):
        x, dim = inputs
        ctx.dim = dim
        ctx.save_for_backward(x)

    def _mfm_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        _, mask = ops._mfm_forward(x, ctx.dim)
        return ops._mfm_backward(grad, mask, ctx.dim), None

    def _mfm_3_2_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        _, mask = ops._mfm_3_2_forward(x, ctx.dim)
        return ops._mfm_3_2_backward(grad, mask, ctx.dim), None

    torch.library.register_autograd("lightface::mfm", _mfm_backward, setup_context=_setup_input)
    torch.library.register_autograd("lightface::mfm_3_2", _mfm_3_2_backward, setup_context=_setup_input)

    # The MFM backward ops: grad_x = R(mask)^T grad, so d/dgrad is R(mask) (gather by the
    # mask) and the mask (uint8) gets none.
    def _setup_masked_backward(ctx, inputs, output):
        _, mask, dim = inputs
        ctx.dim = dim
        ctx.save_for_backward(mask)

    def _mfm_backward_backward(ctx, grad_grad_x):
        (mask,) = ctx.saved_tensors
        return _mfm_route(grad_grad_x, mask, ctx.dim), None, None

    def _mfm_3_2_backward_backward(ctx, grad_grad_x):
        (mask,) = ctx.saved_tensors
        return _mfm_3_2_route(grad_grad_x, mask, ctx.dim), None, None

    torch.library.register_autograd(
        "lightface::_mfm_backward", _mfm_backward_backward, setup_context=_setup_masked_backward
    )
    torch.library.register_autograd(
        "lightface::_mfm_3_2_backward", _mfm_3_2_backward_backward, setup_context=_setup_masked_backward
    )

    def _setup_loss(ctx, inputs, output):
        img, reduction = inputs
        ctx.reduction = reduction
        ctx.save_for_backward(img)

    def _symmetry_backward(ctx, grad):
        (img,) = ctx.saved_tensors
        return ops._symmetry_loss_backward(grad, img, ctx.reduction), None

    def _tv_backward(ctx, grad):
        (img,) = ctx.saved_tensors
        return ops._total_variation_backward(grad, img, ctx.reduction), None

    torch.library.register_autograd("lightface::symmetry_loss", _symmetry_backward, setup_context=_setup_loss)
    torch.library.register_autograd("lightface::total_variation", _tv_backward, setup_context=_setup_loss)

    # The loss backward ops: grad_img = grad[n] * scale * P_n(img), with P_n the signs of
    # the image's differences (dS_n/dI, dT_n/dI) and scale 1/denominator for "mean". So
    # d/dgrad[n] = sum(grad_grad_img[n] * P_n) * scale, and d/dimg = 0 (P is piecewise
    # constant). P comes from the backward op itself with a gradient of ones per image.
    def _setup_loss_backward(ctx, inputs, output):
        grad, img, reduction = inputs
        ctx.reduction = reduction
        ctx.grad_shape = grad.shape
        ctx.grad_dtype = grad.dtype
        ctx.save_for_backward(img)

    def _loss_backward_backward(op: str, backward_op):
        def backward(ctx, grad_grad_img):
            (img,) = ctx.saved_tensors
            n, c, h, w = img.shape
            pattern = backward_op(grad_grad_img.new_ones(n), img, "none")
            acc = torch.float64 if grad_grad_img.dtype == torch.float64 else torch.float32
            per_image = (grad_grad_img.to(acc) * pattern.to(acc)).sum(dim=(1, 2, 3))
            if ctx.reduction == "none":
                grad_grad = per_image
            else:
                grad_grad = per_image.sum()
                if ctx.reduction == "mean":
                    denominator = n * c * h * _loss_columns(op, w)
                    # as the kernel: no term, no gradient (scale 0 instead of 1/0)
                    grad_grad = grad_grad / denominator if denominator > 0 else grad_grad * 0
            return grad_grad.to(ctx.grad_dtype).reshape(ctx.grad_shape), None, None

        return backward

    torch.library.register_autograd(
        "lightface::_symmetry_loss_backward",
        _loss_backward_backward("symmetry_loss", ops._symmetry_loss_backward),
        setup_context=_setup_loss_backward,
    )
    torch.library.register_autograd(
        "lightface::_total_variation_backward",
        _loss_backward_backward("total_variation", ops._total_variation_backward),
        setup_context=_setup_loss_backward,
    )


if HAS_OPS:
    _register_fakes()
    _register_autograd()
