"""Adversarial objectives: one interface for the discriminator and the generator loss.

Every objective maps raw discriminator outputs ("logits": any float tensor shaped
(N, ...), e.g. (N, 1) or a PatchGAN map (N, 1, h, w); no sigmoid applied) to scalar
losses that are **minimised** by the optimiser of the corresponding network:

* ``d_loss(real_logits, fake_logits)`` -> scalar, minimised by the discriminator / critic;
* ``g_loss(fake_logits)`` -> scalar, minimised by the generator. It decreases as the
  discriminator is fooled, i.e. as ``fake_logits`` grow (the discriminator's "real" side
  is always the large-logit side).

Objectives (``sigma`` is the logistic sigmoid, expectations are means over all elements):

==========  =====================================================  ===================================
name        discriminator loss                                     generator loss
==========  =====================================================  ===================================
minimax     -E log sigma(D(x)) - E log(1 - sigma(D(G(z))))         E log(1 - sigma(D(G(z))))
nsgan       same as minimax                                        -E log sigma(D(G(z)))
wgan        E D(G(z)) - E D(x)                                     -E D(G(z))
hinge       E relu(1 - D(x)) + E relu(1 + D(G(z)))                 -E D(G(z))
lsgan       1/2 E (D(x) - 1)^2 + 1/2 E D(G(z))^2                   1/2 E (D(G(z)) - 1)^2
==========  =====================================================  ===================================

References: minimax and non-saturating: Goodfellow et al., "Generative Adversarial
Nets", NeurIPS 2014; one-sided label smoothing: Salimans et al., "Improved Techniques
for Training GANs", NeurIPS 2016; WGAN with weight clipping: Arjovsky et al.,
"Wasserstein GAN", ICML 2017; gradient penalty: Gulrajani et al., "Improved Training
of Wasserstein GANs", NeurIPS 2017; hinge: Lim & Ye, "Geometric GAN", 2017 (and Miyato
et al. 2018); least squares: Mao et al., "Least Squares Generative Adversarial
Networks", ICCV 2017 (the a=0, b=1, c=1 coding).

The Lipschitz constraint of the Wasserstein objectives is not part of the loss: use
:func:`gradient_penalty` (WGAN-GP) or clip the critic's weights after every step
(WGAN-clip, :func:`clip_weights`). :class:`lightface.engine.gan.GANObjective` does both.
"""
from typing import Callable, Dict, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AdversarialLoss",
    "MinimaxLoss",
    "NonSaturatingLoss",
    "WassersteinLoss",
    "HingeLoss",
    "LeastSquaresLoss",
    "ADVERSARIAL_LOSSES",
    "get_adversarial_loss",
    "gradient_penalty",
    "clip_weights",
]


def _check_logits(name: str, logits: Tensor) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of discriminator outputs, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() == 0 or logits.numel() == 0:
        raise ValueError(f"{name} must be shaped (N, ...) with N >= 1, got shape {tuple(logits.shape)}")


class AdversarialLoss(nn.Module):
    """Base class: ``d_loss(real_logits, fake_logits)`` and ``g_loss(fake_logits)``, both to minimise.

    ``forward(real_logits, fake_logits)`` is ``d_loss``. Subclasses implement
    ``_d_loss`` / ``_g_loss`` on validated tensors.
    """

    name = "base"

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Discriminator loss (scalar) from D(x) (N, ...) and D(G(z)) (M, ...); minimise it over D."""
        _check_logits("real_logits", real_logits)
        _check_logits("fake_logits", fake_logits)
        return self._d_loss(real_logits, fake_logits)

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        """Generator loss (scalar) from D(G(z)) (N, ...); minimise it over G. Decreases as fake_logits grow."""
        _check_logits("fake_logits", fake_logits)
        return self._g_loss(fake_logits)

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return self.d_loss(real_logits, fake_logits)

    def _d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _g_loss(self, fake_logits: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MinimaxLoss(AdversarialLoss):
    """Original minimax cross-entropy GAN (Goodfellow et al. 2014).

    D: ``BCE(D(x), 1 - s) + BCE(D(G(z)), 0)`` with one-sided label smoothing ``s``
    (``label_smoothing``, Salimans et al. 2016: only the real target is softened,
    fake targets stay 0). G: ``E log(1 - sigma(D(G(z))))`` = ``-E softplus(D(G(z)))``;
    this saturates (vanishing gradient) when D rejects the fakes confidently.

    Args:
        label_smoothing: ``s`` in [0, 1); the real label becomes ``1 - s``. 0 disables it.
    """

    name = "minimax"

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def _d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        real_target = torch.full_like(real_logits, 1.0 - self.label_smoothing)
        loss_real = F.binary_cross_entropy_with_logits(real_logits, real_target)
        loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return loss_real + loss_fake

    def _g_loss(self, fake_logits: Tensor) -> Tensor:
        # log(1 - sigmoid(l)) = -softplus(l)
        return -F.softplus(fake_logits).mean()

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class NonSaturatingLoss(MinimaxLoss):
    """Non-saturating GAN ("nsgan"): the minimax D loss, G minimises ``-E log sigma(D(G(z)))``.

    ``-log sigma(l) = softplus(-l)``: strong gradients while D rejects the fakes.
    Same ``label_smoothing`` (one-sided) as :class:`MinimaxLoss`.
    """

    name = "nsgan"

    def _g_loss(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()


class WassersteinLoss(AdversarialLoss):
    """Wasserstein (earth mover's) critic loss (Arjovsky et al. 2017).

    Critic: ``E D(G(z)) - E D(x)`` (its negative is the Wasserstein-1 estimate when D
    is 1-Lipschitz); G: ``-E D(G(z))``. Enforce the Lipschitz constraint separately
    with :func:`gradient_penalty` or :func:`clip_weights`.
    """

    name = "wgan"

    def _d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def _g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


class HingeLoss(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017): D ``E relu(1 - D(x)) + E relu(1 + D(G(z)))``, G ``-E D(G(z))``."""

    name = "hinge"

    def _d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def _g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


class LeastSquaresLoss(AdversarialLoss):
    """Least squares GAN (Mao et al. 2017, a=0, b=1, c=1).

    D: ``1/2 E (D(x) - 1)^2 + 1/2 E D(G(z))^2``; G: ``1/2 E (D(G(z)) - 1)^2``.
    """

    name = "lsgan"

    def _d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return 0.5 * (real_logits - 1.0).pow(2).mean() + 0.5 * fake_logits.pow(2).mean()

    def _g_loss(self, fake_logits: Tensor) -> Tensor:
        return 0.5 * (fake_logits - 1.0).pow(2).mean()


ADVERSARIAL_LOSSES: Dict[str, Type[AdversarialLoss]] = {
    "minimax": MinimaxLoss,
    "nsgan": NonSaturatingLoss,
    "wgan": WassersteinLoss,
    "wgan-gp": WassersteinLoss,
    "wgan-clip": WassersteinLoss,
    "hinge": HingeLoss,
    "lsgan": LeastSquaresLoss,
}


def get_adversarial_loss(name: str, label_smoothing: float = 0.0) -> AdversarialLoss:
    """Build an objective by name: ``minimax``, ``nsgan``, ``wgan`` (= ``wgan-gp`` = ``wgan-clip``), ``hinge``, ``lsgan``.

    ``label_smoothing`` (one-sided, real target ``1 - s``) applies to the cross-entropy
    objectives (``minimax``, ``nsgan``); passing a non-zero value with another
    objective raises ``ValueError`` (it has no meaning there).
    """
    key = str(name).lower()
    if key not in ADVERSARIAL_LOSSES:
        raise ValueError(f"unknown adversarial objective {name!r}; choose one of {', '.join(ADVERSARIAL_LOSSES)}")
    cls = ADVERSARIAL_LOSSES[key]
    if issubclass(cls, MinimaxLoss):
        return cls(label_smoothing=label_smoothing)
    if label_smoothing:
        raise ValueError(
            f"label smoothing ({label_smoothing}) only applies to the cross-entropy objectives "
            f"(minimax, nsgan), not to {key!r}; set it to 0"
        )
    return cls()


def _unwrap(module: Callable) -> Callable:
    """The wrapped module of a DistributedDataParallel / DataParallel (double backward runs on it)."""
    if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return module.module
    return module


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    target_norm: float = 1.0,
    return_norm: bool = False,
):
    """WGAN-GP two-sided gradient penalty (Gulrajani et al. 2017).

    ``E_xhat (||grad_xhat D(xhat)||_2 - target_norm)^2`` with ``xhat = e*x + (1-e)*G(z)``,
    ``e ~ U[0, 1]`` drawn per sample. The critic value of one sample is the mean of its
    outputs (so a PatchGAN map is treated like the losses above treat it). The graph is
    kept (``create_graph=True``) so the penalty trains D. ``fake`` is detached.
    Avoid batch normalisation and minibatch layers (minibatch discrimination, minibatch std)
    in a critic trained with this penalty: they couple the samples, so a sample's gradient
    norm here would include the others' outputs; use layer/instance norm or none.

    Args:
        discriminator: callable (N, ...) -> (N, ...) logits; a DDP wrapper is unwrapped.
        real: (N, ...) float real samples.
        fake: (N, ...) float generated samples, same shape as ``real``.
        target_norm: the gradient norm the penalty pulls towards (1 in the paper).
        return_norm: also return the detached per-sample gradient norms (N,).

    Returns:
        scalar penalty, or ``(penalty, norms)`` when ``return_norm``.
    """
    if not isinstance(real, Tensor) or not isinstance(fake, Tensor):
        raise TypeError("gradient_penalty expects tensors for real and fake")
    if real.shape != fake.shape:
        raise ValueError(
            f"gradient_penalty needs real and fake of the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}; "
            "use as many generated as real samples"
        )
    if not real.is_floating_point():
        raise TypeError(f"gradient_penalty needs floating-point samples, got {real.dtype}")
    n = real.shape[0]
    eps = torch.rand((n,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    xhat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    out = _unwrap(discriminator)(xhat)
    if isinstance(out, (tuple, list)):
        raise TypeError("gradient_penalty: the discriminator must return a logits tensor, got a tuple/list")
    per_sample = out.reshape(n, -1).mean(dim=1)
    (grad,) = torch.autograd.grad(per_sample.sum(), xhat, create_graph=True)
    norms = grad.reshape(n, -1).norm(2, dim=1)
    penalty = (norms - target_norm).pow(2).mean()
    if return_norm:
        return penalty, norms.detach()
    return penalty


@torch.no_grad()
def clip_weights(module: nn.Module, clip_value: float) -> None:
    """WGAN weight clipping (Arjovsky et al. 2017): clamp every parameter to ``[-c, c]`` in place."""
    if clip_value <= 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value}")
    for p in module.parameters():
        p.clamp_(-clip_value, clip_value)
