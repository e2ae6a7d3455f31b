"""2-D mixture of 8 Gaussians: mode coverage and distribution distances of small MLP GANs.

Every variant trains the same generator / discriminator MLPs with the same optimiser
through :class:`lightface.engine.gan.GANObjective` (the objective the face trainers use),
only the objective / regularisers differ. After training, ``--samples`` generated points
are scored against the target:

* modes covered: a mode counts when at least ``--mode-fraction`` of its fair share
  (samples / 8) lies within 3 sigma of its centre;
* high-quality fraction: share of samples within 3 sigma of any centre;
* JS: Jensen-Shannon divergence (bits) of 2-D histograms (``--bins`` per axis on
  [-R-1, R+1]^2) of generated vs target samples;
* SW1: sliced Wasserstein-1 distance (128 projections);
* MMD^2: RBF kernel, fixed bandwidth sigma = 0.1 (around the mixture's fine scale).

A ``target`` row scores an independent target sample of the same size: the noise floor
of each metric. Results are averaged over ``--seeds``. Run::

    OMP_NUM_THREADS=1 python -m benchmarks.gan_mixture --png docs/gan_mixture.png   # full table and its figure
    OMP_NUM_THREADS=1 python -m benchmarks.gan_mixture --quick    # ~20 s smoke run
"""
import argparse
import concurrent.futures
import json
import math
import multiprocessing
import time
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch
from torch import Tensor, nn

from lightface.engine.gan import GANObjective
from lightface.eval.divergence import histogram2d, js_divergence, mmd_rbf, sliced_wasserstein
from lightface.nn.gan_layers import MinibatchDiscrimination, MinibatchStdDev

NUM_MODES = 8

#: variant name -> GANObjective options, discriminator steps per generator step, optional own lr
VARIANTS: Dict[str, dict] = {
    "nsgan": {"objective": {"adversarial": "nsgan"}},
    "nsgan+minibatch-discrimination": {"objective": {"adversarial": "nsgan", "minibatch_discrimination": True}},
    "nsgan+minibatch-std": {"objective": {"adversarial": "nsgan", "minibatch_std": True}},
    "nsgan+pull-away": {"objective": {"adversarial": "nsgan", "pull_away": 1.0}},
    "nsgan+feature-matching": {"objective": {"adversarial": "nsgan", "feature_matching": 1.0}},
    # Gulrajani et al. used lambda = 0.1 and lr 1e-4 on their toy sets; with lambda = 10 the
    # critic/generator pair oscillated here (SW1 1.8 after 3000 steps at lr 1e-4)
    "wgan-gp": {"objective": {"adversarial": "wgan-gp", "gp_weight": 1.0}, "d_steps": 5, "lr": 1e-4},
    "hinge": {"objective": {"adversarial": "hinge"}},
    "lsgan": {"objective": {"adversarial": "lsgan"}},
}
QUICK_VARIANTS = ["nsgan", "nsgan+minibatch-discrimination", "nsgan+pull-away", "wgan-gp"]


def mode_centres(radius: float) -> np.ndarray:
    """(8, 2) centres evenly spaced on a circle of ``radius``."""
    angles = 2 * np.pi * np.arange(NUM_MODES) / NUM_MODES
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def sample_target(n: int, radius: float, std: float, generator: torch.Generator) -> Tensor:
    """(n, 2) float32 samples of the 8-Gaussian mixture (equal weights, isotropic ``std``)."""
    centres = torch.as_tensor(mode_centres(radius), dtype=torch.float32)
    idx = torch.randint(0, NUM_MODES, (n,), generator=generator)
    return centres[idx] + std * torch.randn(n, 2, generator=generator)


class Generator(nn.Module):
    """z (N, z_dim) ~ N(0, I) -> points (N, 2): MLP with ReLU."""

    def __init__(self, z_dim: int = 16, hidden: int = 128):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """Points (N, 2) -> logits (N, 1); follows the lightface discriminator contract.

    ``return_features=True`` gives ``(logits, [h])`` with h (N, hidden) the penultimate
    representation (before the optional minibatch layers).
    """

    def __init__(self, hidden: int = 128, minibatch_discrimination: bool = False, minibatch_std: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.mbd = MinibatchDiscrimination(hidden, 16, 8) if minibatch_discrimination else None
        self.mbstd = MinibatchStdDev(group_size=4) if minibatch_std else None
        head_in = hidden + (16 if minibatch_discrimination else 0) + (1 if minibatch_std else 0)
        self.head = nn.Linear(head_in, 1)

    def forward(self, x: Tensor, return_features: bool = False):
        h = self.body(x)
        y = h
        if self.mbstd is not None:
            y = self.mbstd(y)
        if self.mbd is not None:
            y = self.mbd(y)
        logits = self.head(y)
        return (logits, [h]) if return_features else logits


def score(points: np.ndarray, target: np.ndarray, radius: float, std: float, bins: int,
          mode_fraction: float) -> Dict[str, float]:
    """Metrics of generated ``points`` (N, 2) against an equally sized ``target`` sample."""
    centres = mode_centres(radius)
    d = np.linalg.norm(points[:, None, :] - centres[None], axis=2)  # (N, 8)
    near = d.min(axis=1) <= 3 * std
    counts = np.bincount(d.argmin(axis=1)[near], minlength=NUM_MODES)
    fair = len(points) / NUM_MODES
    lim = [[-radius - 1, radius + 1]] * 2
    return {
        "modes": float((counts >= mode_fraction * fair).sum()),
        "hq": float(near.mean()),
        "js": js_divergence(histogram2d(points, bins, lim, density=False),
                            histogram2d(target, bins, lim, density=False)),
        "sw1": sliced_wasserstein(points, target, num_projections=128, seed=0),
        "mmd": mmd_rbf(points[:2000], target[:2000], bandwidth=0.1),
    }


def train_variant(name: str, seed: int, args) -> Dict[str, object]:
    """Train one variant from ``seed``; returns its metrics, seconds and the generated points."""
    spec = VARIANTS[name]
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(10_000 + seed)
    objective = GANObjective.from_config(spec["objective"])
    G = Generator(args.z_dim, args.hidden)
    D = Discriminator(args.hidden, **objective.discriminator_kwargs)
    lr = spec.get("lr", args.lr)
    g_opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.9))
    d_steps = spec.get("d_steps", 1)
    start = time.perf_counter()
    for _ in range(args.steps):
        for _ in range(d_steps):
            real = sample_target(args.batch_size, args.radius, args.std, data_gen)
            with torch.no_grad():
                fake = G(torch.randn(args.batch_size, args.z_dim))
            d_loss, _ = objective.discriminator_loss(D, real, fake)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            objective.after_discriminator_step(D)
        real = sample_target(args.batch_size, args.radius, args.std, data_gen) if objective.feature_matching else None
        fake = G(torch.randn(args.batch_size, args.z_dim))
        g_loss, _ = objective.generator_loss(D, real, fake)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        points = G(torch.randn(args.samples, args.z_dim)).numpy().astype(np.float64)
    target = sample_target(args.samples, args.radius, args.std, torch.Generator().manual_seed(20_000 + seed)).numpy()
    metrics = score(points, target.astype(np.float64), args.radius, args.std, args.bins, args.mode_fraction)
    return {"metrics": metrics, "seconds": seconds, "points": points}


def _run_job(job):
    name, seed, args = job
    torch.set_num_threads(1)
    return name, seed, train_variant(name, seed, args)


def target_floor(seed: int, args) -> Dict[str, float]:
    """Metrics of an independent target sample: the best any generator can score at this sample size."""
    a = sample_target(args.samples, args.radius, args.std, torch.Generator().manual_seed(30_000 + seed)).numpy()
    b = sample_target(args.samples, args.radius, args.std, torch.Generator().manual_seed(20_000 + seed)).numpy()
    return score(a.astype(np.float64), b.astype(np.float64), args.radius, args.std, args.bins, args.mode_fraction)


def _fmt(values: List[float], spec: str) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return format(mean, spec)
    return f"{format(mean, spec)} ± {format(float(np.std(values)), spec)}"


def make_table(results: Dict[str, List[Dict[str, object]]], floor: List[Dict[str, float]]) -> str:
    """Markdown table: mean ± std over seeds of every metric, per variant."""
    lines = [
        "| variant | modes (of 8) | high-quality | JS (bits) | SW1 | MMD² (σ=0.1) | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [("target (independent sample)", floor, None)]
    rows += [(name, [r["metrics"] for r in runs], [r["seconds"] for r in runs]) for name, runs in results.items()]
    for name, metrics, secs in rows:
        col = {k: [m[k] for m in metrics] for k in metrics[0]}
        lines.append(
            f"| {name} | {_fmt(col['modes'], '.1f')} | {_fmt([100 * v for v in col['hq']], '.1f')}% | "
            f"{_fmt(col['js'], '.3f')} | {_fmt(col['sw1'], '.3f')} | {_fmt(col['mmd'], '.4f')} | "
            f"{_fmt(secs, '.1f') if secs else '-'} |"
        )
    return "\n".join(lines)


def save_scatter(results: Dict[str, List[Dict[str, object]]], target: np.ndarray, path: Union[str, Path], args) -> None:
    """Grid of scatter plots (first seed of each variant) over the target's mode centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["target"] + list(results)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    lim = args.radius + 1
    centres = mode_centres(args.radius)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        pts = target if name == "target" else results[name][0]["points"]
        ax.axis("on")
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.3, color="tab:blue" if name != "target" else "tab:green")
        ax.scatter(centres[:, 0], centres[:, 1], s=25, marker="x", color="red")
        title = name
        if name != "target":
            m = results[name][0]["metrics"]
            title += f"\nmodes {m['modes']:.0f}, HQ {100 * m['hq']:.0f}%, JS {m['js']:.2f}"
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    fig.suptitle(f"8-Gaussian mixture, {args.steps} generator steps, seed {args.seeds[0]}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="GAN variants to train")
    p.add_argument("--steps", type=int, default=2000, help="generator steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random seeds (results are averaged)")
    p.add_argument("--batch-size", type=int, default=128, help="real and fake samples per step")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of G and D (betas 0.5, 0.9); wgan-gp uses 1e-4 (its VARIANTS entry)")
    p.add_argument("--z-dim", type=int, default=16, help="generator noise dimension")
    p.add_argument("--hidden", type=int, default=128, help="hidden width of both MLPs")
    p.add_argument("--radius", type=float, default=2.0, help="radius of the circle of mode centres")
    p.add_argument("--std", type=float, default=0.05, help="standard deviation of each mode")
    p.add_argument("--samples", type=int, default=2500, help="generated samples scored per run")
    p.add_argument("--bins", type=int, default=60, help="histogram bins per axis for JS")
    p.add_argument("--mode-fraction", type=float, default=0.1,
                   help="a mode is covered when this fraction of its fair share of samples is within 3 sigma")
    p.add_argument("--png", default=None,
                   help="also draw the scatter-plot grid into this PNG (docs/gan_mixture.png is drawn with "
                        "--png docs/gan_mixture.png); default: none")
    p.add_argument("--workers", type=int, default=1,
                   help="train (variant, seed) runs in this many processes (one torch thread each)")
    p.add_argument("--json", type=Path, default=None, help="also write the per-seed metrics here")
    p.add_argument("--quick", action="store_true",
                   help=f"~20 s smoke run: variants {', '.join(QUICK_VARIANTS)}, 300 steps, one seed, no PNG")
    return p


def main(args: argparse.Namespace) -> Dict[str, List[Dict[str, object]]]:
    if args.quick:
        args.variants = [v for v in args.variants if v in QUICK_VARIANTS] or QUICK_VARIANTS
        args.steps, args.seeds, args.png = min(args.steps, 300), args.seeds[:1], None
    jobs = [(name, seed, args) for name in args.variants for seed in args.seeds]
    runs: Dict[tuple, Dict[str, object]] = {}

    def report(name, seed, run):
        runs[(name, seed)] = run
        m = run["metrics"]
        print(f"{name:32s} seed {seed}: modes {m['modes']:.0f}  HQ {100 * m['hq']:5.1f}%  JS {m['js']:.3f}  "
              f"SW1 {m['sw1']:.3f}  MMD2 {m['mmd']:.4f}  ({run['seconds']:.1f} s)", flush=True)

    if args.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            for name, seed, run in pool.map(_run_job, jobs):
                report(name, seed, run)
    else:
        for job in jobs:
            report(*_run_job(job))
    results = {name: [runs[(name, seed)] for seed in args.seeds] for name in args.variants}
    floor = [target_floor(seed, args) for seed in args.seeds]
    print()
    print(f"8 Gaussians (radius {args.radius}, std {args.std}), {args.steps} G steps, batch {args.batch_size}, "
          f"seeds {args.seeds}, torch threads {torch.get_num_threads()}")
    print(make_table(results, floor))
    if args.png:
        target = sample_target(args.samples, args.radius, args.std, torch.Generator().manual_seed(20_000)).numpy()
        save_scatter(results, target, args.png, args)
        print(f"\nscatter plots: {args.png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {name: [r["metrics"] | {"seconds": r["seconds"]} for r in runs] for name, runs in results.items()}
        payload["target"] = floor
        args.json.write_text(json.dumps(payload, indent=2))
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
