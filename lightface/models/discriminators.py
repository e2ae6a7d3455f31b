"""Discriminators for the face generators: on images, or on Haar wavelet-packet coefficients (WaveletGAN).

Both follow the project's discriminator contract: ``D(x)`` returns logits (N, 1);
``D(x, return_features=True)`` returns ``(logits, features)``, ``features`` a list of the
intermediate activations, the last one the penultimate representation (N, F) used by
feature matching and the pull-away term. Constructors take ``minibatch_discrimination``
(Salimans et al. 2016, appended to the (N, F) features) and ``minibatch_std`` (Karras et
al. 2018, a standard-deviation channel appended before the last convolution).
"""
from typing import List, Tuple, Union

import torch
from torch import Tensor, nn

from ..nn.gan_layers import MinibatchDiscrimination, MinibatchStdDev
from ..nn.wavelet import WaveletPacket2d
from .registry import register_model

__all__ = ["ImageDiscriminator", "WaveletDiscriminator", "image_discriminator", "wavelet_discriminator"]


class _ConvTrunk(nn.Module):
    """Strided conv blocks -> global average pool -> (optional minibatch discrimination) -> linear logit."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_blocks: int,
        max_channels: int,
        minibatch_discrimination: bool,
        minibatch_std: bool,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.blocks = nn.ModuleList()
        c_in = in_channels
        for i in range(num_blocks):
            c_out = min(channels * 2**i, max_channels)
            self.blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, padding=1),
                    nn.LeakyReLU(0.2, inplace=True),
                    nn.Conv2d(c_out, c_out, 4, stride=2, padding=1),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            c_in = c_out
        self.minibatch_std = None
        if minibatch_std:
            self.minibatch_std = MinibatchStdDev()
            c_in += 1
        self.last = nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.num_features = c_in
        self.minibatch_discrimination = None
        if minibatch_discrimination:
            self.minibatch_discrimination = MinibatchDiscrimination(c_in)
            with torch.no_grad():
                out_features = self.minibatch_discrimination(torch.zeros(2, c_in)).shape[1]
        else:
            out_features = c_in
        self.classifier = nn.Linear(out_features, 1)

    def forward(self, x: Tensor, return_features: bool = False) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        if self.minibatch_std is not None:
            x = self.minibatch_std(x)
        pooled = self.last(x).mean(dim=(2, 3))
        features.append(pooled)
        if self.minibatch_discrimination is not None:
            pooled = self.minibatch_discrimination(pooled)
        logits = self.classifier(pooled)
        return (logits, features) if return_features else logits


class ImageDiscriminator(nn.Module):
    """Real/fake critic on images: (N, in_channels, H, W) float in [0, 1] -> logits (N, 1).

    ``num_blocks`` stride-2 blocks (width ``channels * 2**i``, capped at ``max_channels``),
    then a 3x3 conv, global average pooling (the (N, F) penultimate features) and a linear
    logit. Any H, W >= ``2**num_blocks``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 32,
        num_blocks: int = 4,
        max_channels: int = 256,
        minibatch_discrimination: bool = False,
        minibatch_std: bool = False,
    ):
        super().__init__()
        self.trunk = _ConvTrunk(in_channels, channels, num_blocks, max_channels, minibatch_discrimination, minibatch_std)

    def forward(self, x: Tensor, return_features: bool = False):
        """See the class docstring; ``return_features=True`` -> ``(logits, [block activations..., (N, F)])``."""
        return self.trunk(x, return_features)


class WaveletDiscriminator(nn.Module):
    """WaveletGAN critic: judges the Haar wavelet-packet coefficients of an image.

    The image (N, in_channels, H, W) in [0, 1] goes through ``WaveletPacket2d(levels)``;
    with ``detail_only=True`` the approximation band of every colour channel is dropped so
    the critic judges texture (the detail subbands) only. The conv trunk then runs at
    ``H / 2**levels``. Returns logits (N, 1) (and features, see the module docstring).
    """

    def __init__(
        self,
        in_channels: int = 3,
        levels: int = 2,
        detail_only: bool = True,
        channels: int = 64,
        num_blocks: int = 2,
        max_channels: int = 256,
        minibatch_discrimination: bool = False,
        minibatch_std: bool = False,
    ):
        super().__init__()
        self.wavelet = WaveletPacket2d(levels)
        self.detail_only = detail_only
        subbands = 4**levels
        keep = torch.tensor([i % subbands != 0 or not detail_only for i in range(in_channels * subbands)])
        self.register_buffer("keep", keep.nonzero().flatten(), persistent=False)
        self.trunk = _ConvTrunk(
            len(self.keep), channels, num_blocks, max_channels, minibatch_discrimination, minibatch_std
        )

    def forward(self, x: Tensor, return_features: bool = False):
        """See the class docstring; ``return_features=True`` -> ``(logits, [activations..., (N, F)])``."""
        coeffs = self.wavelet(x).index_select(1, self.keep)
        return self.trunk(coeffs, return_features)


@register_model("image_discriminator", task="discriminator")
def image_discriminator(**kwargs) -> ImageDiscriminator:
    """Registry builder for :class:`ImageDiscriminator`."""
    return ImageDiscriminator(**kwargs)


@register_model("wavelet_discriminator", task="discriminator")
def wavelet_discriminator(**kwargs) -> WaveletDiscriminator:
    """Registry builder for :class:`WaveletDiscriminator`."""
    return WaveletDiscriminator(**kwargs)
