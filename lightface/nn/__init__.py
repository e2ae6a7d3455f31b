"""Layers: Max-Feature-Map activations and MFM convolution / linear blocks."""
from .mfm import MFM, MFM3_2, MFMConv2d, MFMConv2d3_2, MFMLinear, MFMLinear3_2
from .wavelet import WaveletPacket2d

__all__ = ["MFM", "MFM3_2", "MFMConv2d", "MFMConv2d3_2", "MFMLinear", "MFMLinear3_2", "WaveletPacket2d"]
