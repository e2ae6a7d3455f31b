"""Plain-PyTorch re-implementation of the ORIGINAL Light CNN architectures.

Written from the published description of the authors' PyTorch release: MFM computed
as ``torch.split`` into two halves followed by ``torch.max``; module and parameter
names as in the released checkpoints (``features.N.filter`` / ``fc1`` for 9 layers,
``conv1``, ``blockK.i.conv1/conv2``, ``groupK.conv_a/conv``, ``fc``, ``fc2`` for 29
layers); ``forward`` returns ``(logits, features)``. Nothing here uses lightface.

Used as the oracle by tests ("same features as the official code") and as the
baseline of ``python -m benchmarks.embed``.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BaselineLightCNN9", "BaselineLightCNN29", "BaselineLightCNN29v2", "build_baseline", "official_checkpoint"]


class BaselineMFM(nn.Module):
    """Conv (``kind="conv"``) or Linear (``kind="linear"``) to 2*out, then split + max."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, padding=1, kind="conv"):
        super().__init__()
        self.out_channels = cout
        if kind == "conv":
            self.filter = nn.Conv2d(cin, 2 * cout, kernel_size=kernel_size, stride=stride, padding=padding)
        else:
            self.filter = nn.Linear(cin, 2 * cout)

    def forward(self, x):
        first, second = torch.split(self.filter(x), self.out_channels, 1)
        return torch.max(first, second)


class BaselineGroup(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding):
        super().__init__()
        self.conv_a = BaselineMFM(cin, cin, 1, 1, 0)
        self.conv = BaselineMFM(cin, cout, kernel_size, stride, padding)

    def forward(self, x):
        return self.conv(self.conv_a(x))


class BaselineResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = BaselineMFM(cin, cout, 3, 1, 1)
        self.conv2 = BaselineMFM(cin, cout, 3, 1, 1)

    def forward(self, x):
        return self.conv2(self.conv1(x)) + x


class BaselineLightCNN9(nn.Module):
    def __init__(self, num_classes=79077):
        super().__init__()
        self.features = nn.Sequential(
            BaselineMFM(1, 48, 5, 1, 2),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            BaselineGroup(48, 96, 3, 1, 1),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            BaselineGroup(96, 192, 3, 1, 1),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            BaselineGroup(192, 128, 3, 1, 1),
            BaselineGroup(128, 128, 3, 1, 1),
            nn.MaxPool2d(2, 2, ceil_mode=True),
        )
        self.fc1 = BaselineMFM(8 * 8 * 128, 256, kind="linear")
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.features(x)
        feat = self.fc1(x.view(x.size(0), -1))
        return self.fc2(F.dropout(feat, training=self.training)), feat


def _stage(n, channels):
    return nn.Sequential(*[BaselineResBlock(channels, channels) for _ in range(n)])


class BaselineLightCNN29(nn.Module):
    def __init__(self, num_classes=79077, layers=(1, 2, 3, 4)):
        super().__init__()
        self.conv1 = BaselineMFM(1, 48, 5, 1, 2)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.block1 = _stage(layers[0], 48)
        self.group1 = BaselineGroup(48, 96, 3, 1, 1)
        self.pool2 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.block2 = _stage(layers[1], 96)
        self.group2 = BaselineGroup(96, 192, 3, 1, 1)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.block3 = _stage(layers[2], 192)
        self.group3 = BaselineGroup(192, 128, 3, 1, 1)
        self.block4 = _stage(layers[3], 128)
        self.group4 = BaselineGroup(128, 128, 3, 1, 1)
        self.pool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc = BaselineMFM(8 * 8 * 128, 256, kind="linear")
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.group1(self.block1(x)))
        x = self.pool3(self.group2(self.block2(x)))
        x = self.group3(self.block3(x))
        x = self.pool4(self.group4(self.block4(x)))
        feat = self.fc(x.view(x.size(0), -1))
        return self.fc2(F.dropout(feat, training=self.training)), feat


class BaselineLightCNN29v2(nn.Module):
    def __init__(self, num_classes=80013, layers=(1, 2, 3, 4)):
        super().__init__()
        self.conv1 = BaselineMFM(1, 48, 5, 1, 2)
        self.block1 = _stage(layers[0], 48)
        self.group1 = BaselineGroup(48, 96, 3, 1, 1)
        self.block2 = _stage(layers[1], 96)
        self.group2 = BaselineGroup(96, 192, 3, 1, 1)
        self.block3 = _stage(layers[2], 192)
        self.group3 = BaselineGroup(192, 128, 3, 1, 1)
        self.block4 = _stage(layers[3], 128)
        self.group4 = BaselineGroup(128, 128, 3, 1, 1)
        self.fc = nn.Linear(8 * 8 * 128, 256)
        self.fc2 = nn.Linear(256, num_classes, bias=False)

    def forward(self, x):
        x = self.conv1(x)
        x = F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)
        x = self.group1(self.block1(x))
        x = F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)
        x = self.group2(self.block2(x))
        x = F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)
        x = self.group3(self.block3(x))
        x = self.group4(self.block4(x))
        x = F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)
        feat = self.fc(x.view(x.size(0), -1))
        return self.fc2(F.dropout(feat, training=self.training)), feat


_BUILDERS = {"lightcnn9": BaselineLightCNN9, "lightcnn29": BaselineLightCNN29, "lightcnn29v2": BaselineLightCNN29v2}


def build_baseline(arch, num_classes=None):
    """The original-architecture model for ``arch`` (``lightcnn9`` / ``lightcnn29`` / ``lightcnn29v2``)."""
    cls = _BUILDERS[arch]
    return cls() if num_classes is None else cls(num_classes=num_classes)


def official_checkpoint(model):
    """``model``'s weights in the released file layout: ``{"state_dict": {"module." + key: tensor}}``
    (what ``torch.nn.DataParallel`` training saved, plus its bookkeeping entries)."""
    arch = {BaselineLightCNN9: "LightCNN-9", BaselineLightCNN29: "LightCNN-29"}.get(type(model), "LightCNN-29v2")
    return {"epoch": 1, "arch": arch, "prec1": 0.0, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}
