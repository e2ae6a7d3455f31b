"""Wavelet-SRNet-style face super-resolution (Huang et al., "Wavelet-SRNet", ICCV 2017).

The network never works at the output resolution. An embedding network of residual
blocks maps the low-resolution (LR) face to features at LR size; wavelet-prediction
heads, one per group of subbands, predict the ``4**L`` Haar wavelet-packet coefficients
of the high-resolution (HR) face (``L = log2(scale)`` levels, each coefficient map has
the LR size); the fixed inverse packet transform (:class:`lightface.nn.WaveletPacket2d`)
turns them into the HR image. Coarser outputs come from the same coefficients: the
subbands whose path starts with ``"a" * (L - k)`` synthesise, over ``k`` levels, the HR
image downscaled by ``2**(L - k)`` (times ``2**(L - k)``, the Haar approximation gain),
so one forward pass gives the 2x, 4x, ... reconstructions as well.

Unlike the paper, the heads by default predict a *residual* over the packet coefficients
of the bicubic upsampling of the input (``residual="bicubic"``), with the last layer of
each head zero-initialised: an untrained model is exactly bicubic, and training only has
to learn the missing detail.
"""
import math
from typing import Dict, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.wavelet import WaveletPacket2d
from .registry import register_model

__all__ = ["WaveletSRNet", "SROutput", "wavelet_srnet", "SCALES"]

SCALES = (2, 4, 8, 16)


class SROutput(NamedTuple):
    """Everything one forward pass produces (images RGB float, nominally in [0, 1], not clamped).

    sr: (N, C, h*scale, w*scale) the super-resolved image.
    coeffs: (N, C * 4**L, h, w) predicted wavelet-packet coefficients of ``sr`` (channel order of
        :class:`~lightface.nn.WaveletPacket2d`).
    pyramid: ``{factor: (N, C, h*factor, w*factor)}`` for every factor 1, 2, 4, ..., scale,
        all synthesised from ``coeffs`` (``pyramid[scale]`` is ``sr``).
    """

    sr: Tensor
    coeffs: Tensor
    pyramid: Dict[int, Tensor]


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.conv2(self.act(self.conv1(x)))


class WaveletSRNet(nn.Module):
    """Super-resolve RGB faces by ``scale`` (2, 4, 8 or 16) through wavelet-packet prediction.

    Args:
        scale: upscaling factor; the packet transform has ``log2(scale)`` levels.
        output_size: nominal HR face size (square); the model input size is
            ``output_size // scale``. The network is fully convolutional, so other sizes
            work too; this value tells :class:`~lightface.SuperResolver` what crop to make.
        in_channels: image channels (3 for RGB).
        channels: feature width of the embedding network.
        num_blocks: residual blocks in the embedding network.
        head_channels: hidden width of each wavelet-prediction head.
        head_groups: number of heads; the ``4**L`` subbands are split into this many
            contiguous groups (grouped by their coarse-level ancestors: group 0 of 4 holds
            every subband under PyWavelets node ``"a"``). Must divide ``4**L``.
        residual: ``"bicubic"`` predicts coefficients as a residual over the bicubic
            upsampling (an untrained model equals bicubic); ``"none"`` predicts them directly.

    Input: (N, in_channels, h, w) float in [0, 1] (RGB order by project convention), h and w
    any size. ``forward`` returns the (N, in_channels, h*scale, w*scale) SR image (not
    clamped); :meth:`forward_all` also returns the coefficients and the coarser outputs.
    """

    def __init__(
        self,
        scale: int = 4,
        output_size: int = 128,
        in_channels: int = 3,
        channels: int = 64,
        num_blocks: int = 8,
        head_channels: int = 64,
        head_groups: int = 4,
        residual: str = "bicubic",
    ):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if output_size % scale:
            raise ValueError(f"output_size {output_size} is not divisible by scale {scale}")
        if residual not in ("bicubic", "none"):
            raise ValueError(f"residual must be 'bicubic' or 'none', got {residual!r}")
        self.scale = scale
        self.levels = int(math.log2(scale))
        self.output_size = output_size
        self.input_size = output_size // scale
        self.in_channels = in_channels
        self.residual = residual
        num_subbands = 4**self.levels
        if head_groups < 1 or num_subbands % head_groups:
            raise ValueError(f"head_groups must divide 4**levels = {num_subbands}, got {head_groups}")
        self.head_groups = head_groups
        self.wavelet = WaveletPacket2d(self.levels)

        self.embed_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResidualBlock(channels, 0.2) for _ in range(num_blocks)])
        self.embed_out = nn.Conv2d(channels, channels, 3, padding=1)
        per_group = in_channels * num_subbands // head_groups
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, head_channels, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(head_channels, per_group, 3, padding=1),
            )
            for _ in range(head_groups)
        )
        if residual == "bicubic":
            for head in self.heads:
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)

    def bicubic(self, lr: Tensor) -> Tensor:
        """Bicubic upsampling of ``lr`` by ``scale`` (no clamping), the residual base."""
        return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)

    def predict_coefficients(self, lr: Tensor) -> Tensor:
        """(N, C, h, w) LR -> (N, C * 4**L, h, w) wavelet-packet coefficients of the SR image."""
        if lr.dim() != 4 or lr.shape[1] != self.in_channels:
            raise ValueError(
                f"WaveletSRNet expects (N, {self.in_channels}, h, w) images in [0, 1], got shape {tuple(lr.shape)}"
            )
        n, c, h, w = lr.shape
        feat = self.embed_in(lr)
        feat = feat + self.embed_out(self.blocks(feat))
        groups = [head(feat) for head in self.heads]  # each (N, C * S/G, h, w), colour-major
        delta = torch.stack([g.view(n, c, -1, h, w) for g in groups], dim=2).reshape(n, -1, h, w)
        if self.residual == "bicubic":
            return self.wavelet(self.bicubic(lr)) + delta
        return delta

    def synthesize(self, coeffs: Tensor, factor: Optional[int] = None) -> Tensor:
        """Image at ``factor`` x the LR size (1 <= factor <= scale, power of 2) from full coefficients.

        ``factor = scale`` is the full inverse transform; a smaller factor keeps only the
        subbands under the approximation node ``"a" * (L - k)`` (``k = log2(factor)``) and
        undoes the Haar gain ``2**(L - k)``, giving the SR image area-downscaled by ``scale / factor``.
        """
        factor = self.scale if factor is None else factor
        if factor not in [2**k for k in range(self.levels + 1)]:
            raise ValueError(f"factor must be a power of 2 between 1 and {self.scale}, got {factor}")
        k = int(math.log2(factor))
        n, _, h, w = coeffs.shape
        grouped = coeffs.view(n, self.in_channels, 4**self.levels, h, w)[:, :, : 4**k]
        gain = 2 ** (self.levels - k)
        if k == 0:
            return grouped[:, :, 0] / gain
        inverse = self.wavelet if k == self.levels else WaveletPacket2d(k).to(coeffs.device)
        return inverse.inverse(grouped.reshape(n, -1, h, w)) / gain

    def forward_all(self, lr: Tensor) -> SROutput:
        """LR (N, C, h, w) in [0, 1] -> :class:`SROutput` (SR image, coefficients, all coarser outputs)."""
        return self.forward(lr, return_all=True)

    def forward(self, lr: Tensor, return_all: bool = False):
        """LR (N, C, h, w) RGB in [0, 1] -> SR (N, C, h*scale, w*scale), not clamped.

        ``return_all=True`` returns an :class:`SROutput` instead (use this form through DDP,
        whose gradient hooks attach to ``forward``).
        """
        coeffs = self.predict_coefficients(lr)
        if not return_all:
            return self.wavelet.inverse(coeffs)
        pyramid = {2**k: self.synthesize(coeffs, 2**k) for k in range(self.levels + 1)}
        return SROutput(pyramid[self.scale], coeffs, pyramid)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, input_size={self.input_size}, output_size={self.output_size}, residual={self.residual!r}"


@register_model("wavelet_srnet", task="super_resolution")
def wavelet_srnet(**kwargs) -> WaveletSRNet:
    """Registry builder: ``get_model("wavelet_srnet", scale=4, output_size=128, ...)`` (see :class:`WaveletSRNet`)."""
    return WaveletSRNet(**kwargs)
