"""TP-GAN frontalization training: the loop behind ``python -m pipelines.train_frontalization``.

One step (paired mode, the paper's setting):

1. generator step: ``out = G(profile)``; ``L_syn`` (:class:`lightface.losses.frontal.FrontalLoss`)
   against the frontal target with D frozen; Adam step; EMA update;
2. discriminator step every ``d_every`` generator steps: the GAN objective
   (:class:`lightface.engine.gan.GANObjective`, ``--adversarial`` etc.) on the target
   (real) and the detached ``img128`` (fake).

Unpaired mode (``--cycle W > 0``): profiles and frontals are drawn independently, so
there is no pixel target. A second TP-GAN generator ``P`` (frontal -> profile) and a
second discriminator ``D_p`` (on profiles) are trained CycleGAN-style:
``L_G = l2 * (adv(D, G(x)) + adv(D_p, P(y))) + W * (|P(G(x)) - x|_1 + |G(P(y)) - y|_1)
+ l1 * sym(G(x)) + l4 * tv(G(x)) + l3 * ip(G(x), x)``, i.e. the identity-preserving
term compares the frontalised face with its own input (the only same-identity image).

Distributed (``torchrun``): every process draws its own shard (``DistributedSampler``);
gradients of every network are averaged with ``all_reduce`` after each backward (the
explicit form of DDP, which also works with the several discriminator forwards of a
gradient penalty); rank 0 logs, validates and writes checkpoints.

Validation (rank 0, EMA generator): for the held-out identities, Light CNN ``fc``
embeddings of each raw profile and of its frontalised version are compared with each
identity's frontal gallery image (the first frontal of the identity): mean cosine to the
own identity's gallery (``val_cos_raw`` / ``val_cos_frontal``) and rank-1 identification
over the gallery (``val_rank1_raw`` / ``val_rank1_frontal``).
"""
import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from ..data.pose_pairs import PosePairDataset, image_to_tensor, split_identities
from ..losses.frontal import FrontalLoss, prefix_terms
from ..models import get_model
from ..models.checkpoint import load_weights, save_model_checkpoint
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from .config import config_to_dict, save_config
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .ema import ModelEMA
from .gan import GANObjective
from .logger import MetricLogger

__all__ = ["train_frontalization", "evaluate_frontalization", "save_sample_grid", "generator_kwargs"]

log = logging.getLogger(__name__)

ARCH = "tpgan"


def generator_kwargs(args: argparse.Namespace, num_classes: int = 0) -> Dict[str, Any]:
    """Builder kwargs of the TP-GAN generator from the training flags (plain types, checkpoint-safe)."""
    from ..models.tpgan import frontal_patch_centres

    centres = frontal_patch_centres(128)
    return {
        "in_channels": args.channels,
        "width": args.width,
        "local_width": args.local_width,
        "feature_dim": args.feature_dim,
        "noise_dim": args.noise_dim,
        "num_classes": num_classes,
        "patch_centres": {k: [float(v[0]), float(v[1])] for k, v in centres.items()},
    }


def _build_discriminator(args, objective: GANObjective) -> tuple:
    if objective.uses_autoencoder_discriminator:
        kwargs = {"channels": args.channels, "size": 128, "hidden": args.d_width, **objective.discriminator_kwargs}
        return "autoencoder_discriminator", kwargs
    kwargs = {"in_channels": args.channels, "width": args.d_width, **objective.discriminator_kwargs}
    return "tpgan_discriminator", kwargs


def _allreduce_grads(module: nn.Module, info: DistInfo) -> None:
    """Average gradients over processes (no-op single-process)."""
    if not info.distributed:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch_dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def _optimizer_step(opt: torch.optim.Optimizer, loss: Tensor, modules: Sequence[nn.Module], info: DistInfo) -> None:
    """zero_grad, backward, average the gradients of ``modules`` over processes, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for module in modules:
        _allreduce_grads(module, info)
    opt.step()


def _broadcast_params(module: nn.Module, info: DistInfo) -> None:
    if info.distributed:
        for t in list(module.parameters()) + list(module.buffers()):
            torch_dist.broadcast(t.data, 0)


def _past(deadline: float, info: DistInfo, device: torch.device) -> bool:
    """Whether any process has passed ``deadline`` (all processes then stop at the same step)."""
    flag = torch.tensor([1.0 if time.monotonic() > deadline else 0.0], device=device)
    if info.distributed:
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
    return bool(flag.item())


def _infinite(loader: DataLoader, sampler: Optional[DistributedSampler], epoch: int) -> Iterator:
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


@torch.no_grad()
def save_sample_grid(path, rows: Sequence[Tensor]) -> Path:
    """Save a PNG grid: one row per sample, columns = the given tensors (e.g. input | synthesised | target).

    Args:
        path: output ``.png``.
        rows: tensors (N, C, H, W) float in [0, 1], RGB (C=3) or gray (C=1), same shape.
    """
    import cv2

    cols = [r.detach().float().clamp(0, 1).cpu() for r in rows]
    n = cols[0].shape[0]
    tiles = []
    for i in range(n):
        tiles.append(torch.cat([c[i] for c in cols], dim=2))  # C, H, W*k
    grid = torch.cat(tiles, dim=1)  # C, H*n, W*k
    img = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    img = img[:, :, ::-1] if img.shape[2] == 3 else img[:, :, 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f"cannot write {path}")
    return path


@torch.no_grad()
def evaluate_frontalization(
    generator: nn.Module,
    identity: nn.Module,
    dataset: PosePairDataset,
    device: torch.device,
    batch_size: int = 16,
) -> Dict[str, float]:
    """Identity cosine and rank-1 of raw vs frontalised profiles against a frontal gallery.

    Args:
        generator: a TP-GAN generator (eval mode is set here; zero noise).
        identity: exposes ``features(x) -> {"fc": (N, 256)}`` for images in [0, 1]
            (:class:`lightface.losses.identity.IdentityLoss`).
        dataset: held-out pairs; the gallery is the first frontal of each of its identities.
    Returns:
        ``val_cos_raw``, ``val_cos_frontal`` (mean cosine of each probe to its own identity's
        gallery image), ``val_rank1_raw``, ``val_rank1_frontal`` (fraction of probes whose most
        similar gallery image is their identity), ``val_probes``, ``val_gallery``.
    """
    was_training = generator.training
    generator.eval()
    ids = dataset.identities()
    gallery = torch.stack(
        [image_to_tensor(dataset.load(dataset.frontals[i][0])[0], dataset.channels) for i in ids]
    ).to(device)
    g_emb = torch.cat([F.normalize(identity.features(gallery[s : s + batch_size])["fc"], dim=1)
                       for s in range(0, len(ids), batch_size)])
    id_pos = {l: k for k, l in enumerate(ids)}
    raw_e, front_e, labels = [], [], []
    for s in range(0, len(dataset), batch_size):
        items = [dataset[j] for j in range(s, min(s + batch_size, len(dataset)))]
        x = torch.stack([it["input"] for it in items]).to(device)
        raw_e.append(F.normalize(identity.features(x)["fc"], dim=1))
        front_e.append(F.normalize(identity.features(generator.frontalize(x))["fc"], dim=1))
        labels += [id_pos[it["label"]] for it in items]
    labels_t = torch.tensor(labels, device=device)
    out = {"val_probes": float(len(labels)), "val_gallery": float(len(ids))}
    for name, emb in (("raw", torch.cat(raw_e)), ("frontal", torch.cat(front_e))):
        sim = emb @ g_emb.T
        out[f"val_cos_{name}"] = sim.gather(1, labels_t[:, None]).mean().item()
        out[f"val_rank1_{name}"] = (sim.argmax(1) == labels_t).float().mean().item()
    generator.train(was_training)
    return out


def _make_identity(path: Optional[str], device: torch.device):
    if not path:
        return None
    from ..losses.identity import IdentityLoss

    return IdentityLoss(path).to(device).eval()


def train_frontalization(args: argparse.Namespace) -> Dict[str, Any]:
    """Train TP-GAN as configured by the ``train_frontalization`` flags; returns a summary dict.

    Writes into ``args.out``: ``config.yaml``, ``metrics.jsonl`` (+ TensorBoard),
    ``samples/step_XXXXXXX.png`` (input | synthesised | target), ``checkpoints/last.pth``
    (project format: arch ``tpgan``, ``model_kwargs``, ``state_dict``, ``ema_state_dict``,
    plus discriminator(s), optimisers, step, RNG and GAN-objective state for ``--resume``)
    and ``checkpoints/final.pth``.
    """
    info = init_distributed(args.device)
    try:
        return _train(args, info)
    finally:
        cleanup_distributed()


def _train(args: argparse.Namespace, info: DistInfo) -> Dict[str, Any]:
    device = info.device
    out = Path(args.out)
    torch.manual_seed(args.seed + info.rank)
    np.random.seed(args.seed + info.rank)
    objective = GANObjective.from_args(args)
    cycle = objective.cycle_weight > 0

    # ---- data
    from ..data import LMDBDataset

    source = LMDBDataset(args.data)
    train_ids: Optional[List[int]] = None
    held_ids: Optional[List[int]] = None
    if args.train_identities:
        train_ids, held_ids = split_identities(source.labels, args.train_identities, args.split_seed)
    mirror = None if args.mirror in (None, "none") else args.mirror
    train_set = PosePairDataset(source, identities=train_ids, paired=not cycle, mirror=mirror,
                                channels=args.channels, pose_key=args.pose_key)
    val_set = PosePairDataset(source, identities=held_ids if held_ids else train_ids, paired=True, mirror=mirror,
                              channels=args.channels, pose_key=args.pose_key, fixed_target=True)
    sampler = DistributedSampler(train_set, info.world_size, info.rank, shuffle=True, seed=args.seed) \
        if info.distributed else None
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=args.workers, drop_last=len(train_set) >= args.batch_size * info.world_size,
                        persistent_workers=args.workers > 0)
    label_map = {l: k for k, l in enumerate(sorted(train_set.frontals))}

    # ---- models
    num_classes = len(label_map) if args.lambda_ce > 0 else 0
    g_kwargs = generator_kwargs(args, num_classes)
    G = get_model(ARCH, **g_kwargs).to(device)
    d_arch, d_kwargs = _build_discriminator(args, objective)
    D = get_model(d_arch, **d_kwargs).to(device)
    nets: Dict[str, nn.Module] = {"G": G, "D": D}
    if cycle:
        p_kwargs = dict(g_kwargs, num_classes=0)
        nets["P"] = get_model(ARCH, **p_kwargs).to(device)
        nets["D_p"] = get_model(d_arch, **d_kwargs).to(device)
    for net in nets.values():
        _broadcast_params(net, info)
    g_params = [p for k in ("G", "P") if k in nets for p in nets[k].parameters()]
    d_params = [p for k in ("D", "D_p") if k in nets for p in nets[k].parameters()]
    opt_g = torch.optim.Adam(g_params, lr=args.lr, betas=(args.beta1, 0.999))
    opt_d = torch.optim.Adam(d_params, lr=args.lr_d or args.lr, betas=(args.beta1, 0.999))
    ema = ModelEMA(G, decay=args.ema_decay)

    identity = _make_identity(args.identity_weights, device)
    if identity is None:
        log.warning("no --identity-weights: the identity-preserving term and identity validation are off")
    criterion = FrontalLoss(identity, objective, lambda_sym=args.lambda_sym, lambda_adv=args.lambda_adv,
                            lambda_ip=args.lambda_ip, lambda_tv=args.lambda_tv, lambda_patch=args.lambda_patch,
                            lambda_ce=args.lambda_ce)
    boxes = G.boxes

    # ---- resume
    step, epoch = 0, 0
    ckpt_dir = out / "checkpoints"
    resume = args.resume
    if resume == "auto":
        resume = str(ckpt_dir / "last.pth") if (ckpt_dir / "last.pth").is_file() else None
    if resume:
        ck = load_checkpoint(resume, map_location="cpu")
        if ck.get("arch") != ARCH:
            raise ValueError(f"--resume {resume}: not a tpgan training checkpoint (arch {ck.get('arch')!r})")
        load_weights(G, ck)
        ema.load_state_dict(ck["ema_state_dict"])
        for key in nets:
            if key != "G":
                if key not in ck.get("networks", {}):
                    raise ValueError(f"--resume {resume}: the checkpoint has no {key!r} network; "
                                     "resume with the same --cycle / GAN flags the run started with")
                nets[key].load_state_dict(ck["networks"][key])
        opt_g.load_state_dict(ck["optimizer_g"])
        opt_d.load_state_dict(ck["optimizer_d"])
        objective.load_state_dict(ck.get("gan_objective", {}))
        step, epoch = int(ck["step"]), int(ck["epoch"])
        if "rng" in ck and info.world_size == 1:
            restore_rng_state(ck["rng"])
        log.info("resumed from %s at step %d", resume, step)

    if info.is_main:
        save_config(args, out / "config.yaml")
    logger = MetricLogger(out, enabled=info.is_main, total_steps=args.steps,
                          batch_size=args.batch_size * info.world_size, truncate_after=step if resume else None)

    def checkpoint(path: Path) -> None:
        save_model_checkpoint(
            path, G, ARCH, g_kwargs,
            ema_state_dict=ema.state_dict(),
            networks={k: v.state_dict() for k, v in nets.items() if k != "G"},
            network_archs={k: [d_arch if k.startswith("D") else ARCH, d_kwargs if k.startswith("D") else p_kwargs]
                           for k in nets if k != "G"},
            optimizer_g=opt_g.state_dict(), optimizer_d=opt_d.state_dict(),
            gan_objective=objective.state_dict(), step=step, epoch=epoch, rng=capture_rng_state(),
            config=config_to_dict(args),
        )

    # fixed validation/sample batch
    n_show = min(args.num_samples, len(val_set))
    show = [val_set[int(i)] for i in np.linspace(0, len(val_set) - 1, n_show).round()]  # spread over identities
    show_x = torch.stack([s["input"] for s in show]).to(device)
    show_y = torch.stack([s["target"] for s in show]).to(device)

    for net in nets.values():
        net.train()
    stream = _infinite(loader, sampler, epoch)
    summary: Dict[str, Any] = {}
    deadline = time.monotonic() + 60.0 * args.max_minutes if getattr(args, "max_minutes", None) else None
    last_step = args.steps
    while step < last_step:
        epoch, batch = next(stream)
        x = batch["input"].to(device, non_blocking=True)
        y = batch["target"].to(device, non_blocking=True)
        step += 1
        # ---- generator step (D frozen inside the objective)
        if not cycle:
            o = G(x)
            labels = None
            if num_classes:
                labels = torch.tensor([label_map[int(l)] for l in batch["label"]], device=device)
            g_loss, terms = criterion(o, y, D, labels=labels, patch_boxes=boxes)
            fake = o["img128"]
        else:
            P, D_p = nets["P"], nets["D_p"]
            o = G(x)
            fake = o["img128"]
            fake_p = P(y)["img128"]
            rec_x = P(fake)["img128"]
            rec_y = G(fake_p)["img128"]
            terms = {}
            adv_f, t1 = objective.generator_loss(D, y, fake)
            adv_p, t2 = objective.generator_loss(D_p, x, fake_p)
            c_loss, t3 = objective.cycle_loss(x, rec_x, y, rec_y)
            sym = criterion.symmetry(o)
            tv = criterion.total_variation(fake)
            g_loss = args.lambda_adv * (adv_f + adv_p) + c_loss + args.lambda_sym * sym + args.lambda_tv * tv
            terms.update(prefix_terms(t1))
            terms["l_g_adv_profile"] = t2["g_adv"]
            terms.update(prefix_terms(t3))
            terms["l_g_sym"], terms["l_g_tv"] = sym.item(), tv.item()
            if identity is not None and args.lambda_ip > 0:
                ip = criterion.identity_preserving(fake, x)
                g_loss = g_loss + args.lambda_ip * ip
                terms["l_g_ip"] = ip.item()
            terms["l_g_total"] = g_loss.item()
        _optimizer_step(opt_g, g_loss, [nets[k] for k in ("G", "P") if k in nets], info)
        ema.update(G)
        # ---- discriminator step
        if step % args.d_every == 0 and args.lambda_adv > 0:
            d_loss, d_terms = objective.discriminator_loss(D, y, fake)
            if cycle:
                d_loss_p, d_terms_p = objective.discriminator_loss(nets["D_p"], x, fake_p)
                d_loss = d_loss + d_loss_p
                terms["l_d_adv_profile"] = d_terms_p["d_adv"]
            discriminators = [nets[k] for k in ("D", "D_p") if k in nets]
            _optimizer_step(opt_d, d_loss, discriminators, info)
            for net in discriminators:
                objective.after_discriminator_step(net)
            terms.update(prefix_terms(d_terms))
        if deadline is not None and step < last_step and _past(deadline, info, device):
            log.info("--max-minutes %s reached at step %d: finishing", args.max_minutes, step)
            last_step = step
        if not all(math.isfinite(v) for v in terms.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {terms}; lower --lr or check the data")
        if step % args.log_every == 0 or step == last_step:
            logger.log(step, epoch=epoch, lr=opt_g.param_groups[0]["lr"], **terms)
        summary.update(terms)
        if info.is_main and (step % args.val_every == 0 or step == last_step):
            with torch.no_grad():
                fr = ema.module.frontalize(show_x)
            save_sample_grid(out / "samples" / f"step_{step:07d}.png", [show_x, fr, show_y])
            if identity is not None:
                metrics = evaluate_frontalization(ema.module, identity, val_set, device, args.batch_size)
                logger.log(step, **metrics)
                summary.update(metrics)
        if info.is_main and (step % args.save_every == 0 or step == last_step):
            checkpoint(ckpt_dir / "last.pth")
    if info.is_main:
        checkpoint(ckpt_dir / "final.pth")
        checkpoint(ckpt_dir / "last.pth")
    logger.close()
    summary.update(step=step, out=str(out))
    return summary
