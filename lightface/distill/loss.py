"""The student side of embedding distillation: a projection head and a cosine loss."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DistillHead", "distill_loss"]


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
