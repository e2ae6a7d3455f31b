"""Light CNN training: the original recipe on LMDB data, as a task of the one training engine.

The recipe (Wu et al., Light CNN, TIFS 2018, and the authors' PyTorch release): SGD with
momentum 0.9, lr 0.01, weight decay 1e-4, batch 128, 80 epochs, the learning rate
multiplied by 0.457305 every 10 epochs, the classifier at 10x the base lr (its bias at
20x), the other biases at 2x, no weight decay on biases; gray 144x144 crops, randomly
cropped to 128 and flipped. :class:`TrainConfig` holds every setting (``pipelines.train_lightcnn`` generates
a flag / YAML key from each field) and :func:`train` runs it on
:class:`~lightface.engine.engine.Engine`::

    from lightface.engine.lightcnn_trainer import TrainConfig, train
    summary = train(TrainConfig(data="casia.lmdb", arch="lightcnn9", out="runs/casia9"))

The engine owns the run folder (``last.pt``, ``best.pt``, ``model.pt``, ``config.yaml``,
``metrics.jsonl``; docs/training.md), ``--resume``, DDP under ``torchrun``, the
``--max-minutes`` deadline and the NaN guard. Checkpoints are project checkpoints
(``arch``, ``model_kwargs``, ``state_dict``, ``classes``), loadable by
``build_from_checkpoint(path)``, ``get_model(arch, weights=..., **model_kwargs)`` (a margin loss's
``cosine_classifier=True`` included) or ``FaceEmbedder``; with ``--distill`` the projection
head is saved as ``networks["distill_head"]``.

Determinism: the sample order of an epoch comes from ``(seed, epoch)`` (a shuffle, or with
``--samples-per-identity K`` runs of K photos of one person: :mod:`lightface.engine.samplers`)
and every sample's augmentation is seeded from ``(seed, epoch, index)``, so the data a
step sees does not depend on ``--workers`` or on where a run was interrupted; with the
saved RNG states, ``--resume`` reproduces the uninterrupted run's losses.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.multi_source import MultiSourceDataset
from ..data.recognition import (
    AUGMENTS,
    HARD_SHARE,
    WORN_SHARE,
    SampleTransformDataset,
    check_distinct_sources,
    corpus_align_method,
    data_paths,
    lightcnn_transforms,
    open_training_lmdbs,
    stratified_split,
)
from ..distill import DistillHead, distill_loss, relation_loss
from ..distill.teacher import TEACHERS, embeddings_path, load_teacher_embeddings, read_embedding_rows
from ..eval.predict import AMP_DTYPES, autocast, predict
from ..losses.margin import MARGIN_LOSSES
from ..losses.noisy_label import BOOTSTRAP_LOSSES, LOSSES, build_classification_loss
from ..models import get_model
from ..models.registry import list_models
from ..models.lightcnn import INPUT_SIZE, MFMResBlock
from ..models.checkpoint import load_weights, read_model_checkpoint
from ..models.pretrained import file_or_shipped
from .config import ConfigError, absolute_file, absolute_if_exists, config_from_dict, flag_name, option
from ..utils.repeated_warnings import warn_on_main_rank
from .engine import Engine, NonFiniteLossError, RunConfig, SettingsError, Task, TrainingError, check_run_config

__all__ = [
    "TrainConfig",
    "LightCNNTask",
    "TrainingError",
    "SettingsError",
    "NonFiniteLossError",
    "train",
    "build_param_groups",
    "init_weights",
    # data utilities, defined in lightface.data.recognition / lightface.eval.predict
    "stratified_split",
    "SampleTransformDataset",
    "predict",
    "lightcnn_transforms",
    "AMP_DTYPES",
    "AUGMENTS",
    "INITS",
]

log = logging.getLogger(__name__)

INITS = ("default", "kaiming")
#: backbone bias lr multiplier of the recipe (the authors' train.py: ``2 * args.lr``, no weight decay)
DEFAULT_BIAS_LR_MULT = 2.0
#: ``--bias-lr-mult`` of the runs saved before the setting existed
LEGACY_BIAS_LR_MULT = 1.0
_DATA, _OPT, _VAL, _FT, _RUN = "data and model", "optimisation", "validation", "fine-tuning", "run control"


def _distill_names_a_file(distill: str) -> bool:
    """Whether ``--distill`` names an embeddings file (``FILE.npy``) rather than a teacher (``dlib``)."""
    return distill.lower().endswith(".npy")


def _distill_setting(distill: str) -> str:
    """``--distill`` as ``OUT/config.yaml`` stores it: a relative ``FILE.npy`` absolute, a teacher's name as given
    (also when a file or folder of that name is in the current folder)."""
    return absolute_if_exists(distill) if _distill_names_a_file(distill) else distill


@dataclass
class TrainConfig(RunConfig):
    """Every setting of a Light CNN training run (defaults: the original recipe).

    Data: ``data`` is a training LMDB (``lightface.data.LMDBDataset``: uint8 gray or BGR
    images, usually 144x144 Light CNN training crops), or several (one per source, each
    keeping its classes). Validation uses ``val_data`` (an LMDB with the same classes, or one per
    ``data`` LMDB) or, with ``val_split > 0``, that fraction of ``data`` held out
    (:func:`~lightface.data.recognition.stratified_split`);
    ``val_pairs`` adds face verification (see :func:`train`).
    """

    data: Union[str, List[str]] = option(
        "", required=True, group=_DATA, path=True,
        help="training LMDB(s) (uint8 gray or BGR crops, usually 144x144 Light CNN training crops); several LMDBs "
             "(one per source) are trained on as one, each keeping its own classes")
    arch: str = option("lightcnn9", group=_DATA, help="model registry name: lightcnn9, lightcnn29, lightcnn29v2")
    dropout: float = option(0.5, group=_DATA, help="dropout before the classifier")
    init: str = option("default", choices=INITS, group=_DATA,
                       help="weights when training from scratch: PyTorch's defaults (as the original code) or kaiming "
                            "(N(0, 1/fan_in), zero biases; trains much sooner on small data sets)")
    resize: int = option(144, group=_DATA, help="images are resized to RESIZE x RESIZE first (no-op for 144 crops)")
    crop: int = option(128, group=_DATA,
                       help="random crop (training) / centre crop (validation) size: the model input, 128 for every "
                            "--arch")
    flip: bool = option(True, group=_DATA, help="random horizontal flip (--no-flip turns it off)")
    augment: str = option("basic", choices=AUGMENTS, group=_DATA,
                          help="basic: the original random crop + flip; strong: + geometry, colour, side lighting, "
                               f"blur, JPEG, occlusion (small data sets); hard: strong, and {HARD_SHARE:.0%} of the "
                               "faces also under a hard side light or a large occluder (sunglasses, scarf or hand "
                               f"sized); hard_face: hard, and {WORN_SHARE:.0%} of the faces also wear glasses or a "
                               "face mask or are half covered by a hand, drawn where they sit on the face")
    workers: int = option(4, group=_DATA, help="DataLoader worker processes per training process")
    # optimisation (original recipe)
    epochs: int = option(80, group=_OPT, help="number of epochs")
    batch_size: int = option(128, group=_OPT, help="global batch size (divided over torchrun processes)")
    lr: float = option(0.01, group=_OPT, help="base learning rate (SGD)")
    momentum: float = option(0.9, group=_OPT, help="SGD momentum")
    weight_decay: float = option(1e-4, group=_OPT, help="weight decay (not on biases unless --bias-decay)")
    lr_step: int = option(10, group=_OPT, help="multiply the lr by --lr-gamma every LR_STEP epochs")
    lr_gamma: float = option(0.457305, group=_OPT, help="step decay factor of the learning rate")
    classifier_lr_mult: float = option(10.0, group=_OPT, help="classifier weight lr = base lr x this")
    classifier_bias_lr_mult: float = option(20.0, group=_OPT, help="classifier bias lr = base lr x this")
    bias_lr_mult: Optional[float] = option(
        None, group=_OPT, default_text="2; a resumed run keeps the multiplier it trained with",
        help="backbone bias lr = base lr x this (the authors' train.py: 2; runs before this flag trained them at 1)")
    bias_decay: bool = option(False, group=_OPT, help="apply weight decay to biases too")
    loss: str = option("ce", choices=tuple(LOSSES), group=_OPT,
                       help="classification loss: cross-entropy, Reed et al.'s soft / hard bootstrapping for noisy "
                            "labels, or a margin loss on a cosine classifier (cosface: CosFace / AM-Softmax, arcface: "
                            "ArcFace)")
    beta: Optional[float] = option(None, group=_OPT,
                                   help="bootstrapping beta; None: 0.95 for soft-bootstrap, 0.8 for hard-bootstrap")
    margin: Optional[float] = option(None, group=_OPT,
                                     help="margin of --loss cosface (cosine, default 0.35) or arcface (radians, "
                                          "default 0.5)")
    scale: float = option(30.0, group=_OPT, help="logit scale s of the margin losses")
    clip_grad: float = option(0.0, group=_OPT,
                              help="clip the gradient norm (of every trained parameter, the --distill head's "
                                   "included) to this value (0: off)")
    amp: str = option("none", choices=tuple(AMP_DTYPES), group=_OPT,
                      help="mixed precision: bf16 (GPU or CPU) or fp16 (GPU, with loss scaling)")
    channels_last: bool = option(False, group=_OPT, help="channels_last memory format for model and inputs")
    # knowledge distillation (lightface.distill)
    distill: Optional[str] = option(
        None, metavar="EMB", group=_OPT, path=_distill_setting,
        help="distil a teacher's embeddings: a teacher name (dlib: DATA/teacher_dlib.npy beside each LMDB, from "
             "python -m pipelines.teacher_embeddings) or, with one LMDB, an (N, D) .npy file; a linear head projects "
             "the 256-d features to the teacher's space (cosine loss)")
    distill_weight: float = option(1.0, metavar="W", group=_OPT,
                                   help="with --distill: weight of the distillation loss beside the classification "
                                        "loss")
    distill_relation: float = option(0.0, metavar="W", group=_OPT,
                                     help="with --distill: weight of a similarity-preserving term on the 256-d "
                                          "features themselves (squared difference of the batch's pairwise cosines "
                                          "from the teacher's; 0: off)")
    samples_per_identity: int = option(
        0, metavar="K", group=_OPT,
        help="order each epoch in runs of up to K photos of one person, so a batch holds batch-size/K people with "
             "several photos each and --distill-relation sees same-person pairs (0: plain shuffle; K >= 2)")
    # validation
    val_data: Optional[Union[str, List[str]]] = option(
        None, group=_VAL, path=True,
        help="validation LMDB(s) with the same classes as --data: one per --data LMDB, in the same order, each with "
             "the classes of its source")
    val_split: float = option(0.0, group=_VAL,
                              help="hold out this fraction of the --data photos for validation, spread over the "
                                   "classes: each gives its share rounded down or up, one-photo classes none; "
                                   "--resume keeps the run's (0: none)")
    val_pairs: Optional[str] = option(
        None, group=_VAL, path=True,
        help="verification pair list (LFW pairs.txt, 'label path_a path_b' lines, or a CFP protocol folder) of aligned "
             "crops; reports 10-fold accuracy, AUC and TAR@FAR")
    val_pairs_root: Optional[str] = option(None, group=_VAL, path=True,
                                           help="folder the --val-pairs image paths are relative to; None: the "
                                                "list's folder")
    val_every: int = option(1, group=_VAL, help="validate every N epochs (and at the end)")
    # fine-tuning
    finetune: Optional[str] = option(
        None, group=_FT, path=absolute_file,
        help="initialise the backbone from an official Light CNN release, a lightface checkpoint or a shipped model's "
             "name (lightcnn29v2_3src_rc13, recognition; lightface.models.list_pretrained()); a new classifier "
             "is sized from --data, unless the checkpoint was trained on the same classes: then its classifier (and "
             "distillation head) are kept, a warm restart with a new schedule (give it another --seed)")
    classifier_only_epochs: int = option(0, group=_FT,
                                         help="with --finetune: train only the classifier for this many epochs, then "
                                              "everything")
    # run control (with RunConfig's)
    max_steps: int = option(0, group=_RUN, help="stop after this many optimiser steps in total (0: no limit)")
    save_every: int = option(0, group=_RUN,
                             help="also write last.pt every N steps within an epoch (0: at the end of each epoch only)")
    log_every: int = option(20, group=_RUN, help="log a line and a metrics record every N steps")
    deterministic: bool = option(False, group=_RUN, help="deterministic cuDNN / torch algorithms (slower)")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict / ``vars(args)``; unknown keys or bad values raise :class:`SettingsError`."""
        try:
            return config_from_dict(cls, values)
        except ConfigError as err:
            raise SettingsError(f"unknown training settings or bad values: {err}") from err

    def problems(self) -> List[str]:
        """Settings that cannot work, each naming its flag."""
        problems = check_run_config(self)
        if not self.data:
            problems.append("--data (training LMDB) is required")
        recognisers = list_models("recognition")
        if self.arch.lower() not in recognisers:
            problems.append(f"--arch {self.arch} is not a recogniser (a Light CNN with a classifier); use "
                            f"{', '.join(recognisers)}")
        if not 0.0 <= self.dropout <= 1.0:
            problems.append(f"--dropout must be in [0, 1], got {self.dropout}")
        if not 0.0 < self.lr_gamma <= 1.0:
            problems.append(f"--lr-gamma (step decay factor) must be in (0, 1], got {self.lr_gamma}")
        for name in ("epochs", "lr_step", "crop", "resize"):
            if getattr(self, name) <= 0:
                problems.append(f"{flag_name(name)} must be > 0, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "momentum", "clip_grad", "max_steps", "classifier_only_epochs",
                     "distill_weight", "distill_relation", "margin", "classifier_lr_mult", "classifier_bias_lr_mult",
                     "bias_lr_mult"):
            if getattr(self, name) is None:
                continue
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:  # nan < 0 is False
                problems.append(f"{flag_name(name)} must be >= 0 and finite, got {getattr(self, name)}")
        if self.crop > self.resize:
            problems.append(f"--crop {self.crop} is larger than --resize {self.resize}")
        elif self.crop != INPUT_SIZE:
            problems.append(f"--crop must be {INPUT_SIZE}, got {self.crop}: every --arch takes {INPUT_SIZE}x"
                            f"{INPUT_SIZE} crops (--resize sets the size they are cut from)")
        if not 0.0 <= self.val_split < 1.0:
            problems.append(f"--val-split must be in [0, 1), got {self.val_split}")
        for name, allowed in (("augment", AUGMENTS), ("init", INITS), ("amp", tuple(AMP_DTYPES)), ("loss", tuple(LOSSES))):
            if getattr(self, name) not in allowed:
                problems.append(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.val_data and self.val_split:
            problems.append("give either --val-data or --val-split, not both")
        if self.classifier_only_epochs and not self.finetune:
            problems.append("--classifier-only-epochs needs --finetune CHECKPOINT")
        if not (math.isfinite(self.scale) and self.scale > 0):
            problems.append(f"--scale must be > 0 and finite, got {self.scale}")
        if self.beta is not None and not 0.0 <= self.beta <= 1.0:
            problems.append(f"--beta (bootstrapping) must be in [0, 1], got {self.beta}")
        if self.beta is not None and self.loss not in BOOTSTRAP_LOSSES:
            problems.append(f"--beta is for --loss {' or '.join(BOOTSTRAP_LOSSES)}, not {self.loss!r}")
        if self.margin is not None and self.loss not in MARGIN_LOSSES:
            problems.append(f"--margin is for --loss {' or '.join(MARGIN_LOSSES)}, not {self.loss!r}")
        if self.samples_per_identity == 1 or self.samples_per_identity < 0:
            problems.append(f"--samples-per-identity must be 0 (off) or >= 2, got {self.samples_per_identity}")
        elif self.samples_per_identity > self.batch_size:
            problems.append(f"--samples-per-identity {self.samples_per_identity} is larger than --batch-size "
                            f"{self.batch_size}")
        if (self.distill and not _distill_names_a_file(self.distill) and self.distill not in TEACHERS
                and not all(embeddings_path(p, self.distill).is_file() for p in data_paths(self.data))):
            problems.append(f"--distill {self.distill!r} is not a teacher lightface computes "
                            f"({', '.join(sorted(TEACHERS))}) and not every --data LMDB holds teacher_{self.distill}.npy: "
                            "give a teacher's name, store another teacher's embeddings beside each LMDB with "
                            "lightface.distill.teacher.save_teacher_embeddings(..., teacher=NAME), or, with one --data "
                            "LMDB, give --distill FILE.npy")
        for name in ("distill_weight", "distill_relation"):  # without a teacher they would do nothing
            if not self.distill and getattr(self, name) != getattr(type(self), name):
                problems.append(f"{flag_name(name)} needs --distill EMB (the teacher embeddings it compares against)")
        return problems

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the flag for settings that cannot work."""
        problems = self.problems()
        if problems:
            raise SettingsError("invalid training settings: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------
# model / optimiser
# ---------------------------------------------------------------------------------------
def build_param_groups(model: nn.Module, lr: float, weight_decay: float, classifier_lr_mult: float = 10.0,
                       classifier_bias_lr_mult: float = 20.0, bias_decay: bool = False,
                       bias_lr_mult: float = DEFAULT_BIAS_LR_MULT) -> List[Dict[str, Any]]:
    """SGD parameter groups of the Light CNN recipe (the authors' ``train.py``).

    Groups (empty ones dropped): backbone weights (lr, weight_decay), backbone biases
    (``bias_lr_mult`` x lr, no decay unless ``bias_decay``), classifier weight (``classifier_lr_mult`` x lr, decay),
    classifier bias (``classifier_bias_lr_mult`` x lr, no decay unless ``bias_decay``).
    The classifier is ``model.classifier``; each group carries a ``"name"`` and its
    ``"lr_mult"`` (relative to the base lr).
    """
    classifier = getattr(model, "classifier", None)
    cls_ids = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    groups: Dict[str, List[nn.Parameter]] = {"backbone_weight": [], "backbone_bias": [], "classifier_weight": [],
                                             "classifier_bias": []}
    for _, p in model.named_parameters():
        part = "classifier" if id(p) in cls_ids else "backbone"
        kind = "bias" if p.ndim <= 1 else "weight"
        groups[f"{part}_{kind}"].append(p)
    bias_wd = weight_decay if bias_decay else 0.0
    spec = {
        "backbone_weight": (1.0, weight_decay),
        "backbone_bias": (bias_lr_mult, bias_wd),
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
    training can sit at ``log(num_classes)`` for many epochs (docs/training.md). The last
    conv of every residual block (LightCNN-29 / 29v2) starts at zero, so each block starts as
    the identity: without normalisation layers, unit-gain branches added to their input
    grow the activations with depth (LightCNN-29v2's logits at kaiming init had a standard
    deviation of about 1,100 on 30 real faces, a cross-entropy of about 3,000 over 2,053
    classes; with the zeroed branches 4.3 and 9.4, LightCNN-9's 0.4 and 8.6).
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
    for module in model.modules():
        if isinstance(module, MFMResBlock):
            nn.init.zeros_(module.conv2.filter.weight)
    return model


def _source_classes(base: Any) -> List[List[str]]:
    """The class names of each source of an opened ``--data`` / ``--val-data`` (one list per LMDB, as stored)."""
    sources = base.datasets if isinstance(base, MultiSourceDataset) else [base]
    return [[str(c) for c in d.classes] for d in sources]


def _fits(module: nn.Module, state: Mapping[str, Any]) -> bool:
    """Whether ``state`` has exactly ``module``'s parameter names and shapes."""
    own = module.state_dict()
    return set(own) == set(state) and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own)


def _load_distill_targets(data: Union[str, Sequence[str]], distill: str) -> Tensor:
    """The teacher embeddings of every training sample (N, D) float32, in dataset order.

    ``distill`` is a teacher name (``dlib``: ``<lmdb>/teacher_dlib.npy`` beside each LMDB,
    written by ``python -m pipelines.teacher_embeddings``) or, with one LMDB, a ``.npy`` path.
    Rows without an embedding (NaN: the teacher failed, or its computation is still running)
    are left out of the distillation loss; each ``--resume`` reloads the files. With no row at
    all the run is refused (both distillation terms would be 0 throughout). The targets
    are centred (the mean over the training set is subtracted).
    """
    paths = data_paths(data)
    try:
        if _distill_names_a_file(distill):
            if len(paths) != 1:
                raise TrainingError("--distill FILE.npy works with one --data LMDB; with several, give the teacher "
                                    "name (e.g. --distill dlib) so each LMDB's own embeddings are used")
            arrays = [read_embedding_rows(distill)]
        else:
            arrays = [load_teacher_embeddings(p, distill, allow_partial=True) for p in paths]
    except (FileNotFoundError, ValueError) as err:
        hint = "" if distill in TEACHERS else "; or, with one --data LMDB, give --distill FILE.npy (see --help)"
        raise TrainingError(f"--distill {distill}: {err}{hint}") from err
    targets = np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays])
    known = np.isfinite(targets).all(1)
    if not known.any():
        raise TrainingError(f"--distill {distill}: none of the {len(targets)} training samples has a teacher "
                            f"embedding, so the distillation would do nothing; {_no_embedding_hint(paths, distill)}")
    # centred: embeddings compared by distance (dlib's) share one large direction that
    # would dominate a cosine loss and hide the identity differences
    return torch.from_numpy(targets - targets[known].mean(0))


def _no_embedding_hint(paths: Sequence[str], distill: str) -> str:
    """Why ``--distill`` found no embedding at all, and what to do: an unfinished computation's
    progress and the command that resumes it (the first such LMDB of ``paths``)."""
    if _distill_names_a_file(distill):
        return f"{distill} holds only NaN rows"
    for path in paths:
        try:
            load_teacher_embeddings(path, distill)
        except ValueError as err:  # not finished: how far it got and how to resume it
            return str(err)
    return "every row of their embeddings is NaN: the teacher could read none of the samples"


# ---------------------------------------------------------------------------------------
# verification pairs
# ---------------------------------------------------------------------------------------
def _load_pairs(path: str, root: Optional[str], crop: int, eval_tf) -> Dict[str, Any]:
    """Read a verification pair list (formats of :func:`lightface.eval.verification.read_pairs`)
    and its images (gray) into a dataset + pair index arrays."""
    from ..data import transforms as T
    from ..data.io import ImageReadError, read_image
    from ..eval.verification import read_pairs

    try:
        pairs = read_pairs(path)
    except (FileNotFoundError, ValueError) as err:
        raise TrainingError(f"--val-pairs: {err}") from err
    base = Path(root) if root else Path(path).parent
    files = pairs.paths
    index = {p: i for i, p in enumerate(files)}
    samples = []
    for f in files:
        try:
            samples.append({"image": read_image(base / f, color="gray"), "label": 0})
        except (FileNotFoundError, ImageReadError) as err:
            raise TrainingError(f"--val-pairs image {base / f}: {err}; set --val-pairs-root to the images folder") from err
    crop_only = T.eval_transform(size=crop)

    def transform(image):  # crop-sized images are used as they are, others go through resize + centre crop
        return (crop_only if image.shape[:2] == (crop, crop) else eval_tf)(image=image)

    return {"dataset": SampleTransformDataset(samples, transform),
            "pairs": np.asarray([[index[a], index[b]] for a, b in zip(pairs.a, pairs.b)]),
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
# the task
# ---------------------------------------------------------------------------------------
class LightCNNTask(Task):
    """Light CNN classification training (optionally with embedding distillation) for the :class:`Engine`."""

    name = "lightcnn"
    val_unit = "epoch"
    save_at_epoch_end = True
    divergence_hint = "set --clip-grad, or use --amp bf16/none"
    reproducibility_keys = Task.reproducibility_keys + ("samples_per_identity", "val_split", "val_data")

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.stage: Optional[bool] = None  # classifier-only stage active?

    # -- set-up ------------------------------------------------------------------------
    def build(self, engine: Engine) -> Dataset:
        cfg, device = self.cfg, self.device
        if cfg.amp == "fp16" and device.type != "cuda":
            raise TrainingError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU or --amp none")
        if cfg.deterministic:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True
        try:
            self.train_base = open_training_lmdbs(cfg.data)
        except FileNotFoundError as err:
            raise TrainingError(str(err)) from err
        try:  # how its faces were cropped: recorded in the checkpoints, FaceEmbedder(align_method="auto") follows it
            self.align_method = corpus_align_method(self.train_base)
        except ValueError as err:
            raise TrainingError(f"--data: {err}") from err
        labels = np.asarray(self.train_base.labels, dtype=np.int64)
        if len(labels) == 0:
            raise TrainingError(f"training LMDB {cfg.data} holds no samples")
        self.classes = [str(c) for c in self.train_base.classes]
        if len(self.classes) < 2:
            raise TrainingError(f"training LMDB {cfg.data} has {len(self.classes)} class(es); a classifier needs >= 2")
        self._check_resumed_classes(engine.resume_state)
        train_tf, eval_tf = lightcnn_transforms(cfg.crop, cfg.resize, cfg.flip, cfg.augment)
        train_idx, val_idx = self._split(labels, engine.resume_state)
        if cfg.val_split > 0 and len(val_idx) == 0:
            fix = ("every class has one photo and keeps it for training; give --val-data or --val-pairs instead"
                   if len(np.unique(labels)) == len(labels) else
                   f"that is under one photo: raise it above {0.5 / len(labels):.2g}, or give --val-data")
            raise SettingsError(f"--val-split {cfg.val_split:g} holds out no photo of the {len(labels)} in --data: "
                                f"{fix}")
        train_set = SampleTransformDataset(self.train_base, train_tf, train_idx, seed=cfg.seed)
        self.train_labels = labels[train_idx]
        self.val_indices, self.num_samples = val_idx, len(labels)
        self.val_set = None
        if cfg.val_split > 0:
            self.val_set = SampleTransformDataset(self.train_base, eval_tf, val_idx, seed=cfg.seed)
        elif cfg.val_data:
            data, val_data = data_paths(cfg.data), data_paths(cfg.val_data)
            try:  # validation on training images would flatter every checkpoint
                check_distinct_sources([*data, *val_data], ["--data"] * len(data) + ["--val-data"] * len(val_data),
                                       "validation would measure training images: give --val-data LMDBs that are "
                                       "not in --data, or hold out photos of --data with --val-split")
                val_base = open_training_lmdbs(cfg.val_data, "validation")
            except (FileNotFoundError, ValueError) as err:
                raise TrainingError(str(err)) from err
            val_sources, train_sources = _source_classes(val_base), _source_classes(self.train_base)
            # one LMDB per source, or (as before several were accepted) one holding every class of --data in order
            if val_sources != train_sources and [str(c) for c in val_base.classes] != self.classes:
                raise TrainingError(
                    f"--val-data {' '.join(data_paths(cfg.val_data))} must have the same classes as --data "
                    f"{' '.join(data_paths(cfg.data))}: " + (
                        f"give one validation LMDB per --data LMDB ({len(train_sources)}, in the same order), not "
                        f"{len(val_sources)}" if len(val_sources) != len(train_sources) else
                        "; ".join(f"validation LMDB {k + 1} has {len(v)} classes, training LMDB {k + 1} {len(t)}"
                                  f"{'' if len(v) != len(t) else ' of other names or order'}"
                                  for k, (v, t) in enumerate(zip(val_sources, train_sources)) if v != t)))
            val_method = corpus_align_method(val_base)
            if None not in (val_method, self.align_method) and val_method != self.align_method:
                warn_on_main_rank(log, "--val-data %s was cropped with align_method %r, --data %s with %r: val_acc "
                                  "measures other crops than the model trains on; rebuild it with build_lmdb "
                                  "--align-method %s", " ".join(data_paths(cfg.val_data)), val_method,
                                  " ".join(data_paths(cfg.data)), self.align_method, self.align_method)
            self.val_set = SampleTransformDataset(val_base, eval_tf, seed=cfg.seed)
        self.pairs = _load_pairs(cfg.val_pairs, cfg.val_pairs_root, cfg.crop, eval_tf) if cfg.val_pairs else None
        self.best_metric = ("val_verification_acc" if self.pairs is not None else "val_acc", "max")

        cosine = cfg.loss in MARGIN_LOSSES
        model_kwargs = {"num_classes": len(self.classes), "dropout": cfg.dropout}
        if cosine:  # the margin losses read the cosines of a CosineClassifier
            model_kwargs["cosine_classifier"] = True
        model = get_model(cfg.arch, **model_kwargs)
        if getattr(model, "classifier", None) is None:
            raise TrainingError(f"model {cfg.arch!r} has no classifier; train_lightcnn needs a Light CNN with num_classes")
        finetune = cfg.finetune and not engine.resuming
        start = read_model_checkpoint(file_or_shipped(cfg.finetune, task="recognition")) if finetune else None
        if start is not None and start.arch and start.arch != cfg.arch:
            raise TrainingError(f"--finetune {cfg.finetune} holds a {start.arch!r} model but --arch is {cfg.arch!r} "
                                f"(the default when not given): pass --arch {start.arch} to fine-tune it")
        same_classes = start is not None and [str(c) for c in start.extra.get("classes") or []] == self.classes
        # a classifier is only kept when it is of the same kind (linear for ce / bootstrapping, cosine for margins)
        keep_classifier = same_classes and bool(start.model_kwargs.get("cosine_classifier")) == cosine
        if start is not None:
            load_weights(model, start, ignore_classifier=not keep_classifier)
            log.info("fine-tuning: backbone from %s, %s", cfg.finetune,
                     f"its classifier kept (same {len(self.classes)} classes as --data)" if keep_classifier else
                     f"new {len(self.classes)}-class {'cosine ' if cosine else ''}classifier")
            if same_classes and (start.extra.get("config") or {}).get("seed") == cfg.seed:
                warn_on_main_rank(log, "fine-tuning on the classes %s was trained on with the same --seed %d: each "
                                  "epoch replays the augmented views of the same epoch of that run; pass another "
                                  "--seed", cfg.finetune, cfg.seed)
        elif not engine.resuming:
            init_weights(model, cfg.init)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.model_view = engine.add_network("model", model, arch=cfg.arch, kwargs=model_kwargs, primary=True,
                                             extra={"classes": self.classes,
                                                    **({"align_method": self.align_method} if self.align_method else {})})
        # unset: the recipe's 2 for a new run; a resumed run keeps the multiplier it trained with (load_extra_state)
        engine.setting_default("bias_lr_mult", DEFAULT_BIAS_LR_MULT)
        groups = build_param_groups(model, cfg.lr, cfg.weight_decay, cfg.classifier_lr_mult, cfg.classifier_bias_lr_mult,
                                    cfg.bias_decay, cfg.bias_lr_mult)
        self.head: Optional[nn.Module] = None
        self.distill_targets: Optional[Tensor] = None
        if cfg.distill:
            self.distill_targets = _load_distill_targets(cfg.data, cfg.distill)
            if len(self.distill_targets) != len(self.train_base):
                raise TrainingError(f"--distill {cfg.distill}: {len(self.distill_targets)} teacher embeddings for "
                                    f"{len(self.train_base)} training samples")
            found = int(torch.isfinite(self.distill_targets).all(1).sum())
            self.head = DistillHead(model.classifier.in_features, self.distill_targets.shape[1])
            saved_head = (start.extra.get("networks") or {}).get("distill_head") if start is not None else None
            if saved_head is not None and same_classes and _fits(self.head, saved_head):
                self.head.load_state_dict(saved_head)
                log.info("fine-tuning: distillation head kept from %s", cfg.finetune)
            self.head_view = engine.add_network("distill_head", self.head)
            groups.append({"params": list(self.head.parameters()), "name": "distill_head", "lr_mult": 1.0,
                           "lr": cfg.lr, "weight_decay": cfg.weight_decay})
            log.info("distilling %s teacher embeddings (%d-d, %d of %d samples) with weight %g", cfg.distill,
                     self.distill_targets.shape[1], found, len(self.distill_targets), cfg.distill_weight)
        self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        engine.add_optimizer("model", self.optimizer, cfg.lr, self.scheduler)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.criterion = build_classification_loss(cfg.loss, cfg.beta, cfg.margin, cfg.scale)
        log.info("training %s on %s: %d samples, %d classes, %d val samples", cfg.arch, cfg.data, len(train_set),
                 len(self.classes), len(self.val_set) if self.val_set else 0)
        return train_set

    def _check_resumed_classes(self, resumed: Optional[Mapping[str, Any]]) -> None:
        """A resumed run's classifier row k belongs to the run's class k: --data whose classes differ (the LMDBs in
        another order, a rebuilt one) would silently train each row on another person."""
        saved = [str(c) for c in (resumed or {}).get("classes") or []]
        if not saved or saved == self.classes:
            return
        started = ((resumed.get("config") or {}).get("data")) or []
        started = " ".join(data_paths(started)) if started else "as it started"
        if sorted(saved) == sorted(self.classes):
            why = "the same classes in another order (the --data LMDBs in another order?)"
        else:
            missing = len(set(saved) - set(self.classes))
            why = (f"{missing} of its {len(saved)} classes are not in --data, which has {len(self.classes)}"
                   if missing else f"--data has {len(self.classes) - len(saved)} classes more than its {len(saved)}")
        raise TrainingError(f"--resume {self.engine.resume_path}: the run trained its classifier on other classes "
                            f"than --data {' '.join(data_paths(self.cfg.data))} holds: {why}; resume with --data "
                            f"{started}, or start a new run from it with --finetune")

    def _split(self, labels: np.ndarray, resumed: Optional[Mapping[str, Any]]) -> Tuple[np.ndarray, np.ndarray]:
        """``--val-split``: (training, held-out) sample indices; a resumed run keeps the photos it held out
        (saved in its checkpoints; a run saved before session 50 split by the rule of then, one photo of every
        class), so that it trains on and scores the same photos whatever the lightface version."""
        cfg = self.cfg
        saved = (resumed or {}).get("config") or {}
        if not (cfg.val_split > 0 and resumed is not None and saved.get("val_split") == cfg.val_split
                and saved.get("seed") == cfg.seed):
            return stratified_split(labels, cfg.val_split, cfg.seed)
        held = resumed.get("val_indices")
        if held is None:  # started before the held-out photos were saved: the rule of then
            log.info("--resume: the run's --val-split %g, by the rule it started with (one photo of every class)",
                     cfg.val_split)
            return stratified_split(labels, cfg.val_split, cfg.seed, every_class=True)
        held = np.asarray(held, dtype=np.int64)
        if resumed.get("num_samples") != len(labels) or (len(held) and held.max() >= len(labels)):
            return stratified_split(labels, cfg.val_split, cfg.seed)  # other data (--resume warns of --data)
        keep = np.ones(len(labels), dtype=bool)
        keep[held] = False
        return np.flatnonzero(keep).astype(np.int64), np.sort(held)

    def sample_groups(self) -> Optional[Tuple[np.ndarray, int]]:
        """With ``--samples-per-identity K``: the training samples' labels and K."""
        k = self.cfg.samples_per_identity
        return (self.train_labels, k) if k else None

    def plan(self, steps_per_epoch: int) -> Tuple[int, str]:
        total = self.cfg.epochs * steps_per_epoch
        if self.cfg.max_steps and self.cfg.max_steps < total:
            return self.cfg.max_steps, f"max_steps={self.cfg.max_steps}"
        return total, "completed"

    # -- stages ------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Freeze the backbone during the classifier-only fine-tuning epochs.

        The heads on top of the 256-d features (the classifier and, with ``--distill``, the
        distillation projection) keep training: on a new backbone they start random, and a
        random projection would otherwise pull the backbone with the full distillation
        weight the moment it unfreezes."""
        classifier_only = epoch < self.cfg.classifier_only_epochs
        if self.stage == classifier_only:
            return
        cls_ids = {id(p) for p in self.model.classifier.parameters()}
        for p in self.model.parameters():  # the distillation head is a network of its own: never frozen
            p.requires_grad_(not classifier_only or id(p) in cls_ids)
        if classifier_only:
            log.info("epoch %d: classifier-only stage (backbone frozen) until epoch %d", epoch,
                     self.cfg.classifier_only_epochs)
        elif self.stage is not None:
            log.info("epoch %d: training all layers", epoch)
        if self.stage is not None or classifier_only:  # DDP must know which parameters train
            self.model_view = self.engine.rewrap("model")
        self.stage = classifier_only

    def on_epoch_end(self, epoch: int) -> None:
        self.scheduler.step()

    # -- step --------------------------------------------------------------------------
    def train_step(self, batch) -> Dict[str, Tensor]:
        cfg = self.cfg
        images, labels, index = batch
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self.model_view.train()
        with autocast(self.device, cfg.amp):
            logits, features = self.model_view(images, return_logits=True)
            projected = self.head_view(features) if self.head is not None else None
        loss = self.criterion(logits.float(), labels)
        terms: Dict[str, Tensor] = {}
        if projected is not None:
            target = self.distill_targets[index.cpu()].to(self.device)  # index: the sample's place in --data
            distill = distill_loss(projected, target)
            loss = loss + cfg.distill_weight * distill
            terms["distill_loss"] = distill.detach()
            if cfg.distill_relation > 0:
                relation = relation_loss(features, target)
                loss = loss + cfg.distill_relation * relation
                terms["relation_loss"] = relation.detach()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            # one norm over everything the optimiser steps: the Light CNN and, with --distill, its head
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        terms["loss"] = loss.detach()
        terms["train_acc"] = (logits.detach().argmax(1) == labels).float().mean()
        return terms

    def current_lr(self) -> float:
        group = self.optimizer.param_groups[0]
        return group["lr"] / group.get("lr_mult", 1.0)

    # -- validation --------------------------------------------------------------------
    def can_validate(self) -> bool:
        return self.val_set is not None or self.pairs is not None

    def validate(self) -> Dict[str, float]:
        cfg, batch = self.cfg, self.engine.local_batch
        metrics: Dict[str, float] = {}
        try:
            if self.val_set is not None:
                probs, labels, _ = predict(self.model, self.val_set, batch, cfg.workers, self.device, cfg.amp,
                                           cfg.channels_last)
                metrics["val_acc"] = float((probs.argmax(1) == labels).mean())
            if self.pairs is not None:
                metrics.update(_verify_pairs(self.model, self.pairs, batch, self.device, cfg))
        finally:
            self.model.train()
        return metrics

    # -- checkpoint state --------------------------------------------------------------
    def extra_state(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"scaler": self.scaler.state_dict()}
        if self.cfg.val_split > 0:  # the held-out photos, kept by --resume (_split)
            state.update(val_indices=torch.from_numpy(self.val_indices), num_samples=self.num_samples)
        return state

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        # the optimiser state just loaded carries the saved groups' lr and lr_mult; the setting follows it
        self.engine.resumed_setting(ckpt, "bias_lr_mult", LEGACY_BIAS_LR_MULT)


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Run (or ``cfg.resume``) a Light CNN training run on the :class:`~lightface.engine.engine.Engine`.

    Single process without ``torchrun``; under ``torchrun`` one process per device with
    DDP (NCCL on GPUs, Gloo on the CPU), rank 0 logging and writing checkpoints.
    ``--batch-size`` is the global batch (divided over the processes).

    Validation (every ``val_every`` epochs and at the end): ``val_acc`` (top-1 on the
    held-out photos or ``val_data``); with ``val_pairs`` (any pair list
    :func:`lightface.eval.verification.read_pairs` reads: LFW ``pairs.txt``, ``label a b``
    lines, a CFP protocol folder; image paths relative to ``val_pairs_root``, default the
    list's folder; images are aligned crops: ``crop``-sized ones are used as they are,
    others are resized to ``resize`` and centre-cropped like the training data), 10-fold
    verification accuracy (``val_verification_acc``), ROC AUC and TAR@FAR (cosine of the
    256-d features) through :mod:`lightface.eval.verification`. ``best.pt`` tracks
    verification accuracy when pairs are given, else ``val_acc``.

    Returns:
        the engine's summary: ``{"stopped", "step", "epoch", "best_metric",
        "best_metric_name", "last", "best", "model", "out", "seconds", "images_per_s", ...}``.

    Raises:
        TrainingError: bad settings or data, a run folder that needs ``--resume`` /
            ``--overwrite``; NonFiniteLossError on a NaN/inf loss or weight.
    """
    cfg.validate()
    return Engine(LightCNNTask(cfg)).run()

