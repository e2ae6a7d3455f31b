"""Classification losses for noisy identity labels: cross-entropy and Reed et al.'s bootstrapping.

Reed, Lee, Anguelov, Szegedy, Erhan, Rabinovich, "Training Deep Neural Networks on
Noisy Labels with Bootstrapping" (ICLR 2015 workshop, arXiv:1412.6596). With ``q`` the
softmax of the logits and ``t`` the one-hot (possibly wrong) label, the target is a
convex mix of the label and the model's own belief:

* soft bootstrapping: ``L = -sum_k (beta * t_k + (1 - beta) * q_k) * log q_k``, beta = 0.95.
  The ``q_k`` inside the target is *not* detached: as in the paper this equals
  ``beta * CE + (1 - beta) * H(q)``, cross-entropy plus a minimum-entropy regulariser.
* hard bootstrapping: ``L = -sum_k (beta * t_k + (1 - beta) * z_k) * log q_k`` with
  ``z = one_hot(argmax q)``, beta = 0.8; i.e. ``beta * CE(label) + (1 - beta) * CE(argmax)``.

``beta = 1`` gives plain cross-entropy in both cases.
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .margin import MARGIN_LOSSES

__all__ = [
    "soft_bootstrap_loss",
    "hard_bootstrap_loss",
    "SoftBootstrappingLoss",
    "HardBootstrappingLoss",
    "LOSSES",
    "build_classification_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check(logits: Tensor, target: Tensor, beta: float, reduction: str) -> None:
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError("logits and target must be tensors")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, num_classes), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor, got {logits.dtype}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be (N,) = ({logits.shape[0]},) class indices, got shape {tuple(target.shape)}")
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"target must hold integer class indices, got {target.dtype}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def soft_bootstrap_loss(logits: Tensor, target: Tensor, beta: float = 0.95, reduction: str = "mean") -> Tensor:
    """Soft bootstrapping loss (Reed et al. 2014).

    Args:
        logits: (N, K) float class scores (unnormalised).
        target: (N,) integer labels in [0, K).
        beta: weight of the given label; ``1 - beta`` goes to the model's softmax ``q``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` ((N,) per-sample losses).

    Returns:
        ``-sum_k (beta t_k + (1-beta) q_k) log q_k``, reduced; computed in float32 or wider.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0]]); soft_bootstrap_loss(logits, torch.tensor([1]), beta=1.0)
        tensor(2.1269)
    """
    _check(logits, target, beta, reduction)
    log_q = F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=1)
    ce = F.nll_loss(log_q, target.long(), reduction="none")
    entropy = -(log_q.exp() * log_q).sum(dim=1)
    return _reduce(beta * ce + (1.0 - beta) * entropy, reduction)


def hard_bootstrap_loss(logits: Tensor, target: Tensor, beta: float = 0.8, reduction: str = "mean") -> Tensor:
    """Hard bootstrapping loss (Reed et al. 2014).

    Args:
        logits: (N, K) float class scores (unnormalised).
        target: (N,) integer labels in [0, K).
        beta: weight of the given label; ``1 - beta`` goes to the model's arg-max class.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` ((N,) per-sample losses).

    Returns:
        ``-beta log q_t - (1-beta) log q_argmax``, reduced; computed in float32 or wider.

    Example:
        >>> hard_bootstrap_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([1]), beta=0.5)
        tensor(1.1269)
    """
    _check(logits, target, beta, reduction)
    log_q = F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=1)
    ce = F.nll_loss(log_q, target.long(), reduction="none")
    predicted = log_q.detach().argmax(dim=1)
    ce_pred = F.nll_loss(log_q, predicted, reduction="none")
    return _reduce(beta * ce + (1.0 - beta) * ce_pred, reduction)


class SoftBootstrappingLoss(nn.Module):
    """Module form of :func:`soft_bootstrap_loss`: ``loss(logits (N,K), target (N,))``."""

    def __init__(self, beta: float = 0.95, reduction: str = "mean"):
        super().__init__()
        self.beta, self.reduction = beta, reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_bootstrap_loss(logits, target, self.beta, self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"


class HardBootstrappingLoss(nn.Module):
    """Module form of :func:`hard_bootstrap_loss`: ``loss(logits (N,K), target (N,))``."""

    def __init__(self, beta: float = 0.8, reduction: str = "mean"):
        super().__init__()
        self.beta, self.reduction = beta, reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return hard_bootstrap_loss(logits, target, self.beta, self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"


#: the ``--loss`` names that take a ``beta``
BOOTSTRAP_LOSSES = ("soft-bootstrap", "hard-bootstrap")

#: ``--loss`` names -> loss module classes
LOSSES: Dict[str, Callable[..., nn.Module]] = {
    "ce": nn.CrossEntropyLoss,
    "soft-bootstrap": SoftBootstrappingLoss,
    "hard-bootstrap": HardBootstrappingLoss,
    **MARGIN_LOSSES,
}


def build_classification_loss(name: str, beta: Optional[float] = None, margin: Optional[float] = None,
                              scale: float = 30.0) -> nn.Module:
    """The loss module for ``--loss`` ``name`` (``ce`` | ``soft-bootstrap`` | ``hard-bootstrap``
    | ``cosface`` | ``arcface``).

    ``beta=None`` keeps the paper's value (0.95 soft, 0.8 hard); it is ignored for ``ce``.
    ``margin`` (None: the loss's default, CosFace 0.35, ArcFace 0.5) and ``scale`` are the
    margin losses' (:mod:`lightface.losses.margin`; they take a cosine classifier's output).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name in MARGIN_LOSSES:
        return MARGIN_LOSSES[name](margin=margin, scale=scale)
    return LOSSES[name]() if beta is None else LOSSES[name](beta=beta)
