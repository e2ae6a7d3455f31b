"""Smooth synthetic colour images standing in for HR faces where a test needs files, not people."""
from pathlib import Path

import cv2
import numpy as np


def write_smooth_faces(folder: Path, n: int = 12, size: int = 32) -> Path:
    """Write ``n`` smooth colour ``size`` x ``size`` images (sums of sinusoids, BGR PNG, ``00.png`` ...) into
    ``folder`` (created with its parents). Returns the folder."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        f = rng.uniform(1, 4, 3)
        img = np.stack([np.sin(f[c] * (xx + yy * (c + 1)) * np.pi) * 0.4 + 0.5 for c in range(3)], -1)
        cv2.imwrite(str(folder / f"{i:02d}.png"), (img * 255).astype(np.uint8))
    return folder
