"""BEGAN auto-encoder discriminator (Berthelot et al., "BEGAN: Boundary Equilibrium GANs", 2017).

The discriminator of a BEGAN is an auto-encoder: ``D(v)`` returns the reconstruction of
``v`` and the adversarial signal is its L1 reconstruction error ``L(v) = |v - D(v)|_1``
(:func:`lightface.losses.gan_regularizers.autoencoder_loss`). Trainers build it when
``--began-gamma`` is given (``GANObjective.uses_autoencoder_discriminator``).
"""
import math
from typing import List, Tuple, Union

from torch import Tensor, nn

from ..nn.gan_layers import MinibatchDiscrimination, MinibatchStdDev
from .registry import register_model

__all__ = ["AutoencoderDiscriminator", "autoencoder_discriminator"]


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1), nn.ELU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1), nn.ELU(inplace=True)
    )


class AutoencoderDiscriminator(nn.Module):
    """Convolutional auto-encoder discriminator, BEGAN style (3x3 convs, ELU, no normalisation).

    The encoder repeats [conv-ELU x2, stride-2 conv to the next width] until the map is
    ``bottom`` x ``bottom`` (8 by default), then a linear layer gives the embedding h
    (N, latent_dim). The decoder maps h back to ``bottom`` x ``bottom`` and repeats
    [conv-ELU x2, nearest 2x upsampling], ending in a 3x3 conv to ``channels`` with no
    output activation.

    Args:
        channels: image channels C (3 for RGB, 1 for gray).
        size: input height = width S; S / bottom must be a power of two (e.g. 32, 64, 128 with bottom 8).
        hidden: width of the first stage; stage i uses ``hidden * (i + 1)`` channels in the encoder.
        latent_dim: size of the embedding h.
        bottom: spatial size of the bottleneck map.
        minibatch_discrimination: append :class:`MinibatchDiscrimination` features to h before decoding.
        minibatch_std: append a :class:`MinibatchStdDev` map before the encoder's last linear layer.

    Shapes:
        ``D(x)``: (N, C, S, S) float (any range; match the generator's output range) ->
        reconstruction (N, C, S, S). ``D(x, return_features=True)`` -> ``(reconstruction,
        [h])`` with h (N, latent_dim): the penultimate representation used by the
        pull-away term (EBGAN-PT) and feature matching.
    """

    def __init__(
        self,
        channels: int = 3,
        size: int = 64,
        hidden: int = 64,
        latent_dim: int = 64,
        bottom: int = 8,
        minibatch_discrimination: bool = False,
        minibatch_std: bool = False,
    ):
        super().__init__()
        if size < bottom or size % bottom or not math.log2(size // bottom).is_integer():
            raise ValueError(
                f"AutoencoderDiscriminator: size={size} must be bottom={bottom} times a power of two (e.g. 32, 64, 128)"
            )
        self.channels, self.size, self.latent_dim, self.bottom = channels, size, latent_dim, bottom
        stages = int(math.log2(size // bottom))
        widths = [hidden * (i + 1) for i in range(stages + 1)]
        enc: List[nn.Module] = [nn.Conv2d(channels, hidden, 3, 1, 1), nn.ELU(inplace=True)]
        for i in range(stages):
            enc += [_conv_block(widths[i], widths[i]), nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1), nn.ELU(inplace=True)]
        enc.append(_conv_block(widths[-1], widths[-1]))
        self.encoder = nn.Sequential(*enc)
        self.minibatch_std = MinibatchStdDev() if minibatch_std else None
        flat = (widths[-1] + (1 if minibatch_std else 0)) * bottom * bottom
        self.to_latent = nn.Linear(flat, latent_dim)
        self.minibatch_discrimination = MinibatchDiscrimination(latent_dim) if minibatch_discrimination else None
        dec_in = latent_dim + (self.minibatch_discrimination.out_features if minibatch_discrimination else 0)
        self.from_latent = nn.Linear(dec_in, hidden * bottom * bottom)
        dec: List[nn.Module] = []
        for _ in range(stages):
            dec += [_conv_block(hidden, hidden), nn.Upsample(scale_factor=2, mode="nearest")]
        dec += [_conv_block(hidden, hidden), nn.Conv2d(hidden, channels, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)
        self.hidden = hidden

    def forward(self, x: Tensor, return_features: bool = False) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(
                f"AutoencoderDiscriminator expects (N, {self.channels}, {self.size}, {self.size}), got {tuple(x.shape)}"
            )
        y = self.encoder(x)
        if self.minibatch_std is not None:
            y = self.minibatch_std(y)
        h = self.to_latent(y.flatten(1))
        z = self.minibatch_discrimination(h) if self.minibatch_discrimination is not None else h
        y = self.from_latent(z).reshape(-1, self.hidden, self.bottom, self.bottom)
        rec = self.decoder(y)
        if return_features:
            return rec, [h]
        return rec


@register_model("autoencoder_discriminator", task="discriminator")
def autoencoder_discriminator(**kwargs) -> AutoencoderDiscriminator:
    """Registry builder: ``get_model("autoencoder_discriminator", channels=3, size=64, ...)``."""
    return AutoencoderDiscriminator(**kwargs)
