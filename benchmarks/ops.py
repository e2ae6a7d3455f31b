"""Fused ops vs their composite PyTorch formulations: time, saved memory, bandwidth.

    python -m benchmarks.ops [--device cpu|cuda] [--threads N] [--repeats R] [--timer wall|cpu] [--quick]

For each op and shape (Light CNN activations for MFM, GAN image batches for the losses)
the table gives, on the same inputs in the same run:

* ``fwd`` / ``fwd+bwd``: best-of-R milliseconds of the fused op (``lightface.ops``) and of
  the composite (MFM: ``torch.split`` + ``torch.max`` as the original Light CNN code;
  MFM 3/2: the ``torch.where`` formulation of ``lightface.ops.reference``; symmetry: ``abs(x - x.flip(-1))`` on the left half, mean; TV: summed absolute
  differences, mean), and their ratio (composite / fused, > 1 means fused is faster);
* ``saved``: bytes the autograd graph keeps alive for backward per input element
  (whole storages of the saved tensors, counted once; the losses' fused backward keeps
  the input image itself, which the caller holds anyway);
* ``GB/s``: minimal bytes moved / time of the fused forward and backward kernels
  (forward: read the input, write the output (+ the MFM mask); backward: read what it
  needs, write the input gradient) beside ``x.clone()`` on the same tensor (read + write)
  and beside ``dst.copy_(x)`` into a preallocated tensor (the same copy without the
  allocation: glibc serves blocks over 32 MB with fresh mmap pages, so ``clone()`` of a
  large tensor also pays a page fault per 4 KiB).

"Best of R" (the minimum) is used because the machine is shared: it is the least
disturbed run. ``--timer cpu`` measures process CPU time instead of wall time (use it
with ``--threads 1`` on an oversubscribed machine, where wall time includes waiting for
a core). Threads: the count torch uses and the count the extension's
``at::parallel_for`` actually reaches are printed.
"""
import argparse
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from lightface import ops
from lightface.ops import _library, reference
from pipelines._argtypes import device_name, non_negative_int, positive_int

MFM_SHAPES = [(16, 96, 96, 96), (32, 384, 32, 32), (256, 512)]
IMAGE_SHAPES = [(32, 3, 128, 128), (32, 3, 256, 256)]
QUICK_MFM_SHAPES = [(16, 96, 48, 48), (256, 512)]
QUICK_IMAGE_SHAPES = [(32, 3, 128, 128)]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("benchmarks.ops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], type=device_name,
                        help="where to run (default: auto = cuda when available, else cpu)")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="torch.set_num_threads before timing (default: 0 = leave torch's default)")
    parser.add_argument("--repeats", type=positive_int, default=7, help="timed runs per measurement, best kept (default: 7)")
    parser.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32", "float64"],
                        help="tensor dtype (default: float32)")
    parser.add_argument("--timer", default="wall", choices=["wall", "cpu"],
                        help="wall-clock time, or process CPU time (CPU only; default: wall)")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, for a smoke run (default: off)")
    return parser


class _Clock:
    def __init__(self, device: torch.device, repeats: int, timer: str = "wall"):
        self.device, self.repeats = device, repeats
        self.now = time.process_time if timer == "cpu" else time.perf_counter

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def best_ms(self, fn: Callable[[], object]) -> float:
        for _ in range(3):  # warm-up: allocator (malloc's mmap threshold adapts), first-call dispatch
            fn()
        self._sync()
        best = float("inf")
        for _ in range(self.repeats):
            t0 = self.now()
            fn()
            self._sync()
            best = min(best, self.now() - t0)
        return best * 1e3


def _saved_bytes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """Bytes of the storages autograd keeps for backward of ``fn(x)`` (each storage once)."""
    storages: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x.detach().requires_grad_(True))
    return sum(storages.values())


# ---- composite formulations ---------------------------------------------------------------


def composite_mfm(x: torch.Tensor) -> torch.Tensor:
    a, b = torch.split(x, x.shape[1] // 2, 1)
    return torch.max(a, b)


def composite_symmetry(img: torch.Tensor) -> torch.Tensor:
    half = img.shape[-1] // 2
    return (img - img.flip(-1))[..., :half].abs().mean()


def composite_tv(img: torch.Tensor) -> torch.Tensor:
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs().sum()
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs().sum()
    return (dx + dy) / img.numel()


@dataclass
class Case:
    name: str
    shape: tuple
    fused: Callable[[torch.Tensor], torch.Tensor]
    composite: Callable[[torch.Tensor], torch.Tensor]
    fwd_bytes: Callable[[torch.Tensor], int]  # minimal bytes moved by the fused forward
    bwd_bytes: Callable[[torch.Tensor], int]  # ... and backward


def _cases(quick: bool) -> List[Case]:
    def esize(x):
        return x.element_size()

    cases = []
    for shape in QUICK_MFM_SHAPES if quick else MFM_SHAPES:
        cases.append(Case(
            "mfm", shape, ops.mfm, composite_mfm,
            # read 2C, write C values + C mask bytes (the training forward)
            lambda x: x.numel() * esize(x) * 3 // 2 + x.numel() // 2,
            # read C grads + C mask bytes, write 2C grads
            lambda x: x.numel() * esize(x) * 3 // 2 + x.numel() // 2,
        ))
    shape = QUICK_MFM_SHAPES[0] if quick else MFM_SHAPES[0]
    cases.append(Case(
        "mfm_3_2", shape, ops.mfm_3_2, reference.mfm_3_2,
        # read 3C, write 2C values + C mask bytes / read 2C grads + C mask bytes, write 3C grads
        lambda x: x.numel() * esize(x) * 5 // 3 + x.numel() // 3,
        lambda x: x.numel() * esize(x) * 5 // 3 + x.numel() // 3,
    ))
    for shape in QUICK_IMAGE_SHAPES if quick else IMAGE_SHAPES:
        cases.append(Case("symmetry_loss", shape, ops.symmetry_loss, composite_symmetry,
                          lambda x: x.numel() * esize(x), lambda x: 2 * x.numel() * esize(x)))
        cases.append(Case("total_variation", shape, ops.total_variation, composite_tv,
                          lambda x: x.numel() * esize(x), lambda x: 2 * x.numel() * esize(x)))
    return cases


def _measure(case: Case, device: torch.device, dtype: torch.dtype, clock: _Clock) -> Dict[str, float]:
    x = torch.randn(case.shape, device=device, dtype=dtype)
    xg = x.clone().requires_grad_(True)
    grad_out = torch.ones_like(case.fused(x))

    def fwd_bwd(fn):
        def run():
            xg.grad = None
            fn(xg).backward(grad_out)
        return run

    with torch.no_grad():
        fused_fwd = clock.best_ms(lambda: case.fused(x))
        comp_fwd = clock.best_ms(lambda: case.composite(x))
        clone = clock.best_ms(lambda: x.clone())
        dst = torch.empty_like(x)
        copy = clock.best_ms(lambda: dst.copy_(x))
    fused_fb = clock.best_ms(fwd_bwd(case.fused))
    comp_fb = clock.best_ms(fwd_bwd(case.composite))

    # The kernels alone, for bandwidth: training forward (with mask for MFM) and backward.
    lf = torch.ops.lightface
    if case.name in ("mfm", "mfm_3_2"):
        forward = lf._mfm_forward if case.name == "mfm" else lf._mfm_3_2_forward
        backward = lf._mfm_backward if case.name == "mfm" else lf._mfm_3_2_backward
        _, mask = forward(x, 1)
        kernel_fwd = clock.best_ms(lambda: forward(x, 1))
        kernel_bwd = clock.best_ms(lambda: backward(grad_out, mask, 1))
    else:
        forward = lf.symmetry_loss if case.name == "symmetry_loss" else lf.total_variation
        backward = lf._symmetry_loss_backward if case.name == "symmetry_loss" else lf._total_variation_backward
        g = torch.ones((), device=device, dtype=dtype)
        kernel_fwd = clock.best_ms(lambda: forward(x, "mean"))
        kernel_bwd = clock.best_ms(lambda: backward(g, x, "mean"))

    gbs = lambda nbytes, ms: nbytes / (ms * 1e-3) / 1e9  # noqa: E731
    return {
        "fused_fwd": fused_fwd, "comp_fwd": comp_fwd, "fused_fb": fused_fb, "comp_fb": comp_fb,
        "saved_fused": _saved_bytes(case.fused, x) / x.numel(),
        "saved_comp": _saved_bytes(case.composite, x) / x.numel(),
        "bw_fwd": gbs(case.fwd_bytes(x), kernel_fwd), "bw_bwd": gbs(case.bwd_bytes(x), kernel_bwd),
        "bw_clone": gbs(2 * x.numel() * x.element_size(), clone),
        "bw_copy": gbs(2 * x.numel() * x.element_size(), copy),
    }


def _table(rows: List[Dict[str, object]]) -> str:
    header = ("| op | shape | fwd ms fused / composite | fwd ratio | fwd+bwd ms fused / composite | fwd+bwd ratio "
              "| saved B/elem fused / composite | fwd GB/s | bwd GB/s | clone GB/s | copy_ GB/s "
              "| fwd % of clone / copy_ |")
    lines = [header, "|" + "---|" * 2 + "---:|" * 10]
    for r in rows:
        m = r["m"]
        lines.append(
            f"| {r['op']} | {'x'.join(map(str, r['shape']))} "
            f"| {m['fused_fwd']:.2f} / {m['comp_fwd']:.2f} | **{m['comp_fwd'] / m['fused_fwd']:.1f}x** "
            f"| {m['fused_fb']:.2f} / {m['comp_fb']:.2f} | **{m['comp_fb'] / m['fused_fb']:.1f}x** "
            f"| {m['saved_fused']:.2f} / {m['saved_comp']:.2f} "
            f"| {m['bw_fwd']:.1f} | {m['bw_bwd']:.1f} | {m['bw_clone']:.1f} | {m['bw_copy']:.1f} "
            f"| {100 * m['bw_fwd'] / m['bw_clone']:.0f}% / {100 * m['bw_fwd'] / m['bw_copy']:.0f}% |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> List[Dict[str, object]]:
    if not ops.extension_available():
        raise RuntimeError("benchmarks.ops needs the compiled library lightface._C: run `make build` first")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type not in _library.KERNEL_DEVICES:  # the "fused" columns would time the reference, then crash
        raise ValueError(
            f"benchmarks.ops: lightface._C has no {device.type} kernels (built for "
            f"{sorted(_library.KERNEL_DEVICES - {'meta'})}); rebuild it with a CUDA torch and CUDA_HOME set "
            f"(or FORCE_CUDA=1), or pass --device cpu"
        )
    if args.timer == "cpu" and device.type != "cpu":
        raise ValueError("--timer cpu measures CPU time; use --timer wall with --device cuda")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    clock = _Clock(device, args.repeats, args.timer)
    rows = []
    for case in _cases(args.quick):
        rows.append({"op": case.name, "shape": case.shape, "m": _measure(case, device, dtype, clock)})
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {where}; dtype {args.dtype}; torch {torch.__version__}; threads: torch "
          f"{torch.get_num_threads()}, inside lightface._C {torch.ops.lightface._parallel_threads()}; "
          f"best of {args.repeats} ({args.timer} time)")
    print(_table(rows))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
