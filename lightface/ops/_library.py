"""Loading of the compiled op library ``lightface._C`` and its Python-side registrations.

``import lightface._C`` loads the shared library whose ``TORCH_LIBRARY(lightface, ...)``
block defines the schemas and whose ``TORCH_LIBRARY_IMPL`` blocks add the CPU (and, when
built with CUDA, CUDA) kernels. This module then registers, from Python:

* fake (meta) kernels (``torch.library.register_fake``) for ``torch.compile``/export;
* autograd (``torch.library.register_autograd``): the backward of every op is itself an
  op (``_mfm_backward``, ``_symmetry_loss_backward``, ...), so AOTAutograd traces it.

Setting ``LIGHTFACE_DISABLE_EXTENSION=1`` hides the library (the ops then run the
pure-PyTorch reference), which is how the fallback path is tested.
"""
import logging
import os
from typing import FrozenSet, Optional, Tuple

import torch

log = logging.getLogger(__name__)

DISABLE_ENV = "LIGHTFACE_DISABLE_EXTENSION"

__all__ = ["HAS_OPS", "LOAD_ERROR", "KERNEL_DEVICES", "DISABLE_ENV"]


def _load() -> Tuple[bool, Optional[str]]:
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False, f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    try:
        from lightface import _C  # noqa: F401  (loading registers torch.ops.lightface.*)
    except (ImportError, OSError) as exc:
        return False, f"import lightface._C failed: {exc}"
    if not hasattr(torch.ops.lightface, "_mfm_forward"):
        return False, "lightface._C is stale (ops missing); rebuild it"
    return True, None


HAS_OPS, LOAD_ERROR = _load()


def _kernel_devices() -> FrozenSet[str]:
    if not HAS_OPS:
        return frozenset()
    devices = {"cpu", "meta"}
    if torch._C._dispatch_has_kernel_for_dispatch_key("lightface::mfm", "CUDA"):
        devices.add("cuda")
    return frozenset(devices)


# Device types the compiled library serves ("meta" through the fake kernels).
KERNEL_DEVICES = _kernel_devices()

if HAS_OPS:
    log.debug("lightface._C loaded; kernels for %s", sorted(KERNEL_DEVICES))
else:
    log.debug("lightface._C not loaded: %s", LOAD_ERROR)


# ---- fake kernels -------------------------------------------------------------------------


def _resized(shape, dim: int, size) -> list:
    out = list(shape)
    out[dim] = size
    return out


def _register_fakes() -> None:
    @torch.library.register_fake("lightface::mfm")
    def _mfm_fake(x, dim=1):
        d = dim % x.dim()
        return x.new_empty(_resized(x.shape, d, x.shape[d] // 2))

    @torch.library.register_fake("lightface::_mfm_forward")
    def _mfm_forward_fake(x, dim):
        d = dim % x.dim()
        shape = _resized(x.shape, d, x.shape[d] // 2)
        return x.new_empty(shape), x.new_empty(shape, dtype=torch.uint8)

    @torch.library.register_fake("lightface::_mfm_backward")
    def _mfm_backward_fake(grad, mask, dim):
        d = dim % grad.dim()
        return grad.new_empty(_resized(grad.shape, d, grad.shape[d] * 2))

    @torch.library.register_fake("lightface::mfm_3_2")
    def _mfm_3_2_fake(x, dim=1):
        d = dim % x.dim()
        return x.new_empty(_resized(x.shape, d, x.shape[d] // 3 * 2))

    @torch.library.register_fake("lightface::_mfm_3_2_forward")
    def _mfm_3_2_forward_fake(x, dim):
        d = dim % x.dim()
        third = x.shape[d] // 3
        return x.new_empty(_resized(x.shape, d, 2 * third)), x.new_empty(
            _resized(x.shape, d, third), dtype=torch.uint8
        )

    @torch.library.register_fake("lightface::_mfm_3_2_backward")
    def _mfm_3_2_backward_fake(grad, mask, dim):
        d = dim % grad.dim()
        return grad.new_empty(_resized(grad.shape, d, grad.shape[d] // 2 * 3))

    def _loss_fake(img, reduction="mean"):
        return img.new_empty((img.shape[0],) if reduction == "none" else ())

    def _loss_backward_fake(grad, img, reduction):
        return img.new_empty(img.shape)

    torch.library.register_fake("lightface::symmetry_loss")(_loss_fake)
    torch.library.register_fake("lightface::total_variation")(_loss_fake)
    torch.library.register_fake("lightface::_symmetry_loss_backward")(_loss_backward_fake)
    torch.library.register_fake("lightface::_total_variation_backward")(_loss_backward_fake)


# ---- autograd -----------------------------------------------------------------------------
# `_mfm_forward` / `_mfm_3_2_forward` save only their uint8 selection mask. The public
# `mfm` / `mfm_3_2` ops (called directly as torch.ops.lightface.*) save their input and
# recompute the mask in backward; lightface.ops.mfm routes training calls through the
# mask-saving variant.


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


if HAS_OPS:
    _register_fakes()
    _register_autograd()
