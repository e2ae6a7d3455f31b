"""Light CNN training: the original recipe on LMDB data, with DDP, AMP, exact resume and validation.

The recipe (Wu et al., Light CNN, TIFS 2018, and the authors' PyTorch release): SGD with
momentum 0.9, lr 0.01, weight decay 1e-4, batch 128, 80 epochs, the learning rate
multiplied by 0.457305 every 10 epochs, the classifier at 10x the base lr (its bias at
20x), no weight decay on biases; gray 144x144 crops, randomly cropped to 128 and
flipped. :class:`TrainConfig` holds every setting (``pipelines.train_lightcnn`` exposes
each one as a flag / YAML key) and :func:`train` runs it::

    from lightface.engine.lightcnn_trainer import TrainConfig, train
    summary = train(TrainConfig(data="casia.lmdb", arch="lightcnn9", out="runs/casia9"))

Run folder layout (``out``): ``last.pt`` and ``best.pt`` (project checkpoints, loadable by
``get_model(arch, weights=...)`` / ``FaceEmbedder``; they also hold the optimizer,
scheduler, AMP scaler, epoch/step, config and every rank's RNG state),
``metrics.jsonl``, ``tensorboard/`` (when installed), ``curves.png``. Under ``torchrun``
only rank 0 logs and writes files.

Determinism: the sample order of an epoch comes from ``DistributedSampler(seed, epoch)``
and every sample's augmentation is seeded from ``(seed, epoch, index)``, so the data a
step sees does not depend on ``--workers`` or on where a run was interrupted; with the
saved RNG states, ``--resume`` reproduces the uninterrupted run's losses.
"""
import dataclasses
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..losses.noisy_label import build_classification_loss
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from .config import config_to_dict
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .logger import MetricLogger, plot_metrics

__all__ = [
    "TrainConfig",
    "TrainingError",
    "NonFiniteLossError",
    "train",
    "build_param_groups",
    "stratified_split",
    "SampleTransformDataset",
    "predict",
    "lightcnn_transforms",
    "init_weights",
]

log = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
INITS = ("default", "kaiming")
AUGMENTS = ("basic", "strong")


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (bad data, bad options, unusable checkpoint)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class TrainConfig:
    """Every setting of a Light CNN training run (defaults: the original recipe).

    Data: ``data`` is a training LMDB (``lightface.data.LMDBDataset``: uint8 gray or BGR
    images, usually 144x144 Light CNN training crops). Validation uses ``val_data`` (an
    LMDB with the same classes) or, with ``val_split > 0``, that fraction of each class
    held out from ``data``; ``val_pairs`` adds face verification (see :func:`train`).
    """

    data: Union[str, List[str]] = ""
    out: str = ""
    arch: str = "lightcnn9"
    dropout: float = 0.5
    init: str = "default"
    # optimisation (original recipe)
    epochs: int = 80
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 10
    lr_gamma: float = 0.457305
    classifier_lr_mult: float = 10.0
    classifier_bias_lr_mult: float = 20.0
    bias_decay: bool = False
    loss: str = "ce"
    beta: Optional[float] = None
    clip_grad: float = 0.0
    # data pipeline
    resize: int = 144
    crop: int = 128
    flip: bool = True
    augment: str = "basic"
    workers: int = 4
    # knowledge distillation (lightface.distill)
    distill: Optional[str] = None
    distill_weight: float = 1.0
    # validation
    val_data: Optional[str] = None
    val_split: float = 0.0
    val_pairs: Optional[str] = None
    val_pairs_root: Optional[str] = None
    val_every: int = 1
    # fine-tuning
    finetune: Optional[str] = None
    classifier_only_epochs: int = 0
    # run control
    seed: int = 0
    max_steps: int = 0
    max_minutes: float = 0.0
    resume: Optional[str] = None
    save_every: int = 0
    log_every: int = 20
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    deterministic: bool = False
    tensorboard: bool = True
    plots: bool = True

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """Build from a dict / ``vars(args)``; keys that are not fields raise ``TrainingError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"config"})
        if unknown:
            raise TrainingError(f"unknown training settings {unknown}; valid: {sorted(names)}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def validate(self) -> None:
        """Raise :class:`TrainingError` naming the flag for settings that cannot work."""
        problems = []
        if not self.data:
            problems.append("--data (training LMDB) is required")
        if not self.out:
            problems.append("--out (run folder) is required")
        for name in ("epochs", "batch_size", "lr_step", "val_every", "crop", "resize"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "momentum", "clip_grad", "max_steps", "save_every", "log_every", "workers",
                     "classifier_only_epochs", "max_minutes", "distill_weight"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.crop > self.resize:
            problems.append(f"--crop {self.crop} is larger than --resize {self.resize}")
        if not 0.0 <= self.val_split < 1.0:
            problems.append(f"--val-split must be in [0, 1), got {self.val_split}")
        if self.augment not in AUGMENTS:
            problems.append(f"--augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.init not in INITS:
            problems.append(f"--init must be one of {INITS}, got {self.init!r}")
        if self.amp not in AMP_DTYPES:
            problems.append(f"--amp must be one of {sorted(AMP_DTYPES)}, got {self.amp!r}")
        if self.val_data and self.val_split:
            problems.append("give either --val-data or --val-split, not both")
        if self.classifier_only_epochs and not self.finetune:
            problems.append("--classifier-only-epochs needs --finetune CHECKPOINT")
        if problems:
            raise TrainingError("invalid training settings: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class (rounded, at least 1 when the class has >= 2 samples).

    Args:
        labels: (N,) integer labels.
        fraction: in [0, 1).
        seed: the shuffle within each class.
    Returns:
        ``(train_indices, val_indices)``, both sorted int64 arrays.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = 0 if fraction <= 0 or len(idx) < 2 else min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


class SampleTransformDataset(Dataset):
    """Samples of a base dataset through a transform, each sample's randomness seeded.

    Args:
        base: a dataset whose items are dicts with ``image`` (uint8 HxW gray or HxWx3 BGR)
            and ``label`` (int), e.g. :class:`lightface.data.LMDBDataset`.
        transform: ``transform(image=uint8 array) -> {"image": tensor (1,H,W) float [0,1]}``
            (an albumentations ``Compose``; its ``set_random_seed`` is used when present).
        indices: the subset of ``base`` to expose (default: all).
        seed: base seed of the per-sample augmentation seeds.
        labels: labels to use instead of the base dataset's (same order as ``indices``).

    ``item = (image (1,H,W) float32, label int64, index in base)``. Call :meth:`set_epoch`
    so augmentations differ between epochs but not between runs.
    """

    def __init__(self, base, transform: Callable, indices: Optional[Sequence[int]] = None, seed: int = 0,
                 labels: Optional[Sequence[int]] = None):
        self.base = base
        self.transform = transform
        self.indices = np.arange(len(base), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        sample = self.base[index]
        if hasattr(self.transform, "set_random_seed"):
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
            self.transform.set_random_seed(int(seed))
        image = _to_tensor(self.transform(image=sample["image"])["image"])
        label = int(sample["label"]) if self.labels is None else int(self.labels[i])
        return image, label, index


def _to_tensor(image) -> Tensor:
    """(1,H,W) float32 tensor in [0, 1] from a transform output (tensor or HxW / HxWxC array)."""
    if isinstance(image, Tensor):
        out = image
    else:
        arr = np.asarray(image)
        out = torch.from_numpy(np.ascontiguousarray(arr if arr.ndim == 3 else arr[..., None])).permute(2, 0, 1)
        if arr.dtype == np.uint8:
            out = out.float().div_(255.0)
    if out.dim() == 2:
        out = out.unsqueeze(0)
    return out.float()


class _ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after its first ``start`` samples."""

    start = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return super().__len__() - self.start


def lightcnn_transforms(crop: int = 128, resize: int = 144, flip: bool = True, augment: str = "basic"):
    """``(train, eval)`` albumentations pipelines: resize to ``resize`` (a no-op for stored
    crops of that size), then :mod:`lightface.data.transforms`: ``augment="basic"`` is the
    original recipe (random ``crop``, horizontal flip), ``"strong"`` adds geometry, colour,
    lighting, blur, JPEG and occlusion (:func:`~lightface.data.transforms.strong_train_transform`);
    evaluation takes the centre crop. BGR colour samples become gray (ITU-R 601 luma).
    Outputs are float32 (1, crop, crop) tensors in [0, 1]."""
    import albumentations as A
    import cv2

    from ..data import transforms as T

    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")

    def pipeline(*tail):
        return A.Compose([A.Resize(resize, resize, interpolation=cv2.INTER_AREA), *tail])

    flip_p = 0.5 if flip else 0.0
    if augment == "strong":
        train = pipeline(T.strong_train_transform(size=crop, flip=flip_p))
    else:
        train = pipeline(T.BGRToGray(), T.train_transform(size=crop, flip=flip_p))
    return train, pipeline(T.BGRToGray(), T.eval_transform(size=crop))


def _transforms(cfg: TrainConfig):
    return lightcnn_transforms(cfg.crop, cfg.resize, cfg.flip, cfg.augment)


def _data_paths(data: Union[str, Sequence[str]]) -> List[str]:
    return [data] if isinstance(data, (str, os.PathLike)) else [str(d) for d in data]


def _open_lmdb(path: str, what: str):
    from ..data import LMDBDataset

    if not Path(path).exists():
        raise TrainingError(f"{what} LMDB not found: {path}; build one with python -m pipelines.build_lmdb")
    return LMDBDataset(path)


def _open_training_data(data: Union[str, Sequence[str]]):
    """One LMDB, or several stacked as a :class:`~lightface.data.multi_source.MultiSourceDataset`."""
    from ..data.multi_source import MultiSourceDataset

    paths = _data_paths(data)
    sets = [_open_lmdb(p, "training") for p in paths]
    return sets[0] if len(sets) == 1 else MultiSourceDataset(sets)


def _load_distill_targets(data: Union[str, Sequence[str]], distill: str) -> Tensor:
    """The teacher embeddings of every training sample (N, D) float32, in dataset order.

    ``distill`` is a teacher name (``dlib``: ``<lmdb>/teacher_dlib.npy`` beside each LMDB,
    written by ``python -m pipelines.teacher_embeddings``) or, with one LMDB, a ``.npy`` path.
    Rows without an embedding (NaN: the teacher failed, or its computation is still running)
    are left out of the distillation loss; each ``--resume`` reloads the files.
    """
    from ..distill.teacher import load_teacher_embeddings

    paths = _data_paths(data)
    try:
        if distill.endswith(".npy"):
            if len(paths) != 1:
                raise TrainingError("--distill FILE.npy works with one --data LMDB; with several, give the teacher "
                                    "name (e.g. --distill dlib) so each LMDB's own embeddings are used")
            arrays = [np.load(distill, mmap_mode="r")]
        else:
            arrays = [load_teacher_embeddings(p, distill, allow_partial=True) for p in paths]
    except (FileNotFoundError, ValueError) as err:
        raise TrainingError(f"--distill {distill}: {err}") from err
    return torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays]))


class _Student(nn.Module):
    """The Light CNN and its distillation head as one module (so DDP sees both)."""

    def __init__(self, net: nn.Module, head: Optional[nn.Module]):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: Tensor):
        logits, features = self.net(x, return_logits=True)
        return logits, (self.head(features) if self.head is not None else None)


# ---------------------------------------------------------------------------------------
# model / optimiser
# ---------------------------------------------------------------------------------------
def build_param_groups(model: nn.Module, lr: float, weight_decay: float, classifier_lr_mult: float = 10.0,
                       classifier_bias_lr_mult: float = 20.0, bias_decay: bool = False) -> List[Dict[str, Any]]:
    """SGD parameter groups of the Light CNN recipe.

    Groups (empty ones dropped): backbone weights (lr, weight_decay), backbone biases (lr,
    no decay unless ``bias_decay``), classifier weight (``classifier_lr_mult`` x lr, decay),
    classifier bias (``classifier_bias_lr_mult`` x lr, no decay unless ``bias_decay``).
    The classifier is ``model.classifier``; each group carries a ``"name"`` and its
    ``"lr_mult"`` (relative to the base lr).
    """
    classifier = getattr(model, "classifier", None)
    cls_ids = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    groups = {"backbone_weight": [], "backbone_bias": [], "classifier_weight": [], "classifier_bias": []}
    for name, p in model.named_parameters():
        part = "classifier" if id(p) in cls_ids else "backbone"
        kind = "bias" if p.ndim <= 1 else "weight"
        groups[f"{part}_{kind}"].append(p)
    bias_wd = weight_decay if bias_decay else 0.0
    spec = {
        "backbone_weight": (1.0, weight_decay),
        "backbone_bias": (1.0, bias_wd),
        "classifier_weight": (classifier_lr_mult, weight_decay),
        "classifier_bias": (classifier_bias_lr_mult, bias_wd),
    }
    return [
        {"params": params, "name": name, "lr_mult": spec[name][0], "lr": lr * spec[name][0], "weight_decay": spec[name][1]}
        for name, params in groups.items() if params
    ]


def init_weights(model: nn.Module, scheme: str = "kaiming") -> nn.Module:
    """Re-initialise a Light CNN's backbone for training from scratch; returns ``model``.

    ``"default"`` keeps PyTorch's layer initialisation (what the original code used).
    ``"kaiming"``: every Conv2d / Linear of the backbone gets ``N(0, 1/fan_in)`` weights
    (He et al.'s fan-in scaling with unit gain) and zero biases; the classifier keeps its
    default initialisation. With PyTorch's default (uniform, variance ``1/(3 fan_in)``) the
    differences between faces shrink about 3x per MFM layer, and on small data sets
    training can sit at ``log(num_classes)`` for many epochs (docs/training.md).
    """
    if scheme == "default":
        return model
    if scheme != "kaiming":
        raise ValueError(f"unknown init {scheme!r}; choose one of {INITS}")
    classifier = getattr(model, "classifier", None)
    skip = {id(m) for m in classifier.modules()} if classifier is not None else set()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and id(module) not in skip:
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 128, workers: int = 0, device="cpu",
            amp: str = "none", channels_last: bool = False, features: bool = False, progress: bool = False):
    """Run a classifier over a dataset of ``(image, label, index)`` items, in order.

    Returns:
        ``(probs (N, K) float32 softmax, labels (N,) int64, indices (N,) int64)`` as numpy
        arrays, plus ``features (N, 256) float32`` (not normalised) when ``features=True``.
    """
    model.eval()
    # an explicit generator keeps the global RNG untouched (resumed runs replay the same draws)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="predict", unit="batch")
    device = torch.device(device)
    probs, labels, indices, feats = [], [], [], []
    autocast = _autocast(device, amp)
    for images, target, index in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits, f = model(images, return_logits=True)
        probs.append(logits.float().softmax(1).cpu())
        feats.append(f.float().cpu())
        labels.append(target)
        indices.append(index)
    if not probs:
        raise TrainingError("predict: the dataset is empty")
    out = (torch.cat(probs).numpy(), torch.cat(labels).numpy().astype(np.int64), torch.cat(indices).numpy().astype(np.int64))
    return (*out, torch.cat(feats).numpy()) if features else out


def _autocast(device: torch.device, amp: str):
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
class _Run:
    """State of one training run (one per process)."""

    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.device = info.device
        self.out = Path(cfg.out)
        self.epoch = 0  # next epoch to run
        self.batch_in_epoch = 0  # batches of `epoch` already done
        self.step = 0  # optimiser steps done
        self.best: Optional[float] = None
        self.best_name = ""
        self.logger: Optional[MetricLogger] = None

    # -- set-up ------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise TrainingError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU or --amp none")
        if cfg.batch_size % info.world_size:
            raise TrainingError(f"--batch-size {cfg.batch_size} (global) must be divisible by the {info.world_size} processes")
        self.local_batch = cfg.batch_size // info.world_size
        if cfg.deterministic:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True

        self.train_base = _open_training_data(cfg.data)
        labels = np.asarray(self.train_base.labels, dtype=np.int64)
        if len(labels) == 0:
            raise TrainingError(f"training LMDB {cfg.data} holds no samples")
        self.classes = [str(c) for c in self.train_base.classes]
        self.num_classes = len(self.classes)
        if self.num_classes < 2:
            raise TrainingError(f"training LMDB {cfg.data} has {self.num_classes} class(es); a classifier needs >= 2")
        train_tf, eval_tf = _transforms(cfg)
        train_idx, val_idx = stratified_split(labels, cfg.val_split, cfg.seed)
        self.train_set = SampleTransformDataset(self.train_base, train_tf, train_idx, seed=cfg.seed)
        self.val_set = None
        if cfg.val_split > 0:
            self.val_set = SampleTransformDataset(self.train_base, eval_tf, val_idx, seed=cfg.seed)
        elif cfg.val_data:
            val_base = _open_lmdb(cfg.val_data, "validation")
            if [str(c) for c in val_base.classes] != self.classes:
                raise TrainingError(f"--val-data {cfg.val_data} must have the same classes as --data {cfg.data}")
            self.val_set = SampleTransformDataset(val_base, eval_tf, seed=cfg.seed)
        self.pairs = None
        if cfg.val_pairs:
            self.pairs = _load_pairs(cfg.val_pairs, cfg.val_pairs_root, cfg, eval_tf)

        self.sampler = _ResumableSampler(self.train_set, num_replicas=info.world_size, rank=info.rank,
                                         shuffle=True, seed=cfg.seed, drop_last=False)
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.local_batch)
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total

        # model: same initial weights on every rank (DDP also broadcasts rank 0's)
        from ..models import get_model

        torch.manual_seed(cfg.seed)
        self.model_kwargs = {"num_classes": self.num_classes, "dropout": cfg.dropout}
        model = get_model(cfg.arch, **self.model_kwargs)
        if getattr(model, "classifier", None) is None:
            raise TrainingError(f"model {cfg.arch!r} has no classifier; train_lightcnn needs a Light CNN with num_classes")
        if not cfg.finetune and not cfg.resume:
            init_weights(model, cfg.init)
        if cfg.finetune and not cfg.resume:
            from ..models.checkpoint import load_weights

            load_weights(model, cfg.finetune, ignore_classifier=True)
            log.info("fine-tuning: backbone from %s, new %d-class classifier", cfg.finetune, self.num_classes)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.distill_targets: Optional[Tensor] = None
        self.distill_head: Optional[nn.Module] = None
        groups = build_param_groups(model, cfg.lr, cfg.weight_decay, cfg.classifier_lr_mult, cfg.classifier_bias_lr_mult,
                                    cfg.bias_decay)
        if cfg.distill:
            from ..distill import DistillHead

            self.distill_targets = _load_distill_targets(cfg.data, cfg.distill)
            if len(self.distill_targets) != len(self.train_base):
                raise TrainingError(f"--distill {cfg.distill}: {len(self.distill_targets)} teacher embeddings for "
                                    f"{len(self.train_base)} training samples")
            found = int(torch.isfinite(self.distill_targets).all(1).sum())
            self.distill_head = DistillHead(model.classifier.in_features, self.distill_targets.shape[1]).to(self.device)
            groups.append({"params": list(self.distill_head.parameters()), "name": "distill_head", "lr_mult": 1.0,
                           "lr": cfg.lr, "weight_decay": cfg.weight_decay})
            log.info("distilling %s teacher embeddings (%d-d, %d of %d samples) with weight %g", cfg.distill,
                     self.distill_targets.shape[1], found, len(self.distill_targets), cfg.distill_weight)
        self.student = _Student(model, self.distill_head)
        self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.criterion = build_classification_loss(cfg.loss, cfg.beta)
        self.ddp_stage: Optional[bool] = None
        self.ddp_model: nn.Module = self.student
        self.deadline = time.monotonic() + cfg.max_minutes * 60.0 if cfg.max_minutes else None

        if cfg.resume:
            self._load_resume()
        torch.manual_seed(cfg.seed + 7919 * info.rank + 1)  # dropout differs across ranks, repeatable per run
        if cfg.resume:
            restore_rng_state(self._resume_rng)
        self.logger = MetricLogger(self.out, enabled=info.is_main, total_steps=self.total_steps,
                                   batch_size=cfg.batch_size, tensorboard=cfg.tensorboard,
                                   truncate_after=self.step if cfg.resume else None)
        log.info("training %s on %s: %d samples, %d classes, %d val samples, %d steps/epoch, world size %d, device %s",
                 cfg.arch, cfg.data, len(self.train_set), self.num_classes, len(self.val_set) if self.val_set else 0,
                 self.steps_per_epoch, info.world_size, self.device)

    def _load_resume(self) -> None:
        cfg = self.cfg
        path = Path(cfg.resume)
        if cfg.resume == "auto":
            path = self.out / "last.pt"
        ckpt = load_checkpoint(path, map_location="cpu")
        if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "step" not in ckpt:
            raise TrainingError(f"--resume {path}: not a train_lightcnn checkpoint (no optimizer/step state)")
        if ckpt.get("arch") != cfg.arch:
            raise TrainingError(f"--resume {path}: checkpoint arch {ckpt.get('arch')!r} differs from --arch {cfg.arch!r}")
        saved_cfg = ckpt.get("config", {})
        for key in ("batch_size", "seed", "data"):
            if key in saved_cfg and saved_cfg[key] != getattr(cfg, key):
                log.warning("--resume: %s differs from the interrupted run (%r there, %r now); the run will not "
                            "reproduce the uninterrupted one", key, saved_cfg[key], getattr(cfg, key))
        self.model.load_state_dict(ckpt["state_dict"])
        if self.distill_head is not None:
            if "distill_head" not in ckpt:
                raise TrainingError(f"--resume {path}: the run was started without --distill; start a new run "
                                    "with --finetune to add distillation")
            self.distill_head.load_state_dict(ckpt["distill_head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.batch_in_epoch, self.step = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"]), int(ckpt["step"])
        self.best, self.best_name = ckpt.get("best_metric"), ckpt.get("best_metric_name", "")
        states = ckpt.get("rng") or []
        self._resume_rng = states[self.info.rank] if len(states) == self.info.world_size else {}
        if len(states) != self.info.world_size:
            log.warning("--resume: checkpoint holds RNG states of %d processes, this run has %d; dropout draws will differ",
                        len(states), self.info.world_size)
        log.info("resumed from %s at epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch, self.step)

    # -- stages ------------------------------------------------------------------------
    def _prepare_stage(self, epoch: int) -> None:
        """Freeze the backbone during the classifier-only fine-tuning epochs; (re)wrap in DDP."""
        classifier_only = epoch < self.cfg.classifier_only_epochs
        if self.ddp_stage == classifier_only:
            return
        cls_ids = {id(p) for p in self.model.classifier.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(not classifier_only or id(p) in cls_ids)
        if classifier_only:
            log.info("epoch %d: classifier-only stage (backbone frozen) until epoch %d", epoch, self.cfg.classifier_only_epochs)
        elif self.ddp_stage is not None:
            log.info("epoch %d: training all layers", epoch)
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.student, device_ids=ids)
        self.ddp_stage = classifier_only

    def _loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.sampler.start = self.batch_in_epoch * self.local_batch if epoch == self.epoch else 0
        self.train_set.set_epoch(epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        return DataLoader(self.train_set, batch_size=self.local_batch, sampler=self.sampler, num_workers=self.cfg.workers,
                          pin_memory=self.device.type == "cuda", generator=g, drop_last=False,
                          persistent_workers=False)

    # -- loop --------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        cfg = self.cfg
        summary: Dict[str, Any] = {"stopped": "completed"}
        autocast = _autocast(self.device, cfg.amp)
        window = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "n": 0, "distill": 0.0}
        start_time = time.perf_counter()
        start_step = self.step
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            if cfg.max_steps and self.step >= cfg.max_steps:
                break
            self._prepare_stage(epoch)
            self.ddp_model.train()
            for images, labels, index in self._loader(epoch):
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast:
                    logits, projected = self.ddp_model(images)
                loss = self.criterion(logits.float(), labels)
                distill = torch.zeros((), device=self.device)
                if projected is not None:
                    from ..distill import distill_loss

                    target = self.distill_targets[index].to(self.device)  # index: the sample's place in --data
                    distill = distill_loss(projected, target)
                    loss = loss + cfg.distill_weight * distill
                stats = torch.stack([loss.detach().float(), (logits.detach().argmax(1) == labels).sum().float(),
                                     torch.tensor(float(labels.numel()), device=self.device), distill.detach().float()])
                stats = torch.cat([stats, torch.tensor([float(self._past_deadline())], device=self.device)])
                if self.info.distributed:
                    stats[0] /= self.info.world_size
                    stats[3] /= self.info.world_size
                    dist.all_reduce(stats)
                loss_value = float(stats[0])
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"the loss became {loss_value} at epoch {epoch}, step {self.step + 1}; stopping. The last good "
                        f"checkpoint ({self.out / 'last.pt'}, step {self._last_saved_step()}) was kept. Lower --lr, set "
                        "--clip-grad, or use --amp bf16/none, then --resume or restart."
                    )
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.clip_grad > 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.step += 1
                self.batch_in_epoch += 1
                window["loss"] += loss_value
                window["correct"] += float(stats[1])
                window["seen"] += float(stats[2])
                window["n"] += 1
                window["distill"] += float(stats[3])
                if self.step % cfg.log_every == 0 or self.batch_in_epoch == self.steps_per_epoch:
                    self._log_window(epoch, window)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.batch_in_epoch < self.steps_per_epoch:
                    self._save("last.pt")
                if cfg.max_steps and self.step >= cfg.max_steps:
                    break
                if float(stats[4]) > 0:  # any rank past --max-minutes: all stop after the same step
                    summary["stopped"] = f"max_minutes={cfg.max_minutes:g}"
                    break
            if self.batch_in_epoch >= self.steps_per_epoch:  # epoch complete
                self.scheduler.step()
                self.epoch, self.batch_in_epoch = epoch + 1, 0
                if self.val_set is not None or self.pairs is not None:
                    if (epoch + 1) % cfg.val_every == 0 or self.epoch == cfg.epochs:
                        self._validate_and_save_best()
            self._save("last.pt")
            if summary["stopped"] != "completed":
                break
        if cfg.max_steps and self.step >= cfg.max_steps and self.epoch < cfg.epochs:
            summary["stopped"] = f"max_steps={cfg.max_steps}"
        elapsed = time.perf_counter() - start_time
        summary.update(step=self.step, epoch=self.epoch, best_metric=self.best, best_metric_name=self.best_name,
                       last=str(self.out / "last.pt"), best=str(self.out / "best.pt") if self.best is not None else None,
                       seconds=elapsed,
                       images_per_s=(self.step - start_step) * cfg.batch_size / elapsed if elapsed > 0 else None)
        return summary

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _log_window(self, epoch: int, window: Dict[str, float]) -> None:
        if window["n"] == 0:
            return
        lr = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0].get("lr_mult", 1.0)
        metrics = {"epoch": epoch, "loss": window["loss"] / window["n"], "train_acc": window["correct"] / max(window["seen"], 1),
                   "lr": lr}
        if self.distill_head is not None:
            metrics["distill_loss"] = window["distill"] / window["n"]
        self.logger.log(self.step, **metrics)
        window.update(loss=0.0, correct=0.0, seen=0.0, n=0, distill=0.0)

    # -- validation --------------------------------------------------------------------
    def _validate_and_save_best(self) -> None:
        metrics: Dict[str, float] = {}
        if self.info.is_main:
            model = self.model
            if self.val_set is not None:
                probs, labels, _ = predict(model, self.val_set, self.local_batch, self.cfg.workers, self.device,
                                           self.cfg.amp, self.cfg.channels_last)
                metrics["val_acc"] = float((probs.argmax(1) == labels).mean())
            if self.pairs is not None:
                metrics.update(_verify_pairs(model, self.pairs, self.local_batch, self.device, self.cfg))
            model.train()
            self.logger.log(self.step, epoch=self.epoch - 1, **metrics)
        # every rank learns the result (rank 0 decides on "best")
        name = "val_verification_acc" if self.pairs is not None else "val_acc"
        value = torch.tensor([metrics.get(name, float("nan"))], dtype=torch.float64, device=self.device)
        if self.info.distributed:
            dist.broadcast(value, 0)
        score = float(value.cpu())
        if math.isfinite(score) and (self.best is None or score > self.best):
            self.best, self.best_name = score, name
            self._save("best.pt")
            log.info("new best %s %.4f at epoch %d (saved best.pt)", name, score, self.epoch - 1)

    # -- checkpoints ---------------------------------------------------------------------
    def _last_saved_step(self) -> Any:
        return getattr(self, "_saved_step", "none yet")

    def _save(self, name: str) -> None:
        """Write ``out/name`` on rank 0 (every rank's RNG state included); all ranks wait for it."""
        rng = capture_rng_state()
        if self.info.distributed:
            states: List[Any] = [None] * self.info.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        if self.info.is_main:
            from ..models.checkpoint import save_model_checkpoint

            save_model_checkpoint(
                self.out / name, self.model, self.cfg.arch, self.model_kwargs,
                classes=self.classes,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, step=self.step,
                best_metric=self.best, best_metric_name=self.best_name,
                config=config_to_dict(dataclasses.asdict(self.cfg)),
                rng=states,
                **({"distill_head": self.distill_head.state_dict()} if self.distill_head is not None else {}),
            )
            self._saved_step = self.step
        if self.info.distributed:
            dist.barrier()

    def finish(self) -> None:
        if self.logger is not None:
            self.logger.close()
        if self.info.is_main and self.cfg.plots and (self.out / "metrics.jsonl").is_file():
            try:
                plot_metrics(self.out / "metrics.jsonl", self.out / "curves.png")
            except ValueError as err:  # nothing logged yet
                log.warning("no curves plotted: %s", err)


# ---------------------------------------------------------------------------------------
# verification pairs
# ---------------------------------------------------------------------------------------
def _load_pairs(path: str, root: Optional[str], cfg: TrainConfig, eval_tf) -> Dict[str, Any]:
    """Read a verification pair list (formats of :func:`lightface.eval.verification.read_pairs`)
    and its images (gray) into a dataset + pair index arrays."""
    from ..data.io import ImageReadError, read_image
    from ..data import transforms as T
    from ..eval.verification import read_pairs

    try:
        pairs = read_pairs(path)
    except (FileNotFoundError, ValueError) as err:
        raise TrainingError(f"--val-pairs: {err}") from err
    base = Path(root) if root else Path(path).parent
    files = pairs.paths
    index = {p: i for i, p in enumerate(files)}
    crop_only = T.eval_transform(size=cfg.crop)
    samples = []
    for f in files:
        try:
            image = read_image(base / f, color="gray")
        except (FileNotFoundError, ImageReadError) as err:
            raise TrainingError(f"--val-pairs image {base / f}: {err}; set --val-pairs-root to the images folder") from err
        samples.append(image)

    class _Pairs(Dataset):  # crop-sized images are used as they are, others go through resize + centre crop
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            img = samples[i]
            tf = crop_only if img.shape[:2] == (cfg.crop, cfg.crop) else eval_tf
            return _to_tensor(tf(image=img)["image"]), 0, i

    return {"dataset": _Pairs(), "pairs": np.asarray([[index[a], index[b]] for a, b in zip(pairs.a, pairs.b)]),
            "same": pairs.labels, "folds": pairs.folds}


def _verify_pairs(model: nn.Module, pairs: Dict[str, Any], batch_size: int, device, cfg: TrainConfig) -> Dict[str, float]:
    """10-fold verification accuracy and TAR@FAR of cosine scores of the 256-d features."""
    from ..eval.verification import verification_metrics

    _, _, _, feats = predict(model, pairs["dataset"], batch_size, 0, device, cfg.amp, cfg.channels_last, features=True)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    scores = (feats[pairs["pairs"][:, 0]] * feats[pairs["pairs"][:, 1]]).sum(1)
    m = verification_metrics(scores, pairs["same"], folds=pairs["folds"])
    out = {"val_verification_acc": m["accuracy_mean"], "val_auc": m["auc"]}
    for far, tar in m["tar_at_far"].items():
        if tar is not None:
            out[f"val_tar_at_far_{far}"] = float(tar)
    return out


# ---------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Run (or ``cfg.resume``) a Light CNN training run; returns a summary dict.

    Single process without ``torchrun``; under ``torchrun`` one process per device with
    DDP (NCCL on GPUs, Gloo on the CPU), rank 0 logging and writing checkpoints.
    ``--batch-size`` is the global batch (divided over the processes).

    Validation (every ``val_every`` epochs and after the last): ``val_acc`` (top-1 on the
    held-out split or ``val_data``); with ``val_pairs`` (any pair list
    :func:`lightface.eval.verification.read_pairs` reads: LFW ``pairs.txt``, ``label a b``
    lines, a CFP protocol folder; image paths relative to ``val_pairs_root``, default the
    list's folder; images are aligned crops: ``crop``-sized ones are used as they are,
    others are resized to ``resize`` and centre-cropped like the training data), 10-fold
    verification accuracy (``val_verification_acc``), ROC AUC and TAR@FAR (cosine of the
    256-d features) through :mod:`lightface.eval.verification`. ``best.pt`` tracks verification accuracy when pairs
    are given, else ``val_acc``.

    Returns:
        ``{"stopped", "step", "epoch", "best_metric", "best_metric_name", "last", "best",
        "seconds", "images_per_s"}``.

    Raises:
        TrainingError: bad settings or data; NonFiniteLossError on a NaN/inf loss.
    """
    cfg.validate()
    info = init_distributed(cfg.device)
    run = _Run(cfg, info)
    try:
        run.setup()
        return run.run()
    finally:
        run.finish()
        cleanup_distributed()
