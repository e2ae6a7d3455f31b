"""TP-GAN frontalization speed: generator throughput and a training step split by loss term.

    python -m benchmarks.frontal                      # CPU defaults (a few minutes on 2 cores)
    python -m benchmarks.frontal --device cuda --train-batch 16

1. Generator images/s (eval, no grad, zero noise) at each ``--batch-sizes``, side by side with
   the reference: a plain-PyTorch TP-GAN generator written from the paper
   (``benchmarks/_baseline_tpgan.py``: split + max maxout, patches fused on a canvas one by one)
   running the SAME weights on the same inputs, the two timed in turn; the ratio is reference
   time / our time (> 1: ours is faster), with the max |difference| of the frontal images.
2. One real TP-GAN training step (generator forward, every L_syn term, generator
   backward, discriminator step), timed phase by phase; each loss term is timed as its
   forward + backward on the generator's outputs. The symmetry and total-variation
   terms are timed twice, with the fused ``lightface.ops`` kernels and with their
   composite pure-PyTorch formulations (``lightface.ops.reference``), and the whole step
   is timed with both, so the table shows what the fused ops save inside a real step.
Identity network: a randomly initialised Light CNN-9 (speed only).
"""
import argparse
import logging
import time
from typing import Callable, Dict, List

import torch

from lightface import ops
from lightface.engine.gan import GANObjective
from lightface.losses.frontal import FrontalLoss
from lightface.losses.identity import IdentityLoss
from lightface.models import get_model
from benchmarks._baseline_tpgan import build_baseline_tpgan
from pipelines._argtypes import device_name, int_at_least


def multiple_of_8(text: str) -> int:
    """An argparse type for a TP-GAN width: a positive multiple of 8."""
    value = int_at_least(8)(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"expected a positive multiple of 8 (the generator's width), got {value}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("benchmarks.frontal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=multiple_of_8, default=64,
                   help="generator width for throughput, a multiple of 8 (default: %(default)s)")
    p.add_argument("--batch-sizes", type=int_at_least(1), nargs="+", default=[1, 16],
                   help="batch sizes for generator images/s (default: %(default)s)")
    p.add_argument("--train-width", type=multiple_of_8, default=32,
                   help="generator width in the training step, a multiple of 8 (default: %(default)s)")
    p.add_argument("--train-batch", type=int_at_least(1), default=4,
                   help="batch size of the training step (default: %(default)s)")
    p.add_argument("--no-train", action="store_true", help="time the generator inference only (table 1)")
    p.add_argument("--iters", type=int_at_least(1), default=3,
                   help="least timed repetitions after one warm-up (cheap phases repeat up to 1 s); the fastest "
                        "is reported (default: %(default)s)")
    p.add_argument("--device", default="cpu", type=device_name, help="cpu or cuda (default: %(default)s)")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch.set_num_threads (default: torch's choice)")
    return p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], iters: int, device: torch.device, min_seconds: float = 1.0) -> float:
    """Fastest run of ``fn`` in seconds, after one warm-up: at least ``iters`` runs, more (up to
    200) while they add up to less than ``min_seconds``, so millisecond terms get many samples.
    The minimum, because on a shared machine the slower runs measure other jobs' scheduling."""
    fn()
    _sync(device)
    times: List[float] = []
    while len(times) < iters or (sum(times) < min_seconds and len(times) < 200):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def generator_throughput(width: int, batch_sizes: List[int], iters: int, device: torch.device) -> Dict[int, dict]:
    """``{batch: {"ours": images/s, "reference": images/s, "max_diff": float}}``: our generator's ``frontalize``
    and the plain-PyTorch reference with the same (random) weights, timed in turn on the same inputs."""
    torch.manual_seed(0)
    g = get_model("tpgan", width=width).to(device).eval()
    ref = build_baseline_tpgan(g)
    out = {}
    for b in batch_sizes:
        x = torch.rand(b, 3, 128, 128, device=device)
        with torch.no_grad():
            diff = float((g.frontalize(x) - ref(x)).abs().max())
            t_ours, t_ref = float("inf"), float("inf")
            for _ in range(2):  # alternate, so a burst of load from other jobs hits both
                t_ours = min(t_ours, _time(lambda: g.frontalize(x), iters, device))
                t_ref = min(t_ref, _time(lambda: ref(x), iters, device))
        out[b] = {"ours": b / t_ours, "reference": b / t_ref, "max_diff": diff}
    return out


def training_step(width: int, batch: int, iters: int, device: torch.device) -> Dict[str, Dict[str, float]]:
    torch.manual_seed(0)
    g = get_model("tpgan", width=width).to(device).train()
    d = get_model("tpgan_discriminator", width=width).to(device).train()
    identity = IdentityLoss(get_model("lightcnn9", num_classes=0)).to(device)
    objective = GANObjective()
    crit = FrontalLoss(identity, objective)
    opt_g = torch.optim.Adam(g.parameters(), 1e-4)
    opt_d = torch.optim.Adam(d.parameters(), 1e-4)
    x = torch.rand(batch, 3, 128, 128, device=device)
    y = torch.rand(batch, 3, 128, 128, device=device)

    def leaf_outputs():
        with torch.no_grad():
            o = g(x)
        leaf = {k: v.detach().requires_grad_(True) for k, v in o.items() if torch.is_tensor(v)}
        leaf["patches"] = {k: v.detach().requires_grad_(True) for k, v in o["patches"].items()}
        return leaf

    o = leaf_outputs()

    def term(fn):
        def run():
            loss = fn()
            loss.backward()
        return run

    phases = {
        "G forward": lambda: g(x),
        "l_g_pix": term(lambda: crit.pixel(o, y)),
        "l_g_patch": term(lambda: crit.patch(o["patches"], y, g.boxes)),
        "l_g_adv": term(lambda: objective.generator_loss(d, y, o["img128"])[0]),
        "l_g_ip": term(lambda: crit.identity_preserving(o["img128"], y)),
        "l_g_sym": term(lambda: crit.symmetry(o)),
        "l_g_tv": term(lambda: crit.total_variation(o["img128"])),
    }

    def g_backward():
        loss, _ = crit(g(x), y, d, patch_boxes=g.boxes)
        loss.backward()
        g.zero_grad(set_to_none=True)

    def d_step():
        loss, _ = objective.discriminator_loss(d, y, o["img128"])
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()

    def full_step():
        out = g(x)
        loss, _ = crit(out, y, d, patch_boxes=g.boxes)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        dl, _ = objective.discriminator_loss(d, y, out["img128"])
        opt_d.zero_grad(set_to_none=True)
        dl.backward()
        opt_d.step()

    fused = {name: _time(fn, iters, device) for name, fn in phases.items()}
    fused["G forward + L_syn + backward"] = _time(g_backward, iters, device)
    fused["D step"] = _time(d_step, iters, device)
    fused["full step"] = _time(full_step, iters, device)
    with ops.use_reference():  # composite pure-PyTorch sym/TV (lightface.ops.reference)
        composite = {name: _time(phases[name], iters, device) for name in ("l_g_sym", "l_g_tv")}
        composite["full step"] = _time(full_step, iters, device)
    return {"fused": fused, "composite": composite}


def main(args: argparse.Namespace) -> dict:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"compiled lightface ops: {ops.extension_available()}")
    tput = generator_throughput(args.width, args.batch_sizes, args.iters, device)
    print(f"\nTP-GAN generator (width {args.width}) inference, zero noise: ours vs the plain-PyTorch reference "
          "(benchmarks/_baseline_tpgan.py), same weights")
    print(f"{'batch':>6} | {'ours images/s':>13} | {'ours ms/image':>13} | {'ref images/s':>12} | {'ref/ours':>8} | "
          f"{'max |diff|':>10}")
    for b, r in tput.items():
        print(f"{b:>6} | {r['ours']:13.2f} | {1000 / r['ours']:13.1f} | {r['reference']:12.2f} | "
              f"{r['ours'] / r['reference']:7.2f}x | {r['max_diff']:10.1e}")
    if args.no_train:
        return {"throughput": tput}
    step = training_step(args.train_width, args.train_batch, args.iters, device)
    f, c = step["fused"], step["composite"]
    print(f"\nTraining step (width {args.train_width}, batch {args.train_batch}); terms = forward + backward")
    print(f"{'phase':<30} | {'fused ms':>9} | {'composite ms':>12} | {'composite/fused':>15}")
    for name, sec in f.items():
        if name in c:
            print(f"{name:<30} | {sec * 1e3:9.2f} | {c[name] * 1e3:12.2f} | {c[name] / sec:15.2f}")
        else:
            print(f"{name:<30} | {sec * 1e3:9.2f} | {'':>12} | {'':>15}")
    return {"throughput": tput, "step": step}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(get_args_parser().parse_args())
