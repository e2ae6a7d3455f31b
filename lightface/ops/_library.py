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
  The Autograd kernels of the public ops and of the backward ops run their aten
  formulation under forward-mode AD and ``torch.func`` transforms (:func:`under_transform`),
  which the generated reverse-mode ``autograd.Function`` does not support;
* vmap batching rules (``torch.library.register_vmap``) for the public ops and the MFM
  forward variants.

Setting ``LIGHTFACE_DISABLE_EXTENSION=1`` hides the library (the ops then run the
pure-PyTorch reference), which is how the fallback path is tested.
"""
import importlib.util
import logging
import mmap
import os
import re
from typing import FrozenSet, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import reference

log = logging.getLogger(__name__)

DISABLE_ENV = "LIGHTFACE_DISABLE_EXTENSION"

__all__ = ["HAS_OPS", "LOAD_ERROR", "KERNEL_DEVICES", "DISABLE_ENV", "REBUILD_HINT", "under_transform"]

#: how to get an op library that matches the installed torch
REBUILD_HINT = (
    "rebuild it against the installed torch: in a checkout `make clean build` (or "
    "`python setup.py build_ext --inplace --force`); for an installed wheel, install the lightface wheel "
    "built for this torch, or build one here with `pip install --no-build-isolation --no-deps --force-reinstall "
    "<lightface source folder or sdist>`"
)

# what csrc/lightface.cpp writes into the library: the torch release of the headers it was compiled with
_BUILT_AGAINST = re.compile(rb"lightface\._C built against torch (\d+\.\d+\.\d+)\x00")


def torch_release(version: str) -> str:
    """``"2.13.0+cpu"`` / ``"2.14.0.dev20260101"`` -> ``"2.13.0"`` / ``"2.14.0"``: the release part of
    a torch version, as the C++ headers (``TORCH_VERSION_MAJOR/MINOR/PATCH``) know it."""
    match = re.match(r"\d+\.\d+\.\d+", str(version))
    return match.group(0) if match else str(version)


def built_against_torch(path) -> Optional[str]:
    """The torch release (``"2.13.0"``) whose headers the op library at ``path`` was compiled with, read
    from the file without loading it; None for a library built before lightface recorded it."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:  # CUDA builds are large
        match = _BUILT_AGAINST.search(data)
        return match.group(1).decode() if match else None


def _version_mismatch(path) -> Optional[str]:
    """Why the op library at ``path`` must not be loaded with the installed torch, or None.

    A library compiled against another torch release either fails to load (a missing C++ symbol)
    or, worse, loads and misreads torch's changed data structures: torch keeps its C++ ABI stable
    only for extensions written against its stable ABI, which lightface._C is not.
    """
    try:
        built = built_against_torch(path)
    except (OSError, ValueError):  # unreadable or empty: importing it reports the problem
        return None
    installed = torch_release(torch.__version__)
    if built is None or built == installed:
        return None
    return (f"{path} was compiled against torch {built} but torch {torch.__version__} is installed, so it is "
            f"not loaded (an op library built for another torch release fails to load or computes wrong "
            f"results); {REBUILD_HINT}; or install the torch it was built for (`pip install torch=={built}`)")


def _load() -> Tuple[bool, Optional[str]]:
    """Load the op library unless it is disabled or built for another torch release; ``(loaded, why not)``.

    Ops already in ``torch.ops.lightface`` (the CMake build's library, loaded with
    ``torch.ops.load_library`` before this import) are used as they are: ``lightface._C``
    is then not imported, and may be missing.
    """
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False, f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    if hasattr(torch.ops.lightface, "_mfm_forward"):
        log.debug("lightface ops already registered (torch.ops.load_library); not importing lightface._C")
        return True, None
    spec = importlib.util.find_spec("lightface._C")
    if spec is None or not spec.origin:
        return False, "lightface._C is not built; build it with `make build` (python setup.py build_ext --inplace)"
    mismatch = _version_mismatch(spec.origin)
    if mismatch:
        return False, mismatch
    try:
        from lightface import _C  # noqa: F401  (loading registers torch.ops.lightface.*)
    except (ImportError, OSError) as exc:
        return False, (f"import lightface._C failed: {exc}. If torch was changed since lightface was built, "
                       f"{REBUILD_HINT}")
    if not hasattr(torch.ops.lightface, "_mfm_forward"):
        return False, f"lightface._C is stale (ops missing); {REBUILD_HINT}"
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


def under_transform(*args) -> bool:
    """Whether the tensors among ``args`` are seen by forward-mode AD or a ``torch.func`` transform.

    The compiled ops' autograd is reverse-mode only and not functorch-aware: a forward-mode
    tangent (``torch.autograd.forward_ad``, ``torch.func.jvp``) would be dropped, giving a
    zero tangent, and ``torch.func.grad`` / ``jacrev`` / ``vmap`` refuse the generated
    ``autograd.Function``; such calls run the reference (plain aten ops, which support both).
    ``torch.compile`` evaluates both checks while tracing (no graph break).
    """
    # the condition under which torch.autograd.Function refuses to run without functorch support
    if torch._C._are_functorch_transforms_active():
        return True
    return any(isinstance(a, Tensor) and forward_ad.unpack_dual(a).tangent is not None for a in args)


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


def _check_split(x, dim: int, parts: int, op: str) -> int:
    """The checks of an MFM forward kernel on ``x``; ``dim`` normalised."""
    _check_floating(x, op, "x")
    return _split_dim(x, dim, parts, op)


def _check_mfm_backward(grad, mask, dim: int, parts: int, op: str) -> int:
    """The checks of an MFM backward kernel; ``dim`` normalised."""
    _check_floating(grad, op, "grad")
    torch._check_type(mask.dtype == torch.uint8, lambda: f"{op}: mask must be uint8, got {mask.dtype}")
    torch._check_value(
        grad.device == mask.device, lambda: f"{op}: grad is on {grad.device} but mask is on {mask.device}"
    )
    d = _split_dim(grad, dim, parts - 1, op, "grad")
    _check_mask_shape(grad, mask, d, grad.shape[d] // (parts - 1), op)
    return d


def _loss_backward_checks(op: str):
    """The checks of a loss backward kernel, as a function of (grad, img, reduction)."""

    def check(grad, img, reduction: str) -> None:
        _check_image(img, reduction, op)
        _check_loss_grad(grad, img, reduction, op)

    return check


def _register_fakes() -> None:
    def _mfm_out(x, dim, parts, op):
        d = _check_split(x, dim, parts, op)
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
        d = _check_mfm_backward(grad, mask, dim, parts, op)
        piece = grad.shape[d] // (parts - 1)
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
        check = _loss_backward_checks(op)

        def fake(grad, img, reduction):
            check(grad, img, reduction)
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


# ---- the ops as plain aten ops, for forward-mode AD and torch.func ---------------------------
# The public ops have lightface.ops.reference. The backward ops are written here: linear in
# the incoming gradient (the tangent a forward-over-reverse product pushes through them),
# constant in what routes it (the mask; the image's difference signs, taken without tangent).


def _mfm_backward_reference(grad: Tensor, mask: Tensor, dim: int) -> Tensor:
    """``_mfm_backward`` in aten ops: the gradient to the half the mask selected, 0 to the other."""
    zero = grad.new_zeros(())
    second = mask.bool()
    return torch.cat([torch.where(second, zero, grad), torch.where(second, grad, zero)], dim)


def _mfm_3_2_backward_reference(grad: Tensor, mask: Tensor, dim: int) -> Tensor:
    """``_mfm_3_2_backward`` in aten ops: the max's and the median's gradients to their thirds."""
    zero = grad.new_zeros(())
    grad_max, grad_median = grad.chunk(2, dim)
    imax, imedian = mask & 3, (mask >> 2) & 3
    return torch.cat(
        [torch.where(imax == i, grad_max, torch.where(imedian == i, grad_median, zero)) for i in range(3)], dim
    )


def _sign(d: Tensor) -> Tensor:
    """sign(d) with 0 for NaN, as the kernels (select.h ``sign_of``)."""
    return torch.sign(d).nan_to_num(0.0)


def _loss_pattern(op: str, img: Tensor) -> Tensor:
    """Per image the derivative of the unreduced loss with respect to ``img`` (a pattern of signs)."""
    w = img.shape[-1]
    if op == "symmetry_loss":
        half = w // 2
        s = _sign(img[..., :half] - img[..., w - half:].flip(-1))
        middle = img.new_zeros((*img.shape[:-1], w - 2 * half))
        return torch.cat([s, middle, -s.flip(-1)], -1)
    pad = torch.nn.functional.pad
    dx = _sign(img[..., :, 1:] - img[..., :, :-1])
    dy = _sign(img[..., 1:, :] - img[..., :-1, :])
    return pad(dx, (1, 0)) - pad(dx, (0, 1)) + pad(dy, (0, 0, 1, 0)) - pad(dy, (0, 0, 0, 1))


def _loss_backward_reference(op: str):
    def backward(grad: Tensor, img: Tensor, reduction: str) -> Tensor:
        n, c, h, w = img.shape
        pattern = _loss_pattern(op, forward_ad.unpack_dual(img).primal.detach())
        scale = grad.reshape(-1)  # (N,) for "none", one element otherwise
        if reduction == "mean":
            denominator = n * c * h * _loss_columns(op, w)
            # as the kernel: no term, no gradient (scale 0 instead of 1/0)
            scale = scale / denominator if denominator > 0 else scale * 0
        return (scale.reshape(-1, 1, 1, 1) * pattern).to(img.dtype)

    return backward


# Per op: (the checks of its kernel, its aten formulation).
_REFERENCES = {
    "mfm": (lambda x, dim: _check_split(x, dim, 2, "mfm"), reference.mfm),
    "mfm_3_2": (lambda x, dim: _check_split(x, dim, 3, "mfm_3_2"), reference.mfm_3_2),
    "symmetry_loss": (lambda img, reduction: _check_image(img, reduction, "symmetry_loss"), reference.symmetry_loss),
    "total_variation": (
        lambda img, reduction: _check_image(img, reduction, "total_variation"),
        reference.total_variation,
    ),
    "_mfm_backward": (
        lambda grad, mask, dim: _check_mfm_backward(grad, mask, dim, 2, "mfm_backward"),
        _mfm_backward_reference,
    ),
    "_mfm_3_2_backward": (
        lambda grad, mask, dim: _check_mfm_backward(grad, mask, dim, 3, "mfm_3_2_backward"),
        _mfm_3_2_backward_reference,
    ),
    "_symmetry_loss_backward": (
        _loss_backward_checks("symmetry_loss_backward"),
        _loss_backward_reference("symmetry_loss"),
    ),
    "_total_variation_backward": (
        _loss_backward_checks("total_variation_backward"),
        _loss_backward_reference("total_variation"),
    ),
}

# Library holding the Autograd kernels registered below (kept alive with this module).
_AUTOGRAD_LIB = torch.library.Library("lightface", "FRAGMENT")


def _register_autograd_with_reference(name: str, backward, setup_context) -> None:
    """``torch.library.register_autograd`` for op ``name``, except that a call under forward-mode
    AD or a ``torch.func`` transform (:func:`under_transform`) runs the op's aten formulation
    (``_REFERENCES``), after the kernel's checks, instead of the reverse-mode-only generated
    ``autograd.Function``.

    So ``torch.ops.lightface.mfm`` & co. give the right tangent under ``torch.func.jvp`` /
    ``forward_ad`` (instead of a silent zero) and work under ``torch.func.grad`` / ``jacrev``
    / ``vmap`` (instead of torch's "autograd.Function ... setup_context" error), as the
    ``lightface.ops`` functions do; and the backward ops take a tangent on their incoming
    gradient (forward-over-reverse, e.g. ``gradgradcheck(check_fwd_over_rev=True)``).
    """
    # What torch.library.register_autograd registers (torch >= 2.4), wrapped; private helpers, so a torch
    # without them keeps the plain reverse-mode registration (the lightface.ops functions still take the
    # reference under transforms).
    try:
        from torch._library.autograd import Info, make_autograd_impl
        from torch._library.utils import fill_defaults
    except ImportError:
        torch.library.register_autograd(f"lightface::{name}", backward, setup_context=setup_context)
        return

    op = getattr(torch.ops.lightface, name).default
    generated = make_autograd_impl(op, Info(backward, setup_context))
    check, reference_fn = _REFERENCES[name]

    def autograd_kernel(keyset, *args, **kwargs):
        if under_transform(*args):
            args, kwargs = fill_defaults(op._schema, args, kwargs)  # the dispatcher drops default values
            check(*args, **kwargs)
            return reference_fn(*args, **kwargs)
        return generated(keyset, *args, **kwargs)

    _AUTOGRAD_LIB.impl(name, autograd_kernel, "Autograd", with_keyset=True)


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

    _register_autograd_with_reference("mfm", _mfm_backward, _setup_input)
    _register_autograd_with_reference("mfm_3_2", _mfm_3_2_backward, _setup_input)

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

    _register_autograd_with_reference("_mfm_backward", _mfm_backward_backward, _setup_masked_backward)
    _register_autograd_with_reference("_mfm_3_2_backward", _mfm_3_2_backward_backward, _setup_masked_backward)

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

    _register_autograd_with_reference("symmetry_loss", _symmetry_backward, _setup_loss)
    _register_autograd_with_reference("total_variation", _tv_backward, _setup_loss)

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

    _register_autograd_with_reference(
        "_symmetry_loss_backward",
        _loss_backward_backward("symmetry_loss", ops._symmetry_loss_backward),
        _setup_loss_backward,
    )
    _register_autograd_with_reference(
        "_total_variation_backward",
        _loss_backward_backward("total_variation", ops._total_variation_backward),
        _setup_loss_backward,
    )


# ---- vmap ---------------------------------------------------------------------------------
# Batching rules: the vmapped dimension moves to the front and becomes part of the batch the
# kernels already loop over (MFM: one more leading dimension; the losses: more images), so
# torch.func.vmap runs one kernel call instead of torch's per-sample loop (which warns).


def _logical(x: Tensor, bdim: int) -> Tensor:
    """A meta tensor of the per-sample shape of ``x`` batched along ``bdim`` (for the checks)."""
    shape = list(x.shape)
    del shape[bdim]
    return torch.empty(shape, dtype=x.dtype, device="meta")


def _register_vmap() -> None:
    ops = torch.ops.lightface

    def split_rule(name: str, parts: int, public: str):
        op = getattr(ops, name)

        def rule(info, in_dims, x, dim=1):
            bdim = in_dims[0]
            if bdim is None:  # not batched (a tensor of the closure)
                out = op(x, dim)
                return out, (None, None) if isinstance(out, tuple) else None
            d = _check_split(_logical(x, bdim), dim, parts, public)
            out = op(x.movedim(bdim, 0), d + 1)
            return out, (0, 0) if isinstance(out, tuple) else 0

        torch.library.register_vmap(f"lightface::{name}", rule)

    split_rule("mfm", 2, "mfm")
    split_rule("_mfm_forward", 2, "mfm")
    split_rule("mfm_3_2", 3, "mfm_3_2")
    split_rule("_mfm_3_2_forward", 3, "mfm_3_2")

    def loss_rule(name: str):
        op = getattr(ops, name)

        def rule(info, in_dims, img, reduction="mean"):
            bdim = in_dims[0]
            if bdim is None:
                return op(img, reduction), None
            _check_image(_logical(img, bdim), reduction, name)
            img = img.movedim(bdim, 0)
            b, n, c, h, w = img.shape
            # per-image sums as the kernel accumulates them (float32, float64 for float64)
            acc = torch.float64 if img.dtype == torch.float64 else torch.float32
            per_image = op(img.reshape(b * n, c, h, w).to(acc), "none").reshape(b, n)
            if reduction == "none":
                return per_image.to(img.dtype), 0
            total = per_image.to(torch.float64).sum(1)
            if reduction == "mean":
                total = total / (n * c * h * _loss_columns(name, w))  # 0/0 -> NaN, as the kernel
            return total.to(img.dtype), 0

        torch.library.register_vmap(f"lightface::{name}", rule)

    loss_rule("symmetry_loss")
    loss_rule("total_variation")


if HAS_OPS:
    _register_fakes()
    _register_autograd()
    if hasattr(torch.library, "register_vmap"):  # torch >= 2.5; else torch's per-sample vmap fallback runs
        _register_vmap()
