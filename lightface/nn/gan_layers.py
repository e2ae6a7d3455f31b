"""Discriminator layers against mode collapse: minibatch discrimination and minibatch std-dev.

Both look across the samples of a batch, so a discriminator using them can tell a
collapsed (too similar) batch of fakes from a varied batch of real samples. Feed real
and generated samples in separate forward calls (as :mod:`lightface.engine.gan` does).
"""
import math

import torch
from torch import Tensor, nn

__all__ = ["MinibatchDiscrimination", "MinibatchStdDev"]


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al., "Improved Techniques for Training GANs", 2016).

    For features ``f(x_i)`` (N, A) and a learned tensor ``T`` (A, B, C):
    ``M_i = f(x_i) T`` (B, C); ``c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_1)``;
    ``o(x_i)_b = sum_{j != i} c_b(x_i, x_j)``; the output is ``cat([f(x_i), o(x_i)])``
    (N, A + B). The paper's sum also runs over j = i, which only adds the constant 1;
    it is left out here so that a batch of one gives o = 0.

    Args:
        in_features: A.
        out_features: B, the number of similarity kernels appended.
        kernel_dims: C, the dimension each kernel compares in.
        init_std: standard deviation of the normal initialisation of T, divided by sqrt(A). Small
            values keep the kernel distances short at the start, so exp(-d) is not ~0 for every
            pair and the generator gets a gradient (with 1.0 the 8-Gaussian benchmark diverged).

    Shape: (N, A) -> (N, A + B), any float dtype.
    """

    def __init__(self, in_features: int, out_features: int = 16, kernel_dims: int = 8, init_std: float = 0.1):
        super().__init__()
        if min(in_features, out_features, kernel_dims) < 1:
            raise ValueError(
                f"MinibatchDiscrimination sizes must be >= 1, got in={in_features}, out={out_features}, "
                f"kernel_dims={kernel_dims}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_dims = kernel_dims
        self.T = nn.Parameter(torch.empty(in_features, out_features, kernel_dims))
        nn.init.normal_(self.T, 0.0, init_std / math.sqrt(in_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"MinibatchDiscrimination expects (N, {self.in_features}) features, got {tuple(x.shape)}; "
                "flatten the discriminator's penultimate activations first"
            )
        m = (x @ self.T.reshape(self.in_features, -1)).reshape(-1, self.out_features, self.kernel_dims)
        # (N, N, B) L1 distances per kernel; plain broadcasting ops, not torch.cdist, which has no double
        # backward (the WGAN-GP gradient penalty differentiates through this layer twice)
        dist = (m.unsqueeze(1) - m.unsqueeze(0)).abs().sum(dim=3)
        o = torch.exp(-dist).sum(dim=1) - 1.0  # (N, B); drop the j == i term, exp(0) = 1
        return torch.cat([x, o], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel_dims={self.kernel_dims}"


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al., "Progressive Growing of GANs", ICLR 2018).

    The batch is split into groups of ``group_size`` samples (sample i belongs to group
    ``i % (N / G)``, as in ProGAN); within a group the standard deviation of every
    feature and position is taken (``sqrt(var + eps)``, population variance), averaged
    over channels and positions (per slice of ``num_channels`` channel groups), and
    appended as ``num_channels`` constant feature maps to every sample of the group.

    Shape: (N, C, *spatial) -> (N, C + num_channels, *spatial); also (N, F) -> (N, F + num_channels).
    ``group_size`` is reduced to N when the batch is smaller; N must then be divisible by it.

    Args:
        group_size: samples per statistics group (4 in ProGAN).
        num_channels: number of appended statistics (1 in ProGAN); must divide C.
        eps: added to the variance before the square root.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1, eps: float = 1e-8):
        super().__init__()
        if group_size < 1 or num_channels < 1:
            raise ValueError(f"group_size and num_channels must be >= 1, got {group_size}, {num_channels}")
        self.group_size = group_size
        self.num_channels = num_channels
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(f"MinibatchStdDev expects (N, C, ...) input, got shape {tuple(x.shape)}")
        n, c = x.shape[:2]
        spatial = x.shape[2:]
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(
                f"MinibatchStdDev: batch size {n} is not divisible by group_size {g}; "
                "use a batch size that is a multiple of the group size"
            )
        if c % self.num_channels:
            raise ValueError(f"MinibatchStdDev: {c} channels are not divisible by num_channels={self.num_channels}")
        f = self.num_channels
        y = x.reshape(g, n // g, f, c // f, *spatial)
        y = (y.var(dim=0, unbiased=False) + self.eps).sqrt()  # (M, F, C/F, *spatial)
        y = y.reshape(n // g, f, -1).mean(dim=2)  # (M, F)
        y = y.repeat(g, 1).reshape(n, f, *([1] * len(spatial))).expand(n, f, *spatial)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
