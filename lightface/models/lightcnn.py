"""Light CNN face recognisers (Wu, He, Sun, Tan: "A Light CNN for Deep Face Representation
with Noisy Labels", IEEE TIFS 2018): LightCNN-9, LightCNN-29 and LightCNN-29v2.

All three take gray faces ``(N, 1, 128, 128)`` float in ``[0, 1]`` (ITU-R 601 luma of a
face aligned to the Light CNN template, see :func:`lightface.data.align.align_face`) and
return 256-d identity features ``(N, 256)`` (not normalised). With ``num_classes > 0`` the
model also owns ``model.classifier`` (256 -> num_classes); get logits with
``model(x, return_logits=True)`` or ``model.forward_logits(x)``, both returning
``(logits, features)``. During training, dropout (p=0.5) sits between the features and
the classifier, as in the original code; the returned features never pass through it.
``cosine_classifier=True`` makes the classifier a :class:`CosineClassifier` (the cosines
between the features and bias-free class weights, both L2-normalised), which the margin
losses of :mod:`lightface.losses.margin` (CosFace, ArcFace) train.

Module names mirror the official release so its checkpoints load key for key (after
stripping ``module.``; the official ``fc2`` is our ``classifier``, see
:mod:`lightface.models.checkpoint`). Backbone parameter counts (without the classifier):
LightCNN-9 5,480,864; LightCNN-29 12,573,280; LightCNN-29v2 10,475,872.
"""
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MFMConv2d, MFMLinear
from .registry import register_model

__all__ = [
    "LightCNN",
    "LightCNN9",
    "LightCNN29",
    "LightCNN29v2",
    "CosineClassifier",
    "MFMGroup",
    "MFMResBlock",
    "INPUT_SIZE",
    "FEATURE_DIM",
    "OFFICIAL_NUM_CLASSES",
    "to_lightcnn_input",
    "check_features",
]

INPUT_SIZE = 128
FEATURE_DIM = 256
#: classifier sizes of the released checkpoints: 9 / 29 layers (MS-Celeb-1M clean list), 29v2.
OFFICIAL_NUM_CLASSES = {"lightcnn9": 79077, "lightcnn29": 79077, "lightcnn29v2": 80013}


class MFMGroup(nn.Module):
    """1x1 MFM conv (``conv_a``, in -> in) then a k x k MFM conv (``conv``, in -> out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv_a = MFMConv2d(in_channels, in_channels, 1, 1, 0)
        self.conv = MFMConv2d(in_channels, out_channels, kernel_size, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.conv_a(x))


class MFMResBlock(nn.Module):
    """Two 3x3 MFM convs with an identity shortcut (``conv1``, ``conv2``); channels unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = MFMConv2d(channels, channels, 3, 1, 1)
        self.conv2 = MFMConv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x)) + x


def _max_avg_pool(x: Tensor) -> Tensor:
    """LightCNN-29v2 down-sampling: 2x2 max pool + 2x2 average pool."""
    return F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)


class _MaxAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _max_avg_pool(x)


def _max_pool() -> nn.Module:
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


class CosineClassifier(nn.Module):
    """Bias-free classifier on the unit sphere: ``(N, in_features) -> (N, out_features)``
    cosines in [-1, 1] between the L2-normalised input and the L2-normalised rows of
    ``weight`` (out_features, in_features). The margin losses add their margin and scale."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class LightCNN(nn.Module):
    """Common interface of the Light CNN variants.

    Subclasses implement :meth:`forward_pool` (the convolutional trunk up to the last
    pooling) and set ``self.embedding`` (the layer giving the 256-d features; its
    attribute name follows the official code: ``fc1`` for LightCNN-9, ``fc`` otherwise).

    Attributes:
        num_classes: classifier size (0: no classifier, ``model.classifier is None``).
        num_classes_unset: built with ``num_classes=None``: no classifier, but loading a
            checkpoint that has one creates it with the checkpoint's size.
        cosine_classifier: the classifier is a :class:`CosineClassifier` (margin losses).
        arch: the registry name.
    """

    arch = ""
    classifier_bias = True

    def __init__(self, num_classes: Optional[int] = None, dropout: float = 0.5, cosine_classifier: bool = False):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.cosine_classifier = bool(cosine_classifier)
        self.classifier: Optional[nn.Module] = None
        self.num_classes = 0
        self.num_classes_unset = num_classes is None
        if num_classes:
            self.reset_classifier(num_classes)

    # -- pieces ---------------------------------------------------------------------------
    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised ``Linear(256, num_classes)`` (a
        :class:`CosineClassifier` with ``cosine_classifier``; 0 removes it)."""
        if num_classes is None or int(num_classes) < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = int(num_classes)
        self.num_classes_unset = False
        if not num_classes:
            self.classifier = None
        elif self.cosine_classifier:
            self.classifier = CosineClassifier(FEATURE_DIM, self.num_classes)
        else:
            self.classifier = nn.Linear(FEATURE_DIM, self.num_classes, bias=self.classifier_bias)

    def forward_pool(self, x: Tensor) -> Tensor:
        """Convolutional trunk: (N, 1, 128, 128) -> last pooling output (N, 128, 8, 8)."""
        raise NotImplementedError

    def _embed(self, pooled: Tensor) -> Tensor:
        return self.embedding(pooled.flatten(1))

    def feature_maps(self, x: Tensor) -> Dict[str, Tensor]:
        """``{"pool": (N, 8192) flattened last pooling, "fc": (N, 256) features}`` for identity losses."""
        _check_input(x)
        pooled = self.forward_pool(x).flatten(1)
        return {"pool": pooled, "fc": self.embedding(pooled)}

    def forward(self, x: Tensor, return_logits: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Features of gray faces.

        Args:
            x: (N, 1, 128, 128) float in [0, 1], Light CNN alignment.
            return_logits: also return the classifier's logits (needs ``num_classes > 0``).
        Returns:
            features (N, 256), or ``(logits (N, num_classes), features (N, 256))``.
        """
        _check_input(x)
        feats = self._embed(self.forward_pool(x))
        if not return_logits:
            return feats
        if self.classifier is None:
            raise RuntimeError(
                f"{type(self).__name__} has no classifier (num_classes=0); build it with num_classes > 0 "
                "or call model.reset_classifier(n) to get logits"
            )
        return self.classifier(self.dropout(feats)), feats

    def forward_logits(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(logits, features)``; same as ``model(x, return_logits=True)``."""
        return self(x, return_logits=True)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"Light CNN input must be a torch.Tensor (N,1,128,128), got {type(x).__name__}")
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(
            f"Light CNN expects gray images (N, 1, 128, 128), got shape {tuple(x.shape)}; "
            "convert colour images with lightface.models.lightcnn.to_lightcnn_input"
        )
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(
            f"Light CNN expects 128x128 crops, got {tuple(x.shape[-2:])}; align faces with "
            "lightface.data.align.align_face(..., template='lightcnn') or resize with to_lightcnn_input"
        )
    if not x.is_floating_point():
        raise TypeError(f"Light CNN input must be float in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")


class LightCNN9(LightCNN):
    """LightCNN-9: conv1, 4 groups, 4 max-pools, ``fc1`` MFM 8192 -> 256 (5,480,864 backbone parameters)."""

    arch = "lightcnn9"

    def __init__(self, num_classes: Optional[int] = None, dropout: float = 0.5, cosine_classifier: bool = False):
        super().__init__(num_classes, dropout, cosine_classifier)
        # indices mirror the official nn.Sequential (pools at 1, 3, 5, 8)
        self.features = nn.Sequential(
            MFMConv2d(1, 48, 5, 1, 2),
            _max_pool(),
            MFMGroup(48, 96),
            _max_pool(),
            MFMGroup(96, 192),
            _max_pool(),
            MFMGroup(192, 128),
            MFMGroup(128, 128),
            _max_pool(),
        )
        self.fc1 = MFMLinear(8 * 8 * 128, FEATURE_DIM)

    @property
    def embedding(self) -> nn.Module:
        return self.fc1

    def forward_pool(self, x: Tensor) -> Tensor:
        return self.features(x)


class _LightCNN29Base(LightCNN):
    """Shared trunk of LightCNN-29 and 29v2: conv1, 4 stages of residual blocks (1, 2, 3, 4) and groups."""

    layers: Sequence[int] = (1, 2, 3, 4)

    def __init__(self, num_classes: Optional[int], dropout: float, pool: nn.Module, cosine_classifier: bool = False):
        super().__init__(num_classes, dropout, cosine_classifier)
        widths = [(48, 96), (96, 192), (192, 128), (128, 128)]
        self.conv1 = MFMConv2d(1, 48, 5, 1, 2)
        for i, ((cin, cout), n) in enumerate(zip(widths, self.layers), start=1):
            setattr(self, f"block{i}", nn.Sequential(*[MFMResBlock(cin) for _ in range(n)]))
            setattr(self, f"group{i}", MFMGroup(cin, cout))
        self._pool = pool

    def forward_pool(self, x: Tensor) -> Tensor:
        x = self._pool(self.conv1(x))
        x = self._pool(self.group1(self.block1(x)))
        x = self._pool(self.group2(self.block2(x)))
        x = self.group3(self.block3(x))
        return self._pool(self.group4(self.block4(x)))

    @property
    def embedding(self) -> nn.Module:
        return self.fc


class LightCNN29(_LightCNN29Base):
    """LightCNN-29: residual MFM blocks, max-pooling, ``fc`` MFM 8192 -> 256 (12,573,280 backbone parameters)."""

    arch = "lightcnn29"

    def __init__(self, num_classes: Optional[int] = None, dropout: float = 0.5, cosine_classifier: bool = False):
        super().__init__(num_classes, dropout, _max_pool(), cosine_classifier)
        self.fc = MFMLinear(8 * 8 * 128, FEATURE_DIM)


class LightCNN29v2(_LightCNN29Base):
    """LightCNN-29v2: max+average pooling, plain ``fc`` Linear 8192 -> 256, bias-free classifier
    (10,475,872 backbone parameters)."""

    arch = "lightcnn29v2"
    classifier_bias = False

    def __init__(self, num_classes: Optional[int] = None, dropout: float = 0.5, cosine_classifier: bool = False):
        super().__init__(num_classes, dropout, _MaxAvgPool(), cosine_classifier)
        self.fc = nn.Linear(8 * 8 * 128, FEATURE_DIM)


@register_model("lightcnn9", task="recognition")
def lightcnn9(num_classes: Optional[int] = None, dropout: float = 0.5,
              cosine_classifier: bool = False) -> LightCNN9:
    """LightCNN-9 (features (N,256) from gray (N,1,128,128) in [0,1]); ``num_classes`` None/0: no
    classifier; ``cosine_classifier``: a :class:`CosineClassifier` (margin losses)."""
    return LightCNN9(num_classes, dropout, cosine_classifier)


@register_model("lightcnn29", task="recognition")
def lightcnn29(num_classes: Optional[int] = None, dropout: float = 0.5,
               cosine_classifier: bool = False) -> LightCNN29:
    """LightCNN-29 (features (N,256) from gray (N,1,128,128) in [0,1]); ``num_classes`` None/0: no
    classifier; ``cosine_classifier``: a :class:`CosineClassifier` (margin losses)."""
    return LightCNN29(num_classes, dropout, cosine_classifier)


@register_model("lightcnn29v2", task="recognition")
def lightcnn29v2(num_classes: Optional[int] = None, dropout: float = 0.5,
                 cosine_classifier: bool = False) -> LightCNN29v2:
    """LightCNN-29v2 (features (N,256) from gray (N,1,128,128) in [0,1]); ``num_classes`` None/0: no
    classifier; ``cosine_classifier``: a :class:`CosineClassifier` (margin losses)."""
    return LightCNN29v2(num_classes, dropout, cosine_classifier)


# ITU-R 601 luma weights, RGB order
_LUMA_RGB = (0.299, 0.587, 0.114)
_LUMA_RGB_WEIGHTS = torch.tensor(_LUMA_RGB, dtype=torch.float64)


def to_lightcnn_input(images: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Convert float images to the Light CNN input.

    Args:
        images: (N, C, H, W) float, values in [0, 1]; C = 1 (gray) or 3 (**RGB** order,
            the torch / torchvision convention). Any H, W.
        size: output side (128 for Light CNN).
    Returns:
        (N, 1, size, size) float gray (ITU-R 601: 0.299 R + 0.587 G + 0.114 B), bilinearly
        resized (with antialiasing when shrinking) if H, W differ from ``size``.
        Differentiable; dtype and device are kept.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"expected a float tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"expected float images in [0, 1], got dtype {images.dtype}")
    c = images.shape[1]
    if c == 3:
        # cast on the CPU (from float64: as new_tensor rounds the Python floats), moved by type_as: new_tensor's
        # device would be a constant of a trace, pinning an exported TorchScript file to it (lightface.export)
        w = _LUMA_RGB_WEIGHTS.to(images.dtype).type_as(images).view(1, 3, 1, 1)
        images = (images * w).sum(1, keepdim=True)
    elif c != 1:
        raise ValueError(f"expected 1 (gray) or 3 (RGB) channels, got {c} (shape {tuple(images.shape)})")
    if images.shape[-2:] != (size, size):
        shrink = images.shape[-2] > size or images.shape[-1] > size
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return images


def check_features(out: Any, n: int, who: str) -> Tensor:
    """``out``, a recogniser module's output for ``n`` crops, checked to be features ``(n, D)``; returned as is.

    Args:
        out: what the module returned.
        n: how many crops it was given.
        who: the caller named in the error (``"FaceEmbedder"``, ``"export_onnx"``).
    Raises:
        TypeError: anything else, e.g. the ``(logits, features)`` tuple that the networks of
            the original Light CNN code return (``FaceEmbedder`` failed on it with "'tuple'
            object has no attribute 'float'"; the exports wrote its logits as the features).
    """
    if isinstance(out, Tensor) and out.dim() == 2 and len(out) == n:
        return out
    if isinstance(out, (tuple, list)):
        shapes = ", ".join(str(tuple(o.shape)) if isinstance(o, Tensor) else type(o).__name__ for o in out)
        got = f"a {type(out).__name__} ({shapes})"
    else:
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
    raise TypeError(f"{who}: the model returned {got} for {n} crops, not their features ({n}, D). A module given "
                    "as a recogniser must return the features only; a network of the original Light CNN code returns "
                    "(logits, features): give its weights instead (torch.save(model.state_dict(), 'w.pth'), then "
                    "pass 'w.pth', whose architecture is found from the keys)")
