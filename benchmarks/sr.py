"""Super-resolution speed: Wavelet-SRNet faces/s by scale and batch, and WaveletPacket2d vs PyWavelets.

    python -m benchmarks.sr [--threads N] [--repeats R] [--train-batch B]

Tables (all on this machine's CPU unless --device cuda; table 5 always on the CPU):
1. faces/s at 4x (32 -> 128) and 8x (16 -> 128), batch 1 and 16, default model width,
   side by side with the reference: a plain-PyTorch Wavelet-SRNet written from the paper
   (``benchmarks/_baseline_srnet.py``: level-by-level Haar analysis / synthesis) running the
   SAME weights on the same inputs, interleaved, best of ``--repeats`` runs each; the ratio is
   reference time / our time (> 1: ours is faster) and the max |difference| of the SR images;
2. one training step (forward, L1 loss, backward, Adam) at 4x, batch ``--train-batch``, ours
   vs the reference from the same weights (ratio and max |difference| of the gradients);
3. cost vs scale at a fixed 128 px output (2x, 4x, 8x, 16x): ms per face and GFLOP per face;
4. the shipped super-resolvers through ``SuperResolver.upscale_tensor``, batch 16: one
   pass vs the default flip ensemble (face + mirror image), faces/s and their ratio;
5. Haar packet analysis + synthesis round trip, ours (strided conv / transposed conv)
   vs PyWavelets ``WaveletPacket2D(..., "haar", mode="periodization")`` on the same
   batch (float32 and float64), with the max difference of the coefficients and the
   round-trip error.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._baseline_srnet import build_baseline_srnet
from benchmarks._table import text_table
from lightface.models.wavelet_srnet import WaveletSRNet
from lightface.nn.wavelet import WaveletPacket2d, subband_paths
from pipelines._argtypes import device_name, int_at_least


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, repeats: int, warmup: int = 1, device="cpu") -> float:
    """Mean seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` (CUDA work waited for)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def _best_interleaved(fns, repeats: int, device="cpu"):
    """Fastest seconds of each function in ``fns`` over ``repeats`` rounds that call them in turn after one
    warm-up round (side-by-side timing: on a shared machine the slower runs measure other jobs)."""
    for fn in fns:
        fn()
    _sync(device)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def _random_model(scale: int, width: dict, device) -> WaveletSRNet:
    """A default-initialised model whose heads' last layers are re-initialised too (they start at zero, which
    would leave the subband re-ordering out of the ours-vs-reference comparison)."""
    torch.manual_seed(0)
    model = WaveletSRNet(scale=scale, output_size=128, **width)
    for head in model.heads:
        head[-1].reset_parameters()
    return model.to(device)


def _conv_gflops(model: WaveletSRNet, lr: torch.Tensor) -> float:
    """Multiply-adds of the conv layers for one face, x2, in GFLOP."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += out.numel() * k * 2

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(lr[:1])
    for h in hs:
        h.remove()
    return total / 1e9


def bench_models(device, repeats, width):
    print(f"\n## Wavelet-SRNet inference (channels={width['channels']}, blocks={width['num_blocks']}, device={device}): "
          "ours vs the plain-PyTorch reference (benchmarks/_baseline_srnet.py), same weights, best of the repeats")
    rows = []
    for scale in (4, 8):
        model = _random_model(scale, width, device).eval()
        ref = build_baseline_srnet(model)
        for batch in (1, 16):
            x = torch.rand(batch, 3, 128 // scale, 128 // scale, device=device)
            with torch.no_grad():
                t, t_ref = _best_interleaved([lambda: model(x), lambda: ref(x)], repeats, device)
                diff = float((model(x) - ref(x)).abs().max())
            rows.append([scale, f"{128 // scale}->128", batch, f"{t * 1e3:.1f}", f"{t_ref * 1e3:.1f}",
                         f"{batch / t:.1f}", f"{batch / t_ref:.1f}", f"{t_ref / t:.2f}x", f"{diff:.1e}"])
    header = ["scale", "in->out", "batch", "ours ms", "ref ms", "ours f/s", "ref f/s", "ref/ours", "max |diff|"]
    print(text_table(header, rows, align="r" * len(header)))


def bench_train_step(device, repeats, width, batch):
    """One optimisation step at 4x: forward, L1 loss to an HR target, backward, Adam; ours vs the reference."""
    model = _random_model(4, width, device).train()
    ref = build_baseline_srnet(model).train()
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.rand(batch, 3, 128, 128, device=device)
    opts = [torch.optim.Adam(net.parameters(), 1e-4) for net in (model, ref)]

    def step(net, opt):
        def run():
            loss = F.l1_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    grads = []
    for net in (model, ref):  # gradients from the same starting weights
        F.l1_loss(net(x), y).backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()})
        net.zero_grad(set_to_none=True)
    diff = max(float((grads[0][k] - grads[1][k]).abs().max()) for k in grads[0])
    t, t_ref = _best_interleaved([step(model, opts[0]), step(ref, opts[1])], repeats, device)
    print(f"\n## Wavelet-SRNet training step at 4x (batch {batch}, L1 + Adam), ours vs the reference")
    print(text_table(["ours ms", "ref ms", "ref/ours", "max |grad diff|"],
                     [[f"{t * 1e3:.1f}", f"{t_ref * 1e3:.1f}", f"{t_ref / t:.2f}x", f"{diff:.1e}"]], align="r" * 4))


def bench_cost_vs_scale(device, repeats, width):
    print("\n## Cost vs scale at a 128 px output (batch 16)")
    rows = []
    for scale in (2, 4, 8, 16):
        model = WaveletSRNet(scale=scale, output_size=128, **width).to(device).eval()
        x = torch.rand(16, 3, 128 // scale, 128 // scale, device=device)
        with torch.no_grad():
            t = _time(lambda: model(x), repeats, device=device)
        rows.append([scale, 128 // scale, 4 ** model.levels, f"{_conv_gflops(model, x):.3f}", f"{t / 16 * 1e3:.2f}"])
    print(text_table(["scale", "input", "subbands", "GFLOP/face", "ms/face"], rows, align="r" * 5))


def bench_flip_ensemble(device, repeats):
    from lightface.models.pretrained import PretrainedError
    from lightface.restore.super_resolver import SuperResolver

    print("\n## Shipped super-resolvers, batch 16: one pass vs flip ensemble (SuperResolver's default)")
    rows, skipped = [], []
    for scale in (4, 8):
        try:
            sr = SuperResolver(scale=scale, device=str(device))
        except PretrainedError as err:
            skipped.append(f"{scale}x skipped: {err}")
            continue
        x = torch.rand(16, 3, sr.input_size, sr.input_size, device=device)
        one = _time(lambda: sr.upscale_tensor(x, flip_ensemble=False), repeats, device=device)
        both = _time(lambda: sr.upscale_tensor(x, flip_ensemble=True), repeats, device=device)
        rows.append([scale, sr.pretrained.name, f"{16 / one:.1f}", f"{16 / both:.1f}", f"{one / both:.2f}x"])
    print(text_table(["scale", "model", "one pass f/s", "ensemble f/s", "ensemble / one"], rows, align="rlrrr"))
    for line in skipped:
        print(line)


def bench_wavelet(repeats, dtype):
    import pywt

    print(f"\n## Haar packet round trip, batch (16, 3, 128, 128) {dtype}: ours vs PyWavelets")
    rows = []
    x = np.random.default_rng(0).random((16, 3, 128, 128)).astype(dtype)
    xt = torch.from_numpy(x)
    for levels in (1, 2, 3, 4):
        wpt = WaveletPacket2d(levels)
        paths = subband_paths(levels)

        def ours():
            return wpt.inverse(wpt(xt))

        def theirs():
            wp = pywt.WaveletPacket2D(x, "haar", mode="periodization", maxlevel=levels)
            nodes = {p: wp[p].data for p in paths}
            rec = pywt.WaveletPacket2D(None, "haar", mode="periodization", maxlevel=levels)
            for p, d in nodes.items():
                rec[p] = d
            return nodes, rec.reconstruct(update=False)

        t_ours = _time(ours, repeats)
        t_pywt = _time(theirs, repeats)
        nodes, rec = theirs()
        ref = np.stack([nodes[p] for p in paths], axis=2).reshape(16, -1, 128 >> levels, 128 >> levels)
        diff = float(np.abs(wpt(xt).numpy() - ref).max())
        err = float(np.abs(ours().numpy() - x).max())
        rows.append([levels, f"{t_ours * 1e3:.2f}", f"{t_pywt * 1e3:.2f}", f"{t_pywt / t_ours:.2f}x", f"{diff:.1e}",
                     f"{err:.1e}"])
    print(text_table(["levels", "ours ms", "pywt ms", "speed-up", "max |diff|", "round-trip err"], rows, align="r" * 6))


def main(argv=None):
    p = argparse.ArgumentParser("benchmarks.sr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int_at_least(1), default=5, help="timed repetitions per case (default: %(default)s)")
    p.add_argument("--device", default="cpu", type=device_name, help="cpu or cuda (default: %(default)s)")
    p.add_argument("--channels", type=int_at_least(1), default=64, help="model width (default: %(default)s)")
    p.add_argument("--num-blocks", type=int_at_least(0), default=8, help="residual blocks (default: %(default)s)")
    p.add_argument("--train-batch", type=int_at_least(1), default=16,
                   help="batch size of the timed training step (default: %(default)s)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    width = dict(channels=args.channels, num_blocks=args.num_blocks, head_channels=args.channels)
    device = torch.device(args.device)
    bench_models(device, args.repeats, width)
    bench_train_step(device, args.repeats, width, args.train_batch)
    bench_cost_vs_scale(device, args.repeats, width)
    bench_flip_ensemble(device, args.repeats)
    for dtype in ("float32", "float64"):
        bench_wavelet(args.repeats, dtype)


if __name__ == "__main__":
    main()
