"""Wavelet super-resolution GAN training (``python -m pipelines.train_super_resolution``), a task of the one engine.

One step follows BasicSR's GAN structure:

1. generator step, discriminator frozen: ``l_g_wavelet``, ``l_g_texture``, ``l_g_pix``
   (:class:`lightface.losses.wavelet.WaveletSRLoss`), ``l_g_id`` (frozen Light CNN feature
   distance between SR and HR, :class:`lightface.losses.identity.IdentityLoss`), each logged
   with its weight applied; then the :class:`lightface.engine.gan.GANObjective`'s terms,
   logged unweighted under the frontalization trainer's names: ``l_g_adv`` (plus
   ``l_g_feature_matching`` / ``l_g_pull_away``; the loss adds ``--adv-weight`` x their
   weighted sum) and ``l_g_cycle`` (the SR output downscaled with the kernel its LR was made
   with vs the LR input; the loss adds ``--cycle`` x it); ``l_g_total``;
2. discriminator step on the real HR batch and the detached SR batch (``l_d``, the loss it
   minimises, and the objective's terms ``l_d_adv``, ``l_d_real``, ``l_d_fake`` ...), then the
   objective's post-step hook (weight clipping); with ``--d-steps N``, N - 1 more, each on the next
   batch's HR and the updated generator's SR of its LR (such a step takes N batches).

The :class:`~lightface.engine.engine.Engine` keeps the EMA generator (updated after every
step), runs DDP on G and D under ``torchrun``, and writes the run folder: ``last.pt`` /
``best.pt`` (arch ``wavelet_srnet``, ``model_kwargs``, ``state_dict``, ``ema_state_dict``
plus the discriminator, optimisers, GAN state and every rank's RNG state), ``model.pt``
(the final generator, loadable by :class:`~lightface.restore.super_resolver.SuperResolver`),
``metrics.jsonl``, ``samples/step_XXXXXXX.png``.

Low-resolution inputs are made on the fly (:class:`lightface.data.degradation.Degradation`).
Every ``val_every`` steps the EMA generator is scored on a held-out set (clean bicubic
downscale): PSNR, SSIM and identity cosine for SR and bicubic, and a PNG grid
LR | bicubic | SR | HR is written; ``best.pt`` tracks ``val_psnr``.
"""
import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..data.convert import tensor_to_image
from ..data.degradation import RESIZE_METHODS, Degradation, SRPairDataset, downscale_tensor
from ..data.folders import image_files
from ..data.io import IMAGE_EXTENSIONS, ImageReadError, image_size, read_image, write_image
from ..data.lmdb_dataset import LMDBDataset
from ..data.lmdb_format import is_lmdb_dir
from ..data.recognition import check_distinct_sources, data_paths
from ..eval.identity import identity_cosine
from ..eval.image_quality import psnr, ssim
from ..losses.frontal import prefix_terms
from ..losses.wavelet import NORMALIZATIONS, WaveletSRLoss
from ..models.discriminators import ImageDiscriminator, WaveletDiscriminator
from ..models.wavelet_srnet import WaveletSRNet
from .config import flag_name, option
from .distributed import max_over_processes
from .engine import Engine, TrainingError, saved_setting
from .gan import GANRunConfig, GANTask, finetune_option, identity_judge, load_generator_start

__all__ = ["SRTrainConfig", "SuperResolutionTask", "open_hr_source", "train_super_resolution", "make_sample_grid",
           "cycle_downscale", "saved_wavelet_normalization", "LEGACY_WAVELET_NORMALIZATION"]

log = logging.getLogger(__name__)

_DATA, _MODEL, _LOSS, _DEG, _OPT = ("data", "model (wavelet_srnet)", "losses", "degradation (LR made on the fly)",
                                    "optimisation")

#: ``--wavelet-normalization`` of the runs saved before the setting existed, and of the shipped SR models
LEGACY_WAVELET_NORMALIZATION = "per-band"


@dataclass
class SRTrainConfig(GANRunConfig):
    """Every setting of :func:`train_super_resolution` (the pipeline's flags and YAML keys, same names)."""

    data: List[str] = option(default_factory=list, required=True, group=_DATA, path=True,
                             help="HR faces: lightface LMDBs (pipelines.build_lmdb --color rgb, aligned) and/or image "
                                  "folders, concatenated")
    val_data: Optional[str] = option(None, group=_DATA, path=True,
                                     help="held-out HR faces for validation; default: --val-count images held out of "
                                          "--data")
    val_count: int = option(16, group=_DATA, help="validation images")
    hr_size: int = option(128, group=_DATA, help="HR face size in pixels (non-square sources are centre-cropped; images smaller "
                                       "than this are left out and counted, never upsampled)")
    scale: int = option(8, choices=(2, 4, 8, 16), group=_MODEL, help="upscaling factor")
    channels: int = option(64, group=_MODEL, help="embedding-network width")
    num_blocks: int = option(8, group=_MODEL, help="residual blocks in the embedding network")
    head_channels: int = option(64, group=_MODEL, help="hidden width of each wavelet head")
    head_groups: int = option(4, group=_MODEL, help="wavelet-prediction heads (must divide 4**log2(scale))")
    finetune: Optional[str] = finetune_option("super_resolution", "sr4, sr8", _MODEL)
    wavelet_weight: float = option(1.0, group=_LOSS, help="wavelet prediction loss weight")
    approx_weight: float = option(0.01, group=_LOSS, help="wavelet loss weight of the approximation band")
    detail_weight: float = option(0.99, group=_LOSS, help="wavelet loss weight of the detail bands")
    wavelet_normalization: Optional[str] = option(
        None, choices=NORMALIZATIONS, group=_LOSS,
        default_text="paper; per-band for --resume and --finetune of a run saved without this setting and "
                     "--finetune of a shipped model",
        help="how the wavelet loss averages its subbands: paper (one mean over the approximation and one over the "
             "detail coefficients: the weights mean what they mean in the paper, at every --scale) or per-band (one "
             "mean per subband, summed: the term grows with the 4**levels subbands, so --image-weight and "
             "--texture-weight count 15x (4x) / 63x (8x) less; the earlier behaviour)")
    texture_weight: float = option(1.0, group=_LOSS, help="texture loss weight")
    texture_alpha: float = option(1.2, group=_LOSS,
                                  help="texture loss alpha: SR detail energy must reach alpha x HR energy")
    texture_eps: float = option(0.0, group=_LOSS, help="texture loss epsilon")
    image_weight: float = option(0.1, group=_LOSS, help="full-image MSE weight")
    identity_weight: float = option(0.1, group=_LOSS, help="identity loss weight")
    adv_weight: float = option(0.005, group=_LOSS,
                               help="weight of the GAN generator objective (adversarial term plus its "
                                    "--feature-matching / --pull-away terms); 0 disables the discriminator")
    adv_start: int = option(0, group=_LOSS, help="first step with the adversarial loss")
    discriminator: str = option("image", choices=("image", "wavelet"), group=_LOSS,
                                help="critic on images or on wavelet detail coefficients (WaveletGAN)")
    d_channels: int = option(32, group=_LOSS, help="discriminator base width")
    degradations: List[str] = option(default_factory=lambda: list(RESIZE_METHODS), choices=RESIZE_METHODS,
                                     group=_DEG, help="downscale kernels drawn at random")
    blur_prob: float = option(0.3, group=_DEG, help="probability of a Gaussian blur before downscaling")
    noise_prob: float = option(0.3, group=_DEG, help="probability of Gaussian noise on the LR image")
    jpeg_prob: float = option(0.3, group=_DEG, help="probability of JPEG compression of the LR image")
    batch_size: int = option(16, group=_OPT, help="images per step over all processes (divided over torchrun processes)")
    lr: float = option(2e-4, group=_OPT, help="generator Adam learning rate")
    d_lr: float = option(2e-4, group=_OPT, help="discriminator Adam learning rate")
    steps: int = option(10000, group=_OPT, help="total training steps")
    val_every: int = option(500, group=_OPT,
                            help="validate (PSNR/SSIM/identity cosine) and write a sample grid every N steps")

    def model_kwargs(self) -> Dict[str, Any]:
        """The ``wavelet_srnet`` builder kwargs this configuration trains."""
        return dict(scale=self.scale, output_size=self.hr_size, channels=self.channels, num_blocks=self.num_blocks,
                    head_channels=self.head_channels, head_groups=self.head_groups)

    def problems(self) -> List[str]:
        problems = super().problems()
        if not self.data:
            problems.append("--data (HR faces) is required")
        for name in ("steps", "val_count", "hr_size", "channels", "num_blocks", "head_channels", "head_groups",
                     "d_channels"):
            if getattr(self, name) <= 0:
                problems.append(f"{flag_name(name)} must be > 0, got {getattr(self, name)}")
        for name in ("lr", "d_lr"):
            if not getattr(self, name) > 0:
                problems.append(f"{flag_name(name)} must be > 0, got {getattr(self, name)}")
        for name in ("blur_prob", "noise_prob", "jpeg_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{flag_name(name)} must be in [0, 1], got {getattr(self, name)}")
        if self.hr_size > 0 and self.hr_size % self.scale:
            problems.append(f"--hr-size {self.hr_size} is not divisible by --scale {self.scale}")
        if self.gan.began_gamma is not None:
            problems.append("--began-gamma is not supported by train_super_resolution; pick an --adversarial objective")
        return problems


#: an image folder of which more than this fraction of the image files cannot be read (found at start-up from the
#: headers, or later when a file whose header is sound, a truncated JPEG, is drawn) is refused: it is damaged
MAX_UNREADABLE_FRACTION = 0.5


class _ImageFolder:
    """HR faces from image files under a folder (:func:`~lightface.data.folders.image_files`: recursive, sorted);
    items are uint8 BGR arrays.

    ``min_size``: images whose shorter side is below it (an HR face made from them would be an upsampling, blurry
    ground truth) and files that are not readable images (they would stop the training when drawn) are left out,
    counted in one warning and listed in ``too_small`` / ``unreadable``; sizes are read from the files' headers.

    A file whose header reads but whose data does not (a truncated JPEG) is found only when drawn, no image being
    decoded at start-up: ``self[i]`` then raises :class:`~lightface.data.io.ImageReadError` (which
    :class:`~lightface.data.degradation.SRPairDataset` answers by drawing the next sample), after one warning
    naming the file and counting those found so far; the file is not read again. What is found is shared by the
    DataLoader workers (one flag per file in shared memory): :meth:`found_unreadable` lists it. More than
    :data:`MAX_UNREADABLE_FRACTION` of the folder's image files unreadable is refused (ValueError): at start-up,
    and as they are found by :meth:`check_found` (the trainer calls it every step, in the main process, so the
    message is not a DataLoader worker's traceback): the folder is damaged. Under ``torchrun`` each process draws
    its own share of the data: :meth:`share_found` gives every process the files any of them found, so that the
    refusal, :meth:`found_unreadable` and the run's report cover the whole run's data.

    Raises:
        FileNotFoundError: no image files under ``root``; ValueError: none left (the message counts why), or
        most files unreadable.
    """

    def __init__(self, root: Path, min_size: Optional[int] = None, flag: str = "--data", warn: bool = True):
        paths = image_files(root)
        if not paths:
            raise FileNotFoundError(f"{flag} {root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under it")
        self.too_small: List[Tuple[Path, Tuple[int, int]]] = []  # (path, (width, height))
        self.unreadable: List[str] = []  # the read errors
        if min_size is not None:
            kept = []
            for path in paths:
                try:
                    w, h = image_size(path)
                except ImageReadError as err:
                    self.unreadable.append(str(err))
                    continue
                if min(w, h) < min_size:
                    self.too_small.append((path, (w, h)))
                else:
                    kept.append(path)
            if self.too_small and warn:
                path, (w, h) = self.too_small[0]
                log.warning("%s %s: left out %d of %d image(s) smaller than --hr-size %d (e.g. %s, %dx%d): they "
                            "would be upsampled into blurry HR targets; use larger images or a smaller --hr-size",
                            flag, root, len(self.too_small), len(paths), min_size, path, w, h)
            if self.unreadable and warn:
                log.warning("%s %s: left out %d unreadable file(s), e.g. %s", flag, root, len(self.unreadable),
                            self.unreadable[0])
            if not kept:
                raise ValueError(f"{flag} {root}: none of its {len(paths)} image file(s) can be an HR face of "
                                 f"--hr-size {min_size}: {len(self.too_small)} smaller than {min_size} px, "
                                 f"{len(self.unreadable)} unreadable; use larger images or a smaller --hr-size")
        self.root, self.flag, self.files = root, flag, len(paths)
        self._check_unreadable(0, lambda: self.unreadable[0])
        self.paths = kept if min_size is not None else paths
        # 1 for each file found unreadable when drawn, in whichever process (DataLoader workers inherit it)
        self._found = multiprocessing.RawArray("b", len(self.paths))

    def found_unreadable(self) -> List[Path]:
        """The files found unreadable when drawn (by this process or its DataLoader workers), in folder order."""
        return [path for path, bad in zip(self.paths, self._found) if bad]

    def share_found(self, device: torch.device) -> None:
        """Under ``torchrun``: mark here (and in this process's DataLoader workers) the files that any process found
        unreadable when drawn. A collective: every rank calls it for the same folders in the same order; without a
        process group, nothing to do. ``device``: where this process's collectives run (NCCL: its GPU)."""
        flags = torch.frombuffer(self._found, dtype=torch.int8)  # the shared flags themselves, no copy
        union = max_over_processes(flags.to(device)).cpu()
        if not torch.equal(union, flags):
            flags.copy_(union)

    def check_found(self) -> None:
        """Refuse (ValueError) the folder once more than :data:`MAX_UNREADABLE_FRACTION` of its files are unreadable,
        counting those found when drawn."""
        self._check_unreadable(bytes(self._found).count(1), lambda: self.found_unreadable()[0])  # a byte scan

    def _check_unreadable(self, found: int, example) -> None:
        """ValueError when the files left out at start-up and the ``found`` unreadable since are too many;
        ``example()``: one of them, for the message."""
        bad = len(self.unreadable) + found
        if bad > MAX_UNREADABLE_FRACTION * self.files:
            raise ValueError(f"{self.flag} {self.root}: {bad} of its {self.files} image file(s) are unreadable "
                             f"(e.g. {example()}), more than {MAX_UNREADABLE_FRACTION:.0%}: the folder is damaged (an "
                             "interrupted copy or download?); copy it again, or remove the broken files")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        path = self.paths[i]
        if self._found[i]:
            raise ImageReadError(f"{path}: unreadable (found earlier in this run)")
        try:
            return read_image(path, "bgr")
        except ImageReadError as err:
            if not self._found[i]:  # another worker may have just reported it
                self._found[i] = 1
                log.warning("%s %s: %s; another image is drawn in its place (%d file(s) of %d found unreadable so "
                            "far)", self.flag, self.root, err, bytes(self._found).count(1), self.files)
            raise


def _image_folders(source) -> List[_ImageFolder]:
    """The :class:`_ImageFolder` s inside an HR source (:func:`open_hr_source`, maybe in a ``Subset``)."""
    if isinstance(source, _ImageFolder):
        return [source]
    if isinstance(source, Subset):
        return _image_folders(source.dataset)
    if isinstance(source, ConcatDataset):
        return [f for part in source.datasets for f in _image_folders(part)]
    return []


def _large_enough_lmdb(path: Path, min_size: int, flag: str = "--data", warn: bool = True):
    """The samples of the LMDB at ``path`` whose shorter side is at least ``min_size`` (as ``--data`` reads them).

    An LMDB of one image shape smaller than that is refused (ValueError); one of mixed shapes loses its small
    samples (read from the records' headers, no image decoded), counted in a warning."""
    ds = LMDBDataset(str(path))
    shape = (ds.metadata.get("image") or {}).get("shape")
    if shape is not None:
        if min(shape[:2]) < min_size:
            raise ValueError(f"{flag} {path}: its faces are {shape[1]}x{shape[0]}, smaller than --hr-size "
                             f"{min_size}: every HR target would be an upsampling (blurry ground truth); rebuild it "
                             f"with python -m pipelines.build_lmdb --size {min_size}, or pass --hr-size {min(shape[:2])}")
        return ds
    keep = [i for i in range(len(ds)) if min(ds.record(i)["shape"][:2]) >= min_size]  # headers only, no decoding
    ds.close()
    if len(keep) < len(ds):
        if not keep:
            raise ValueError(f"{flag} {path}: all its {len(ds)} faces are smaller than --hr-size {min_size}; rebuild "
                             "it with larger faces or pass a smaller --hr-size")
        if warn:
            log.warning("%s %s: left out %d of %d face(s) smaller than --hr-size %d: they would be upsampled into "
                        "blurry HR targets", flag, path, len(ds) - len(keep), len(ds), min_size)
        return Subset(ds, keep)
    return ds


def open_hr_source(paths, min_size: Optional[int] = None, flag: str = "--data", warn: bool = True):
    """An indexable HR face source from one path or several (concatenated, in order).

    Each path is a lightface LMDB (folder with ``data.mdb``) or a folder of images (recursive).
    ``min_size`` (the trainer passes ``--hr-size``): faces whose shorter side is smaller are never
    upsampled into HR targets: an image folder's are left out and counted in a warning (with its
    unreadable files); an LMDB whose faces all have one smaller shape is refused (ValueError).
    None: every image, as it is. ``flag``: the option the paths came from, for the messages. ``warn=False``:
    no warnings (the counts stay in the folders' ``too_small`` / ``unreadable``), e.g. on the torchrun processes
    other than rank 0, which find the same.
    """
    if isinstance(paths, (list, tuple)):
        if not paths:
            raise ValueError(f"{flag}: no HR source given")
        if len(paths) > 1:
            check_distinct_sources(paths, flag)
            return ConcatDataset([open_hr_source(p, min_size, flag, warn) for p in paths])
        paths = paths[0]
    path = str(paths)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{flag} {path}: no such LMDB or image folder")
    if is_lmdb_dir(p):
        return LMDBDataset(str(p)) if min_size is None else _large_enough_lmdb(p, min_size, flag, warn)
    return _ImageFolder(p, min_size, flag, warn)


def make_sample_grid(lr: Tensor, bicubic: Tensor, sr: Tensor, hr: Tensor, path) -> Path:
    """Write a PNG grid, one row per image: LR (nearest-upscaled) | bicubic | SR | HR. Inputs (N, 3, ., .) RGB [0, 1]."""
    lr_up = F.interpolate(lr.float(), size=hr.shape[-2:], mode="nearest")
    rows = torch.cat([lr_up, bicubic.float(), sr.float(), hr.float()], dim=3)  # N, 3, H, 4W
    grid = tensor_to_image(torch.cat(list(rows), dim=1))  # BGR (N*H, 4W, 3)
    return write_image(path, grid)


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


class SuperResolutionTask(GANTask):
    """The wavelet SR GAN for the :class:`~lightface.engine.engine.Engine` (networks ``G`` and ``D``)."""

    name = "super_resolution"
    best_metric = ("val_psnr", "max")
    divergence_hint = "--d-lr or --adv-weight"

    def build(self, engine: Engine) -> Dataset:
        cfg, device = self.cfg, self.device
        # every process reads the whole sources: rank 0 tells what it left out, once
        base = open_hr_source(cfg.data, cfg.hr_size, warn=engine.is_main)
        if cfg.val_data:  # validation on training images would flatter every checkpoint
            data = data_paths(cfg.data)
            check_distinct_sources([*data, cfg.val_data], ["--data"] * len(data) + ["--val-data"],
                                   "validation would measure training images: give --val-data images that are not in "
                                   "--data, or leave it unset to hold out --val-count images of --data")
        val_base = open_hr_source(cfg.val_data, cfg.hr_size, "--val-data", engine.is_main) if cfg.val_data else None
        train_deg = Degradation(cfg.scale, methods=cfg.degradations, blur_prob=cfg.blur_prob,
                                noise_prob=cfg.noise_prob, jpeg_prob=cfg.jpeg_prob)
        clean = Degradation(cfg.scale, methods=("bicubic",), blur_prob=0, noise_prob=0, jpeg_prob=0)
        if val_base is not None:
            val_pairs = SRPairDataset(val_base, cfg.hr_size, clean)
            train_base = base
        else:
            n_val = min(cfg.val_count, len(base) // 5)
            # every k-th image is held out, so the validation faces span the source's identities
            stride = max(1, len(base) // max(n_val, 1))
            held = set(list(range(0, len(base), stride))[:n_val])
            val_pairs = SRPairDataset(Subset(base, sorted(held)), cfg.hr_size, clean)
            train_base = Subset(base, [i for i in range(len(base)) if i not in held])
        if len(train_base) == 0:
            raise TrainingError(f"--data {cfg.data}: no training images left")
        train_set = SRPairDataset(train_base, cfg.hr_size, train_deg, flip=True, seed=cfg.seed, return_method=True)

        self.model_kwargs = cfg.model_kwargs()
        self.G = WaveletSRNet(**self.model_kwargs)
        # unset: paper for a new run; what the run trained with on --resume (load_extra_state) or --finetune
        normalization = "paper"
        if cfg.finetune and not engine.resuming:
            start = load_generator_start(self.G, cfg.finetune, "wavelet_srnet", self.model_kwargs,
                                         {"output_size": "hr_size"})
            if cfg.wavelet_normalization is None:  # a shipped model or a file without its settings: None
                settings = start.extra.get("config")
                normalization = saved_wavelet_normalization(settings if isinstance(settings, Mapping) else None)
                log.info("--wavelet-normalization %s: the --finetune model's (%s)", normalization, cfg.finetune)
        engine.setting_default("wavelet_normalization", normalization)
        kw = dict(channels=cfg.d_channels, **self.objective.discriminator_kwargs)
        d_arch, d_kwargs = ("image_discriminator", dict(num_blocks=4, **kw)) if cfg.discriminator == "image" else \
            ("wavelet_discriminator", dict(levels=2, **kw))
        self.D = (ImageDiscriminator if cfg.discriminator == "image" else WaveletDiscriminator)(**d_kwargs)
        # find_unused: the adversarial / cycle terms switch on and off with the flags and --adv-start
        self.G_view = engine.add_network("G", self.G, arch="wavelet_srnet", kwargs=self.model_kwargs, primary=True,
                                         ema_decay=cfg.ema_decay, find_unused=True)
        self.D_view = engine.add_network("D", self.D, arch=d_arch, kwargs=d_kwargs, find_unused=True)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=(0.5, 0.99))
        engine.add_optimizer("G", self.opt_g, cfg.lr)
        engine.add_optimizer("D", self.opt_d, cfg.d_lr)
        self.sr_loss = WaveletSRLoss(
            self.G.levels, approx_weight=cfg.approx_weight, detail_weight=cfg.detail_weight,
            texture_alpha=cfg.texture_alpha, texture_eps=cfg.texture_eps, wavelet_weight=cfg.wavelet_weight,
            texture_weight=cfg.texture_weight, image_weight=cfg.image_weight,
            normalization=cfg.wavelet_normalization,
        ).to(device)
        self.identity = identity_judge(cfg.identity_weights, "the identity loss (l_g_id) and identity metrics", device)
        self.validator = _Validator(val_pairs, cfg.val_count, self.identity) if engine.is_main else None
        log.info("wavelet_srnet %s on %d faces (%d held out)", self.model_kwargs, len(train_set), len(val_pairs))
        self.epoch_size = len(train_set)
        self._folders = _image_folders(base) + (_image_folders(val_base) if val_base is not None else [])
        return train_set

    def summary(self) -> Dict[str, Any]:
        """``unreadable_hr_files``: the image-folder files found unreadable when drawn (each replaced by the next
        sample; by any process of the run and its DataLoader workers), named again in a warning (once, by rank 0)."""
        for folder in self._folders:  # each torchrun process found those of its own share of the data
            folder.share_found(self.device)
        found = [str(path) for folder in self._folders for path in folder.found_unreadable()]
        if found and self.engine.is_main:
            log.warning("%d HR file(s) could not be read when drawn and were replaced by other samples: %s; repair "
                        "or remove them", len(found), ", ".join(found[:5]) + (" ..." if len(found) > 5 else ""))
        return {"unreadable_hr_files": found}

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        super().load_extra_state(ckpt)
        # a resumed run keeps the loss it trained with
        self.sr_loss.normalization = self.engine.resumed_setting(ckpt, "wavelet_normalization",
                                                                 LEGACY_WAVELET_NORMALIZATION)

    def adversarial_off(self) -> Optional[str]:
        cfg = self.cfg
        if cfg.adv_weight == 0:
            return "--adv-weight 0"
        if cfg.adv_start >= cfg.steps:
            return f"--adv-start {cfg.adv_start} (--steps {cfg.steps})"
        return None

    def trains_discriminator(self, step: int) -> bool:
        return self.cfg.adv_weight > 0 and step >= self.cfg.adv_start

    def train_step(self, batch, extra_batches: Sequence[Any] = ()) -> Dict[str, Any]:
        cfg, gan = self.cfg, self.objective
        for folder in self._folders:  # a folder found mostly unreadable when drawn (by any process) is refused
            folder.share_found(self.device)
            folder.check_found()
        lr_img, hr, methods = batch if len(batch) == 3 else (*batch, None)
        self.G_view.train()
        self.D_view.train()
        # --- generator step (D frozen inside GANObjective.generator_loss)
        outputs = self.G_view(lr_img, return_all=True)
        loss_g, terms = self.sr_loss(outputs.coeffs, outputs.sr, hr)
        terms = dict(terms)
        if self.identity is not None and cfg.identity_weight > 0:
            terms["l_g_id"] = cfg.identity_weight * self.identity(outputs.sr.clamp(0, 1), hr)
            loss_g = loss_g + terms["l_g_id"]
        use_adv = self.trains_discriminator(self.engine.step)
        # the GAN objective's terms are logged as frontalization logs them: l_g_adv, l_g_cycle ..., unweighted
        if use_adv:
            # the plain D: its parameters are frozen in this step, so DDP must not expect their gradients
            adv, adv_terms = gan.generator_loss(self.D, hr, outputs.sr)
            loss_g = loss_g + cfg.adv_weight * adv
            terms.update(prefix_terms(adv_terms))
        if gan.cycle_weight > 0:
            cycle, cycle_terms = gan.cycle_loss(lr_img, cycle_downscale(outputs.sr, cfg.scale, methods))
            loss_g = loss_g + cycle
            terms.update(prefix_terms(cycle_terms))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        terms["l_g_total"] = loss_g
        # --- discriminator step on real and detached fake
        if use_adv:
            def critic_batches():
                yield hr, outputs.sr.detach()
                for extra in extra_batches:  # --d-steps: fresh HR, and SR from the updated generator
                    with torch.no_grad():
                        fake = self.G(extra[0])
                    yield extra[1], fake

            def update(real: Tensor, fake: Tensor) -> Dict[str, Any]:
                loss_d, d_terms = gan.discriminator_loss(self.D_view, real, fake)
                self.opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                self.opt_d.step()
                gan.after_discriminator_step(self.D)
                return {"l_d": loss_d, **prefix_terms(d_terms)}

            terms.update(self.discriminator_steps(update, critic_batches()))
        return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in terms.items()}

    def validate(self) -> Dict[str, float]:
        engine = self.engine
        metrics = self.validator(engine.eval_network("G"), self.device)
        make_sample_grid(*self.validator.last, engine.out / "samples" / f"step_{engine.step:07d}.png")
        return metrics


def cycle_downscale(sr: Tensor, scale: int, methods: Optional[Sequence[str]] = None) -> Tensor:
    """The SR output brought back to the LR size for ``--cycle``: each image downscaled with the kernel its LR
    was made with (``methods``, one name of :data:`~lightface.data.degradation.RESIZE_METHODS` per image, as
    :class:`~lightface.data.degradation.SRPairDataset` ``return_method=True`` gives them), so a perfect SR output
    reproduces a clean LR input; None (LR whose making is unknown): antialiased bicubic for all.

    sr: (N, C, H, W) float; returns (N, C, H / scale, W / scale), differentiable.
    """
    if methods is None:
        return downscale_tensor(sr, scale, "bicubic")
    if len(methods) != len(sr):
        raise ValueError(f"{len(methods)} downscale methods for {len(sr)} images")
    out = sr.new_empty(*sr.shape[:2], sr.shape[2] // scale, sr.shape[3] // scale)
    for method in sorted(set(methods)):
        index = [i for i, m in enumerate(methods) if m == method]
        out[index] = downscale_tensor(sr[index], scale, method)
    return out


def saved_wavelet_normalization(saved: Optional[Mapping[str, Any]]) -> str:
    """The ``--wavelet-normalization`` a run trained with, from its saved settings (a checkpoint's ``config`` or
    its ``config.yaml``; None for a checkpoint that holds none, as the shipped models): the saved value, or
    :data:`LEGACY_WAVELET_NORMALIZATION` for settings saved before the option existed."""
    return saved_setting(saved, "wavelet_normalization", LEGACY_WAVELET_NORMALIZATION)


def train_super_resolution(cfg: SRTrainConfig) -> Dict[str, Any]:
    """Train a :class:`~lightface.models.wavelet_srnet.WaveletSRNet` as configured; returns the engine's summary.

    The summary holds ``step``, ``stopped``, ``model`` (``OUT/model.pt``), ``last``,
    ``best`` and the last validation metrics (``val_psnr``, ...). Set-up errors (missing
    data, bad options, a run folder that needs ``--resume`` / ``--overwrite``) raise
    :class:`~lightface.engine.engine.TrainingError` before training.
    """
    return Engine(SuperResolutionTask(cfg)).run()
