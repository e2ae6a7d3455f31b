"""One GAN objective for every lightface trainer: adversarial loss + regularisers, chosen by flags.

:class:`GANConfig` declares the options once (a nested part of the GAN trainers' config
dataclasses; ``pipelines/_cli.py`` generates the flags ``--adversarial``,
``--feature-matching``, ... from it, and YAML configs use the same names). Trainers do::

    objective = GANObjective.from_config(cfg.gan)    # a GANConfig, or a YAML-style mapping
    if objective.uses_autoencoder_discriminator:     # --began-gamma
        D = AutoencoderDiscriminator(channels, size, **objective.discriminator_kwargs)
    else:
        D = MyDiscriminator(..., **objective.discriminator_kwargs)
    # discriminator step
    d_loss, d_terms = objective.discriminator_loss(D, real, fake)   # fake is detached inside
    d_opt.zero_grad(); d_loss.backward(); d_opt.step(); objective.after_discriminator_step(D)
    # generator step (D's parameters are frozen inside the call)
    g_loss, g_terms = objective.generator_loss(D, real, fake)
    if objective.cycle_weight:
        c_loss, c_terms = objective.cycle_loss(x, x_rec, y, y_rec); g_loss = g_loss + c_loss
    logger.log(step, **d_terms, **g_terms, ...)
    checkpoint["gan_objective"] = objective.state_dict()  # BEGAN k_t for resume

Discriminator contract: ``D(x)`` returns logits (N, ...); ``D(x, return_features=True)``
returns ``(logits, features)`` with ``features`` a list of activations whose last entry
is the penultimate representation (N, F) (used by feature matching and the pull-away
term; requested only when ``needs_features``). Constructors accept
``minibatch_discrimination=False, minibatch_std=False``. BEGAN (``--began-gamma G``)
replaces the adversarial objective: D is an auto-encoder
(:class:`lightface.models.autoencoder_discriminator.AutoencoderDiscriminator`) whose
forward returns the reconstruction, and the losses use ``L(v) = |v - D(v)|_1``.

``--cycle W`` is applied by the trainer through :meth:`GANObjective.cycle_loss`
(``W * cycle_consistency_loss``); what the cycle is depends on the trainer:

* super-resolution: one direction, the SR output downscaled back (the degradation's
  downscaling) must reproduce the LR input: ``cycle_loss(lr, downscale(G(lr)))``;
* frontalization: unpaired profile/frontal sets with a frontalizer G and a
  profiler F: ``cycle_loss(profile, F(G(profile)), frontal, G(F(frontal)))``.

Term names: ``d_adv`` (adversarial D loss), ``d_real`` / ``d_fake`` (mean D
output on real / fake), ``d_gp`` and ``d_grad_norm`` (WGAN-GP), ``d_wasserstein``
(critic estimate of W1, wgan-*), ``d_began_real`` / ``d_began_fake`` (L(x), L(G(z))),
``k_t``, ``M_global``; ``g_adv``, ``g_feature_matching``, ``g_pull_away``; ``g_cycle``
(all unweighted). Both trainers log them with ``l_`` in front (``l_d_adv``, ``l_k_t``,
``l_g_cycle`` ..., :func:`lightface.losses.frontal.prefix_terms`), unweighted.
"""
import contextlib
import dataclasses
import logging
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..losses.adversarial import clip_weights, get_adversarial_loss, gradient_penalty
from ..losses.identity import IdentityLoss, resolve_identity_weights
from ..losses.gan_regularizers import (
    BEGANController,
    autoencoder_loss,
    cycle_consistency_loss,
    feature_matching_loss,
    pull_away_term,
)
from ..models.identity import NO_IDENTITY
from .config import absolute_file, absolute_if_exists, flag_name, option
from ..utils.repeated_warnings import warn_on_main_rank
from .distributed import mean_over_processes
from .engine import RunConfig, Task, TrainingError

__all__ = ["ADVERSARIAL_CHOICES", "GANConfig", "GAN_DEFAULTS", "GANObjective", "GANRunConfig", "GANTask", "frozen",
           "finetune_option", "identity_judge", "identity_setting", "inapplicable_gan_options", "load_generator_start",
           "read_generator_start"]

log = logging.getLogger(__name__)

ADVERSARIAL_CHOICES = ("nsgan", "minimax", "wgan-gp", "wgan-clip", "hinge", "lsgan")

_GAN, _RUN = "GAN objective", "run control"


@dataclasses.dataclass
class GANConfig:
    """The GAN objective's options (flag dests and YAML keys; see :class:`GANObjective`)."""

    adversarial: str = option(
        "nsgan", choices=ADVERSARIAL_CHOICES, group=_GAN,
        help="adversarial objective: nsgan (non-saturating cross-entropy), minimax (original), wgan-gp (Wasserstein + "
             "gradient penalty), wgan-clip (Wasserstein + weight clipping), hinge, lsgan (least squares); ignored "
             "with BEGAN (frontalization only)")
    feature_matching: float = option(0.0, metavar="W", group=_GAN,
                                     help="weight of feature matching ||E f(x) - E f(G(z))||^2 on D's penultimate "
                                          "features; 0 disables")
    minibatch_discrimination: bool = option(False, group=_GAN,
                                            help="add a minibatch-discrimination layer (Salimans et al. 2016) to the "
                                                 "discriminator")
    minibatch_std: bool = option(False, group=_GAN,
                                 help="add a minibatch standard-deviation layer (ProGAN) to the discriminator")
    pull_away: float = option(0.0, metavar="W", group=_GAN,
                              help="weight of the pull-away term (EBGAN) on D's penultimate features of G(z); 0 disables")
    began_gamma: Optional[float] = option(None, metavar="G", group=_GAN,
                                          help="use BEGAN with diversity ratio gamma in (0, 1] (auto-encoder "
                                               "discriminator, k_t equilibrium control; replaces --adversarial; "
                                               "frontalization only); unset disables")
    began_lambda_k: float = option(1e-3, metavar="L", group=_GAN, help="BEGAN k_t learning rate lambda_k")
    cycle: float = option(0.0, metavar="W", group=_GAN,
                          help="weight of the cycle-consistency L1 loss (SR: downscaled output vs LR input; "
                               "frontalization: unpaired profile/frontal cycle); 0 disables")
    gp_weight: float = option(10.0, metavar="W", group=_GAN,
                              help="gradient-penalty weight lambda for --adversarial wgan-gp")
    clip_value: float = option(0.01, metavar="C", group=_GAN,
                               help="weight-clipping bound c for --adversarial wgan-clip")
    label_smoothing: float = option(0.0, metavar="S", group=_GAN,
                                    help="one-sided label smoothing for nsgan/minimax: real target 1-S")


#: flag dest -> default; the same keys are accepted in YAML configs (``from_config``).
GAN_DEFAULTS: Dict[str, Any] = dataclasses.asdict(GANConfig())


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``module``'s parameters do not require grad (gradients still flow to its inputs).

    The previous ``requires_grad`` flags are restored on exit.
    """
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _call_with_features(D: nn.Module, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
    try:
        out = D(x, return_features=True)
    except TypeError as err:
        raise TypeError(
            f"{type(D).__name__} does not accept return_features=True ({err}); --feature-matching and --pull-away "
            "need a discriminator returning (logits, features) (see lightface.engine.gan)"
        ) from err
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], (list, tuple)) and out[1]):
        raise TypeError(
            f"{type(D).__name__}(x, return_features=True) must return (logits, [features...]) with at least one "
            f"feature tensor, got {type(out).__name__}"
        )
    return out[0], list(out[1])


def _check_batch(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError(f"{name} must be a floating-point tensor (N, ...), got {getattr(x, 'shape', type(x))}")


class GANObjective:
    """Adversarial objective plus regularisers, configured by the :class:`GANConfig` options.

    Args (same names as the flag dests / YAML keys; see :data:`GAN_DEFAULTS`):
        adversarial: one of ``nsgan``, ``minimax``, ``wgan-gp``, ``wgan-clip``, ``hinge``, ``lsgan``.
        feature_matching: weight of :func:`feature_matching_loss` on the last feature of D (0: off).
        minibatch_discrimination, minibatch_std: passed to the discriminator constructor
            through :attr:`discriminator_kwargs`; the objective itself does not change.
        pull_away: weight of :func:`pull_away_term` on D's last feature of G(z) (0: off).
        began_gamma: BEGAN diversity ratio; None disables BEGAN.
        began_lambda_k: BEGAN k_t gain.
        cycle: weight applied by :meth:`cycle_loss` (0: the trainer skips the cycle).
        gp_weight: gradient-penalty weight (wgan-gp).
        clip_value: weight-clipping bound (wgan-clip).
        label_smoothing: one-sided label smoothing (nsgan / minimax).
    """

    def __init__(
        self,
        adversarial: str = "nsgan",
        feature_matching: float = 0.0,
        minibatch_discrimination: bool = False,
        minibatch_std: bool = False,
        pull_away: float = 0.0,
        began_gamma: Optional[float] = None,
        began_lambda_k: float = 1e-3,
        cycle: float = 0.0,
        gp_weight: float = 10.0,
        clip_value: float = 0.01,
        label_smoothing: float = 0.0,
    ):
        adversarial = str(adversarial).lower()
        if adversarial not in ADVERSARIAL_CHOICES:
            raise ValueError(f"--adversarial {adversarial!r} is not one of {', '.join(ADVERSARIAL_CHOICES)}")
        for name, value in (("feature_matching", feature_matching), ("pull_away", pull_away), ("cycle", cycle),
                            ("gp_weight", gp_weight), ("began_lambda_k", began_lambda_k)):
            if value is None or not math.isfinite(float(value)) or float(value) < 0:  # NaN trained NaN weights
                raise ValueError(f"{flag_name(name)} must be a finite weight >= 0, got {value}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1) (the real target is 1 - S), got {label_smoothing}")
        self.adversarial = adversarial
        self.feature_matching = float(feature_matching)
        self.minibatch_discrimination = bool(minibatch_discrimination)
        self.minibatch_std = bool(minibatch_std)
        self.pull_away = float(pull_away)
        self.cycle = float(cycle)
        self.gp_weight = float(gp_weight)
        self.clip_value = float(clip_value)
        self.label_smoothing = float(label_smoothing)
        # inside discriminator_round: (the round's step count, the L(x), L(G(z)) of its calls so far)
        self._round: Optional[Tuple[int, List[Tuple[float, float]]]] = None
        self.began: Optional[BEGANController] = None
        if began_gamma is not None:
            if not 0.0 < float(began_gamma) <= 1.0:
                raise ValueError(f"--began-gamma must be in (0, 1], got {began_gamma}; omit it (null in YAML) "
                                 "to train without BEGAN")
            self.began = BEGANController(gamma=began_gamma, lambda_k=began_lambda_k)
            ignored = [f"{flag_name(k)} {v}" for k, v in (
                ("adversarial", adversarial), ("label_smoothing", label_smoothing), ("gp_weight", gp_weight),
                ("clip_value", clip_value)) if v != GAN_DEFAULTS[k]]
            if ignored:
                warn_on_main_rank(log, "--began-gamma replaces the adversarial objective; %s ignored",
                                  ", ".join(ignored))
            self.loss = None
        else:
            if adversarial == "wgan-clip" and not 0 < self.clip_value < math.inf:
                raise ValueError(f"--clip-value must be a finite bound > 0 for wgan-clip, got {clip_value}")
            self.loss = get_adversarial_loss(adversarial, label_smoothing=self.label_smoothing)
            coupling = [f for f, on in (("--minibatch-discrimination", self.minibatch_discrimination),
                                        ("--minibatch-std", self.minibatch_std)) if on]
            if adversarial == "wgan-gp" and self.gp_weight > 0 and coupling:
                warn_on_main_rank(log, "--adversarial wgan-gp with %s: that layer mixes the batch's samples, so the "
                                  "gradient penalty's norm at one sample includes the other samples' gradients and is "
                                  "not the per-sample penalty of Gulrajani et al.; drop the layer or pick another "
                                  "--adversarial (docs/gan_toolkit.md)", " and ".join(coupling))

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_args(cls, args: Any) -> "GANObjective":
        """Build from a parsed namespace holding the :class:`GANConfig` flag dests (missing ones take defaults)."""
        return cls(**{k: getattr(args, k, v) for k, v in GAN_DEFAULTS.items()})

    @classmethod
    def from_config(cls, config: Union[GANConfig, Mapping[str, Any]]) -> "GANObjective":
        """Build from a :class:`GANConfig`, or a YAML-style mapping with the flag dests as keys
        (``feature_matching`` or ``feature-matching``).

        Other keys (the trainer's own options) are ignored; an optional nested ``gan:``
        mapping is read too. Missing keys take :data:`GAN_DEFAULTS`.
        """
        if isinstance(config, GANConfig):
            return cls(**dataclasses.asdict(config))
        if not isinstance(config, Mapping):
            raise TypeError(f"GANObjective.from_config expects a mapping, got {type(config).__name__}")
        flat = {str(k).replace("-", "_"): v for k, v in config.items()}
        if isinstance(flat.get("gan"), Mapping):
            flat.update({str(k).replace("-", "_"): v for k, v in flat["gan"].items()})
        return cls(**{k: flat.get(k, v) for k, v in GAN_DEFAULTS.items()})

    def to_config(self) -> Dict[str, Any]:
        """The options as a plain dict (GAN_DEFAULTS keys), e.g. to store in a checkpoint or YAML."""
        return {
            "adversarial": self.adversarial, "feature_matching": self.feature_matching,
            "minibatch_discrimination": self.minibatch_discrimination, "minibatch_std": self.minibatch_std,
            "pull_away": self.pull_away, "began_gamma": self.began.gamma if self.began else None,
            "began_lambda_k": self.began.lambda_k if self.began else GAN_DEFAULTS["began_lambda_k"],
            "cycle": self.cycle, "gp_weight": self.gp_weight, "clip_value": self.clip_value,
            "label_smoothing": self.label_smoothing,
        }

    # ----------------------------------------------------------------- properties
    @property
    def needs_features(self) -> bool:
        """True when the generator loss calls ``D(x, return_features=True)`` (feature matching / pull-away)."""
        return self.feature_matching > 0 or self.pull_away > 0

    @property
    def uses_autoencoder_discriminator(self) -> bool:
        """True with ``--began-gamma``: build an AutoencoderDiscriminator (D(x) returns a reconstruction)."""
        return self.began is not None

    @property
    def cycle_weight(self) -> float:
        """Weight of the cycle-consistency loss (0: trainers skip the cycle)."""
        return self.cycle

    @property
    def discriminator_kwargs(self) -> Dict[str, bool]:
        """``{"minibatch_discrimination": ..., "minibatch_std": ...}`` for the discriminator constructor."""
        return {"minibatch_discrimination": self.minibatch_discrimination, "minibatch_std": self.minibatch_std}

    # ----------------------------------------------------------------- losses
    def discriminator_loss(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        """Discriminator loss to minimise and its named terms.

        Args:
            D: the discriminator (or BEGAN auto-encoder) in training mode.
            real: (N, ...) real samples in the range the generator produces.
            fake: (M, ...) generated samples; detached here (no gradient to G).

        Returns:
            ``(loss, terms)``: scalar tensor, dict of floats (see the module docstring).
            Includes the gradient penalty (wgan-gp, needs M == N); updates BEGAN's k_t (from ``L(x)``,
            ``L(G(z))`` averaged over the torchrun processes, so every rank keeps the same k_t: call it on
            every rank together), after this call's loss took the k_t before it; within
            :meth:`discriminator_round`, once per round instead.
        """
        _check_batch("real", real)
        _check_batch("fake", fake)
        fake = fake.detach()
        if self.began is not None:
            loss_real = autoencoder_loss(real, D(real))
            loss_fake = autoencoder_loss(fake, D(fake))
            loss = self.began.discriminator_loss(loss_real, loss_fake)
            # under torchrun: the global batch's L(x), L(G(z)), so that every rank keeps the same k_t
            lr, lf = mean_over_processes(torch.stack([loss_real.detach(), loss_fake.detach()])).tolist()
            terms = {"d_began_real": lr, "d_began_fake": lf, "M_global": self.began.convergence(lr, lf)}
            terms["k_t"] = self._update_k(lr, lf)
            return loss, terms
        real_logits, fake_logits = D(real), D(fake)
        adv = self.loss.d_loss(real_logits, fake_logits)
        terms = {"d_adv": adv.item(), "d_real": real_logits.detach().mean().item(),
                 "d_fake": fake_logits.detach().mean().item()}
        loss = adv
        if self.adversarial.startswith("wgan"):
            terms["d_wasserstein"] = terms["d_real"] - terms["d_fake"]
        if self.adversarial == "wgan-gp" and self.gp_weight > 0:
            gp, norms = gradient_penalty(D, real, fake, return_norm=True)
            loss = loss + self.gp_weight * gp
            terms["d_gp"] = gp.item()
            terms["d_grad_norm"] = norms.mean().item()
        return loss, terms

    @contextlib.contextmanager
    def discriminator_round(self, steps: int) -> Iterator["GANObjective"]:
        """Within the block: the ``steps`` discriminator updates of one generator step (``--d-steps``).

        BEGAN's k_t is updated once for the round, by its last :meth:`discriminator_loss` call (whose
        ``k_t`` term is the updated value), from the mean ``L(x)``, ``L(G(z))`` of the round's calls;
        every update of the round takes the k_t the round started with. Berthelot et al. update k_t
        once per training step: one update per critic step would multiply the gain lambda_k by the
        step count. With ``steps=1`` this is the plain call. Other objectives: no effect.
        """
        if steps < 1:
            raise ValueError(f"a discriminator round has at least one step, got {steps}")
        self._round = (int(steps), [])
        try:
            yield self
        finally:
            self._round = None

    def _update_k(self, loss_real: float, loss_fake: float) -> float:
        """BEGAN's k_t after this call's L(x), L(G(z)) (see :meth:`discriminator_round`)."""
        if self._round is None:
            return self.began.update(loss_real, loss_fake)
        steps, seen = self._round
        seen.append((loss_real, loss_fake))
        if len(seen) < steps:
            return self.began.k
        if len(seen) > steps:
            raise RuntimeError(f"{len(seen)} discriminator_loss calls in a round of {steps} discriminator steps")
        return self.began.update(*(sum(values) / steps for values in zip(*seen)))

    def after_discriminator_step(self, D: nn.Module) -> None:
        """Call after ``d_optimizer.step()``: clips D's weights to ``[-clip_value, clip_value]`` for wgan-clip."""
        if self.began is None and self.adversarial == "wgan-clip":
            clip_weights(D, self.clip_value)

    def generator_loss(
        self, D: nn.Module, real: Optional[Tensor], fake: Tensor
    ) -> Tuple[Tensor, Dict[str, float]]:
        """Generator loss to minimise (adversarial + feature matching + pull-away) and its named terms.

        D's parameters are frozen during the call (gradients reach ``fake`` only).

        Args:
            D: the discriminator.
            real: (N, ...) real samples; needed only for feature matching (may be None otherwise).
            fake: (M, ...) generated samples with their graph to G.

        Returns:
            ``(loss, terms)``: scalar tensor ``adversarial + feature_matching * FM +
            pull_away * PT`` (regulariser weights are relative to the adversarial term; a
            trainer's own adversarial weight scales the whole sum) and floats.
        """
        _check_batch("fake", fake)
        if self.feature_matching > 0 and real is None:
            raise ValueError("--feature-matching needs the real batch: pass real to generator_loss")
        terms: Dict[str, float] = {}
        with frozen(D):
            if self.needs_features:
                out, feats = _call_with_features(D, fake)
            else:
                out, feats = D(fake), None
            if self.began is not None:
                adv = autoencoder_loss(fake, out)
            else:
                adv = self.loss.g_loss(out)
            loss = adv
            terms["g_adv"] = adv.item()
            if self.feature_matching > 0:
                with torch.no_grad():
                    _, real_feats = _call_with_features(D, real)
                fm = feature_matching_loss(real_feats[-1], feats[-1])
                loss = loss + self.feature_matching * fm
                terms["g_feature_matching"] = fm.item()
            if self.pull_away > 0:
                pt = pull_away_term(feats[-1])
                loss = loss + self.pull_away * pt
                terms["g_pull_away"] = pt.item()
        return loss, terms

    def cycle_loss(
        self, x: Tensor, x_rec: Tensor, y: Optional[Tensor] = None, y_rec: Optional[Tensor] = None
    ) -> Tuple[Tensor, Dict[str, float]]:
        """``cycle_weight * cycle_consistency_loss(x, x_rec, y, y_rec)`` and ``{"g_cycle": unweighted value}``."""
        c = cycle_consistency_loss(x, x_rec, y, y_rec)
        return self.cycle * c, {"g_cycle": c.item()}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        """Resumable state (weights_only-safe): the options and, with BEGAN, k_t."""
        state: Dict[str, Any] = {"config": self.to_config()}
        if self.began is not None:
            state["began"] = self.began.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore BEGAN's k_t from :meth:`state_dict` (the options stay as configured now)."""
        if self.began is not None:
            if "began" not in state:
                raise KeyError("GAN objective state has no BEGAN k_t (was the run started without --began-gamma?)")
            self.began.load_state_dict(state["began"])

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.to_config().items() if v != GAN_DEFAULTS[k] or k == "adversarial"]
        return f"GANObjective({', '.join(parts)})"


def inapplicable_gan_options(gan: GANConfig) -> List[str]:
    """Problems: options of one objective set for a run with another (``--gp-weight`` without wgan-gp,
    ``--clip-value`` without wgan-clip, ``--began-lambda-k`` without ``--began-gamma``), which would never act;
    refused like ``--label-smoothing`` with hinge. With BEGAN, the first two are ignored with a warning (as
    ``--adversarial`` is)."""
    problems = []
    began = gan.began_gamma is not None
    for name, objective in (("gp_weight", "wgan-gp"), ("clip_value", "wgan-clip")):
        value = getattr(gan, name)
        if value != GAN_DEFAULTS[name] and not began and gan.adversarial != objective:
            problems.append(f"{flag_name(name)} {value:g} only applies to --adversarial {objective}, "
                            f"not to {gan.adversarial}; leave it out")
    if gan.began_lambda_k != GAN_DEFAULTS["began_lambda_k"] and not began:
        problems.append(f"--began-lambda-k {gan.began_lambda_k:g} only applies with --began-gamma (BEGAN); "
                        "leave it out or set --began-gamma")
    return problems


def identity_setting(spec: str) -> str:
    """An ``--identity-weights`` / ``--ip-extra-judges`` value as ``OUT/config.yaml`` stores it (``option(path=)``):
    a relative checkpoint path absolute; ``none`` / ``off`` and shipped names as given, with the rules of
    :func:`~lightface.models.identity.resolve_identity_weights` (``none`` switches the network off even when a
    file of that name is in the current folder)."""
    return spec if spec.strip().lower() in NO_IDENTITY else absolute_if_exists(spec)


@dataclasses.dataclass
class GANRunConfig(RunConfig):
    """Settings both GAN trainers share; their config dataclasses derive from this one (and add
    ``data``, ``steps``, ``batch_size``, ``lr``, ``val_every`` ...)."""

    identity_weights: Optional[str] = option(
        None, group="identity network", default_text="the shipped recogniser", path=identity_setting,
        help="frozen Light CNN checkpoint (project or official format, or a shipped entry's name), the identity "
             "judge of the identity loss and metrics; unset: the recogniser that ships with lightface, when one does; "
             "'none': off")
    ema_decay: float = option(0.999, group="optimisation",
                              help="decay of the generator's EMA (validated, saved as ema_state_dict, used at "
                                   "inference); 0: no EMA, the raw weights are validated and used")
    d_steps: int = option(1, group="optimisation",
                          help="discriminator (critic) updates per generator step: WGAN's n_critic (its papers use "
                               "5); the first on the step's batch and its detached outputs, each further one on the "
                               "next batch of the data and the generator's fresh output for it (a step that trains "
                               "the critic takes N batches)")
    workers: int = option(2, group=_RUN, help="DataLoader workers per process")
    log_every: int = option(50, group=_RUN, help="log the loss terms, averaged over the steps and processes, every N steps")
    save_every: int = option(1000, group=_RUN, help="write last.pt every N steps (and at the end)")
    gan: GANConfig = dataclasses.field(default_factory=GANConfig)

    def problems(self) -> List[str]:
        """Problems with the shared settings, each naming its flag."""
        problems = []
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.d_steps < 1:
            problems.append(f"--d-steps must be >= 1, got {self.d_steps}")
        return problems


class GANTask(Task):
    """What the GAN trainers share (:class:`~lightface.engine.engine.Task` for a generator ``G`` and
    critics): step-based (``cfg.steps``, validation every ``cfg.val_every`` steps), equal batches
    (the gradient penalty pairs real and fake samples), ``self.objective`` (a :class:`GANObjective`,
    built by :meth:`check`) saved as ``gan_state``, ``self.opt_g``'s learning rate in the log."""

    val_unit = "step"
    drop_last = True
    objective: GANObjective
    opt_g: torch.optim.Optimizer

    def check(self) -> List[str]:
        """The settings' problems, those of the GAN objective included (``--label-smoothing`` with
        ``--adversarial hinge``, :func:`inapplicable_gan_options` ...): :attr:`objective` is built here,
        before training starts. GAN options given for a run whose adversarial term is off throughout
        (:meth:`adversarial_off`) get a warning: they take effect only if a resumed run turns it on."""
        problems = super().check()
        try:
            self.objective = GANObjective.from_config(self.cfg.gan)
        except ValueError as err:
            problems.append(str(err))
        problems += inapplicable_gan_options(self.cfg.gan)
        off = self.adversarial_off()
        given = [flag_name(k) for k, v in dataclasses.asdict(self.cfg.gan).items()
                 if k != "cycle" and v != GAN_DEFAULTS[k]] + (["--d-steps"] if self.cfg.d_steps != 1 else [])
        if off and given:
            warn_on_main_rank(log, "%s: the adversarial term is off for the whole run, so %s take no effect (the "
                              "discriminator is built and saved but never trained)", off, ", ".join(given))
        return problems

    def adversarial_off(self) -> Optional[str]:
        """The setting that keeps the adversarial term (and the discriminator's training) out of every step of
        the run, e.g. ``"--adv-weight 0"``; None when it acts at some step."""
        return None

    def trains_discriminator(self, step: int) -> bool:
        """Whether the step after ``step`` done steps updates the discriminator (default: every step)."""
        return True

    def batches_per_step(self, step: int) -> int:
        """``--d-steps`` batches for a step that updates the discriminator (:meth:`trains_discriminator`):
        each critic step after the first has a fresh batch, as in WGAN's n_critic loop; else one."""
        return self.cfg.d_steps if self.trains_discriminator(step) else 1

    def gan_objectives(self) -> List[GANObjective]:
        """The task's GAN objectives, one per discriminator (default: :attr:`objective`)."""
        return [self.objective]

    def discriminator_steps(self, update: Callable[..., Dict[str, Any]], batches: Iterable[Tuple[Any, ...]]
                            ) -> Dict[str, Any]:
        """Run ``update(*inputs)`` (one discriminator step: loss, backward, optimiser step, the objective's
        post-step hook; returns its terms) for each ``inputs`` of ``batches``: the step's own real batch and
        detached fakes first, then one per extra batch of the step (``--d-steps`` in all; pass a generator, so
        that each fresh fake is made when its critic step comes); returns the last one's terms (the ones
        logged). The steps are one :meth:`GANObjective.discriminator_round` of each of :meth:`gan_objectives`
        (BEGAN's k_t: one update per generator step)."""
        count = 0
        with contextlib.ExitStack() as rounds:
            for objective in self.gan_objectives():
                rounds.enter_context(objective.discriminator_round(self.cfg.d_steps))
            for inputs in batches:
                terms = update(*inputs)
                count += 1
        if count != self.cfg.d_steps:
            raise RuntimeError(f"{count} discriminator steps for --d-steps {self.cfg.d_steps}")
        return terms

    def plan(self, steps_per_epoch: int) -> Tuple[int, str]:
        return self.cfg.steps, "completed"

    def current_lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def can_validate(self) -> bool:
        return True

    def extra_state(self) -> Dict[str, Any]:
        return {"gan_state": self.objective.state_dict()}

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        self.objective.load_state_dict(ckpt.get("gan_state", {}))


def finetune_option(task: str, aliases: str, group: str) -> Any:
    """The ``finetune`` field of a GAN trainer's config (``--finetune``, read by :func:`load_generator_start`).

    Args:
        task: the shipped models' task (``"super_resolution"``), for ``list_pretrained``.
        aliases: the shipped aliases to name in the help (``"sr4, sr8"``).
        group: the ``--help`` group of the flag.
    """
    return option(
        None, group=group, path=absolute_file,
        help=f"start the generator from a trained model: a shipped name or alias ({aliases}; "
             f"lightface.models.list_pretrained('{task}')) or an OUT/model.pt / last.pt of this pipeline "
             "(its EMA weights when saved); the model flags must match it; the discriminator and optimisers start new")


def read_generator_start(spec: str) -> Any:
    """A trainer's ``--finetune`` checkpoint (a file, or the name or alias of a shipped model, sha256-checked),
    read once: a :class:`~lightface.models.checkpoint.ModelCheckpoint` (its saved settings, when it has them,
    in ``extra["config"]``), for :func:`load_generator_start` ``start=``.

    Raises:
        TrainingError: no such file nor shipped model.
        FileNotFoundError, ValueError: the file cannot be read as a checkpoint.
    """
    from ..models.checkpoint import read_model_checkpoint
    from ..models.pretrained import PretrainedError, file_or_shipped

    try:
        path = file_or_shipped(spec)
    except PretrainedError as err:
        raise TrainingError(str(err)) from err
    return read_model_checkpoint(path)


def load_generator_start(G: nn.Module, spec: str, arch: str, model_kwargs: Mapping[str, Any],
                         flag_names: Optional[Mapping[str, str]] = None, start: Any = None) -> Any:
    """Load a trainer's ``--finetune`` (a file, or the name of a shipped model) into the generator ``G`` in place;
    returns the checkpoint it read (:func:`read_generator_start`), e.g. for the settings it was trained with.

    Args:
        G: the new generator, built from ``model_kwargs``.
        spec: a checkpoint path (``OUT/model.pt`` / ``last.pt``: its EMA weights when saved) or a
            shipped model's name or alias (sha256-checked).
        arch: the registry architecture the checkpoint must hold.
        model_kwargs: the builder kwargs of ``G``; the checkpoint's must be equal, except
            ``condition_network`` when ``G`` has ``adapt_finetune_state(state, saved_kwargs)``
            (a TP-GAN generator conditioned on a recogniser may start from an unconditioned one).
        flag_names: builder kwarg -> trainer flag where the names differ (for the error message).
        start: ``spec`` already read by :func:`read_generator_start` (so that the file is read once);
            None: read here.

    Raises:
        TrainingError: no such file or shipped model, another architecture, or other model flags.
    """
    from ..models.checkpoint import load_weights

    ckpt = start if start is not None else read_generator_start(spec)
    if ckpt.arch != arch:
        raise TrainingError(f"--finetune {spec}: holds a {ckpt.arch!r} model, not a {arch} generator")
    adapt = getattr(G, "adapt_finetune_state", None)
    differ = {k: (v, ckpt.model_kwargs.get(k)) for k, v in model_kwargs.items()
              if ckpt.model_kwargs.get(k) != v and not (adapt is not None and k == "condition_network")}
    if differ:
        names = flag_names or {}
        flags = ", ".join(f"{flag_name(names.get(k, k))} {saved} (not {ours})"
                          for k, (ours, saved) in differ.items())
        raise TrainingError(f"--finetune {spec}: the model was trained with {flags}; pass those flags")
    state = ckpt.ema_state_dict if ckpt.ema_state_dict is not None else ckpt.state_dict
    if adapt is not None:
        try:
            state = adapt(state, ckpt.model_kwargs)
        except ValueError as err:
            raise TrainingError(f"--finetune {spec}: {err}") from err
    load_weights(G, state)
    log.info("fine-tuning: generator from %s (%s weights)", spec, "EMA" if ckpt.ema_state_dict is not None else "saved")
    return ckpt


def identity_judge(weights: Optional[str], purpose: str, device: torch.device) -> Optional[IdentityLoss]:
    """The frozen identity judge of a GAN trainer's ``--identity-weights``
    (:func:`~lightface.losses.identity.resolve_identity_weights`: unset = the shipped recogniser
    when one ships, ``none`` = off) on ``device``, or None.

    Raises:
        ValueError: the checkpoint cannot be read or is not a recogniser (naming the flag).
    """
    try:
        path = resolve_identity_weights(weights, purpose)
        return IdentityLoss(path).to(device).eval() if path is not None else None
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"--identity-weights {weights}: {err}") from err
