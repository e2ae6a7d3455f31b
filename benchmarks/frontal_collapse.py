"""TP-GAN collapse check: short CPU trainings on real CFP pose pairs, before and after the fix.

    python -m benchmarks.frontal_collapse                       # ../shared/data/cfp_train, ~30 CPU minutes
    python -m benchmarks.frontal_collapse --steps 40 --ids 20   # quicker, noisier

The same generator / discriminator step as ``lightface.engine.frontal_trainer`` (G:
``FrontalLoss`` with the paper's weights and the GAN objective, D: ``GANObjective``, EMA
after every G step), run twice from the same seed on the same pairs:

* ``baseline``: the recipe that collapsed: EMA decay 0.999 without warm-up, profile ->
  random-frontal pairs only;
* ``fixed``: EMA warm-up (:class:`lightface.engine.ema.ModelEMA`, the default now) and
  frontal self pairs (``PosePairDataset(self_pairs=0.5)``: one frontal that must come back
  as itself per two profiles).

Data: the first ``--ids`` identities of ``cfp_train/`` aligned to the 128 ``lightcnn``
template with their CFP fiducials; ``--held-out`` of them (seeded split) are never
trained on. Every ``--every`` steps both the raw and the EMA generator frontalize the
held-out profiles and reconstruct one held-out frontal per identity; the table reports
per-image standard deviation (0 for a flat image), the standard deviation across the
held-out inputs (0 when every input gives the same image), the L1 to the target frontal
(a different photo) and the L1 of the frontal reconstructions. It also prints what a
constant image scores: the held-out targets' per-pixel median. Writes
``OUT/frontal_collapse.json`` and ``OUT/contact_sheet.png`` (rows: held-out probes;
columns: input | baseline raw | baseline EMA | fixed raw | fixed EMA | target).
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from pipelines._argtypes import shared_dir

log = logging.getLogger("benchmarks.frontal_collapse")

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "baseline": {"ema_warmup": False, "self_pairs": 0.0},
    "fixed": {"ema_warmup": True, "self_pairs": 0.5},
}


def build_pose_lmdb(cfp_root: Path, ids: int, out: Path) -> Path:
    """The first ``ids`` identities of a CFP tree as an aligned 128 RGB pose-tagged LMDB (kept when complete)."""
    from lightface.data.build import build_lmdb
    from lightface.data.lmdb_format import is_complete_dataset
    from lightface.data.pose_pairs import write_cfp_landmarks

    target = out / f"cfp{ids}.lmdb"
    if is_complete_dataset(target):
        return target
    sub = out / f"cfp{ids}_src"
    chosen = sorted(p.name for p in (cfp_root / "Images").iterdir() if p.is_dir())[:ids]
    for folder in ("Images", "Fiducials"):
        (sub / folder).mkdir(parents=True, exist_ok=True)
        for i in chosen:
            link = sub / folder / i
            if not link.exists():
                link.symlink_to((cfp_root / folder / i).resolve(), target_is_directory=True)
    write_cfp_landmarks(sub, sub / "5pt.txt")
    build_lmdb(sub / "Images", target, size=128, template="lightcnn", color="rgb", encoding="png",
               landmarks=sub / "5pt.txt", overwrite=True, progress=False)
    return target


def _held_out(source, held_ids):
    """Held-out profiles, their target frontals, and one other frontal per identity (to reconstruct)."""
    from lightface.data.pose_pairs import PosePairDataset

    val = PosePairDataset(source, identities=held_ids, mirror="left", fixed_target=True)
    items = [val[i] for i in range(len(val))]
    x = torch.stack([it["input"] for it in items])
    y = torch.stack([it["target"] for it in items])
    frontals = val.faces(val.frontals[l][-1] for l in val.identities())
    return x, y, frontals


@torch.no_grad()
def _score(net, x, y, frontals) -> Dict[str, float]:
    was = net.training
    net.eval()
    out = torch.cat([net.frontalize(x[i:i + 10]) for i in range(0, len(x), 10)])
    rec = torch.cat([net.frontalize(frontals[i:i + 10]) for i in range(0, len(frontals), 10)])
    net.train(was)
    return {"image_std": out.flatten(1).std(1).mean().item(), "cross_std": out.std(0).mean().item(),
            "l1_target": (out - y).abs().mean().item(), "l1_self": (rec - frontals).abs().mean().item()}


def run_variant(name: str, source, train_ids, held, args) -> Dict:
    """Train one variant; returns its curve and the final raw / EMA generators."""
    from torch.utils.data import DataLoader

    from lightface.data.pose_pairs import PosePairDataset
    from lightface.engine.ema import ModelEMA
    from lightface.engine.gan import GANObjective
    from lightface.losses.frontal import FrontalLoss
    from lightface.models import get_model

    cfg = VARIANTS[name]
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train = PosePairDataset(source, identities=train_ids, mirror="left", self_pairs=cfg["self_pairs"])
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(args.seed))
    G = get_model("tpgan", width=args.width, feature_dim=64, noise_dim=16)
    D = get_model("tpgan_discriminator", width=args.width)
    objective = GANObjective()  # nsgan, the trainer's default
    criterion = FrontalLoss(None, objective)  # the paper's weights: sym 0.3, adv 1e-3, tv 1e-4, patch 1
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.5, 0.999))
    ema = ModelEMA(G, 0.999, warmup=cfg["ema_warmup"])
    curve: List[Dict] = []
    step, t0 = 0, time.perf_counter()

    def record():
        row = {"step": step}
        for tag, net in (("raw", G), ("ema", ema.module)):
            row.update({f"{tag}_{k}": v for k, v in _score(net, *held).items()})
        curve.append(row)
        log.info("%s step %d: %s", name, step, " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step"))

    record()
    while step < args.steps:
        for batch in loader:
            x, y = batch["input"], batch["target"]
            out = G(x)
            loss, _ = criterion(out, y, D, patch_boxes=G.boxes)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            ema.update(G)
            d_loss, _ = objective.discriminator_loss(D, y, out["img128"])
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            step += 1
            if step % args.every == 0 or step == args.steps:
                record()
            if step >= args.steps:
                break
    return {"variant": name, **cfg, "seconds": round(time.perf_counter() - t0, 1), "curve": curve,
            "G": G.eval(), "EMA": ema.module}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser("benchmarks.frontal_collapse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfp", default=str(shared_dir() / "data" / "cfp_train"), help="CFP tree (Images/, Fiducials/)")
    p.add_argument("--out", default=str(ROOT / "runs" / "frontal_collapse"), help="output folder (LMDB cache, JSON, sheet)")
    p.add_argument("--ids", type=int, default=60, help="identities taken from --cfp (default: %(default)s)")
    p.add_argument("--held-out", type=int, default=10, help="of them never trained on (default: %(default)s)")
    p.add_argument("--steps", type=int, default=150, help="generator steps per variant (default: %(default)s)")
    p.add_argument("--every", type=int, default=25, help="score every N steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="(default: %(default)s)")
    p.add_argument("--width", type=int, default=8, help="generator / discriminator width (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam lr of G and D (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    cfp = Path(args.cfp)
    if not (cfp / "Images").is_dir():
        print(f"benchmarks.frontal_collapse: skipped, no CFP data at {cfp} (pass --cfp)")
        return 0
    from lightface.data import LMDBDataset
    from lightface.data.pose_pairs import split_identities
    from lightface.engine.frontal_trainer import save_sample_grid

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = LMDBDataset(build_pose_lmdb(cfp, args.ids, out))
    train_ids, held_ids = split_identities(source.labels, args.ids - args.held_out, seed=0)
    held = _held_out(source, held_ids)
    x, y, frontals = held
    constant = y.median(0).values.expand_as(y)
    reference = {"targets": {"image_std": y.flatten(1).std(1).mean().item(), "cross_std": y.std(0).mean().item()},
                 "constant_median_frontal": {"l1_target": (constant - y).abs().mean().item()},
                 "input_as_output": {"l1_target": (x - y).abs().mean().item()}}
    results = [run_variant(v, source, train_ids, held, args) for v in args.variants]

    header = f"{'variant':10} {'weights':4} {'image std':>10} {'cross std':>10} {'L1 target':>10} {'L1 self':>9}"
    print(f"\nheld out: {len(held_ids)} identities, {len(x)} profiles, {len(frontals)} frontal reconstructions; "
          f"after {args.steps} steps of batch {args.batch_size}, width {args.width}\n{header}")
    init = results[0]["curve"][0]
    print(f"{'init':10} {'-':4} {init['raw_image_std']:10.4f} {init['raw_cross_std']:10.4f} "
          f"{init['raw_l1_target']:10.4f} {init['raw_l1_self']:9.4f}")
    for r in results:
        last = r["curve"][-1]
        for tag in ("raw", "ema"):
            print(f"{r['variant']:10} {tag:4} {last[tag + '_image_std']:10.4f} {last[tag + '_cross_std']:10.4f} "
                  f"{last[tag + '_l1_target']:10.4f} {last[tag + '_l1_self']:9.4f}")
    print(f"{'targets':10} {'-':4} {reference['targets']['image_std']:10.4f} {reference['targets']['cross_std']:10.4f}")
    print(f"constant median frontal: L1 target {reference['constant_median_frontal']['l1_target']:.4f}; "
          f"the input itself: {reference['input_as_output']['l1_target']:.4f}")

    show = torch.linspace(0, len(x) - 1, min(8, len(x))).round().long()
    cols = [x[show]]
    for r in results:
        with torch.no_grad():
            cols += [r["G"].frontalize(x[show]), r["EMA"].frontalize(x[show])]
    cols.append(y[show])
    save_sample_grid(out / "contact_sheet.png", cols)
    report = {"args": vars(args), "held_out_ids": held_ids, "reference": reference,
              "variants": [{k: v for k, v in r.items() if k not in ("G", "EMA")} for r in results]}
    (out / "frontal_collapse.json").write_text(json.dumps(report, indent=2))
    columns = " | ".join(f"{r['variant']} raw | {r['variant']} EMA" for r in results)
    print(f"wrote {out / 'frontal_collapse.json'} and {out / 'contact_sheet.png'} (columns: input | {columns} | target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
