"""Training loop of the wavelet super-resolution GAN (``python -m pipelines.train_super_resolution``).

One step follows BasicSR's GAN structure:

1. generator step, discriminator frozen: ``l_g_wavelet``, ``l_g_texture``, ``l_g_pix``
   (:class:`lightface.losses.wavelet.WaveletSRLoss`), ``l_g_id`` (frozen Light CNN feature
   distance between SR and HR, :class:`lightface.losses.identity.IdentityLoss`), ``l_g_adv``
   (:class:`lightface.engine.gan.GANObjective`, plus its feature-matching / pull-away terms),
   ``l_g_cycle`` (downscaled SR vs the LR input); then the EMA generator update;
2. discriminator step on the real HR batch and the detached SR batch (``l_d`` and the
   objective's named terms), then the objective's post-step hook (weight clipping).

Low-resolution inputs are made on the fly (:class:`lightface.data.degradation.Degradation`).
Every ``val_every`` steps the EMA generator is scored on a held-out set (clean bicubic
downscale): PSNR, SSIM and identity cosine for SR and bicubic, and a PNG grid
LR | bicubic | SR | HR is written. Checkpoints (project format, arch ``wavelet_srnet``,
``model_kwargs``, ``state_dict``, ``ema_state_dict`` plus the discriminator, optimisers,
GAN state, RNG state and step) go to ``out/checkpoints/latest.pth``; the final generator to
``out/model.pth``. Runs single-process on a CPU or under ``torchrun`` (DDP).
"""
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Subset

from ..data import LMDBDataset
from ..data.degradation import RESIZE_METHODS, Degradation, SRPairDataset
from ..data.io import IMAGE_EXTENSIONS, read_image
from ..eval.identity import identity_cosine
from ..eval.image_quality import psnr, ssim
from ..losses.identity import IdentityLoss
from ..losses.wavelet import WaveletSRLoss
from ..models.checkpoint import save_model_checkpoint
from ..models.discriminators import ImageDiscriminator, WaveletDiscriminator
from ..models.wavelet_srnet import WaveletSRNet
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .ema import ModelEMA
from .gan import GANObjective
from .logger import MetricLogger

__all__ = ["SRTrainConfig", "open_hr_source", "train_super_resolution", "make_sample_grid"]

log = logging.getLogger(__name__)


@dataclass
class SRTrainConfig:
    """Options of :func:`train_super_resolution` (the pipeline's flags, same names; see ``--help``)."""

    data: List[str]
    out: str
    scale: int = 8
    hr_size: int = 128
    identity_weights: Optional[str] = None
    identity_weight: float = 0.1
    channels: int = 64
    num_blocks: int = 8
    head_channels: int = 64
    head_groups: int = 4
    approx_weight: float = 0.01
    detail_weight: float = 0.99
    wavelet_weight: float = 1.0
    texture_weight: float = 1.0
    texture_alpha: float = 1.2
    texture_eps: float = 0.0
    image_weight: float = 0.1
    adv_weight: float = 0.005
    adv_start: int = 0
    discriminator: str = "image"
    d_channels: int = 32
    batch_size: int = 16
    lr: float = 2e-4
    d_lr: float = 2e-4
    steps: int = 10000
    max_minutes: Optional[float] = None
    ema_decay: float = 0.999
    val_every: int = 500
    val_count: int = 16
    val_data: Optional[str] = None
    save_every: int = 1000
    log_every: int = 50
    resume: Optional[str] = None
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    degradations: List[str] = field(default_factory=lambda: list(RESIZE_METHODS))
    blur_prob: float = 0.3
    noise_prob: float = 0.3
    jpeg_prob: float = 0.3
    gan: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_namespace(cls, args) -> "SRTrainConfig":
        """Take the known fields from an argparse namespace; the GAN flags go to ``gan``."""
        names = {f.name for f in fields(cls)} - {"gan"}
        values = {k: v for k, v in vars(args).items() if k in names}
        values["gan"] = GANObjective.from_args(args).to_config()
        return cls(**values)

    def model_kwargs(self) -> Dict[str, Any]:
        """The ``wavelet_srnet`` builder kwargs this configuration trains."""
        return dict(scale=self.scale, output_size=self.hr_size, channels=self.channels, num_blocks=self.num_blocks,
                    head_channels=self.head_channels, head_groups=self.head_groups)


class _ImageFolder:
    """HR faces from image files under a folder (recursive, sorted); items are uint8 BGR arrays."""

    def __init__(self, root: Path):
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return read_image(self.paths[i], "bgr")


def open_hr_source(paths):
    """An indexable HR face source from one path or several (concatenated, in order).

    Each path is a lightface LMDB (folder with ``data.mdb``) or a folder of images (recursive).
    """
    if isinstance(paths, (list, tuple)):
        if not paths:
            raise ValueError("--data: no HR source given")
        if len(paths) > 1:
            return ConcatDataset([open_hr_source(p) for p in paths])
        paths = paths[0]
    path = str(paths)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--data {path}: no such LMDB or image folder")
    if (p / "data.mdb").is_file():
        return LMDBDataset(str(p))
    return _ImageFolder(p)


def _loop(loader: DataLoader, sampler, epoch: int):
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _to_uint8_rgb(x: Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8 RGB."""
    return (x.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


def make_sample_grid(lr: Tensor, bicubic: Tensor, sr: Tensor, hr: Tensor, path) -> Path:
    """Write a PNG grid, one row per image: LR (nearest-upscaled) | bicubic | SR | HR. Inputs (N, 3, ., .) RGB [0, 1]."""
    size = hr.shape[-1]
    rows = []
    for i in range(hr.shape[0]):
        lr_up = F.interpolate(lr[i : i + 1], size=hr.shape[-2:], mode="nearest")[0]
        cells = [_to_uint8_rgb(t) for t in (lr_up, bicubic[i], sr[i], hr[i])]
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    log.debug("sample grid %s (%d rows of %d px)", path, len(rows), size)
    return path


class _Validator:
    """Fixed validation pairs (clean bicubic downscale) and the metrics on them."""

    def __init__(self, pairs: SRPairDataset, count: int, identity):
        n = min(count, len(pairs))
        items = [pairs[i] for i in range(n)]
        self.lr = torch.stack([a for a, _ in items])
        self.hr = torch.stack([b for _, b in items])
        self.identity = identity

    @torch.no_grad()
    def __call__(self, model: WaveletSRNet, device: torch.device) -> Dict[str, float]:
        model.eval()
        lr, hr = self.lr.to(device), self.hr.to(device)
        sr = torch.cat([model(lr[i : i + 8]) for i in range(0, len(lr), 8)]).clamp(0, 1)
        bic = model.bicubic(lr).clamp(0, 1)
        out = {
            "val_psnr": float(np.mean(psnr(sr.cpu(), hr.cpu()))),
            "val_ssim": float(np.mean(ssim(sr.cpu(), hr.cpu()))),
            "val_psnr_bicubic": float(np.mean(psnr(bic.cpu(), hr.cpu()))),
            "val_ssim_bicubic": float(np.mean(ssim(bic.cpu(), hr.cpu()))),
        }
        if self.identity is not None:
            net = self.identity.network
            out["val_id_cos"] = float(identity_cosine(net, sr, hr).mean())
            out["val_id_cos_bicubic"] = float(identity_cosine(net, bic, hr).mean())
        self.last = (lr, bic, sr, hr)
        return out


def _build_identity(cfg: SRTrainConfig, device: torch.device):
    if not cfg.identity_weights:
        log.info("no --identity-weights: training without the identity loss (l_g_id) and identity metrics")
        return None
    return IdentityLoss(cfg.identity_weights).to(device)


def _build_discriminator(cfg: SRTrainConfig, gan: GANObjective) -> nn.Module:
    kw = gan.discriminator_kwargs
    if cfg.discriminator == "image":
        return ImageDiscriminator(channels=cfg.d_channels, num_blocks=4, **kw)
    if cfg.discriminator == "wavelet":
        return WaveletDiscriminator(channels=cfg.d_channels, levels=2, **kw)
    raise ValueError(f"--discriminator must be 'image' or 'wavelet', got {cfg.discriminator!r}")


def _resolve_resume(cfg: SRTrainConfig) -> Optional[Path]:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        p = Path(cfg.out) / "checkpoints" / "latest.pth"
        return p if p.is_file() else None
    p = Path(cfg.resume)
    if not p.is_file():
        raise FileNotFoundError(f"--resume {cfg.resume}: no such checkpoint (pass 'auto' to resume from {cfg.out})")
    return p


def train_super_resolution(cfg: SRTrainConfig) -> Dict[str, Any]:
    """Train a :class:`~lightface.models.wavelet_srnet.WaveletSRNet` as configured; returns a summary dict.

    The summary holds ``steps``, ``checkpoint`` (the final ``model.pth``) and the last
    validation metrics. Set-up errors (missing data, bad options) raise before training.
    """
    dist_info = init_distributed(cfg.device)
    try:
        return _train(cfg, dist_info)
    finally:
        cleanup_distributed()


def _train(cfg: SRTrainConfig, dist_info: DistInfo) -> Dict[str, Any]:
    device = dist_info.device
    torch.manual_seed(cfg.seed + dist_info.rank)
    np.random.seed(cfg.seed + dist_info.rank)
    out = Path(cfg.out)
    gan = GANObjective.from_config(cfg.gan)
    if gan.uses_autoencoder_discriminator:
        raise ValueError("--began-gamma is not supported by train_super_resolution; pick an --adversarial objective")

    base = open_hr_source(cfg.data)
    train_deg = Degradation(cfg.scale, methods=cfg.degradations, blur_prob=cfg.blur_prob,
                            noise_prob=cfg.noise_prob, jpeg_prob=cfg.jpeg_prob)
    clean = Degradation(cfg.scale, methods=("bicubic",), blur_prob=0, noise_prob=0, jpeg_prob=0)
    if cfg.val_data:
        val_pairs = SRPairDataset(open_hr_source(cfg.val_data), cfg.hr_size, clean)
        train_base = base
    else:
        n_val = min(cfg.val_count, len(base) // 5)
        # every k-th image is held out, so the validation faces span the source's identities
        stride = max(1, len(base) // max(n_val, 1))
        val_idx = list(range(0, len(base), stride))[:n_val]
        held = set(val_idx)
        val_pairs = SRPairDataset(Subset(base, val_idx), cfg.hr_size, clean)
        train_base = Subset(base, [i for i in range(len(base)) if i not in held])
    if len(train_base) == 0:
        raise ValueError(f"--data {cfg.data}: no training images left")
    train_set = SRPairDataset(train_base, cfg.hr_size, train_deg, flip=True)

    sampler = None
    if dist_info.distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, seed=cfg.seed, drop_last=True)
    per_rank = max(1, cfg.batch_size // dist_info.world_size)
    loader = DataLoader(
        train_set, batch_size=per_rank, shuffle=sampler is None, sampler=sampler, drop_last=len(train_set) >= per_rank,
        num_workers=cfg.workers, persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda",
        worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(cfg.seed + dist_info.rank),
    )

    model_kwargs = cfg.model_kwargs()
    G = WaveletSRNet(**model_kwargs).to(device)
    D = _build_discriminator(cfg, gan).to(device)
    ema = ModelEMA(G, cfg.ema_decay)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.d_lr, betas=(0.5, 0.99))
    sr_loss = WaveletSRLoss(
        G.levels, approx_weight=cfg.approx_weight, detail_weight=cfg.detail_weight, texture_alpha=cfg.texture_alpha,
        texture_eps=cfg.texture_eps, wavelet_weight=cfg.wavelet_weight, texture_weight=cfg.texture_weight,
        image_weight=cfg.image_weight,
    ).to(device)
    identity = _build_identity(cfg, device)

    start = 0
    resume = _resolve_resume(cfg)
    if resume is not None:
        ckpt = load_checkpoint(resume, map_location="cpu")
        if ckpt.get("arch") != "wavelet_srnet" or ckpt.get("model_kwargs") != model_kwargs:
            raise ValueError(
                f"--resume {resume}: checkpoint model {ckpt.get('arch')} {ckpt.get('model_kwargs')} differs from this "
                f"run's {model_kwargs}; use the same --scale/--hr-size/--channels/... flags"
            )
        G.load_state_dict(ckpt["state_dict"])
        ema.load_state_dict(ckpt["ema_state_dict"])
        D.load_state_dict(ckpt["discriminator"])
        opt_g.load_state_dict(ckpt["optimizer_g"])
        opt_d.load_state_dict(ckpt["optimizer_d"])
        gan.load_state_dict(ckpt.get("gan_state", {}))
        restore_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
        log.info("resumed from %s at step %d", resume, start)

    G_train, D_train = G, D
    if dist_info.distributed:
        ids = [device.index] if device.type == "cuda" else None
        G_train = nn.parallel.DistributedDataParallel(G, device_ids=ids)
        D_train = nn.parallel.DistributedDataParallel(D, device_ids=ids)

    validator = _Validator(val_pairs, cfg.val_count, identity) if dist_info.is_main else None
    logger = MetricLogger(out, enabled=dist_info.is_main, total_steps=cfg.steps, batch_size=cfg.batch_size,
                          truncate_after=start if resume is not None else None)
    if dist_info.is_main:
        log.info("training wavelet_srnet %s on %d faces (%d held out) for steps %d..%d on %s (world %d)",
                 model_kwargs, len(train_set), len(val_pairs), start, cfg.steps, device, dist_info.world_size)

    def save(step: int, path: Path) -> Path:
        return save_model_checkpoint(
            path, G, "wavelet_srnet", model_kwargs, ema_state_dict=ema.state_dict(), step=step,
            discriminator=D.state_dict(), optimizer_g=opt_g.state_dict(), optimizer_d=opt_d.state_dict(),
            gan_state=gan.state_dict(), rng=capture_rng_state(), config=_plain_config(cfg),
        )

    last_val: Dict[str, float] = {}
    batches = _loop(loader, sampler, start // max(1, len(loader)))
    step = start
    sums: Dict[str, float] = {}
    count = 0
    t0 = time.monotonic()
    while step < cfg.steps:
        if cfg.max_minutes is not None and time.monotonic() - t0 > 60.0 * cfg.max_minutes:
            log.info("--max-minutes %.1f reached at step %d: stopping", cfg.max_minutes, step)
            if validator is not None and step % cfg.val_every:  # not validated at this step yet
                last_val = validator(ema.module, device)
                logger.log(step, **last_val)
                make_sample_grid(*validator.last, out / "samples" / f"step_{step:07d}.png")
            break
        lr_img, hr = next(batches)
        lr_img, hr = lr_img.to(device, non_blocking=True), hr.to(device, non_blocking=True)
        G_train.train()
        D_train.train()
        # --- generator step (D frozen inside GANObjective.generator_loss)
        outputs = G_train(lr_img, return_all=True)
        loss_g, terms = sr_loss(outputs.coeffs, outputs.sr, hr)
        terms = dict(terms)
        if identity is not None and cfg.identity_weight > 0:
            terms["l_g_id"] = cfg.identity_weight * identity(outputs.sr.clamp(0, 1), hr)
            loss_g = loss_g + terms["l_g_id"]
        use_adv = cfg.adv_weight > 0 and step >= cfg.adv_start
        if use_adv:
            # the plain D: its parameters are frozen in this step, so DDP must not expect their gradients
            adv, adv_terms = gan.generator_loss(D, hr, outputs.sr)
            terms["l_g_adv"] = cfg.adv_weight * adv
            loss_g = loss_g + terms["l_g_adv"]
            for k, v in adv_terms.items():
                if k != "g_adv":
                    terms[k] = v
        if gan.cycle_weight > 0:
            down = F.interpolate(outputs.sr, size=lr_img.shape[-2:], mode="bicubic", align_corners=False, antialias=True)
            cyc, _ = gan.cycle_loss(lr_img, down)
            terms["l_g_cycle"] = cyc
            loss_g = loss_g + cyc
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        ema.update(G)
        terms["l_g_total"] = loss_g
        # --- discriminator step on real and detached fake
        if use_adv:
            loss_d, d_terms = gan.discriminator_loss(D_train, hr, outputs.sr.detach())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            gan.after_discriminator_step(D)
            terms["l_d"] = loss_d
            terms.update(d_terms)
        step += 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, Tensor) else v)
        count += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            logger.log(step, lr=opt_g.param_groups[0]["lr"], epoch=round(step * cfg.batch_size / len(train_set), 3),
                       **{k: v / count for k, v in sums.items()})
            sums, count = {}, 0
        if validator is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            last_val = validator(ema.module, device)
            logger.log(step, **last_val)
            make_sample_grid(*validator.last, out / "samples" / f"step_{step:07d}.png")
        if dist_info.is_main and (step % cfg.save_every == 0 or step == cfg.steps):
            save(step, out / "checkpoints" / "latest.pth")
    final = None
    if dist_info.is_main:
        final = save(step, out / "model.pth")
        log.info("saved %s (EMA weights in ema_state_dict)", final)
    logger.close()
    return {"steps": step, "checkpoint": str(final) if final else None, **last_val}


def _seed_worker(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _plain_config(cfg: SRTrainConfig) -> Dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
