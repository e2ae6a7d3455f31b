"""Wavelet-SRNet losses: wavelet-coefficient prediction, texture, and full-image terms.

All three act on RGB float images in [0, 1] and their Haar wavelet-packet coefficients
(:class:`lightface.nn.WaveletPacket2d`, channel order ``c * 4**L + k``, ``k = 0`` the
approximation subband of colour channel ``c``).

Default weights (Huang et al., Wavelet-SRNet, ICCV 2017) and why:

* ``approx_weight = 0.01``: the approximation subband (the low-pass image) is easy to get
  from the LR input, so it gets little weight;
* ``detail_weight = 0.99``: each detail subband; the missing high frequencies are what
  super-resolution must recover;
* ``texture_alpha = 1.2``, ``texture_eps = 0``: the texture loss penalises SR detail energy
  below ``alpha`` times the HR energy (a hinge), counteracting the MSE-induced smoothing
  that shrinks detail coefficients towards zero;
* ``image_weight = 0.1``: a plain MSE on the reconstructed image that keeps the overall
  colour and brightness right;
* ``wavelet_weight = 1``, ``texture_weight = 1``: the loss terms' overall weights.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.wavelet import WaveletPacket2d

__all__ = ["wavelet_prediction_loss", "texture_loss", "subband_weights", "WaveletSRLoss"]


def subband_weights(levels: int, approx_weight: float = 0.01, detail_weight: float = 0.99) -> Tensor:
    """(4**levels,) float32: ``approx_weight`` for subband 0 (``"a" * levels``), ``detail_weight`` for the others."""
    w = torch.full((4**levels,), float(detail_weight))
    w[0] = approx_weight
    return w


def _per_subband(x: Tensor, num_subbands: int) -> Tensor:
    """(N, C*S, h, w) -> (N, C, S, h*w)."""
    n, cs, h, w = x.shape
    if cs % num_subbands:
        raise ValueError(f"expected C*{num_subbands} coefficient channels, got {cs}")
    return x.reshape(n, cs // num_subbands, num_subbands, h * w)


def wavelet_prediction_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Weighted coefficient MSE: ``sum_k weights[k] * mean_{n,c,pixels} (pred_k - target_k)**2``.

    pred, target: (N, C * S, h, w) packet coefficients (S = len(weights) subbands per channel).
    Returns a scalar.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} coefficients differ in shape")
    err = _per_subband((pred - target).square(), len(weights)).mean(dim=(0, 1, 3))
    return (err * weights.to(err)).sum()


def texture_loss(pred: Tensor, target: Tensor, num_subbands: int, alpha: float = 1.2, eps: float = 0.0) -> Tensor:
    """Hinge on detail energy: ``mean_{n,c,k>0} max(alpha * E(target_k) + eps - E(pred_k), 0)``.

    ``E`` is the mean squared coefficient of one subband of one image channel; only the
    detail subbands (k > 0) count. pred, target: (N, C * num_subbands, h, w). Scalar.
    """
    e_pred = _per_subband(pred, num_subbands)[:, :, 1:].square().mean(dim=3)
    e_target = _per_subband(target, num_subbands)[:, :, 1:].square().mean(dim=3)
    return F.relu(alpha * e_target + eps - e_pred).mean()


class WaveletSRLoss(nn.Module):
    """The Wavelet-SRNet objective: ``wavelet_weight * l_wavelet + texture_weight * l_texture + image_weight * l_pix``.

    ``forward(pred_coeffs, sr, hr) -> (total, {"l_g_wavelet", "l_g_texture", "l_g_pix"})``:
    pred_coeffs (N, C * 4**levels, h, w) from the generator, sr and hr (N, C, h * 2**levels,
    w * 2**levels) RGB in [0, 1]; the HR coefficients are computed here. Terms with weight 0
    are skipped (and not reported). See the module docstring for the default weights.
    """

    def __init__(
        self,
        levels: int,
        approx_weight: float = 0.01,
        detail_weight: float = 0.99,
        texture_alpha: float = 1.2,
        texture_eps: float = 0.0,
        wavelet_weight: float = 1.0,
        texture_weight: float = 1.0,
        image_weight: float = 0.1,
    ):
        super().__init__()
        self.wavelet = WaveletPacket2d(levels)
        self.register_buffer("weights", subband_weights(levels, approx_weight, detail_weight), persistent=False)
        self.texture_alpha = texture_alpha
        self.texture_eps = texture_eps
        self.wavelet_weight = wavelet_weight
        self.texture_weight = texture_weight
        self.image_weight = image_weight

    def forward(self, pred_coeffs: Tensor, sr: Tensor, hr: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        target = self.wavelet(hr)
        terms: Dict[str, Tensor] = {}
        if self.wavelet_weight:
            terms["l_g_wavelet"] = self.wavelet_weight * wavelet_prediction_loss(pred_coeffs, target, self.weights)
        if self.texture_weight:
            terms["l_g_texture"] = self.texture_weight * texture_loss(
                pred_coeffs, target, self.wavelet.num_subbands, self.texture_alpha, self.texture_eps
            )
        if self.image_weight:
            terms["l_g_pix"] = self.image_weight * F.mse_loss(sr, hr)
        total = sum(terms.values()) if terms else sr.new_zeros(())
        return total, terms
