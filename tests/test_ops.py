"""Fused ops (lightface.ops) against the pure-PyTorch reference, on CPU and (marked) CUDA."""
import warnings

import pytest
import torch
from torch.library import opcheck

from lightface import ops
from lightface.ops import reference

from conftest import DEVICES

pytestmark = pytest.mark.skipif(not ops.extension_available(), reason="lightface._C is not built (make build)")

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
REDUCTIONS = ["none", "sum", "mean"]
LOSSES = {"symmetry": (ops.symmetry_loss, reference.symmetry_loss), "tv": (ops.total_variation, reference.total_variation)}
LOSS_TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-12}
# the integer dtype of each float dtype's bits (bit-for-bit comparisons, signed zeros included)
INT_OF = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}


def _noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """Same values as ``t`` with a different (non-contiguous) memory layout."""
    out = torch.empty(t.shape[::-1], dtype=t.dtype, device=t.device).permute(*reversed(range(t.dim())))
    out.copy_(t)
    assert not out.is_contiguous() or t.dim() < 2
    return out


def _inputs(shape, dtype, device, contiguous, uniform=False):
    x = (torch.rand if uniform else torch.randn)(shape, dtype=torch.float64).to(dtype=dtype, device=device)
    return x if contiguous else _noncontiguous(x)


def _grad(fn, x, seed_grad=None):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    g = torch.randn(y.shape, dtype=torch.float64).to(y) if seed_grad is None else seed_grad
    y.backward(g)
    return y.detach(), x.grad


# ---- MFM --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("dim", [1, -1, 0])
def test_mfm_matches_reference(device, dtype, contiguous, dim):
    _check_mfm(_inputs((2, 6, 10, 12), dtype, device, contiguous), dim)


def test_mfm_matches_reference_across_parallel_chunks():
    # 84000 elements: several at::parallel_for chunks, with chunk borders inside rows.
    for dim in (1, 3):
        _check_mfm(torch.randn(4, 6, 70, 50), dim)


def _check_mfm(x, dim):
    dtype, device = x.dtype, x.device
    g = torch.randn(reference.mfm(x, dim).shape, dtype=torch.float64).to(dtype=dtype, device=device)
    y, gx = _grad(lambda t: ops.mfm(t, dim), x, g)
    y_ref, gx_ref = _grad(lambda t: reference.mfm(t, dim), x, g)
    assert y.dtype == dtype and y.is_contiguous()
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("dim", [1, -1])
def test_mfm_3_2_matches_reference(device, dtype, contiguous, dim):
    # Small integer values give many ties between the thirds.
    x = torch.randint(-2, 3, (3, 9, 20, 12)).to(dtype=dtype, device=device)
    x = x if contiguous else _noncontiguous(x)
    g = torch.randn(reference.mfm_3_2(x, dim).shape, dtype=torch.float64).to(dtype=dtype, device=device)
    y, gx = _grad(lambda t: ops.mfm_3_2(t, dim), x, g)
    y_ref, gx_ref = _grad(lambda t: reference.mfm_3_2(t, dim), x, g)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mfm_16_bit_kernels_select_like_the_reference_for_every_bit_pattern(dtype):
    """float16 / bfloat16 compare integer keys made from the bits: the same selections (bit for bit,
    masks and gradients included) as the reference's float comparisons, for all 65536 patterns
    (NaNs of both signs, infinities, subnormals, -0 vs +0) against special and random values."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), -float("inf"), float("nan"), 2.0**-20,
                            -(2.0**-20), 6.0e4, -6.0e4], dtype=dtype)
    special = torch.cat([special, -special[6:7]])  # a negative NaN
    every = bits.view(dtype)
    others = torch.cat([special.repeat_interleave(len(every) // len(special) + 1)[: len(every)],
                        every[torch.randperm(len(every))]])
    pairs = torch.stack([every.repeat(2), others]).reshape(2, 2, -1).transpose(0, 1)  # (2, 2, 65536)
    out, mask = torch.ops.lightface._mfm_forward(pairs, 1)
    assert torch.equal(out.view(torch.int16), reference.mfm(pairs, 1).view(torch.int16))
    triples = torch.stack([every, others[: len(every)], others[len(every):]]).reshape(1, 3, -1)
    for t in (triples, triples[:, [1, 0, 2]], triples[:, [2, 1, 0]]):
        assert torch.equal(ops.mfm_3_2(t).view(torch.int16), reference.mfm_3_2(t).view(torch.int16))
    g = torch.randn(out.shape).to(dtype)
    _, gx = _grad(lambda t: ops.mfm(t), pairs, g)
    _, gx_ref = _grad(lambda t: reference.mfm(t, 1), pairs, g)
    assert torch.equal(gx.view(torch.int16), gx_ref.view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mfm_3_2_kernels_select_like_the_reference_on_special_values(dtype):
    """The CPU MFM 3/2 kernels compare integer keys of the float32 / float64 bits (so the loops
    vectorise): the same maxima, medians, masks and gradients (bit for bit) as the reference's float
    comparisons on every ordered triple of special values (NaNs of both signs, infinities, -0 vs +0,
    subnormals, ties) and on random triples, at lengths with vector tails."""
    tiny = torch.finfo(dtype).tiny
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), -float("inf"), float("nan"), -float("nan"),
                            tiny / 4, -tiny / 4, tiny, torch.finfo(dtype).max, -torch.finfo(dtype).max, 1.0],
                           dtype=dtype)
    k = len(special)
    i, j, l = torch.meshgrid(torch.arange(k), torch.arange(k), torch.arange(k), indexing="ij")
    triples = torch.stack([special[i.flatten()], special[j.flatten()], special[l.flatten()]])  # (3, k**3)
    for n in (k**3, 1, 7, 33):
        x = triples[:, :n].reshape(1, 3, n) if n == k**3 else torch.randn(2, 3, n, dtype=dtype)
        g = torch.randn(x.shape[0], 2, n, dtype=dtype)
        y, gx = _grad(lambda t: ops.mfm_3_2(t), x, g)
        y_ref, gx_ref = _grad(lambda t: reference.mfm_3_2(t, 1), x, g)
        int_type = torch.int32 if dtype == torch.float32 else torch.int64
        assert torch.equal(y.view(int_type), y_ref.view(int_type))
        assert torch.equal(gx.view(int_type), gx_ref.view(int_type))


def test_reference_mfm_3_2_equals_stable_sort():
    """The sort-free reference agrees with the definition: stable descending sort of the thirds."""
    x = torch.randint(-1, 2, (5, 30, 7)).float()
    x[0, :3] = float("nan")
    x[1, 10:12] = float("nan")
    ordered, _ = torch.sort(torch.stack(x.chunk(3, dim=1)), dim=0, descending=True, stable=True)
    expected = torch.cat([ordered[0], ordered[1]], dim=1)
    torch.testing.assert_close(reference.mfm_3_2(x), expected, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_mfm_hand_computed_and_tie_rule(device):
    x = torch.tensor([[1.0, 5.0, 2.0, 3.0, 5.0, 2.0]], device=device, requires_grad=True)  # halves [1,5,2] [3,5,2]
    y = ops.mfm(x)
    assert y.tolist() == [[3.0, 5.0, 2.0]]
    y.backward(torch.tensor([[10.0, 20.0, 30.0]], device=device))
    # 3 > 1: second half; ties (5 == 5, 2 == 2): the first half (the paper's eq. 2).
    assert x.grad.tolist() == [[0.0, 20.0, 30.0, 10.0, 0.0, 0.0]]


@pytest.mark.parametrize("device", DEVICES)
def test_mfm_3_2_hand_computed_and_ties(device):
    # thirds: [1, 4, 7], [9, 4, 7], [5, 4, 8]
    x = torch.tensor([[1.0, 4.0, 7.0, 9.0, 4.0, 7.0, 5.0, 4.0, 8.0]], device=device, requires_grad=True)
    y = ops.mfm_3_2(x)
    assert y.tolist() == [[9.0, 4.0, 8.0, 5.0, 4.0, 7.0]]
    y.backward(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], device=device))
    # column 1 all tied: max -> first third, median -> second; column 2: max third 3, median tie -> first.
    assert x.grad.tolist() == [[0.0, 2.0, 6.0, 1.0, 5.0, 0.0, 4.0, 0.0, 3.0]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_mfm_nan_propagates(device, dtype):
    nan = float("nan")
    x = torch.tensor([[nan, 1.0, nan, 2.0, 3.0, nan, nan, 2.0]], dtype=dtype, device=device, requires_grad=True)
    y = ops.mfm(x)  # pairs (nan, 3) (1, nan) (nan, nan) (2, 2)
    assert torch.isnan(y[0, :3]).all() and y[0, 3].item() == 2.0
    y.backward(torch.ones_like(y))
    assert x.grad.tolist() == [[1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]]
    z = ops.mfm_3_2(torch.tensor([[1.0, nan, 3.0, 2.0, 5.0, nan]], dtype=dtype, device=device))  # max, median
    assert torch.isnan(z[0]).tolist() == [False, True, False, True] and z[0, 0].item() == 5.0 and z[0, 2].item() == 3.0


@pytest.mark.parametrize("device", DEVICES)
def test_mfm_saves_one_byte_mask_per_output(device):
    """Backward memory: the autograd graph keeps a uint8 mask of the output's shape, not the input."""
    x = torch.randn(4, 32, 8, 8, device=device, requires_grad=True)
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = ops.mfm(x)
        z = ops.mfm_3_2(torch.randn(4, 48, 8, 8, device=device, requires_grad=True))
    assert saved == [(torch.uint8, y.numel()), (torch.uint8, z.numel() // 2)]


# ---- losses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("contiguous", [True, False])
def test_losses_match_reference(device, dtype, reduction, loss, contiguous):
    # W = 37: odd width and vector tails.
    _check_loss(loss, _inputs((2, 3, 10, 37), dtype, device, contiguous, uniform=True), reduction)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_match_reference_across_row_blocks(loss):
    # C*H = 600 rows of 37 pixels: several row blocks (and threads) per image.
    for reduction in REDUCTIONS:
        _check_loss(loss, torch.rand(3, 3, 200, 37), reduction)


def _check_loss(loss, x, reduction):
    fn, ref = LOSSES[loss]
    dtype, device = x.dtype, x.device
    seed = torch.randn(x.shape[0] if reduction == "none" else (), dtype=torch.float64).to(dtype=dtype, device=device)
    y, gx = _grad(lambda t: fn(t, reduction), x, seed)
    y_ref, gx_ref = _grad(lambda t: ref(t, reduction), x, seed)
    assert y.dtype == dtype and y.shape == y_ref.shape
    tol = LOSS_TOL[dtype]
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    # d|d|/dd is a sign: the gradients agree exactly up to the final scaling's rounding.
    torch.testing.assert_close(gx, gx_ref, rtol=tol, atol=tol * float(seed.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_symmetry_backward_16_bit_kernel_for_every_bit_pattern(dtype):
    """The float16 / bfloat16 symmetry backward signs integer keys of the bits: bit for bit (signed
    zeros included) half(sign(float(a) - float(b)) * weight) (sign 0 for NaN), for all 65536
    patterns against special and random values, with negative, tiny and infinite weights."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    every = bits.view(dtype)
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), -float("inf"), float("nan"), 2.0**-20], dtype=dtype)
    for others in (special.repeat(len(every) // len(special)), every[torch.randperm(len(every))]):
        img = torch.stack([every, torch.zeros_like(every), others], -1).reshape(4, 2, 8192, 3)  # rows [a, 0, b]
        left, right = img[..., 0].float(), img[..., 2].float()
        for reduction, value in (("none", -3.0), ("sum", 2.0**-10), ("mean", 1.0), ("sum", float("inf"))):
            grad = torch.full((4,) if reduction == "none" else (), value, dtype=dtype)
            weight = grad.float().reshape(-1, 1, 1) / (img[..., 0].numel() if reduction == "mean" else 1)
            s = torch.sign(left - right).nan_to_num(0.0) * weight
            expected = torch.stack([s, torch.zeros_like(s), -s], -1).to(dtype)
            got = torch.ops.lightface._symmetry_loss_backward(grad, img, reduction)
            nan = expected.isnan()  # 0 * inf: any NaN (c10 and torch round NaN payloads differently)
            assert torch.equal(got.isnan(), nan)
            assert torch.equal(got.view(torch.int16)[~nan], expected.view(torch.int16)[~nan])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 2, 128, 256), (1, 3, 5, 37), (2, 1, 1, 9), (1, 2, 6, 1), (1, 1, 3, 2)])
def test_total_variation_backward_16_bit_kernel_for_every_bit_pattern(dtype, shape):
    """The float16 / bfloat16 TV backward signs integer keys of the bits: bit for bit (signed zeros
    included) half((sign(c - left) - sign(right - c) + sign(c - up) - sign(down - c)) * weight)
    (sign 0 for NaN, a missing neighbour at the border is the pixel itself), on every one of the
    65536 patterns among special values, with negative, tiny and infinite weights, odd sizes."""
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), -float("inf"), float("nan"), 2.0**-20], dtype=dtype)
    pool = torch.cat([every, special.repeat(len(every) // len(special))])
    n = torch.Size(shape).numel()
    img = pool[torch.randperm(len(pool))[:n]].reshape(shape) if n <= len(pool) else pool[torch.randint(len(pool), shape)]
    if shape == (2, 2, 128, 256):  # holds all 65536 patterns (and as many specials)
        img = pool[torch.randperm(len(pool))].reshape(shape)
    c = img.float()
    padded = torch.nn.functional.pad(c.flatten(0, 1)[:, None], (1, 1, 1, 1), mode="replicate")[:, 0].unflatten(0, shape[:2])

    def sign(d):
        return torch.sign(d).nan_to_num(0.0)

    s = (sign(c - padded[..., 1:-1, :-2]) - sign(padded[..., 1:-1, 2:] - c)
         + sign(c - padded[..., :-2, 1:-1]) - sign(padded[..., 2:, 1:-1] - c))
    for reduction, value in (("none", -3.0), ("sum", 2.0**-10), ("mean", 1.0), ("sum", float("inf"))):
        grad = torch.full((shape[0],) if reduction == "none" else (), value, dtype=dtype)
        weight = (grad.double().reshape(-1, 1, 1, 1) / (n if reduction == "mean" else 1)).float()  # as the kernel
        expected = (s * weight).to(dtype)
        got = torch.ops.lightface._total_variation_backward(grad, img, reduction)
        nan = expected.isnan()  # 0 * inf: any NaN (c10 and torch round NaN payloads differently)
        assert torch.equal(got.isnan(), nan)
        assert torch.equal(got.view(torch.int16)[~nan], expected.view(torch.int16)[~nan])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_backward_weight_is_rounded_once(device, dtype):
    """A loss gradient is the image's pattern of signs times one weight per image: grad * (1 / count) for
    "mean" (grad for "sum" / "none") computed in float64 and rounded once to the accumulation type, on every
    device. The CUDA kernels multiplied the grad and the scale each rounded to float32 first, which differs in
    the last bit for these weights (and about a third of all); the symmetry loss' middle column (odd width) is
    +0 for a negative weight too, as on the CPU."""
    img = torch.rand(3, 3, 65, 33, dtype=torch.float64).to(dtype=dtype, device=device)
    lf = torch.ops.lightface
    for name, backward in (("symmetry", lf._symmetry_loss_backward), ("tv", lf._total_variation_backward)):
        count = img[..., : img.shape[-1] // 2].numel() if name == "symmetry" else img.numel()
        signs = backward(torch.ones(3, dtype=dtype, device=device), img, "none").cpu()  # weight 1: the pattern
        for reduction in REDUCTIONS:
            for value in (1.61, 2.49, -1.5):
                grad = torch.full((3,) if reduction == "none" else (), value, dtype=dtype)
                weight = (grad.double() * (1.0 / count if reduction == "mean" else 1.0)).to(dtype)
                got = backward(grad.to(device), img, reduction).cpu()
                assert torch.equal(got, signs * weight.reshape(-1, 1, 1, 1)), (name, reduction, value)
                if name == "symmetry":  # the middle column: +0 whatever the weight
                    assert not got[..., 16].view(INT_OF[dtype]).any()


@pytest.mark.parametrize("device", DEVICES)
def test_losses_hand_computed(device):
    img = torch.tensor([[[[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]]]], device=device)  # (1, 1, 2, 3)
    # symmetry: |1-4| + |0-3| = 6 over N*C*H*floor(W/2) = 2 terms
    assert ops.symmetry_loss(img, "sum").item() == 6.0
    assert ops.symmetry_loss(img).item() == 3.0
    # tv: horizontal 1+2 + 0+3, vertical 1+2+1 -> 10 over 6 pixels
    assert ops.total_variation(img, "sum").item() == 10.0
    assert ops.total_variation(img).item() == pytest.approx(10.0 / 6.0)
    constant = torch.full((2, 3, 5, 6), 0.7, device=device)
    assert ops.symmetry_loss(constant, "none").tolist() == [0.0, 0.0]
    assert ops.total_variation(constant, "none").tolist() == [0.0, 0.0]


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_batched_equals_per_item(loss):
    fn, _ = LOSSES[loss]
    x = torch.rand(4, 3, 16, 15)
    per_item = torch.stack([fn(x[i : i + 1], "none")[0] for i in range(4)])
    torch.testing.assert_close(fn(x, "none"), per_item, rtol=1e-6, atol=0)
    torch.testing.assert_close(fn(x, "sum"), per_item.sum(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_nan_propagates(device, loss):
    fn, ref = LOSSES[loss]
    x = torch.rand(2, 1, 4, 4, device=device)
    x[1, 0, 1, 0] = float("nan")
    y = fn(x, "none")
    assert not torch.isnan(y[0]) and torch.isnan(y[1])
    assert torch.isnan(fn(x)) and torch.isnan(fn(x, "sum"))
    _, g = _grad(lambda t: fn(t, "sum"), x, torch.tensor(1.0, device=device))
    _, g_ref = _grad(lambda t: ref(t, "sum"), x, torch.tensor(1.0, device=device))
    torch.testing.assert_close(g, g_ref, equal_nan=True)  # sign(NaN) = 0, as in torch


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    assert ops.mfm(torch.empty(0, 4, 3, device=device)).shape == (0, 2, 3)
    assert ops.mfm_3_2(torch.empty(2, 0, 3, device=device)).shape == (2, 0, 3)
    x = torch.empty(0, 6, 5, device=device, requires_grad=True)
    ops.mfm(x).sum().backward()
    assert x.grad.shape == x.shape
    for fn, ref in LOSSES.values():
        for shape in [(0, 3, 4, 4), (2, 0, 4, 4), (2, 3, 0, 4)]:
            img = torch.empty(shape, device=device)
            assert fn(img, "none").shape == (shape[0],)
            assert fn(img, "sum").item() == 0.0
            assert torch.isnan(fn(img, "mean")) and torch.isnan(ref(img, "mean"))  # 0 / 0, like torch.mean
    # One column: no symmetric pair, so the mean over zero terms is NaN and the gradient 0.
    one_col = torch.rand(2, 3, 4, 1, device=device, requires_grad=True)
    assert ops.symmetry_loss(one_col, "sum").item() == 0.0
    assert torch.isnan(ops.symmetry_loss(one_col))
    ops.symmetry_loss(one_col, "sum").backward()
    assert one_col.grad.abs().sum().item() == 0.0


def test_losses_deterministic_across_thread_counts():
    x = torch.rand(3, 3, 300, 64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [ops.symmetry_loss(x, "none"), ops.total_variation(x, "none")]
        torch.set_num_threads(max(threads, 2))
        many = [ops.symmetry_loss(x, "none"), ops.total_variation(x, "none")]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


def test_parallel_for_uses_threads():
    """-fopenmp reached the extension: at::parallel_for inside it runs on several threads."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.ops.lightface._parallel_threads() == 2
    finally:
        torch.set_num_threads(threads)


# ---- autograd, opcheck, compile ---------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device):
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(2, 6, 2, 4, **kw)
    assert torch.autograd.gradcheck(lambda t: ops.mfm(t, 1), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.mfm(t, -1), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.mfm_3_2(t, 1), (x,))
    # the public ops called directly (they save the input and recompute the mask)
    assert torch.autograd.gradcheck(lambda t: torch.ops.lightface.mfm(t, 1), (x,))
    assert torch.autograd.gradcheck(lambda t: torch.ops.lightface.mfm_3_2(t, 1), (x,))
    img = torch.randn(2, 2, 4, 5, **kw)
    for fn, _ in LOSSES.values():
        for reduction in REDUCTIONS:
            assert torch.autograd.gradcheck(lambda t: fn(t, reduction), (img,), fast_mode=True)


# ---- double backward (gradient penalties through the ops) ------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck_float64(device):
    """Second derivatives: exact for the grad_output path, 0 (a.e.) for the input path."""
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(2, 6, 2, 4, **kw)  # continuous values: no ties within the finite-difference step
    lf = torch.ops.lightface
    for fn in (
        lambda t: ops.mfm(t, 1),
        lambda t: ops.mfm(t, -1),
        lambda t: ops.mfm_3_2(t, 1),
        lambda t: lf.mfm(t, 1),  # the public ops called directly (save x, recompute the mask)
        lambda t: lf.mfm_3_2(t, 1),
    ):
        assert torch.autograd.gradgradcheck(fn, (x,))
    img = torch.randn(2, 2, 4, 5, **kw)
    for fn, _ in LOSSES.values():
        for reduction in REDUCTIONS:
            assert torch.autograd.gradgradcheck(lambda t: fn(t, reduction), (img,))


def _second_order(fn, x, v, w):
    """grad_x(<fn(x), w>) with create_graph, then the gradients of <that, v> w.r.t. x and w."""
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(fn(x), x, w, create_graph=True)
    gx2, gw = torch.autograd.grad(gx, (x, w), v, allow_unused=True)
    return gx.detach(), torch.zeros_like(x) if gx2 is None else gx2, gw


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_matches_reference(device):
    kw = dict(dtype=torch.float64, device=device)
    x = torch.randn(3, 12, 5, 4, **kw)
    cases = [
        (lambda t: ops.mfm(t, 1), lambda t: reference.mfm(t, 1), x),
        (lambda t: ops.mfm(t, 2), lambda t: reference.mfm(t, 2), x[:, :, :4]),
        (lambda t: ops.mfm_3_2(t, 1), lambda t: reference.mfm_3_2(t, 1), x),
        (lambda t: torch.ops.lightface.mfm(t, 1), lambda t: reference.mfm(t, 1), x),
        (lambda t: torch.ops.lightface.mfm_3_2(t, 1), lambda t: reference.mfm_3_2(t, 1), x),
    ]
    img = torch.rand(3, 2, 6, 7, **kw)
    for fn, ref in LOSSES.values():
        for reduction in REDUCTIONS:
            cases.append((lambda t, fn=fn, r=reduction: fn(t, r), lambda t, ref=ref, r=reduction: ref(t, r), img))
    for fn, ref, inp in cases:
        w = torch.randn(ref(inp).shape, **kw)
        v = torch.randn(inp.shape, **kw)
        with warnings.catch_warnings():
            # the silent-drop case: torch's fallback only warns for an op without autograd
            warnings.filterwarnings("error", message=".*autograd kernel was not registered.*")
            got = _second_order(fn, inp, v, w)
        expected = _second_order(ref, inp, v, w)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_penalty_through_mfm_critic_matches_reference(device):
    """R1 / WGAN-GP style: the penalty's gradient w.r.t. the critic's weights keeps every term."""
    torch.manual_seed(0)
    from lightface import nn as lnn

    critic = torch.nn.Sequential(
        lnn.MFMConv2d(3, 4, 3, 1, 1), lnn.MFMConv2d3_2(4, 4, 3, 2, 1), torch.nn.Flatten(), lnn.MFMLinear(64, 1)
    ).to(device=device, dtype=torch.float64)
    img = torch.rand(2, 3, 8, 8, dtype=torch.float64, device=device)

    def penalty_grads():
        critic.zero_grad()
        x = img.clone().requires_grad_(True)
        score = critic(x).sum() + ops.total_variation(x) + ops.symmetry_loss(x, "sum")
        (g,) = torch.autograd.grad(score, x, create_graph=True)
        g.square().sum().backward()
        # piecewise linear: the biases do not move the gradient w.r.t. the input (no or zero grad)
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in critic.parameters()]

    fused = penalty_grads()
    with ops.use_reference():
        expected = penalty_grads()
    weights = [e for e, p in zip(expected, critic.parameters()) if p.dim() > 1]
    assert len(weights) == 3 and all(e.abs().sum() > 0 for e in weights)  # second-order terms reach every weight
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---- forward-mode AD and torch.func transforms (run by the reference) --------------------------


def _public_ops():
    return {
        "mfm": (lambda t: ops.mfm(t), lambda t: reference.mfm(t, 1)),
        "mfm_3_2": (lambda t: ops.mfm_3_2(t[:, :6]), lambda t: reference.mfm_3_2(t[:, :6], 1)),
        "symmetry": (lambda t: ops.symmetry_loss(t, "none"), lambda t: reference.symmetry_loss(t, "none")),
        "tv": (lambda t: ops.total_variation(t), lambda t: reference.total_variation(t, "mean")),
    }


@pytest.mark.parametrize("kind", ["public", "raw"])
@pytest.mark.parametrize("name", sorted(_public_ops()))
def test_forward_mode_ad_matches_reference(kind, name):
    """torch.func.jvp and torch.autograd.forward_ad get the reference's tangent, through lightface.ops
    (public) and torch.ops.lightface.* (raw) alike (the compiled ops' autograd is reverse-mode only: the
    tangent used to be dropped, a silent zero JVP under jvp and None under forward_ad)."""
    import torch.autograd.forward_ad as fwAD

    fn, ref = (_public_ops() if kind == "public" else _raw_ops())[name]
    x, v = torch.randn(2, 8, 4, 5, dtype=torch.float64), torch.randn(2, 8, 4, 5, dtype=torch.float64)
    out, tangent = torch.func.jvp(fn, (x,), (v,))
    out_ref, tangent_ref = torch.func.jvp(ref, (x,), (v,))
    assert tangent_ref.abs().sum() > 0
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(tangent, tangent_ref)
    with fwAD.dual_level():
        dual_tangent = fwAD.unpack_dual(fn(fwAD.make_dual(x, v))).tangent
    assert dual_tangent is not None
    torch.testing.assert_close(dual_tangent, tangent_ref)


def test_func_transforms_match_reference():
    """torch.func.grad / jacrev / vmap(grad) (per-sample gradients) work and agree with the reference
    (the compiled ops' autograd is not functorch-aware: they used to raise an autograd.Function error)."""
    from lightface.nn import MFMLinear

    img = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    for name, (fn, ref) in _public_ops().items():
        x = img if name in ("symmetry", "tv") else torch.randn(2, 8, 3, dtype=torch.float64)
        torch.testing.assert_close(torch.func.grad(lambda t: fn(t).square().sum())(x),
                                   torch.func.grad(lambda t: ref(t).square().sum())(x))
        torch.testing.assert_close(torch.func.jacrev(fn)(x), torch.func.jacrev(ref)(x))

    model = MFMLinear(10, 4).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    xb = torch.randn(5, 10, dtype=torch.float64)

    def loss(p, sample):
        return torch.func.functional_call(model, p, (sample[None],)).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xb)
    for i in range(len(xb)):
        model.zero_grad()
        model(xb[i:i + 1]).square().sum().backward()
        for k, p in model.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad)


def _raw_ops():
    """The public ops called as torch.ops.lightface.* (defaults left to the schema), with their references."""
    lf = torch.ops.lightface
    return {
        "mfm": (lambda t: lf.mfm(t), lambda t: reference.mfm(t, 1)),
        "mfm_3_2": (lambda t: lf.mfm_3_2(t[:, :6], 1), lambda t: reference.mfm_3_2(t[:, :6], 1)),
        "symmetry": (lambda t: lf.symmetry_loss(t, "none"), lambda t: reference.symmetry_loss(t, "none")),
        "tv": (lambda t: lf.total_variation(t), lambda t: reference.total_variation(t, "mean")),
    }


def test_raw_ops_under_func_transforms_match_reference():
    """torch.ops.lightface.* work under torch.func.grad / jacrev / hessian and per-sample vmap(grad)
    (they used to raise torch's "autograd.Function ... must override the setup_context" error),
    and still reject what the kernels reject."""
    lf = torch.ops.lightface
    img = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    for name, (fn, ref) in _raw_ops().items():
        x = img if name in ("symmetry", "tv") else torch.randn(2, 8, 3, dtype=torch.float64)
        torch.testing.assert_close(torch.func.grad(lambda t: fn(t).square().sum())(x),
                                   torch.func.grad(lambda t: ref(t).square().sum())(x))
        torch.testing.assert_close(torch.func.jacrev(fn)(x), torch.func.jacrev(ref)(x))
    w, xb = torch.randn(6, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)

    def loss(w, x, mfm_3_2):
        return mfm_3_2(x @ w, 0).square().sum()

    torch.testing.assert_close(torch.func.hessian(loss)(w, xb[0], lf.mfm_3_2),
                               torch.func.hessian(loss)(w, xb[0], reference.mfm_3_2))
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, None))(w, xb, lf.mfm_3_2),
                               torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, None))(w, xb, reference.mfm_3_2))
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    compiled = torch.compile(torch.func.grad(lambda t: lf.mfm(t).square().sum()), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), torch.func.grad(lambda t: reference.mfm(t, 1).square().sum())(x))
    with pytest.raises(ValueError, match=r"mfm: x.size\(1\) must be divisible by 2"):
        torch.func.grad(lambda t: lf.mfm(t).sum())(torch.randn(2, 5))
    with pytest.raises(ValueError, match="total_variation: img must be a 4-D tensor"):
        torch.func.jvp(lf.total_variation, (torch.randn(2, 5),), (torch.randn(2, 5),))


def _backward_op_samples():
    """(backward op, grad, the other arguments) for every backward op: masks from the forward
    kernels, images with ties, NaN, an odd width, W = 1 / H = 1, an empty batch."""
    lf = torch.ops.lightface
    x = torch.randn(3, 12, 5, dtype=torch.float64)
    x[0, 0, 0] = x[0, 6, 0]  # a tie
    x[1, 2, 3] = float("nan")
    samples = []
    for forward, backward, dim in ((lf._mfm_forward, lf._mfm_backward, 1), (lf._mfm_3_2_forward, lf._mfm_3_2_backward, -2)):
        out, mask = forward(x, dim)
        samples.append((backward, torch.randn_like(out), (mask, dim)))
    for shape in ((2, 3, 4, 7), (2, 1, 5, 1), (2, 2, 1, 6), (0, 3, 4, 4)):
        img = torch.randint(0, 3, shape).double()  # many equal neighbours: sign 0
        if img.numel():
            img[0, 0, 0, 0] = float("nan")
        for backward in (lf._symmetry_loss_backward, lf._total_variation_backward):
            for reduction in REDUCTIONS:
                grad = torch.randn(shape[0] if reduction == "none" else (), dtype=torch.float64)
                samples.append((backward, grad, (img, reduction)))
    return samples


def test_backward_ops_take_a_forward_mode_tangent():
    """Forward-over-reverse through the fused ops (gradgradcheck(check_fwd_over_rev=True), a
    Hessian-vector product from forward_ad over a backward pass) pushes a tangent through the
    backward ops: it equals the backward op applied to the tangent (each is linear in its grad).
    It used to raise "You must implement the jvp function for custom autograd.Function"."""
    import torch.autograd.forward_ad as fwAD

    for backward, grad, rest in _backward_op_samples():
        tangent = torch.randn_like(grad)
        with fwAD.dual_level():
            primal, out_tangent = fwAD.unpack_dual(backward(fwAD.make_dual(grad, tangent), *rest))
        torch.testing.assert_close(primal, backward(grad, *rest), equal_nan=True)
        torch.testing.assert_close(out_tangent, backward(tangent, *rest), equal_nan=True)
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    img = torch.rand(2, 2, 3, 5, dtype=torch.float64, requires_grad=True)
    for fn, t in ((ops.mfm, x), (ops.mfm_3_2, x), (ops.symmetry_loss, img), (ops.total_variation, img)):
        assert torch.autograd.gradgradcheck(fn, (t,), check_fwd_over_rev=True)


@pytest.fixture
def no_vmap_fallback():
    """torch.func.vmap raises instead of looping over the batch for an op without a batching rule."""
    torch._C._functorch._set_vmap_fallback_enabled(False)
    yield
    torch._C._functorch._set_vmap_fallback_enabled(True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_raw_ops_have_vmap_batching_rules(dtype, no_vmap_fallback):
    """torch.func.vmap over torch.ops.lightface.* runs their batching rules (one kernel call, no
    per-sample loop and its "performance drop" warning) and equals the per-sample results."""
    lf = torch.ops.lightface
    x = torch.randn(3, 4, 6, 5, dtype=torch.float64).to(dtype)
    for in_dim in (0, 2, -1):
        samples = x.unbind(in_dim)
        for dim in (0, 1, -2):
            for op, parts in ((lf.mfm, 2), (lf.mfm_3_2, 3)):
                if samples[0].shape[dim] % parts:
                    continue
                got = torch.func.vmap(lambda t: op(t, dim), in_dims=in_dim)(x)
                assert torch.equal(got, torch.stack([op(s, dim) for s in samples]))
        out, mask = torch.func.vmap(lambda t: lf._mfm_forward(t, -1), in_dims=in_dim)(x.narrow(3, 0, 4))
        expected = [lf._mfm_forward(s, -1) for s in x.narrow(3, 0, 4).unbind(in_dim)]
        assert torch.equal(out, torch.stack([e[0] for e in expected]))
        assert torch.equal(mask, torch.stack([e[1] for e in expected]))
    images = torch.rand(2, 3, 2, 5, 7, dtype=torch.float64).to(dtype)
    for in_dim in (0, 1, 4):
        for op in (lf.symmetry_loss, lf.total_variation):
            for reduction in REDUCTIONS:
                got = torch.func.vmap(lambda t: op(t, reduction), in_dims=in_dim)(images)
                expected = torch.stack([op(s, reduction) for s in images.unbind(in_dim)])
                assert got.dtype == dtype
                torch.testing.assert_close(got, expected, rtol=LOSS_TOL[dtype], atol=LOSS_TOL[dtype])
    with pytest.raises(ValueError, match=r"mfm: x.size\(0\) must be divisible by 2, got x of shape \[3, 5\]"):
        torch.func.vmap(lambda t: lf.mfm(t, 0))(torch.randn(4, 3, 5))
    with pytest.raises(ValueError, match="symmetry_loss: img must be a 4-D tensor"):
        torch.func.vmap(lf.symmetry_loss)(torch.randn(4, 3, 5))


def test_loss_gradient_penalty_reaches_the_weights():
    """A penalty on a loss gradient: d/ds |s * dT/dimg|^2 = 2 s |dT/dimg|^2 (through the backward op)."""
    img = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    for fn, ref in LOSSES.values():
        grads = []
        for f in (fn, ref):
            s = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
            x = img.clone().requires_grad_(True)
            (g,) = torch.autograd.grad((s * f(x, "none")).sum(), x, create_graph=True)
            (gs,) = torch.autograd.grad(g.square().sum(), s)
            grads.append(gs)
        assert grads[1].abs().min() > 0
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)


# ---- fake kernels validate like the real ones -----------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda lf, t: lf.mfm(t(2, 3, 4)), ValueError, r"mfm: x.size\(1\) must be divisible by 2"),
        (lambda lf, t: lf._mfm_forward(t(2, 5), -1), ValueError, "divisible by 2"),
        (lambda lf, t: lf.mfm(t(2, 4), 2), IndexError, r"^mfm: dim 2 is out of range for x of shape \[2, 4\] \(2-D\)$"),
        (lambda lf, t: lf._mfm_3_2_forward(t(2, 3), -3), IndexError, r"^mfm_3_2: dim -3 is out of range for x of shape \[2, 3\]"),
        (lambda lf, t: lf._mfm_backward(t(2, 3), t(2, 3, dtype=torch.uint8), 5), IndexError,
         r"^mfm_backward: dim 5 is out of range for grad of shape \[2, 3\] \(2-D\)$"),
        (lambda lf, t: lf.mfm(t()), ValueError, "at least one dimension"),
        (lambda lf, t: lf.mfm(t(2, 4, dtype=torch.int32)), TypeError, "floating-point"),
        (lambda lf, t: lf.mfm_3_2(t(2, 4, 3)), ValueError, "divisible by 3"),
        (lambda lf, t: lf._mfm_3_2_forward(t(2, 8), 1), ValueError, "divisible by 3"),
        (lambda lf, t: lf._mfm_backward(t(2, 3), t(2, 3), 1), TypeError, "mask must be uint8"),
        (lambda lf, t: lf._mfm_backward(t(2, 3), t(2, 2, dtype=torch.uint8), 1), ValueError, "does not match"),
        (lambda lf, t: lf._mfm_3_2_backward(t(2, 3), t(2, 1, dtype=torch.uint8), 1), ValueError, "divisible by 2"),
        (lambda lf, t: lf.symmetry_loss(t(3, 4, 4)), ValueError, "4-D"),
        (lambda lf, t: lf.total_variation(t(1, 1, 2, 4, 4)), ValueError, "4-D"),
        (lambda lf, t: lf.total_variation(t(1, 1, 4, 4), "max"), ValueError, "unknown reduction 'max'"),
        (lambda lf, t: lf.symmetry_loss(t(1, 1, 4, 4, dtype=torch.int64)), TypeError, "floating-point"),
        (lambda lf, t: lf._symmetry_loss_backward(t(3), t(2, 1, 4, 4), "none"), ValueError, r"shape \(N,\)"),
        (lambda lf, t: lf._total_variation_backward(t(2), t(2, 1, 4, 4), "mean"), ValueError, "one element"),
        (lambda lf, t: lf._total_variation_backward(t(), t(2, 1, 4, 4), "avg"), ValueError, "unknown reduction"),
    ],
)
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_fake_kernels_check_like_the_real_ones(call, error, match, device):
    """The same error type and message from the C++ kernel (cpu) and the fake kernel (meta)."""

    def t(*shape, dtype=torch.float32):
        return torch.zeros(shape, dtype=dtype, device=device)

    with pytest.raises(error, match=match):
        call(torch.ops.lightface, t)


def test_fake_tracing_rejects_what_the_kernels_reject():
    from torch.fx.experimental.proxy_tensor import make_fx

    lf = torch.ops.lightface
    for mode in ("fake", "symbolic"):
        with pytest.raises(ValueError, match="divisible by 2"):
            make_fx(lambda x: lf.mfm(x), tracing_mode=mode)(torch.randn(2, 3))
        with pytest.raises(ValueError, match="divisible by 3"):
            make_fx(lambda x: lf.mfm_3_2(x, -1), tracing_mode=mode)(torch.randn(2, 4))
        with pytest.raises(ValueError, match="4-D"):
            make_fx(lambda x: lf.total_variation(x), tracing_mode=mode)(torch.randn(2, 4, 4))
        # valid inputs still trace, with the right output shapes
        gm = make_fx(lambda x: lf.mfm_3_2(x), tracing_mode=mode)(torch.randn(2, 6, 3))
        assert gm(torch.randn(2, 6, 3)).shape == (2, 4, 3)


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_rejects_odd_channels(dynamic):
    """torch.compile(fullgraph=True) on an odd channel count raises instead of rounding C/2 down."""
    lf = torch.ops.lightface
    raw = torch.compile(lambda x: lf.mfm(x).sum(), fullgraph=True, backend="aot_eager", dynamic=dynamic)
    wrapped = torch.compile(lambda x: ops.mfm(x).sum(), fullgraph=True, backend="aot_eager", dynamic=dynamic)
    third = torch.compile(lambda x: lf.mfm_3_2(x).sum(), fullgraph=True, backend="aot_eager", dynamic=dynamic)
    even = torch.randn(2, 4, 3)
    torch.testing.assert_close(raw(even), ops.mfm(even).sum())
    torch.testing.assert_close(third(even.repeat(1, 3, 1)), ops.mfm_3_2(even.repeat(1, 3, 1)).sum())
    with pytest.raises((ValueError, RuntimeError), match="divisible by 2"):
        raw(torch.randn(2, 5, 3))
    with pytest.raises((ValueError, RuntimeError), match="even"):
        wrapped(torch.randn(2, 5, 3))
    with pytest.raises((ValueError, RuntimeError), match="divisible by 3"):
        third(torch.randn(2, 7, 3))


def test_kernel_devices_from_public_api():
    """KERNEL_DEVICES comes from torch.library (no private dispatcher query)."""
    from lightface.ops import _library

    assert {"cpu", "meta"} <= _library.KERNEL_DEVICES
    assert _library._has_kernel("lightface::mfm", "CPU")
    assert ("cuda" in _library.KERNEL_DEVICES) == _library._has_kernel("lightface::mfm", "CUDA")
    source = open(_library.__file__).read()
    assert "_C._dispatch" not in source


def _opcheck_samples(device):
    def t(*shape, grad=True):
        return torch.randn(shape, device=device, requires_grad=grad)

    lf = torch.ops.lightface
    return [
        (lf.mfm, (t(2, 4, 3, 3),), {}),
        (lf.mfm, (t(3, 8), -1), {}),
        (lf._mfm_forward, (t(2, 6, 5), 1), {}),
        (lf._mfm_backward, (t(2, 3, 5, grad=False), torch.randint(0, 2, (2, 3, 5), dtype=torch.uint8, device=device), 1), {}),
        # backward ops with a grad that requires grad: their own autograd (double backward)
        (lf._mfm_backward, (t(2, 3, 5), torch.randint(0, 2, (2, 3, 5), dtype=torch.uint8, device=device), 1), {}),
        (lf._mfm_3_2_backward, (t(4, 2), torch.tensor([[1 | 2 << 2], [0 | 1 << 2], [2 | 0 << 2], [0 | 2 << 2]], dtype=torch.uint8, device=device), 1), {}),
        (lf.mfm_3_2, (t(2, 6, 3),), {}),
        (lf._mfm_3_2_forward, (t(6, 4), 0), {}),
        (lf.symmetry_loss, (t(2, 3, 4, 5),), {}),
        (lf.symmetry_loss, (t(2, 3, 4, 6), "none"), {}),
        (lf.total_variation, (t(2, 3, 4, 5), "sum"), {}),
        (lf._total_variation_backward, (t(2, grad=False), t(2, 1, 3, 3, grad=False), "none"), {}),
        (lf._symmetry_loss_backward, (t(grad=False), t(2, 1, 3, 3, grad=False), "mean"), {}),
        (lf._symmetry_loss_backward, (t(2), t(2, 1, 3, 4), "none"), {}),
        (lf._total_variation_backward, (t(), t(2, 2, 3, 3), "mean"), {}),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for op, args, kwargs in _opcheck_samples(device):
        opcheck(op, args, kwargs)


def test_compile_fullgraph_matches_eager():
    def loss(x, img):
        return ops.mfm(x).square().sum() + ops.mfm_3_2(x[:, :6]).sum() + 3 * ops.symmetry_loss(img) + ops.total_variation(img, "sum")

    x = torch.randn(2, 6, 5, 4, requires_grad=True)
    img = torch.rand(2, 3, 8, 9, requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    y_c = compiled(x, img)
    gx_c, gi_c = torch.autograd.grad(y_c, (x, img))
    y_e = loss(x, img)
    gx_e, gi_e = torch.autograd.grad(y_e, (x, img))
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(gx_c, gx_e)
    torch.testing.assert_close(gi_c, gi_e)


@pytest.mark.slow
def test_compile_inductor_fullgraph_matches_eager():
    def fn(x, img):
        return ops.mfm(x).sum() + ops.symmetry_loss(img) + ops.total_variation(img)

    x, img = torch.randn(2, 4, 3, 3), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True)(x, img), fn(x, img))


def test_use_reference_traces_to_plain_aten_ops():
    from torch.fx.experimental.proxy_tensor import make_fx

    def fn(x, img):
        return ops.mfm(x).sum() + ops.mfm_3_2(x[:, :3]).sum() + ops.symmetry_loss(img) + ops.total_variation(img)

    x, img = torch.randn(2, 4, 3), torch.rand(1, 2, 4, 4)

    def targets(gm):
        return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}

    assert any("lightface" in t for t in targets(make_fx(fn)(x, img)))
    with ops.use_reference():
        with ops.use_reference():  # nests
            pass
        traced = make_fx(fn)(x, img)
        torch.testing.assert_close(fn(x, img), traced(x, img))
    assert not any("lightface" in t for t in targets(traced))
    assert ops._reference_depth == 0


# ---- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: ops.mfm([1.0, 2.0]), TypeError, ["x", "list"]),
        (lambda: ops.mfm(torch.ones(2, 4, dtype=torch.int64)), TypeError, ["x", "int64"]),
        (lambda: ops.mfm(torch.ones(2, 3, 4)), ValueError, ["x.shape[1]", "even", "(2, 3, 4)"]),
        (lambda: ops.mfm(torch.ones(2, 4), dim=2), IndexError, ["dim=2", "(2, 4)"]),
        (lambda: ops.mfm(torch.ones(2, 4), dim=1.0), TypeError, ["dim"]),
        (lambda: ops.mfm(torch.tensor(1.0)), ValueError, ["0-d"]),
        (lambda: ops.mfm_3_2(torch.ones(2, 4, 4)), ValueError, ["x.shape[1]", "divisible by 3", "(2, 4, 4)"]),
        (lambda: ops.symmetry_loss(torch.ones(3, 4, 4)), ValueError, ["img", "4-D", "(3, 4, 4)"]),
        (lambda: ops.total_variation(torch.ones(1, 1, 3, 4, 4)), ValueError, ["img", "4-D", "(1, 1, 3, 4, 4)"]),
        (lambda: ops.symmetry_loss(torch.ones(1, 1, 4, 4), "avg"), ValueError, ["reduction", "'avg'"]),
        (lambda: ops.total_variation(torch.ones(1, 1, 4, 4, dtype=torch.uint8)), TypeError, ["img", "uint8"]),
        (lambda: ops.total_variation(None), TypeError, ["img", "NoneType"]),
        (lambda: ops.SymmetryLoss("mse"), ValueError, ["reduction"]),
    ],
)
def test_bad_inputs(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value)


def test_bad_inputs_to_raw_ops_raise_python_errors():
    lf = torch.ops.lightface
    with pytest.raises(ValueError, match=r"divisible by 2.*\[2, 3\]"):
        lf.mfm(torch.ones(2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        lf.mfm(torch.ones(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="4-D"):
        lf.symmetry_loss(torch.ones(2, 3))
    with pytest.raises(ValueError, match="unknown reduction 'max'"):
        lf.total_variation(torch.ones(1, 1, 2, 2), "max")


# ---- modules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_modules_equal_functions(reduction):
    img = torch.rand(2, 3, 6, 7)
    torch.testing.assert_close(ops.SymmetryLoss(reduction)(img), ops.symmetry_loss(img, reduction), rtol=0, atol=0)
    torch.testing.assert_close(ops.TotalVariation(reduction)(img), ops.total_variation(img, reduction), rtol=0, atol=0)
    assert repr(ops.SymmetryLoss(reduction)) == f"SymmetryLoss(reduction='{reduction}')"


# ---- CUDA vs CPU ------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [["--repeats", "0"], ["--repeats", "-1"], ["--threads", "-2"]])
def test_ops_benchmark_refuses_bad_counts(flags, capsys):
    """python -m benchmarks.ops --repeats 0 used to time everything and then crash with a
    ZeroDivisionError; a negative --threads was silently ignored. Both are refused by the parser."""
    from benchmarks.ops import get_args_parser

    with pytest.raises(SystemExit):
        get_args_parser().parse_args(flags)
    assert f"argument {flags[0]}" in capsys.readouterr().err
    assert get_args_parser().parse_args(["--repeats", "1", "--threads", "0"]).repeats == 1


def test_ops_benchmark_refuses_a_device_without_kernels(monkeypatch):
    """On a GPU machine with a CPU-only build of lightface._C, python -m benchmarks.ops (--device auto picks
    cuda) timed the pure-PyTorch reference as "fused" and then crashed in torch.ops.lightface._mfm_forward
    with the dispatcher's "Could not run ... with arguments from the 'CUDA' backend". It now refuses at once,
    saying what the library was built for and how to get CUDA kernels."""
    from benchmarks.ops import get_args_parser, main
    from lightface.ops import _library

    monkeypatch.setattr(_library, "KERNEL_DEVICES", frozenset({"meta"}))  # a build without kernels for this device
    with pytest.raises(ValueError, match="has no cpu kernels .*CUDA_HOME"):
        main(get_args_parser().parse_args(["--device", "cpu", "--quick", "--repeats", "1"]))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    x = torch.randn(3, 12, 17, 16, dtype=torch.float64).to(dtype)
    img = torch.rand(3, 3, 65, 33, dtype=torch.float64).to(dtype)
    for fn in (ops.mfm, ops.mfm_3_2):
        y_cpu, g_cpu = _grad(fn, x, torch.ones(fn(x).shape, dtype=dtype))
        y_cuda, g_cuda = _grad(fn, x.cuda(), torch.ones(fn(x).shape, dtype=dtype, device="cuda"))
        torch.testing.assert_close(y_cuda.cpu(), y_cpu, rtol=0, atol=0)
        torch.testing.assert_close(g_cuda.cpu(), g_cpu, rtol=0, atol=0)
    for fn, _ in LOSSES.values():
        for reduction in REDUCTIONS:
            tol = LOSS_TOL[dtype]
            torch.testing.assert_close(fn(img.cuda(), reduction).cpu(), fn(img, reduction), rtol=tol, atol=tol)
            # the gradients are signs times one weight per image, rounded alike on both devices: bit for bit,
            # signed zeros included (a loss weight: float32(1.61) * float32(1 / count) is not the float64 product
            # rounded once, for either loss' count; -1.5: the symmetry loss' middle column is +0 as on the CPU)
            for scale in (1.61, -1.5):
                seed = torch.full((img.shape[0],) if reduction == "none" else (), scale, dtype=torch.float64)
                _, g_cpu = _grad(lambda t: fn(t, reduction), img, seed.to(dtype))
                _, g_cuda = _grad(lambda t: fn(t, reduction), img.cuda(), seed.to(dtype=dtype, device="cuda"))
                assert torch.equal(g_cuda.cpu().view(INT_OF[dtype]), g_cpu.view(INT_OF[dtype])), (fn, reduction)


@pytest.mark.slow
def test_use_reference_exports_to_onnx():
    """Inside use_reference() a model with MFM layers exports to ONNX and runs in onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from lightface import nn as lnn

    model = torch.nn.Sequential(lnn.MFMConv2d(1, 4, 3, 1, 1), lnn.MFMConv2d3_2(4, 4, 3, 1, 1)).eval()
    x = torch.rand(2, 1, 12, 12)
    with ops.use_reference():
        program = torch.onnx.export(model, (x,), dynamo=True)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-5, atol=1e-5)
