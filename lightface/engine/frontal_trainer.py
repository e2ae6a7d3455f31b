"""TP-GAN frontalization training (``python -m pipelines.train_frontalization``), a task of the one engine.

One step (paired mode, the paper's setting):

1. generator step: ``out = G(profile)``; ``L_syn`` (:class:`lightface.losses.frontal.FrontalLoss`)
   against the frontal target with D frozen; Adam step (the engine then updates the EMA);
2. discriminator step every ``d_every`` generator steps: the GAN objective
   (:class:`lightface.engine.gan.GANObjective`, ``--adversarial`` etc.) on the target
   (real) and the detached ``img128`` (fake); with ``--d-steps N``, N - 1 more, each on the next
   batch's targets and the updated generator's output for its inputs (such a step takes N batches).

Unpaired mode (``--cycle W > 0``): profiles and frontals are drawn independently, so
there is no pixel target. A second TP-GAN generator ``P`` (frontal -> profile) and a
second discriminator ``D_p`` (on profiles, with its own :class:`~lightface.engine.gan.GANObjective`, so
that BEGAN's ``k_t`` is per discriminator) are trained CycleGAN-style:
``L_G = l2 * (adv(D, G(x)) + adv(D_p, P(y))) + W * (|P(G(x)) - x|_1 + |G(P(y)) - y|_1)
+ l1 * sym(G(x)) + l4 * tv(G(x)) + l3 * ip(G(x), x)``, i.e. the identity-preserving
term compares the frontalised face with its own input (the only same-identity image).

The :class:`~lightface.engine.engine.Engine` wraps every network (G, D, and P, D_p) in
``DistributedDataParallel`` under ``torchrun`` (``find_unused_parameters``: not every
TP-GAN output feeds every loss), keeps the EMA generator, and writes the run folder:
``last.pt`` / ``best.pt`` (arch ``tpgan``, ``model_kwargs``, ``state_dict``,
``ema_state_dict``, the other networks, optimisers, GAN state, every rank's RNG state),
``model.pt`` (the final generator, loadable by :class:`~lightface.restore.frontalizer.Frontalizer`),
``samples/step_XXXXXXX.png`` (input | synthesised | target).

Validation (rank 0, EMA generator; the raw one with ``--ema-decay 0``): for the held-out
identities, Light CNN ``fc`` embeddings of each raw profile and of its frontalised version are compared with each
identity's frontal gallery image (the first frontal of the identity): mean cosine to the
own identity's gallery (``val_cos_raw`` / ``val_cos_frontal``, which ``best.pt`` tracks)
and rank-1 identification over the gallery (``val_rank1_raw`` / ``val_rank1_frontal``).
"""
import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.convert import tensor_to_image
from ..data.io import write_image
from ..data.lmdb_dataset import LMDBDataset
from ..data.detect import SHIPPED_DETECTOR, FaceDetector
from ..data.pose_pairs import PosePairDataset, split_identities
from ..data.transforms import frontal_input_transform
from ..eval.frontal_pose import load_pose_detector, pose_report
from ..eval.identity import identity_embeddings
from ..losses.frontal import IP_DISTANCES, IP_REFERENCES, FrontalLoss, prefix_terms
from ..models import get_model
from ..models.dlib_recognizer import DlibRecognizer
from ..models.identity import NO_IDENTITY
from ..models.pretrained import PretrainedError, default_weights, resolve_weights
from ..models.tpgan import frontal_patch_centres
from ..ops import symmetry_loss
from ..utils.checkpoint_io import save_atomic
from ..utils.state_hash import state_sha256
from .config import absolute_if_exists, flag_name, option
from ..utils.repeated_warnings import warn_on_main_rank
from .engine import Engine, SettingsError
from .gan import (GANObjective, GANRunConfig, GANTask, finetune_option, identity_judge, identity_setting,
                  load_generator_start, read_generator_start)

__all__ = ["FrontalTrainConfig", "FrontalizationTask", "train_frontalization", "evaluate_frontalization",
           "evaluate_frontal_inputs", "pose_data_problems", "identity_bank", "identity_banks",
           "save_sample_grid", "generator_kwargs"]

log = logging.getLogger(__name__)

#: below this share of validation outputs that read as frontal, the trainer warns that it is not frontalizing
PASS_THROUGH_SHARE = 0.5

#: frontal photos per identity (and their mirror images) averaged into a row of the ranking term's identity banks
BANK_PHOTOS = 4

ARCH = "tpgan"
_DATA, _MODEL, _LOSS, _OPT, _LOG = ("data", "model", "loss weights (L_syn = L_pixel + l1 L_sym + l2 L_adv + l3 L_ip + "
                                    "l4 L_tv)", "optimisation", "logging")


def _detector_setting(spec: str) -> str:
    """``--pose-detector`` as ``OUT/config.yaml`` stores it: ``yunet`` as given (also when a file or folder of that
    name is in the current folder), the relative file of a path or of ``yunet:PATH`` absolute (the rules of
    :class:`~lightface.data.detect.FaceDetector`)."""
    if spec.lower() == SHIPPED_DETECTOR:
        return spec
    if spec.startswith("yunet:"):
        return "yunet:" + absolute_if_exists(spec[len("yunet:"):])
    return absolute_if_exists(spec)


@dataclass
class FrontalTrainConfig(GANRunConfig):
    """Every setting of :func:`train_frontalization` (the pipeline's flags and YAML keys, same names)."""

    data: str = option("", required=True, group=_DATA, path=True,
                       help="pose-tagged LMDB (python -m pipelines.build_lmdb with pose tags)")
    train_identities: Optional[int] = option(None, group=_DATA,
                                             help="train on this many identities (seeded split) and validate on the "
                                                  "rest; default: train and validate on all")
    split_seed: int = option(0, group=_DATA, help="seed of the identity split")
    pose_key: str = option("pose", group=_DATA, help="LMDB attribute holding the pose tag")
    mirror: str = option("left", choices=("left", "right", "none"), group=_DATA,
                         help="flip inputs (and their targets) so all inputs face this way; 'none' keeps them")
    channels: int = option(3, choices=(1, 3), group=_DATA, help="3 = RGB, 1 = gray")
    self_pairs: float = option(0.5, group=_DATA,
                               help="frontal self pairs per profile input (input = target = the same frontal photo; "
                                    "PosePairDataset(self_pairs=)): an input-specific pixel target that keeps the "
                                    "generator from collapsing to one mean face when a profile's target is another "
                                    "photo, as in CFP (docs/frontalization.md); 0 disables; ignored with --cycle")
    augment: str = option("none", choices=("none", "camera"), group=_DATA,
                          help="'camera': each training input gets other lighting, colour, blur, noise, JPEG and a "
                               "small alignment error (lightface.data.transforms.frontal_input_transform) while its "
                               "target stays as stored, so that the generator learns faces, not the 2,000-odd "
                               "training photos (on CFP it otherwise overfits: training people's profiles gain, "
                               "new people's lose)")
    width: int = option(64, group=_MODEL, help="generator base width, multiple of 8 (paper: 64)")
    local_width: Optional[int] = option(None, default_text="width/2", group=_MODEL,
                                        help="width of each local pathway")
    feature_dim: int = option(256, group=_MODEL, help="identity feature size")
    noise_dim: int = option(100, group=_MODEL, help="noise size, 0 disables")
    d_width: int = option(64, group=_MODEL, help="discriminator base width")
    finetune: Optional[str] = finetune_option("frontalization", "frontalization", _MODEL)
    lambda_sym: float = option(0.3, group=_LOSS, help="l1, symmetry")
    lambda_adv: float = option(1e-3, group=_LOSS, help="l2, adversarial")
    lambda_ip: float = option(3e-3, group=_LOSS, help="l3, identity preserving")
    ip_distance: str = option("l1", choices=IP_DISTANCES, group=_LOSS,
                              help="feature distance of the identity term: l1 (the paper) or cosine")
    ip_reference: str = option("target", choices=IP_REFERENCES, group=_LOSS,
                               help="what the identity term compares the frontalised face with: the target frontal "
                                    "(the paper), the input itself, or both (mean); paired mode only (--cycle always "
                                    "uses the input)")
    ip_jitter: float = option(0.0, group=_LOSS,
                              help="shift (up to this fraction of the size) and scale (1 +- it) each synthesised "
                                   "face at random before the identity judge sees it, so that identity written as "
                                   "pixel-exact patterns only the judge reads no longer pays; 0 disables")
    ip_extra_judges: Optional[List[str]] = option(
        None, group=_LOSS, path=identity_setting,
        help="more frozen recognisers (Light CNN checkpoints or shipped names) for the identity term, which "
             "becomes the mean over all judges: identity several recognisers read, not patterns of one; "
             "validation and --identity-condition keep --identity-weights")
    lambda_ip_rank: float = option(0.0, group=_LOSS,
                                   help="identity ranking: cross-entropy, over every training identity, of the "
                                        "judges' cosines between the synthesised face and each identity's mean "
                                        "frontal feature (/ --ip-temperature): rewards being nearer one's own "
                                        "identity than everybody else's, what rank-1 measures; 0 disables")
    ip_temperature: float = option(0.1, group=_LOSS, help="softmax temperature of --lambda-ip-rank")
    lambda_tv: float = option(1e-4, group=_LOSS, help="l4, total variation")
    lambda_patch: float = option(1.0, group=_LOSS,
                                 help="weight of the local-patch L1 inside L_pixel (paired mode: refused with --cycle)")
    profile_pixel: float = option(1.0, group=_LOSS,
                                  help="weight of L_pixel and the patch L1 on profile pairs, whose target is another "
                                       "photo of the person (self pairs keep 1); 0 is FNM's recipe (Qian et al. 2019): "
                                       "no pixel target for profiles, the identity, adversarial and symmetry terms "
                                       "frontalize them; ignored with --cycle")
    profile_pixel_steps: int = option(0, group=_LOSS,
                                      help="profile pairs keep their pixel target (weight 1) for the first N generator "
                                           "steps, then --profile-pixel applies: the shipped frontalizers' two stages "
                                           "(pixel-trained rc1, then FNM's recipe) in one run, as a time-limited GPU "
                                           "call needs; refused with --cycle")
    profiles_as_fake: bool = option(False, group=_LOSS,
                                    help="show the discriminator the real profile inputs as fakes beside the "
                                         "synthesised faces, so it learns the frontal pose from real photos and a "
                                         "generator that passes a profile through loses L_adv; paired mode (refused "
                                         "with --cycle), not with wgan-gp, BEGAN or --minibatch-std")
    identity_condition: bool = option(False, group=_MODEL,
                                      help="condition the generator on the identity judge's (--identity-weights) "
                                           "feature of its input, joined with the encoder feature and as a FiLM scale "
                                           "and shift of the decoder: the "
                                           "saved model names the judge and loads it at inference; --finetune may "
                                           "start from an unconditioned model (the new inputs start at zero weight)")
    lambda_ce: float = option(0.0, group=_LOSS,
                              help="identity cross-entropy on the encoder feature; 0 disables; paired training only "
                                   "(not with --cycle)")
    steps: int = option(20000, group=_OPT, help="generator steps")
    batch_size: int = option(8, group=_OPT, help="images per step over all processes (divided over torchrun processes)")
    lr: float = option(1e-4, group=_OPT, help="generator Adam learning rate")
    lr_d: Optional[float] = option(None, default_text="--lr", group=_OPT, help="discriminator learning rate")
    beta1: float = option(0.5, group=_OPT, help="Adam beta1")
    d_every: int = option(1, group=_OPT, help="update the discriminator every N generator steps")
    val_every: int = option(1000, group=_LOG,
                            help="validation + PNG sample grid every N steps: the held-out people's val_* and, with "
                                 "--train-identities, as many training people's fit_rank1_* / fit_cos_* (the gap "
                                 "between fit_rank1_frontal and val_rank1_frontal is overfitting)")
    num_samples: int = option(8, group=_LOG, help="rows in the sample grid")
    pose_detector: Optional[str] = option(None, group=_LOG, path=_detector_setting,
                                          help="5-point face detector (e.g. det_500m.onnx; 'yunet': the one shipped "
                                               "inside lightface) for the validation's pose "
                                               "check, val_yaw_* and val_frontal_share_* (does the output look "
                                               "frontal?); unset: skipped")

    def problems(self) -> List[str]:
        problems = super().problems()
        if not self.data:
            problems.append("--data (pose-tagged LMDB) is required")
        for name in ("steps", "d_every", "num_samples", "width", "feature_dim", "d_width"):
            if getattr(self, name) <= 0:
                problems.append(f"{flag_name(name)} must be > 0, got {getattr(self, name)}")
        if not self.lr > 0 or (self.lr_d is not None and not self.lr_d > 0):
            problems.append(f"--lr and --lr-d must be > 0, got {self.lr} and {self.lr_d}")
        if self.width % 8:
            problems.append(f"--width must be a multiple of 8, got {self.width}")
        if self.profiles_as_fake and (self.gan.adversarial == "wgan-gp" or self.gan.began_gamma is not None):
            problems.append("--profiles-as-fake needs a discriminator loss that takes more fakes than reals "
                            f"(not --adversarial {self.gan.adversarial} or --began-gamma)")
        if self.profiles_as_fake and self.gan.minibatch_std:
            problems.append("--profiles-as-fake with --minibatch-std: the discriminator's fakes (the synthesised "
                            "faces plus each batch's real profiles) are a batch of varying size, which minibatch std's "
                            "groups of 4 cannot split (the run stopped at the first such batch); drop one of them")
        judge_off = self.identity_weights is not None and self.identity_weights.strip().lower() in NO_IDENTITY
        if self.identity_condition and judge_off:
            problems.append(f"--identity-condition needs a recogniser, not --identity-weights {self.identity_weights}")
        if self.ip_extra_judges and (judge_off or any(j.strip().lower() in NO_IDENTITY for j in self.ip_extra_judges)):
            problems.append("--ip-extra-judges names recognisers added to the identity judge; neither can be "
                            f"'none' (--identity-weights {self.identity_weights}, --ip-extra-judges "
                            f"{' '.join(self.ip_extra_judges)})")
        if self.lambda_ip_rank < 0 or not self.ip_temperature > 0:
            problems.append(f"--lambda-ip-rank must be >= 0 and --ip-temperature > 0, got {self.lambda_ip_rank} "
                            f"and {self.ip_temperature}")
        if self.lambda_ce > 0 and self.gan.cycle > 0:
            problems.append(f"--lambda-ce {self.lambda_ce:g} (identity cross-entropy on the paired targets' labels) "
                            "needs paired training (not --cycle); leave it out")
        if self.gan.cycle > 0:
            paired_only = [flag for flag, on in (("--profiles-as-fake", self.profiles_as_fake),
                                                 (f"--lambda-patch {self.lambda_patch:g}", self.lambda_patch != 1.0),
                                                 (f"--profile-pixel-steps {self.profile_pixel_steps}",
                                                  self.profile_pixel_steps != 0)) if on]
            if paired_only:
                problems.append(f"{', '.join(paired_only)}: paired training only (--cycle {self.gan.cycle:g} has no "
                                "pixel target and shows D no profiles); leave it out")
        if self.lambda_ip_rank > 0 and (judge_off or self.gan.cycle > 0):
            problems.append("--lambda-ip-rank needs the identity judge (not --identity-weights none) and paired "
                            "training (not --cycle)")
        if not self.profile_pixel >= 0:
            problems.append(f"--profile-pixel must be >= 0, got {self.profile_pixel}")
        if self.profile_pixel_steps < 0:
            problems.append(f"--profile-pixel-steps must be >= 0, got {self.profile_pixel_steps}")
        if not self.self_pairs >= 0:
            problems.append(f"--self-pairs must be >= 0, got {self.self_pairs}")
        if self.train_identities is not None and self.train_identities <= 0:
            problems.append(f"--train-identities must be > 0, got {self.train_identities}")
        if self.noise_dim < 0:
            problems.append(f"--noise-dim must be >= 0 (0 disables the noise), got {self.noise_dim}")
        return problems

    def profile_pixel_at(self, step: int) -> float:
        """The pixel weight of profile pairs at generator step ``step`` (1-based): 1 for the first
        ``profile_pixel_steps`` steps, ``profile_pixel`` after them."""
        return 1.0 if step <= self.profile_pixel_steps else self.profile_pixel


def condition_network_name(identity_weights: Optional[str]) -> str:
    """What a conditioned generator records as its ``condition_network``: the shipped model's own name
    for ``--identity-weights`` unset (the shipped recogniser) or a shipped name / alias, so that the saved
    model keeps its recogniser when another one ships; otherwise the checkpoint's absolute path.

    Raises:
        ValueError: the flag switches the identity network off, or nothing ships for the unset flag;
            a ``PretrainedError`` (a ValueError) for no such file nor shipped recogniser (the close names listed).
    """
    if identity_weights is None:
        try:
            return default_weights("recognition").name
        except PretrainedError as err:
            raise ValueError(f"--identity-condition needs a recogniser: none ships ({err}); "
                             "pass --identity-weights LIGHTCNN_CHECKPOINT") from err
    if identity_weights.strip().lower() in NO_IDENTITY:
        raise ValueError(f"--identity-condition needs a recogniser, not --identity-weights {identity_weights}")
    if Path(identity_weights).exists():
        return str(Path(identity_weights).resolve())
    return resolve_weights(identity_weights, "recognition", "--identity-weights").name  # a typo: the close names


def generator_kwargs(cfg: Any, num_classes: int = 0) -> Dict[str, Any]:
    """Builder kwargs of the TP-GAN generator from the training settings (plain types, checkpoint-safe)."""
    centres = frontal_patch_centres(128)
    condition = {"condition_network": condition_network_name(cfg.identity_weights)} if cfg.identity_condition else {}
    return {
        "in_channels": cfg.channels,
        "width": cfg.width,
        "local_width": cfg.local_width,
        "feature_dim": cfg.feature_dim,
        "noise_dim": cfg.noise_dim,
        "num_classes": num_classes,
        "patch_centres": {k: [float(v[0]), float(v[1])] for k, v in centres.items()},
        **condition,
    }


#: how to rebuild a pose LMDB the way the trainer needs it (said by :func:`pose_data_problems`)
REBUILD_HINT = ("rebuild it aligned to the 128x128 lightcnn template with its landmarks: "
                "python -m pipelines.build_lmdb IMAGES OUT --size 128 --template lightcnn --color rgb "
                "--fiducials CFP/Fiducials (or --landmarks FILE; docs/frontalization.md, step 1)")


def pose_data_problems(data: LMDBDataset, mirror: Optional[str], size: int = 128) -> List[str]:
    """What makes a pose LMDB unfit for TP-GAN, read from its recorded build (``metadata["alignment"]``,
    ``metadata["landmarks"]``, ``metadata["image"]["shape"]``); [] when it fits.

    TP-GAN's local patch boxes sit on the eyes, nose and mouth of the ``size`` x ``size`` ``lightcnn``
    template, and :class:`~lightface.data.pose_pairs.PosePairDataset` takes a stored ``size`` x ``size``
    image as such a crop. So: stored ``size`` crops must be aligned to that template (not another one, nor
    plainly resized); images of another size need landmarks (the dataset aligns them); and ``mirror``
    (``"left"`` / ``"right"``) needs landmarks to tell which way each face looks. An LMDB that records
    no alignment (``write_lmdb`` without ``alignment=``) is taken as it is.
    """
    meta = data.metadata
    where = f"--data {data.path}"
    problems = []
    shape = (meta.get("image") or {}).get("shape")
    alignment = meta.get("alignment")
    has_landmarks = bool(meta.get("landmarks"))
    crops = shape is not None and tuple(shape[:2]) == (size, size)
    template = alignment.get("template") if isinstance(alignment, dict) else None
    unaligned = isinstance(alignment, dict) and template is None and alignment.get("method") == "none"
    if crops and ((template is not None and template != "lightcnn") or unaligned):
        how = f"aligned to the {template!r} template" if template is not None else "not aligned (plainly resized)"
        problems.append(f"{where}: its {size}x{size} images are {how}, and TP-GAN's eye, nose and mouth boxes sit on "
                        f"the {size}x{size} 'lightcnn' template; " + REBUILD_HINT)
    elif not crops and not has_landmarks:
        sizes = "of varying sizes" if shape is None else "x".join(map(str, shape[:2]))
        problems.append(f"{where}: its images are {sizes} without landmarks, so they cannot be aligned to the "
                        f"{size}x{size} 'lightcnn' template; " + REBUILD_HINT)
    if mirror not in (None, "none") and not has_landmarks and not problems:
        problems.append(f"--mirror {mirror}: {data.path} holds no landmarks, so which way each face looks is unknown "
                        "and nothing would be mirrored; " + REBUILD_HINT + ", or pass --mirror none")
    return problems


def _profile_terms(terms: Mapping[str, float]) -> Dict[str, float]:
    """The profile side's GAN objective terms (``P`` against ``D_p``) as logged: ``l_<term>_profile``
    (``l_g_adv_profile``, ``l_d_adv_profile``, ``l_k_t_profile`` ...)."""
    return {f"{name}_profile": value for name, value in prefix_terms(terms).items()}


def _discriminator(cfg: FrontalTrainConfig, objective: GANObjective) -> Tuple[str, Dict[str, Any]]:
    if objective.uses_autoencoder_discriminator:
        kwargs = {"channels": cfg.channels, "size": 128, "hidden": cfg.d_width, **objective.discriminator_kwargs}
        return "autoencoder_discriminator", kwargs
    return "tpgan_discriminator", {"in_channels": cfg.channels, "width": cfg.d_width, **objective.discriminator_kwargs}


@torch.no_grad()
def save_sample_grid(path, rows: Sequence[Tensor]) -> Path:
    """Save a PNG grid: one row per sample, columns = the given tensors (e.g. input | synthesised | target).

    Args:
        path: output ``.png``.
        rows: tensors (N, C, H, W) float in [0, 1], RGB (C=3) or gray (C=1), same shape.
    """
    cols = [r.detach().float().cpu() for r in rows]
    grid = torch.cat([torch.cat([c[i] for c in cols], dim=2) for i in range(cols[0].shape[0])], dim=1)
    return write_image(path, tensor_to_image(grid))


@torch.no_grad()
def _asymmetry(faces: Tensor) -> Tensor:
    """Per-face mean left-right difference ``|face - mirror|`` of (N, C, H, W) faces -> (N,) (the fused
    :func:`lightface.ops.symmetry_loss` per face, divided by the number of pixel pairs it compares)."""
    _, c, h, w = faces.shape
    return symmetry_loss(faces.float(), "none") / (c * h * (w // 2))


def evaluate_frontalization(
    generator: nn.Module,
    identity: Optional[Union[nn.Module, DlibRecognizer]],
    dataset: PosePairDataset,
    device: torch.device,
    batch_size: int = 16,
    detector: Optional[FaceDetector] = None,
) -> Dict[str, float]:
    """Identity cosine and rank-1 of raw vs frontalised profiles against a frontal gallery.

    The generator sees each probe as the dataset gives it (mirrored to its training direction when
    ``dataset.mirror`` is set); every score is taken in the photo's own direction, as
    :class:`~lightface.restore.frontalizer.Frontalizer` returns it: a mirrored probe and its output are
    mirrored back before the recogniser, the pose check and the asymmetry see them, so that they face the
    same way as the (never mirrored) gallery photo of their identity.

    Args:
        generator: a TP-GAN generator (eval mode is set here; zero noise).
        identity: the recogniser (:func:`lightface.eval.identity.load_identity_judge`: a
            Light CNN module, or a DlibRecognizer for the 128 ``lightcnn`` crops), fed (N, C,
            128, 128) float [0, 1] gray or RGB faces; None: no identity scores (``val_cos_*``,
            ``val_rank1_*``), only the asymmetry and the pose check.
        dataset: held-out pairs; the gallery is the first frontal of each of its identities.
        detector: a 5-point face detector for the pose check (``None``: skipped).
    Returns:
        ``val_cos_raw``, ``val_cos_frontal`` (mean cosine of each probe to its own identity's
        gallery image), ``val_rank1_raw``, ``val_rank1_frontal`` (fraction of probes whose most
        similar gallery image is their identity), ``val_asym_raw``, ``val_asym_frontal``,
        ``val_asym_gallery`` (mean left-right asymmetry, :func:`lightface.ops.symmetry_loss`
        on the template-aligned faces: a frontal face scores near the gallery's, a profile
        higher; a generator that passes its input through keeps the raw score while its
        rank-1 stays the raw one), ``val_probes``, ``val_gallery``; with ``detector``, the pose
        check of :func:`lightface.eval.frontal_pose.pose_report` on the same three sets:
        ``val_yaw_{raw,frontal,gallery}`` (mean |yaw_offset|, about 0.04 on real frontals and 0.36
        on CFP profiles) and ``val_frontal_share_{raw,frontal,gallery}`` (share of faces that read
        as frontal), which the asymmetry can miss (docs/frontalization.md, session 27).
    """
    was_training = generator.training
    generator.eval()
    ids = dataset.identities()
    if identity is not None:
        gallery, g_emb = _gallery(identity, dataset, device, batch_size)
    else:
        gallery = dataset.faces(dataset.frontals[i][0] for i in ids).to(device)
    id_pos = {l: k for k, l in enumerate(ids)}
    raw_e, front_e, labels = [], [], []
    asym = {"raw": [], "frontal": [], "gallery": [_asymmetry(gallery)]}
    # the pose check's faces, kept on the CPU where the detector runs
    kept: Optional[Dict[str, List[Tensor]]] = None
    if detector is not None:
        kept = {"raw": [], "frontal": [], "gallery": [gallery.cpu()]}
    for s in range(0, len(dataset), batch_size):
        items = [dataset[j] for j in range(s, min(s + batch_size, len(dataset)))]
        x = torch.stack([it["input"] for it in items]).to(device)
        y = generator.frontalize(x)
        # score in the photo's own direction, as Frontalizer returns it: a probe the dataset mirrored to the
        # training direction, and its output, are mirrored back (the gallery is never mirrored)
        flipped = torch.tensor([bool(it["flipped"]) for it in items], device=device)[:, None, None, None]
        x, y = torch.where(flipped, x.flip(-1), x), torch.where(flipped, y.flip(-1), y)
        if identity is not None:
            raw_e.append(F.normalize(identity_embeddings(identity, x), dim=1))
            front_e.append(F.normalize(identity_embeddings(identity, y), dim=1))
        asym["raw"].append(_asymmetry(x))
        asym["frontal"].append(_asymmetry(y))
        if kept is not None:
            kept["raw"].append(x.cpu())
            kept["frontal"].append(y.cpu())
        labels += [id_pos[it["label"]] for it in items]
    labels_t = torch.tensor(labels, device=device)
    out = {"val_probes": float(len(labels)), "val_gallery": float(len(ids))}
    for name, values in asym.items():
        out[f"val_asym_{name}"] = torch.cat(values).mean().item()
    for name, parts in (kept or {}).items():
        pose = pose_report(torch.cat(parts), detector)
        out[f"val_yaw_{name}"], out[f"val_frontal_share_{name}"] = pose["mean_abs_offset"], pose["frontal_share"]
    if identity is not None:
        for name, emb in (("raw", torch.cat(raw_e)), ("frontal", torch.cat(front_e))):
            out[f"val_cos_{name}"], out[f"val_rank1_{name}"] = _cos_rank1(emb, g_emb, labels_t)
    generator.train(was_training)
    return out


@torch.no_grad()
def evaluate_frontal_inputs(
    generator: nn.Module,
    identity: Union[nn.Module, DlibRecognizer],
    dataset: PosePairDataset,
    device: torch.device,
    per_identity: int = 4,
    batch_size: int = 16,
) -> Dict[str, float]:
    """Does the frontalizer keep the identity of faces that are already frontal (users frontalize mixed poses)?

    The probes are frontal photos 2 .. ``per_identity + 1`` of each identity of ``dataset``
    (used as stored, not mirrored), recognised raw and frontalized against the gallery of
    :func:`evaluate_frontalization` (each identity's first frontal). A generator that passes
    frontal faces through scores the raw rank-1.

    Returns: ``rank1_raw``, ``rank1_frontal``, ``cos_raw``, ``cos_frontal`` (mean cosine to the
    probe's own gallery face) and ``probes``; ``probes`` is 0 (and the rest absent) when no
    identity has a second frontal.
    """
    ids = dataset.identities()
    picks = [(k, j) for k, i in enumerate(ids) for j in dataset.frontals[i][1 : per_identity + 1]]
    if not picks:
        return {"probes": 0.0}
    was_training = generator.training
    generator.eval()
    _, g_emb = _gallery(identity, dataset, device, batch_size)
    raw_e, front_e = [], []
    for s in range(0, len(picks), batch_size):
        x = dataset.faces(j for _, j in picks[s : s + batch_size]).to(device)
        raw_e.append(F.normalize(identity_embeddings(identity, x), dim=1))
        front_e.append(F.normalize(identity_embeddings(identity, generator.frontalize(x)), dim=1))
    generator.train(was_training)
    labels = torch.tensor([k for k, _ in picks], device=device)
    out = {"probes": float(len(picks))}
    for name, emb in (("raw", torch.cat(raw_e)), ("frontal", torch.cat(front_e))):
        out[f"cos_{name}"], out[f"rank1_{name}"] = _cos_rank1(emb, g_emb, labels)
    return out


@torch.no_grad()
def identity_bank(judge: nn.Module, dataset: PosePairDataset, labels: Sequence[int], device: torch.device,
                  per_identity: int = BANK_PHOTOS, batch_size: int = 32) -> Tensor:
    """Row k: the L2-normalised mean ``fc`` feature (``judge.features``) of up to ``per_identity`` frontal
    photos of identity ``labels[k]`` of ``dataset`` and of their mirror images -> (K, 256) float32 on ``device``
    (the identity banks of :class:`lightface.losses.frontal.FrontalLoss`'s ranking term)."""
    picks = [(k, j) for k, label in enumerate(labels) for j in dataset.frontals[label][:per_identity]]
    feats = []
    for s in range(0, len(picks), batch_size):
        x = dataset.faces(j for _, j in picks[s : s + batch_size]).to(device)
        feats.append(F.normalize(judge.features(x)["fc"].float(), dim=1)
                     + F.normalize(judge.features(x.flip(-1))["fc"].float(), dim=1))
    rows = torch.tensor([k for k, _ in picks], device=device)
    bank = torch.zeros(len(labels), feats[0].shape[1], device=device).index_add_(0, rows, torch.cat(feats))
    return F.normalize(bank, dim=1)


def identity_banks(judges: Sequence[nn.Module], dataset: PosePairDataset, labels: Sequence[int],
                   device: torch.device, cache: Optional[Path] = None, write: bool = True) -> List[Tensor]:
    """:func:`identity_bank` of each judge, read from ``cache`` (a ``torch.save`` file of tensors and strings, loaded
    with ``weights_only=True``) when it was written for the same judges (their state sha256), LMDB, identities and
    frontal photos, else computed and, when ``write``, saved there atomically: a resumed or restarted run does not
    re-embed the training identities (about 12 minutes for 411 people x 2 judges on one CPU thread)."""
    key = hashlib.sha256(json.dumps({
        "judges": [state_sha256(j) for j in judges], "data": str(Path(dataset.data.path).resolve()),
        "samples": len(dataset.data), "channels": dataset.channels,
        "frontals": [dataset.frontals[label][:BANK_PHOTOS] for label in labels],
    }).encode()).hexdigest()
    if cache is not None and cache.exists():
        try:
            saved = torch.load(cache, map_location=device, weights_only=True)
        except Exception as err:  # a damaged cache costs a recomputation, nothing else
            warn_on_main_rank(log, "identity banks: %s is unreadable (%s); recomputing them", cache, err)
        else:
            if isinstance(saved, dict) and saved.get("key") == key:
                log.info("identity ranking: banks of %d identities read from %s", len(labels), cache)
                return list(saved["banks"])
            log.info("identity ranking: %s was written for other judges or data; recomputing", cache)
    log.info("identity ranking: embedding up to %d frontals (and mirror images) of each of %d training "
             "identities with %d judge(s)", BANK_PHOTOS, len(labels), len(judges))
    banks = [identity_bank(judge, dataset, labels, device) for judge in judges]
    if cache is not None and write:
        save_atomic({"key": key, "banks": [b.cpu() for b in banks]}, cache)
    return banks


def _gallery(identity: Union[nn.Module, DlibRecognizer], dataset: PosePairDataset, device: torch.device,
             batch_size: int) -> Tuple[Tensor, Tensor]:
    """The first frontal of every identity of ``dataset`` (K, C, 128, 128) on ``device`` and its L2-normalised
    identity embeddings (K, D)."""
    gallery = dataset.faces(dataset.frontals[i][0] for i in dataset.identities()).to(device)
    emb = torch.cat([F.normalize(identity_embeddings(identity, gallery[s : s + batch_size]), dim=1)
                     for s in range(0, len(gallery), batch_size)])
    return gallery, emb


def _load_start(G: nn.Module, spec: str, g_kwargs: Dict[str, Any]) -> None:
    """``--finetune spec`` into ``G`` (:func:`~lightface.engine.gan.load_generator_start`). The identity
    classifier of ``--lambda-ce`` (``num_classes``) belongs to the training classes of a run, so it is never
    taken from the start: ``G`` keeps its fresh one (or has none) whatever the saved model had."""
    ckpt = read_generator_start(spec)  # read once, for its classifier size and its weights
    saved = ckpt.model_kwargs.get("num_classes", 0)
    if saved == g_kwargs["num_classes"]:
        load_generator_start(G, spec, ARCH, g_kwargs, {"in_channels": "channels"}, start=ckpt)
        return
    start_kwargs = dict(g_kwargs, num_classes=saved)
    start = get_model(ARCH, **start_kwargs)
    load_generator_start(start, spec, ARCH, start_kwargs, {"in_channels": "channels"}, start=ckpt)
    G.load_state_dict({k: v for k, v in start.state_dict().items() if not k.startswith("classifier.")},
                      strict=False)  # the same architecture but for the classifier
    log.info("fine-tuning: the identity classifier (%d classes) %s", g_kwargs["num_classes"],
             "starts from scratch" if g_kwargs["num_classes"] else "of the start is dropped (no --lambda-ce)")


def _cos_rank1(emb: Tensor, g_emb: Tensor, labels: Tensor) -> Tuple[float, float]:
    """Mean cosine of L2-normalised probe embeddings (N, D) to their own gallery row of ``g_emb`` (K, D), and the
    share whose most similar gallery row is their own (rank-1); ``labels`` (N,) are gallery rows."""
    sim = emb @ g_emb.T
    return sim.gather(1, labels[:, None]).mean().item(), (sim.argmax(1) == labels).float().mean().item()


class FrontalizationTask(GANTask):
    """TP-GAN training for the :class:`~lightface.engine.engine.Engine` (networks ``G``, ``D``; ``P``, ``D_p`` with --cycle)."""

    name = "frontalization"
    divergence_hint = "--lr-d or --lambda-adv"

    def build(self, engine: Engine) -> Dataset:
        cfg, device = self.cfg, self.device
        if not Path(cfg.data).exists():
            raise FileNotFoundError(f"--data {cfg.data}: no such LMDB; build one with python -m pipelines.build_lmdb")
        source = LMDBDataset(cfg.data)
        problems = pose_data_problems(source, cfg.mirror)
        if problems:
            raise SettingsError("; ".join(problems))
        train_ids: Optional[List[int]] = None
        held_ids: Optional[List[int]] = None
        if cfg.train_identities:
            people = len(set(source.labels))
            if cfg.train_identities >= people:
                raise SettingsError(f"--train-identities {cfg.train_identities}: {cfg.data} holds {people} people; "
                                    f"use 1..{people - 1} so that at least one is held out for validation")
            train_ids, held_ids = split_identities(source.labels, cfg.train_identities, cfg.split_seed)
        mirror = None if cfg.mirror in (None, "none") else cfg.mirror
        self.cycle = self.objective.cycle_weight > 0
        train_set = PosePairDataset(source, identities=train_ids, paired=not self.cycle, mirror=mirror,
                                    channels=cfg.channels, pose_key=cfg.pose_key,
                                    self_pairs=0.0 if self.cycle else cfg.self_pairs,
                                    input_transform=frontal_input_transform() if cfg.augment == "camera" else None,
                                    seed=cfg.seed)
        self.val_set = PosePairDataset(source, identities=held_ids if held_ids else train_ids, paired=True,
                                       mirror=mirror, channels=cfg.channels, pose_key=cfg.pose_key,
                                       fixed_target=True)
        self.label_map = {l: k for k, l in enumerate(sorted(train_set.frontals))}

        self.num_classes = num_classes = len(self.label_map) if cfg.lambda_ce > 0 else 0
        g_kwargs = generator_kwargs(cfg, num_classes)
        d_arch, d_kwargs = _discriminator(cfg, self.objective)
        self.G = get_model(ARCH, **g_kwargs)
        if cfg.finetune and not engine.resuming:
            _load_start(self.G, cfg.finetune, g_kwargs)
        self.D = get_model(d_arch, **d_kwargs)
        # find_unused: not every TP-GAN output (and classifier) feeds every loss
        self.views = {"G": engine.add_network("G", self.G, arch=ARCH, kwargs=g_kwargs, primary=True,
                                              ema_decay=cfg.ema_decay, find_unused=True),
                      "D": engine.add_network("D", self.D, arch=d_arch, kwargs=d_kwargs, find_unused=True)}
        nets = {"G": self.G, "D": self.D}
        if self.cycle:
            p_kwargs = dict(g_kwargs, num_classes=0)
            nets["P"], nets["D_p"] = get_model(ARCH, **p_kwargs), get_model(d_arch, **d_kwargs)
            self.views["P"] = engine.add_network("P", nets["P"], arch=ARCH, kwargs=p_kwargs, find_unused=True)
            self.views["D_p"] = engine.add_network("D_p", nets["D_p"], arch=d_arch, kwargs=d_kwargs, find_unused=True)
            self.objective_p = copy.deepcopy(self.objective)  # D_p's own: BEGAN's k_t belongs to one critic
        self.nets = nets
        g_params = [p for k in ("G", "P") if k in nets for p in nets[k].parameters()]
        d_params = [p for k in ("D", "D_p") if k in nets for p in nets[k].parameters()]
        d_lr = cfg.lr_d or cfg.lr
        self.opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(d_params, lr=d_lr, betas=(cfg.beta1, 0.999))
        engine.add_optimizer("G", self.opt_g, cfg.lr)
        engine.add_optimizer("D", self.opt_d, d_lr)

        self.identity = identity_judge(cfg.identity_weights, "the identity-preserving term and identity validation",
                                       device)
        self.best_metric = ("val_cos_frontal", "max") if self.identity is not None else None
        # as many training people as validation people, spread over the training set: the generalisation gap
        self.fit_set = None
        if held_ids and self.identity is not None:
            train_people = sorted(train_set.frontals)
            picks = np.linspace(0, len(train_people) - 1, min(len(held_ids), len(train_people))).round().astype(int)
            self.fit_set = PosePairDataset(source, identities=[train_people[k] for k in picks], paired=True,
                                           mirror=mirror, channels=cfg.channels, pose_key=cfg.pose_key,
                                           fixed_target=True)
        extra = [identity_judge(spec, "the identity-preserving term (--ip-extra-judges)", device)
                 for spec in cfg.ip_extra_judges or ()]
        banks = None
        if cfg.lambda_ip_rank > 0:  # computed once per run folder, then read back on resume
            banks = identity_banks([self.identity, *extra], train_set, list(self.label_map), device,
                                   cache=engine.out / "identity_banks.pt", write=engine.is_main)
        self.criterion = FrontalLoss(self.identity, self.objective, lambda_sym=cfg.lambda_sym,
                                     lambda_adv=cfg.lambda_adv, lambda_ip=cfg.lambda_ip, lambda_tv=cfg.lambda_tv,
                                     lambda_patch=cfg.lambda_patch, lambda_ce=cfg.lambda_ce,
                                     ip_distance=cfg.ip_distance, ip_reference=cfg.ip_reference,
                                     ip_jitter=cfg.ip_jitter, extra_identity=extra,
                                     lambda_ip_rank=cfg.lambda_ip_rank, identity_banks=banks,
                                     ip_temperature=cfg.ip_temperature)
        if cfg.identity_condition:  # the judge, loaded once, is G's condition (its EMA copy shares the holder)
            self.G.set_condition_network(self.identity.network)
        self.boxes = self.G.boxes
        self.pose_detector = load_pose_detector(cfg.pose_detector) if cfg.pose_detector else None
        # fixed validation / sample batch, spread over identities
        n_show = min(cfg.num_samples, len(self.val_set))
        show = [self.val_set[int(i)] for i in np.linspace(0, len(self.val_set) - 1, n_show).round()]
        self.show_x = torch.stack([s["input"] for s in show]).to(device)
        self.show_y = torch.stack([s["target"] for s in show]).to(device)
        self.last_terms: Dict[str, float] = {}
        return train_set

    def _generate(self, x: Tensor) -> Tuple[Dict[str, Any], Optional[Dict[str, Tensor]]]:
        """``(G's output for x, the identity judge's features of x)``; the features only when G is conditioned
        on the judge (else None): one judge pass gives both the condition and the identity term's input side."""
        if not self.cfg.identity_condition:
            return self.views["G"](x), None
        with torch.no_grad():
            features = self.identity.features(x)
        return self.views["G"](x, condition=self.G.condition_from_fc(features["fc"]).to(x.dtype)), features

    def adversarial_off(self) -> Optional[str]:
        return "--lambda-adv 0" if self.cfg.lambda_adv == 0 else None

    def trains_discriminator(self, step: int) -> bool:
        return (step + 1) % self.cfg.d_every == 0 and self.cfg.lambda_adv > 0

    def _critic_inputs(self, batch: Mapping[str, Any], fake: Tensor, fake_p: Optional[Tensor]
                       ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """``(profiles, frontal targets, D's fakes, P's fakes)`` of one critic step on ``batch``; D's fakes are
        ``fake`` and, with ``--profiles-as-fake``, the batch's real profile inputs."""
        x, y = batch["input"], batch["target"]
        if self.cfg.profiles_as_fake and not self.cycle:  # real profiles are not what G should produce
            own = torch.as_tensor(batch["self_pair"], device=x.device)
            fake = torch.cat([fake.detach(), x[~own]])
        return x, y, fake, fake_p

    def train_step(self, batch, extra_batches: Sequence[Any] = ()) -> Dict[str, Any]:
        cfg, objective, views = self.cfg, self.objective, self.views
        x, y = batch["input"], batch["target"]
        step = self.engine.step + 1  # this step's number
        for view in views.values():
            view.train()
        # ---- generator step (D frozen inside the objective)
        o, source_features = self._generate(x)
        fake = o["img128"]
        if not self.cycle:
            labels = None
            if self.num_classes or cfg.lambda_ip_rank > 0:  # classifier outputs and identity-bank rows
                labels = torch.tensor([self.label_map[int(l)] for l in batch["label"]], device=self.device)
            own = torch.as_tensor(batch["self_pair"], device=x.device)
            profile_pixel = cfg.profile_pixel_at(step)
            if cfg.profile_pixel_steps and step == cfg.profile_pixel_steps + 1 and profile_pixel != 1.0:
                log.info("step %d: profile pairs now weigh %g in the pixel terms (--profile-pixel after "
                         "--profile-pixel-steps %d)", step, profile_pixel, cfg.profile_pixel_steps)
            pixel_weight = torch.where(own, 1.0, profile_pixel).to(x.dtype) if profile_pixel != 1.0 else None
            g_loss, terms = self.criterion(o, y, self.D, labels=labels, patch_boxes=self.boxes, source=x,
                                           pixel_weight=pixel_weight, source_features=source_features)
        else:
            fake_p = views["P"](y)["img128"]
            rec_x = views["P"](fake)["img128"]
            rec_y = views["G"](fake_p)["img128"]
            adv_f, t1 = objective.generator_loss(self.D, y, fake)
            adv_p, t2 = self.objective_p.generator_loss(self.nets["D_p"], x, fake_p)
            c_loss, t3 = objective.cycle_loss(x, rec_x, y, rec_y)
            sym = self.criterion.symmetry(o)
            tv = self.criterion.total_variation(fake)
            g_loss = cfg.lambda_adv * (adv_f + adv_p) + c_loss + cfg.lambda_sym * sym + cfg.lambda_tv * tv
            terms = {**prefix_terms(t1), **_profile_terms(t2)}
            terms.update(prefix_terms(t3))
            terms["l_g_sym"], terms["l_g_tv"] = sym.detach(), tv.detach()
            if self.identity is not None and cfg.lambda_ip > 0:
                ip = self.criterion.identity_preserving(fake, x, source_features)
                g_loss = g_loss + cfg.lambda_ip * ip
                terms["l_g_ip"] = ip.detach()
            terms["l_g_total"] = g_loss.detach()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        # ---- discriminator step
        if self.trains_discriminator(self.engine.step):
            def critic_batches():
                yield self._critic_inputs(batch, fake, fake_p if self.cycle else None)
                for extra in extra_batches:  # --d-steps: a fresh batch, the updated generators' outputs
                    with torch.no_grad():
                        extra_fake = self._generate(extra["input"])[0]["img128"]
                        extra_fake_p = views["P"](extra["target"])["img128"] if self.cycle else None
                    yield self._critic_inputs(extra, extra_fake, extra_fake_p)

            def update(x: Tensor, y: Tensor, d_fake: Tensor, fake_p: Optional[Tensor]) -> Dict[str, Any]:
                d_loss, d_terms = objective.discriminator_loss(views["D"], y, d_fake)
                out = prefix_terms(d_terms)
                if self.cycle:
                    d_loss_p, d_terms_p = self.objective_p.discriminator_loss(views["D_p"], x, fake_p)
                    d_loss = d_loss + d_loss_p
                    out.update(_profile_terms(d_terms_p))
                self.opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                self.opt_d.step()
                objective.after_discriminator_step(self.D)
                if self.cycle:
                    self.objective_p.after_discriminator_step(self.nets["D_p"])
                return out

            terms.update(self.discriminator_steps(update, critic_batches()))
        return terms

    def gan_objectives(self) -> List[GANObjective]:
        """D's objective, and with ``--cycle`` D_p's."""
        return [self.objective, self.objective_p] if self.cycle else [self.objective]

    def extra_state(self) -> Dict[str, Any]:
        """The GAN state of D's objective, and with ``--cycle`` of D_p's (``gan_state_profile``: its BEGAN k_t)."""
        state = super().extra_state()
        if self.cycle:
            state["gan_state_profile"] = self.objective_p.state_dict()
        return state

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        super().load_extra_state(ckpt)
        if self.cycle:  # a checkpoint from before D_p had its own objective: both critics shared D's k_t
            self.objective_p.load_state_dict(ckpt.get("gan_state_profile", ckpt.get("gan_state", {})))

    def validate(self) -> Dict[str, float]:
        engine = self.engine
        ema_g = engine.eval_network("G")
        with torch.no_grad():
            fr = ema_g.frontalize(self.show_x)
        save_sample_grid(engine.out / "samples" / f"step_{engine.step:07d}.png", [self.show_x, fr, self.show_y])
        if self.identity is None and self.pose_detector is None:
            return {}
        # without a judge (--identity-weights none) the pose check and the asymmetry still run
        metrics = evaluate_frontalization(ema_g, self.identity.network if self.identity is not None else None,
                                          self.val_set, self.device, engine.local_batch, self.pose_detector)
        if self.fit_set is not None:
            fit = evaluate_frontalization(ema_g, self.identity.network, self.fit_set, self.device, engine.local_batch)
            metrics.update({f"fit_{k}": fit[f"val_{k}"]
                            for k in ("rank1_raw", "rank1_frontal", "cos_raw", "cos_frontal")})
        share = metrics.get("val_frontal_share_frontal")
        if share is not None and share < PASS_THROUGH_SHARE:
            hint = (f"; an identity term against the input (--ip-reference {self.cfg.ip_reference}) rewards passing "
                    "profiles through (docs/frontalization.md, session 29)" if self.cfg.ip_reference != "target" else "")
            log.warning("step %d: only %.0f%% of the validation outputs read as frontal (raw profiles %.0f%%): the "
                        "generator is not frontalizing (it passes profiles through or draws no face), whatever its "
                        "identity scores say%s", engine.step, 100 * share, 100 * metrics["val_frontal_share_raw"], hint)
        return metrics


def train_frontalization(cfg: FrontalTrainConfig) -> Dict[str, Any]:
    """Train TP-GAN as configured; returns the engine's summary (``step``, ``stopped``, ``model``
    (``OUT/model.pt``), ``last``, ``best``, the last validation metrics ``val_*``)."""
    return Engine(FrontalizationTask(cfg)).run()
