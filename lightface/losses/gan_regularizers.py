"""GAN regularisers: feature matching, pull-away term, cycle consistency, BEGAN equilibrium.

References:
* feature matching: Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016;
* pull-away term: Zhao et al., "Energy-based Generative Adversarial Network", ICLR 2017;
* cycle consistency: Zhu et al., "Unpaired Image-to-Image Translation using
  Cycle-Consistent Adversarial Networks", ICCV 2017;
* equilibrium controller: Berthelot et al., "BEGAN: Boundary Equilibrium Generative
  Adversarial Networks", 2017.
"""
import math
from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "feature_matching_loss",
    "pull_away_term",
    "cycle_consistency_loss",
    "autoencoder_loss",
    "BEGANController",
]

Features = Union[Tensor, Sequence[Tensor]]


def _as_list(name: str, feats: Features):
    if isinstance(feats, Tensor):
        return [feats]
    if isinstance(feats, (list, tuple)) and feats and all(isinstance(f, Tensor) for f in feats):
        return list(feats)
    raise TypeError(f"{name} must be a tensor (N, ...) or a non-empty list of tensors, got {type(feats).__name__}")


def feature_matching_loss(real_features: Features, fake_features: Features) -> Tensor:
    """Feature matching ``|| E f(x) - E f(G(z)) ||_2^2`` (Salimans et al. 2016).

    For each feature tensor ``f`` (N, ...) it flattens to (N, F), averages over the batch
    and takes the squared L2 norm of the difference of the two means (a sum over the F
    features); with a list of layers the result is the mean over layers. The real
    features are the target: they are detached.

    Args:
        real_features: D's features of real samples: a tensor (N, ...) or a list of them.
        fake_features: D's features of generated samples, same structure (M, ...); M may differ from N.

    Returns:
        scalar tensor >= 0.

    Example:
        >>> feature_matching_loss(torch.tensor([[1., 2.]]), torch.tensor([[0., 0.]]))
        tensor(5.)
    """
    real = _as_list("real_features", real_features)
    fake = _as_list("fake_features", fake_features)
    if len(real) != len(fake):
        raise ValueError(f"feature_matching_loss: {len(real)} real feature layers vs {len(fake)} fake ones")
    terms = []
    for i, (r, f) in enumerate(zip(real, fake)):
        if r.shape[1:] != f.shape[1:]:
            raise ValueError(
                f"feature_matching_loss: layer {i} has per-sample shape {tuple(r.shape[1:])} (real) "
                f"vs {tuple(f.shape[1:])} (fake)"
            )
        mean_r = r.detach().reshape(r.shape[0], -1).mean(0)
        mean_f = f.reshape(f.shape[0], -1).mean(0)
        terms.append((mean_r - mean_f).pow(2).sum())
    return torch.stack(terms).mean()


def pull_away_term(representations: Tensor, eps: float = 1e-8) -> Tensor:
    """Pull-away term (Zhao et al. 2017, EBGAN-PT) on sample representations S (N, F).

    ``f_PT(S) = 1/(N(N-1)) * sum_{i != j} (S_i^T S_j / (|S_i| |S_j|))^2``: the mean
    squared cosine similarity between distinct samples. 0 when the representations are
    mutually orthogonal, 1 when they are all parallel (mode collapse); minimising it
    over the generator pushes a batch apart. Higher-dimensional input (N, ...) is flattened.

    Args:
        representations: (N, F) float, N >= 2 (e.g. D's penultimate features of G(z)).
        eps: floor of the norms (an all-zero row has cosine 0 with everything).

    Returns:
        scalar tensor in [0, 1].
    """
    if not isinstance(representations, Tensor) or not representations.is_floating_point():
        raise TypeError("pull_away_term expects a floating-point tensor (N, F)")
    if representations.dim() < 2 or representations.shape[0] < 2:
        raise ValueError(
            f"pull_away_term needs at least 2 samples shaped (N, F), got shape {tuple(representations.shape)}"
        )
    s = representations.reshape(representations.shape[0], -1)
    n = s.shape[0]
    unit = s / s.norm(dim=1, keepdim=True).clamp_min(eps)
    cos2 = (unit @ unit.t()).pow(2)
    off_diag = cos2.sum() - cos2.diagonal().sum()
    return off_diag / (n * (n - 1))


def cycle_consistency_loss(
    x: Tensor, x_rec: Tensor, y: Optional[Tensor] = None, y_rec: Optional[Tensor] = None
) -> Tensor:
    """Cycle consistency ``|F(G(x)) - x|_1 + |G(F(y)) - y|_1`` (Zhu et al. 2017), mean absolute errors.

    Each term is the mean over all elements (CycleGAN's L1), so the loss does not grow
    with image size. Pass only ``x, x_rec`` for a one-directional cycle (e.g. an SR
    output downscaled back must reproduce its LR input).

    Args:
        x: (N, ...) originals of domain X (any value range, e.g. images in [0, 1]).
        x_rec: (N, ...) their reconstructions F(G(x)), same shape.
        y, y_rec: optional second direction, G(F(y)) vs y; both or neither.

    Returns:
        scalar tensor >= 0.
    """
    if (y is None) != (y_rec is None):
        raise ValueError("cycle_consistency_loss: pass both y and y_rec for the backward cycle, or neither")
    pairs = [("x", x, x_rec)] + ([("y", y, y_rec)] if y is not None else [])
    loss = None
    for name, a, b in pairs:
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            raise TypeError(f"cycle_consistency_loss: {name} and {name}_rec must be tensors")
        if a.shape != b.shape:
            raise ValueError(
                f"cycle_consistency_loss: {name} has shape {tuple(a.shape)} but {name}_rec has {tuple(b.shape)}; "
                "the cycle must map back to the input size"
            )
        term = (b - a).abs().mean()
        loss = term if loss is None else loss + term
    return loss


def autoencoder_loss(x: Tensor, reconstruction: Tensor) -> Tensor:
    """BEGAN's auto-encoder loss ``L(v) = |v - D(v)|_1``, here the mean absolute error over all elements.

    Args:
        x: (N, C, H, W) (or any (N, ...)) inputs of the auto-encoder discriminator.
        reconstruction: D(x), same shape.
    """
    if x.shape != reconstruction.shape:
        raise ValueError(
            f"autoencoder_loss: the discriminator returned shape {tuple(reconstruction.shape)} for input "
            f"{tuple(x.shape)}; a BEGAN discriminator must reconstruct its input "
            "(lightface.models.autoencoder_discriminator.AutoencoderDiscriminator)"
        )
    return (x - reconstruction).abs().mean()


class BEGANController:
    """BEGAN equilibrium controller (Berthelot et al. 2017) for auto-encoder discriminators.

    With ``L(v) = |v - D(v)|_1``:

    * discriminator loss ``L_D = L(x) - k_t * L(G(z))``; generator loss ``L_G = L(G(z))``;
    * ``k_{t+1} = clip(k_t + lambda_k * (gamma * L(x) - L(G(z))), 0, 1)``, which steers
      the diversity ratio ``E L(G(z)) / E L(x)`` towards ``gamma`` (lower gamma: less
      diversity, sharper samples);
    * convergence measure ``M_global = L(x) + |gamma * L(x) - L(G(z))|`` (decreases as
      training converges; log it).

    Args:
        gamma: target diversity ratio in (0, 1].
        lambda_k: proportional gain of the k_t update (0.001 in the paper).
        k_init: initial k_0 in [0, 1] (0 in the paper).
    """

    def __init__(self, gamma: float = 0.5, lambda_k: float = 1e-3, k_init: float = 0.0):
        if not 0.0 < float(gamma) <= 1.0:
            raise ValueError(f"BEGAN gamma must be in (0, 1], got {gamma}")
        if float(lambda_k) < 0:
            raise ValueError(f"BEGAN lambda_k must be >= 0, got {lambda_k}")
        if not 0.0 <= float(k_init) <= 1.0:
            raise ValueError(f"BEGAN k_init must be in [0, 1], got {k_init}")
        self.gamma = float(gamma)
        self.lambda_k = float(lambda_k)
        self.k = float(k_init)

    def discriminator_loss(self, loss_real: Tensor, loss_fake: Tensor) -> Tensor:
        """``L(x) - k_t * L(G(z))`` with the current k_t (scalar tensors in, scalar tensor out)."""
        return loss_real - self.k * loss_fake

    def convergence(self, loss_real: float, loss_fake: float) -> float:
        """``M_global = L(x) + |gamma * L(x) - L(G(z))|``."""
        loss_real, loss_fake = float(loss_real), float(loss_fake)
        return loss_real + abs(self.gamma * loss_real - loss_fake)

    def update(self, loss_real: float, loss_fake: float) -> float:
        """One k_t step from this iteration's L(x) and L(G(z)) (floats or scalar tensors); returns the new k."""
        loss_real, loss_fake = float(loss_real), float(loss_fake)
        if not (math.isfinite(loss_real) and math.isfinite(loss_fake)):
            raise FloatingPointError(f"BEGAN update got non-finite losses L(x)={loss_real}, L(G(z))={loss_fake}")
        self.k = min(max(self.k + self.lambda_k * (self.gamma * loss_real - loss_fake), 0.0), 1.0)
        return self.k

    def state_dict(self) -> Dict[str, float]:
        """``{"k_t", "gamma", "lambda_k"}`` (plain floats; weights_only-safe)."""
        return {"k_t": self.k, "gamma": self.gamma, "lambda_k": self.lambda_k}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        """Restore k_t (gamma / lambda_k stay as configured, so a resumed run may change them)."""
        if "k_t" not in state:
            raise KeyError(f"BEGAN state has no 'k_t' (keys: {sorted(state)})")
        k = float(state["k_t"])
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"BEGAN state k_t={k} is outside [0, 1]")
        self.k = k

    def __repr__(self) -> str:
        return f"BEGANController(gamma={self.gamma}, lambda_k={self.lambda_k}, k={self.k:.6g})"
