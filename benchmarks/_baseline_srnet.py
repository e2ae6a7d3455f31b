"""Plain-PyTorch Wavelet-SRNet, the reference column of ``python -m benchmarks.sr``.

Written from the paper's description (Huang, He, Sun, Tan, "Wavelet-SRNet: A Wavelet-based
CNN for Multi-scale Face Super Resolution", ICCV 2017): an *embedding net* of 3x3 convolutions
and residual blocks at the low-resolution size, a *wavelet prediction net* of parallel
subnets that each output some of the wavelet-packet coefficient maps, and a
*reconstruction net* that inverts the Haar wavelet packet. Here every piece is done the
straightforward way: the Haar transform one level at a time on the 2x2 pixel blocks
(strided slicing for analysis, arithmetic on the four subbands and interleaved assignment
for synthesis), the subnets' outputs re-ordered with plain indexing.

The layer shapes follow lightface's ``WaveletSRNet`` hyper-parameters (3x3 convs,
LeakyReLU(0.2), residual blocks scaled by 0.2, a global skip over the blocks, ``head_groups``
subnets, the bicubic residual base) and the parameter names match its state dict, so
``BaselineWaveletSRNet(...).load_state_dict(model.state_dict())`` runs the same weights and
the outputs can be compared. Nothing here uses lightface.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BaselineWaveletSRNet", "haar_analysis", "haar_synthesis", "build_baseline_srnet"]


def _haar_level(x):
    """One Haar level on 2x2 blocks: (N, K, H, W) -> a, h, v, d, each (N, K, H/2, W/2)."""
    x00, x01 = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
    x10, x11 = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    return ((x00 + x01 + x10 + x11) / 2, (x00 + x01 - x10 - x11) / 2,
            (x00 - x01 + x10 - x11) / 2, (x00 - x01 - x10 + x11) / 2)


def _haar_level_inverse(a, h, v, d):
    """Inverse of :func:`_haar_level`: four (N, K, h, w) subbands -> (N, K, 2h, 2w)."""
    n, k, hh, ww = a.shape
    out = a.new_empty(n, k, 2 * hh, 2 * ww)
    out[:, :, 0::2, 0::2] = (a + h + v + d) / 2
    out[:, :, 0::2, 1::2] = (a + h - v - d) / 2
    out[:, :, 1::2, 0::2] = (a - h + v - d) / 2
    out[:, :, 1::2, 1::2] = (a - h - v + d) / 2
    return out


def haar_analysis(x, levels):
    """Full Haar packet of ``levels`` levels, recursively: (N, C, H, W) -> (N, C * 4**levels, H/2**L, W/2**L).

    Per input channel the subbands are ordered by the first (finest) level's band, then the
    next level's, with bands a, h, v, d (PyWavelets' packet node order)."""
    n, c, hgt, wid = x.shape
    bands = [x.reshape(n * c, 1, hgt, wid)]
    for _ in range(levels):
        bands = [sub for band in bands for sub in _haar_level(band)]
    s = 2**levels
    return torch.cat(bands, 1).reshape(n, c * 4**levels, hgt // s, wid // s)


def haar_synthesis(coeffs, levels):
    """Inverse of :func:`haar_analysis`, one level at a time: every run of four consecutive
    subbands (the coarsest level's a, h, v, d) becomes one subband of the level above."""
    n, k, hgt, wid = coeffs.shape
    c = k // 4**levels
    x = coeffs.reshape(n * c, 4**levels, hgt, wid)
    for _ in range(levels):
        groups = x.shape[1] // 4
        x = torch.cat([_haar_level_inverse(*(x[:, 4 * g + b: 4 * g + b + 1] for b in range(4)))
                       for g in range(groups)], 1)
    return x.reshape(n, c, x.shape[-2], x.shape[-1])


class _Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + 0.2 * self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class _Subnet(nn.Sequential):
    def __init__(self, cin, hidden, cout):
        super().__init__(nn.Conv2d(cin, hidden, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, cout, 3, padding=1))


class BaselineWaveletSRNet(nn.Module):
    """LR (N, C, h, w) in [0, 1] -> SR (N, C, h*scale, w*scale), the paper's three nets in plain PyTorch."""

    def __init__(self, scale=4, in_channels=3, channels=64, num_blocks=8, head_channels=64, head_groups=4,
                 residual="bicubic"):
        super().__init__()
        self.scale, self.levels, self.c = scale, int(math.log2(scale)), in_channels
        self.residual = residual
        self.embed_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_Block(channels) for _ in range(num_blocks)])
        self.embed_out = nn.Conv2d(channels, channels, 3, padding=1)
        per_subnet = in_channels * 4**self.levels // head_groups
        self.heads = nn.ModuleList(_Subnet(channels, head_channels, per_subnet) for _ in range(head_groups))

    def coefficients(self, lr):
        """(N, C, h, w) -> (N, C * 4**L, h, w): each subnet gives, per colour, a contiguous run of subbands."""
        feat = self.embed_in(lr)
        feat = feat + self.embed_out(self.blocks(feat))
        outs = [head(feat) for head in self.heads]
        per = outs[0].shape[1] // self.c  # subbands per colour per subnet
        # colour-major order: colour c takes its slice of every subnet in turn
        delta = torch.cat([o[:, c * per:(c + 1) * per] for c in range(self.c) for o in outs], 1)
        if self.residual == "bicubic":
            up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
            delta = haar_analysis(up, self.levels) + delta
        return delta

    def forward(self, lr):
        return haar_synthesis(self.coefficients(lr), self.levels)


def build_baseline_srnet(model):
    """The baseline with ``model``'s (a lightface ``WaveletSRNet``) shape and weights, on its device, eval mode."""
    heads = model.heads
    ref = BaselineWaveletSRNet(
        scale=model.scale, in_channels=model.in_channels, channels=model.embed_in.out_channels,
        num_blocks=len(model.blocks), head_channels=heads[0][0].out_channels, head_groups=len(heads),
        residual=model.residual,
    )
    ref.load_state_dict(model.state_dict())
    return ref.to(next(model.parameters()).device).train(model.training)
