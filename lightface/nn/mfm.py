"""Max-Feature-Map layers (Wu et al., "A Light CNN for Deep Face Representation with Noisy Labels").

``MFMConv2d`` / ``MFMLinear`` hold their affine part in ``.filter`` (the name the
official Light CNN code uses, so released checkpoints load key for key); it produces
2*out (or 3*out/2 ... see the 3/2 variants) channels which MFM reduces to ``out``. They take
what their inner layer takes: ``MFMConv2d`` batched (N, in, H, W) or unbatched (in, H, W)
images (MFM along dim -3, the channels), ``MFMLinear`` (*, in) (MFM along dim -1, the features).
"""
from torch import Tensor, nn

from .. import ops

__all__ = ["MFM", "MFM3_2", "MFMConv2d", "MFMConv2d3_2", "MFMLinear", "MFMLinear3_2"]


class MFM(nn.Module):
    """MFM 2/1 along ``dim``: (N, 2C, ...) -> (N, C, ...), ``max`` of first vs second half."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.mfm(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class MFM3_2(nn.Module):
    """MFM 3/2 along ``dim``: (N, 3C, ...) -> (N, 2C, ...), ``cat([max, median])`` of the thirds."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.mfm_3_2(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class MFMConv2d(nn.Module):
    """Conv2d to ``2*out_channels`` followed by MFM 2/1: (N, in, H, W) -> (N, out, H', W') (or unbatched)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1, bias: bool = True):
        super().__init__()
        self.filter = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding, bias=bias)
        self.mfm = MFM(-3)

    def forward(self, x: Tensor) -> Tensor:
        return self.mfm(self.filter(x))


class MFMLinear(nn.Module):
    """Linear to ``2*out_features`` followed by MFM 2/1: (*, in) -> (*, out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.filter = nn.Linear(in_features, 2 * out_features, bias=bias)
        self.mfm = MFM(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.mfm(self.filter(x))


def _three_halves(out: int) -> int:
    if out % 2:
        raise ValueError(f"MFM 3/2 layers need an even number of output channels, got out={out}")
    return 3 * out // 2


class MFMConv2d3_2(nn.Module):
    """Conv2d to ``3*out/2`` channels followed by MFM 3/2: (N, in, H, W) -> (N, out, H', W') (or unbatched);
    ``out`` even."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1, bias: bool = True):
        super().__init__()
        self.filter = nn.Conv2d(in_channels, _three_halves(out_channels), kernel_size, stride, padding, bias=bias)
        self.mfm = MFM3_2(-3)

    def forward(self, x: Tensor) -> Tensor:
        return self.mfm(self.filter(x))


class MFMLinear3_2(nn.Module):
    """Linear to ``3*out/2`` features followed by MFM 3/2: (*, in) -> (*, out); ``out`` even."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.filter = nn.Linear(in_features, _three_halves(out_features), bias=bias)
        self.mfm = MFM3_2(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.mfm(self.filter(x))
