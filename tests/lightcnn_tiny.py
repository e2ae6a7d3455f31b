"""A tiny Light CNN (same interface, ~100x cheaper) so trainer tests run in seconds.

Registered as ``test_tiny_lightcnn`` when imported. Run as a script it is the
``pipelines.train_lightcnn`` entry point with that model available (used by the torchrun test).
"""
from torch import Tensor, nn

from lightface.models.lightcnn import LightCNN
from lightface.models.registry import MODEL_BUILDERS, register_model
from lightface.nn import MFMConv2d, MFMLinear

ARCH = "test_tiny_lightcnn"


class TinyLightCNN(LightCNN):
    """(N,1,128,128) -> MFM conv stride 4 -> pool -> MFM conv stride 2 -> 256-d MFM features; dropout + classifier."""

    arch = ARCH

    def __init__(self, num_classes=0, dropout=0.5, cosine_classifier=False):
        super().__init__(num_classes, dropout, cosine_classifier)
        self.features = nn.Sequential(MFMConv2d(1, 8, 5, 4, 2), nn.MaxPool2d(2, 2), MFMConv2d(8, 8, 3, 2, 1))
        self.fc1 = MFMLinear(8 * 8 * 8, 256)

    @property
    def embedding(self) -> nn.Module:
        return self.fc1

    def forward_pool(self, x: Tensor) -> Tensor:
        return self.features(x)


if ARCH not in MODEL_BUILDERS:
    register_model(ARCH, task="recognition")(TinyLightCNN)

if __name__ == "__main__":
    import sys

    from pipelines._cli import run_cli
    from pipelines.train_lightcnn import get_args_parser, main

    sys.exit(run_cli(main, get_args_parser))
