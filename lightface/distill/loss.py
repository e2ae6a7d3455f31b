"""The student side of embedding distillation: a projection head, a cosine loss, and a
similarity-preserving (relational) loss on the student's own features."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DistillHead", "distill_loss", "relation_loss"]


class DistillHead(nn.Module):
    """Linear projection of the student's features (N, in_dim) to the teacher's space (N, out_dim).

    Trained jointly with the backbone and thrown away afterwards (the released model is
    the plain Light CNN); a linear head keeps the knowledge in the backbone's features.
    """

    def __init__(self, in_dim: int = 256, out_dim: int = 128):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.proj(features)


def distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean ``1 - cos(student, teacher)`` over the rows whose teacher embedding is finite.

    Args:
        student: (N, D) projected student features, any float dtype.
        teacher: (N, D) teacher embeddings; rows with NaN (teacher failed) are ignored.
    Returns:
        a scalar float32 tensor (0 when no row has a teacher embedding).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} embeddings differ in shape")
    valid = torch.isfinite(teacher).all(dim=1)
    if not bool(valid.any()):
        return student.float().sum() * 0.0
    cos = F.cosine_similarity(student[valid].float(), teacher[valid].float(), dim=1)
    return (1.0 - cos).mean()


def relation_loss(features: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared difference between the student's and the teacher's pairwise cosines in a batch.

    Unlike :func:`distill_loss`, which reaches the backbone through the projection head,
    this acts on the features the released model is compared by: every pair of faces in the
    batch should be as similar to the student as to the teacher (Tung & Mori's
    similarity-preserving distillation, with cosines).

    Args:
        features: (N, F) student features (the backbone's output), any float dtype.
        teacher: (N, D) teacher embeddings (``F`` and ``D`` may differ); rows with NaN are ignored.
    Returns:
        a scalar float32 tensor over the off-diagonal pairs of valid rows (0 with fewer than two).
    """
    if len(features) != len(teacher):
        raise ValueError(f"{len(features)} student rows and {len(teacher)} teacher rows")
    valid = torch.isfinite(teacher).all(dim=1)
    if int(valid.sum()) < 2:
        return features.float().sum() * 0.0
    s = F.normalize(features[valid].float(), dim=1)
    t = F.normalize(teacher[valid].float(), dim=1)
    off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    return ((s @ s.T - t @ t.T)[off] ** 2).mean()
