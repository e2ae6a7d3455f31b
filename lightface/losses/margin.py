"""Additive-margin softmax losses on the unit sphere: CosFace and ArcFace.

* CosFace (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
  CVPR 2018; also AM-Softmax): the target class's cosine ``cos t`` becomes ``cos t - m``.
* ArcFace (Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
  Recognition", CVPR 2019): the target angle ``t`` becomes ``t + m``, i.e. ``cos(t + m)``;
  where ``t + m`` would pass pi (``cos t <= cos(pi - m)``) the target logit continues as
  ``cos t - m sin m`` so that it keeps falling as ``t`` grows.

Both then multiply every logit by the scale ``s`` and take cross-entropy. Their input is
the ``(N, C)`` cosine matrix of a :class:`lightface.models.lightcnn.CosineClassifier`
(features and class weights L2-normalised), not ordinary logits: ``train_lightcnn --loss
cosface|arcface`` builds the Light CNN with ``cosine_classifier=True``. The margin makes
each identity's features cluster more tightly than softmax cross-entropy needs, which is
what open-set identification against a large gallery rewards.
"""
import math
from typing import Dict, Optional, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MarginSoftmaxLoss", "CosFaceLoss", "ArcFaceLoss", "MARGIN_LOSSES"]


class MarginSoftmaxLoss(nn.Module):
    """Cross-entropy of ``scale *`` cosines, with the target cosine moved by :meth:`target_logit`.

    Args:
        margin: the subclass's margin (CosFace: cosine units; ArcFace: radians).
        scale: ``s``, the radius of the sphere the logits live on.
    Input: ``cosine`` (N, C) in [-1, 1] (float), ``target`` (N,) int64 class indices.
    """

    default_margin = 0.0

    def __init__(self, margin: Optional[float] = None, scale: float = 30.0):
        super().__init__()
        self.margin = float(self.default_margin if margin is None else margin)
        self.scale = float(scale)
        if self.margin < 0 or self.scale <= 0:
            raise ValueError(f"{type(self).__name__}: margin must be >= 0 and scale > 0, "
                             f"got {self.margin}, {self.scale}")

    def target_logit(self, cos: Tensor) -> Tensor:
        """The target class's cosine after the margin (same shape as ``cos``)."""
        raise NotImplementedError

    def forward(self, cosine: Tensor, target: Tensor) -> Tensor:
        if cosine.dim() != 2 or target.shape != cosine.shape[:1]:
            raise ValueError(f"{type(self).__name__}: expected cosine (N, C) and target (N,), got "
                             f"{tuple(cosine.shape)} and {tuple(target.shape)}")
        cosine = cosine.float().clamp(-1.0, 1.0)
        index = target.long().unsqueeze(1)
        moved = self.target_logit(cosine.gather(1, index))
        return F.cross_entropy(self.scale * cosine.scatter(1, index, moved), target.long())

    def extra_repr(self) -> str:
        return f"margin={self.margin}, scale={self.scale}"


class CosFaceLoss(MarginSoftmaxLoss):
    """CosFace / AM-Softmax: target logit ``s (cos t - m)``; default m = 0.35."""

    default_margin = 0.35

    def target_logit(self, cos: Tensor) -> Tensor:
        return cos - self.margin


class ArcFaceLoss(MarginSoftmaxLoss):
    """ArcFace: target logit ``s cos(t + m)``; default m = 0.5 rad."""

    default_margin = 0.5

    def target_logit(self, cos: Tensor) -> Tensor:
        m = self.margin
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-7))
        shifted = cos * math.cos(m) - sin * math.sin(m)
        return torch.where(cos > math.cos(math.pi - m), shifted, cos - m * math.sin(m))


#: ``train_lightcnn --loss`` names of the margin losses (they need a cosine classifier)
MARGIN_LOSSES: Dict[str, Type[MarginSoftmaxLoss]] = {"cosface": CosFaceLoss, "arcface": ArcFaceLoss}
