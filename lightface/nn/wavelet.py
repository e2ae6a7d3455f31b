"""Haar wavelet-packet transform as fixed strided convolutions (Wavelet-SRNet's analysis / synthesis).

The orthonormal 2-D Haar filters are generated in code. One analysis level splits every
2x2 pixel block ``[[x00, x01], [x10, x11]]`` into four subbands::

    a = (x00 + x01 + x10 + x11) / 2     approximation (low-pass in y and x)
    h = (x00 + x01 - x10 - x11) / 2     horizontal detail (high-pass in y, low-pass in x)
    v = (x00 - x01 + x10 - x11) / 2     vertical detail (low-pass in y, high-pass in x)
    d = (x00 - x01 - x10 + x11) / 2     diagonal detail (high-pass in y and x)

which are exactly PyWavelets' ``WaveletPacket2D(x, "haar", mode="periodization")``
nodes ``"a"``, ``"h"``, ``"v"``, ``"d"``. A packet transform of ``L`` levels splits every
subband again, ``4**L`` subbands in all; all ``L`` levels are folded into a single
convolution with ``2**L x 2**L`` kernels and stride ``2**L`` (analysis); synthesis is its
transposed convolution, computed for ``L >= 2`` as one matrix product of every pixel's
``4**L`` coefficients with the filters, giving its ``2**L x 2**L`` output block. The filters
form an orthonormal basis, so synthesis is the exact inverse of analysis (up to float rounding).
"""
import itertools
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WaveletPacket2d", "haar_packet_filters", "subband_paths"]

_SUBBANDS = "ahvd"
MAX_LEVELS = 4


def subband_paths(levels: int) -> List[str]:
    """PyWavelets node paths in channel order: ``levels=2`` -> ``["aa", "ah", "av", "ad", "ha", ..., "dd"]``.

    The first letter is the first (finest) analysis level, so the order is base-4 counting
    with digits ``a < h < v < d``, the same order as ``pywt.WaveletPacket2D.get_level(levels)``.
    """
    _check_levels(levels)
    return ["".join(p) for p in itertools.product(_SUBBANDS, repeat=levels)]


def haar_packet_filters(levels: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal Haar packet filters, shape ``(4**levels, 1, 2**levels, 2**levels)``.

    Filter ``k`` belongs to node ``subband_paths(levels)[k]``: it is the outer product of a
    1-D filter along y and one along x, each the product over levels of the low-pass
    ``[1, 1] / sqrt(2)`` or high-pass ``[1, -1] / sqrt(2)`` Haar filter, upsampled to that level.
    """
    _check_levels(levels)
    lo = torch.tensor([1.0, 1.0], dtype=torch.float64) / 2**0.5
    hi = torch.tensor([1.0, -1.0], dtype=torch.float64) / 2**0.5
    # (y filter, x filter) of each level-1 subband: h is high-pass along y (PyWavelets' "da").
    pairs = {"a": (lo, lo), "h": (hi, lo), "v": (lo, hi), "d": (hi, hi)}
    filters = []
    for path in subband_paths(levels):
        fy = torch.ones(1, dtype=torch.float64)
        fx = torch.ones(1, dtype=torch.float64)
        for band in path:
            # Each deeper level acts on blocks twice as large: the new 2-tap filter is the outer
            # (Kronecker) factor, the filters of the previous levels repeat inside each half.
            fy = torch.kron(pairs[band][0], fy)
            fx = torch.kron(pairs[band][1], fx)
        filters.append(torch.outer(fy, fx))
    return torch.stack(filters)[:, None].to(dtype)


def _check_levels(levels: int) -> None:
    if not isinstance(levels, int) or not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be an int in 1..{MAX_LEVELS}, got {levels!r}")


class WaveletPacket2d(nn.Module):
    """Full Haar wavelet-packet decomposition of ``levels`` levels, applied per channel.

    ``forward(x)`` / :meth:`analysis`: ``(N, C, H, W) -> (N, C * 4**levels, H / 2**levels, W / 2**levels)``;
    :meth:`inverse` / :meth:`synthesis` maps back exactly. Any float dtype and value range
    (coefficients scale with the input: an image in [0, 1] gives an approximation band in
    ``[0, 2**levels]``). H and W must be divisible by ``2**levels``.

    Channel order: input channel ``c`` owns output channels ``c * 4**levels`` to
    ``(c + 1) * 4**levels - 1``; inside that group, channel ``k`` is PyWavelets' node
    ``subband_paths(levels)[k]`` (``WaveletPacket2D(x[n, c], "haar", mode="periodization")[path].data``),
    e.g. for two levels ``aa, ah, av, ad, ha, ..., dd``. Channel 0 of each group is the
    approximation (``"a" * levels``); the other ``4**levels - 1`` are details.

    The filters are a non-trainable buffer (not in ``state_dict``); gradients flow through.

    Example:
        >>> wpt = WaveletPacket2d(2)
        >>> x = torch.rand(1, 3, 32, 32)
        >>> c = wpt(x)                      # (1, 48, 8, 8)
        >>> torch.allclose(wpt.inverse(c), x, atol=1e-6)
        True
    """

    def __init__(self, levels: int):
        super().__init__()
        _check_levels(levels)
        self.levels = levels
        self.register_buffer("weight", haar_packet_filters(levels, torch.float32), persistent=False)

    @property
    def factor(self) -> int:
        """Spatial down-sampling factor ``2**levels``."""
        return 2**self.levels

    @property
    def num_subbands(self) -> int:
        """Subbands per input channel, ``4**levels``."""
        return 4**self.levels

    def _weight(self, x: Tensor) -> Tensor:
        # type_as, not .to(dtype=, device=): a trace records the latter's device as a constant, pinning an exported
        # TorchScript file to the device it was traced on (lightface.export)
        return self.weight.type_as(x)

    def analysis(self, x: Tensor) -> Tensor:
        """Image ``(N, C, H, W)`` -> coefficients ``(N, C * 4**levels, H / 2**levels, W / 2**levels)``."""
        if x.dim() != 4:
            raise ValueError(f"WaveletPacket2d expects (N, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"WaveletPacket2d expects a floating point tensor, got {x.dtype}")
        n, c, h, w = x.shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(
                f"WaveletPacket2d({self.levels}) needs H and W divisible by {f}, got {h}x{w}; "
                "crop or pad the image first"
            )
        # every channel on its own (as a grouped conv), with the (4**L, 1, f, f) filters as they are: a filter
        # bank repeated per channel has a shape that depends on the input, which the TorchScript-based ONNX
        # exporter cannot turn into a convolution (lightface.export)
        coeffs = F.conv2d(x.reshape(n * c, 1, h, w), self._weight(x), stride=f)
        return coeffs.reshape(n, c * self.num_subbands, h // f, w // f)

    def synthesis(self, coeffs: Tensor) -> Tensor:
        """Coefficients ``(N, C * 4**levels, h, w)`` -> image ``(N, C, h * 2**levels, w * 2**levels)``."""
        if coeffs.dim() != 4 or coeffs.shape[1] % self.num_subbands:
            raise ValueError(
                f"WaveletPacket2d({self.levels}).inverse expects (N, C*{self.num_subbands}, h, w), "
                f"got shape {tuple(coeffs.shape)}"
            )
        n, k, h, w = coeffs.shape
        s, f = self.num_subbands, self.factor
        c = k // s
        if self.levels == 1:
            return F.conv_transpose2d(coeffs.reshape(n * c, s, h, w), self._weight(coeffs), stride=f).reshape(
                n, c, h * f, w * f)
        # Each coefficient pixel owns one f x f output block: block = sum_k coeff_k * filter_k, one matmul
        # over all pixels. Same result as the grouped transposed conv, which CPU backends run 10-20x slower
        # for 2+ levels (benchmarks.sr, table 5).
        basis = self._weight(coeffs).reshape(s, f * f)
        blocks = coeffs.reshape(n, c, s, h * w).transpose(2, 3) @ basis  # (N, C, h*w, f*f)
        return blocks.reshape(n, c, h, w, f, f).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h * f, w * f)

    forward = analysis
    inverse = synthesis

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
