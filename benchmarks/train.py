"""Training-step speed and memory: lightface LightCNN-9 vs the original architecture.

    python -m benchmarks.train [--batch-size 32] [--steps 6] [--rounds 3] [--threads 2]

One training step = forward, cross-entropy over ``--num-classes`` classes, backward and
an SGD (momentum, weight decay) update, on random gray (N,1,128,128) inputs. Compared:

* ``baseline``: ``benchmarks/_baseline_lightcnn.py`` (the original Light CNN code's
  architecture: conv/linear to 2C, ``torch.split`` + ``torch.max``) with plain SGD;
* ``lightface``: ``get_model("lightcnn9")`` (fused MFM kernels of ``lightface.ops``:
  one pass, a 1-byte mask saved for backward) stepped with the trainer's parameter
  groups (``build_param_groups``) exactly as ``pipelines.train_lightcnn`` does;
* ``lightface+channels_last``: the same in the channels_last memory format;
* ``lightface+channels_last+bf16``: plus ``--amp bf16`` autocast (lower precision: not a
  like-for-like comparison, shown for the option's effect).

Each configuration runs in its own subprocess (so peak RSS is its own); configurations
alternate for ``--rounds`` rounds and the best round counts (the machine may be shared).
Memory: ``saved MiB`` is the size of the tensors autograd keeps for backward in one step
(counted exactly with ``torch.autograd.graph.saved_tensors_hooks``, shared storages once);
``peak RSS growth MiB`` is how far the process's resident memory peaks above its level before
the timed steps, during them (the peak counter is reset after the warm-up step on Linux).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from pipelines._argtypes import int_at_least

CONFIGS = ("baseline", "lightface", "lightface+channels_last", "lightface+channels_last+bf16")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> bool:
    """Start the process's peak-RSS counter afresh (Linux: ``5`` to ``/proc/self/clear_refs``), so
    the peak read after the timed steps is theirs, not the warm-up's; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """The peak resident memory since :func:`_reset_peak_rss` (else since the process started)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build(config: str, num_classes: int):
    """(model, forward returning logits, optimizer, channels_last)."""
    if config == "baseline":
        from benchmarks._baseline_lightcnn import build_baseline

        model = build_baseline("lightcnn9", num_classes)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        return model, (lambda x: model(x)[0]), opt, False
    from lightface.engine.lightcnn_trainer import build_param_groups
    from lightface.models import get_model

    model = get_model("lightcnn9", num_classes=num_classes)
    channels_last = "channels_last" in config
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(build_param_groups(model, 0.01, 1e-4), lr=0.01, momentum=0.9, weight_decay=1e-4)
    if config.endswith("bf16"):
        def forward(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x, return_logits=True)[0].float()

        return model, forward, opt, channels_last
    return model, (lambda x: model(x, return_logits=True)[0]), opt, channels_last


def _saved_bytes(forward, x, y) -> int:
    """Bytes of the tensors autograd saves for backward in one forward (each storage once)."""
    seen = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(forward(x), y)
    loss.backward()
    return sum(seen.values())


def measure(config: str, batch_size: int, steps: int, num_classes: int, threads: int) -> dict:
    """Time ``steps`` training steps of one configuration in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, forward, opt, channels_last = _build(config, num_classes)
    model.train()
    x = torch.rand(batch_size, 1, 128, 128)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,))

    def step():
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocates gradients and momentum buffers)
    saved = _saved_bytes(forward, x, y)
    opt.zero_grad(set_to_none=True)
    rss_before = _rss_mib()
    _reset_peak_rss()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = _peak_rss_mib()
    return {"config": config, "images_per_s": batch_size / statistics.median(times), "step_s": statistics.median(times),
            "saved_mib": saved / 2**20, "peak_rss_growth_mib": max(peak - rss_before, 0.0), "peak_rss_mib": peak}


def main(args: argparse.Namespace) -> dict:
    best = {}
    for _ in range(args.rounds):
        for config in args.configs:
            cmd = [sys.executable, "-m", "benchmarks.train", "--child", config, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--num-classes", str(args.num_classes), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:  # the child's own error, not just "returned non-zero exit status"
                raise RuntimeError(f"benchmarks.train: the {config!r} run failed (exit status {out.returncode}):\n"
                                   + out.stderr.strip()[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if config not in best or r["images_per_s"] > best[config]["images_per_s"]:
                best[config] = r
    base = best.get("baseline")
    print(f"LightCNN-9 training step, batch {args.batch_size}, {args.num_classes} classes, {args.threads} threads, "
          f"best of {args.rounds} rounds x median of {args.steps} steps")
    print(f"{'config':<30}{'images/s':>10}{'speed-up':>10}{'saved MiB':>11}{'ratio':>7}{'peak RSS growth MiB':>21}{'ratio':>7}")
    for config, r in best.items():
        sp = r["images_per_s"] / base["images_per_s"] if base else float("nan")
        mr = r["saved_mib"] / base["saved_mib"] if base else float("nan")
        rr = r["peak_rss_growth_mib"] / base["peak_rss_growth_mib"] if base and base["peak_rss_growth_mib"] else float("nan")
        print(f"{config:<30}{r['images_per_s']:>10.1f}{sp:>9.2f}x{r['saved_mib']:>11.1f}{mr:>7.2f}"
              f"{r['peak_rss_growth_mib']:>21.1f}{rr:>7.2f}")
    return best


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="images per step")
    p.add_argument("--steps", type=int_at_least(1), default=6, help="timed steps per run (median reported)")
    p.add_argument("--rounds", type=int_at_least(1), default=3, help="alternating rounds; the best counts")
    p.add_argument("--num-classes", type=int_at_least(1), default=10575,
                   help="classifier size (CASIA-WebFace has 10,575)")
    p.add_argument("--threads", type=int_at_least(1), default=2, help="torch CPU threads")
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="what to compare")
    p.add_argument("--child", choices=CONFIGS, default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.batch_size, a.steps, a.num_classes, a.threads)))
    else:
        main(a)
