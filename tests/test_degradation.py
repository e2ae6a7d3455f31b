"""Degradation's own argument checks (the SR pairs themselves are tested in test_wavelet_srnet.py)."""
import numpy as np
import pytest

from lightface.data.degradation import Degradation, RandomDownscale


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": 0}, "scale must be an integer >= 1"),
    ({"scale": 2.5}, "scale must be an integer >= 1"),
    ({"scale": 4, "blur_prob": 2}, "blur_prob must be a probability in \\[0, 1\\], got 2"),
    ({"scale": 4, "noise_prob": -0.1}, "noise_prob must be a probability"),
    ({"scale": 4, "jpeg_prob": float("nan")}, "jpeg_prob must be a probability"),
    ({"scale": 4, "noise_std": (0.5, 0.1)}, "noise_std must be a \\(min, max\\) pair"),
    ({"scale": 4, "jpeg_quality": (0, 200)}, "jpeg_quality must be a \\(min, max\\) pair"),
    ({"scale": 4, "blur_sigma": (0, 1)}, "blur_sigma must be a \\(min, max\\) pair"),
    ({"scale": 4, "blur_sigma": 1.0}, "blur_sigma must be a \\(min, max\\) pair"),
])
def test_bad_arguments_are_refused_at_construction_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Degradation(**kwargs)


def test_good_arguments_still_build_pairs_and_random_downscale_checks_its_scale():
    lr, hr = Degradation(4, blur_sigma=(0.5, 0.5), noise_std=(0.0, 0.0), jpeg_quality=(90, 90))(
        np.zeros((32, 32, 3), np.uint8))
    assert lr.shape == (8, 8, 3) and hr.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="scale must be an integer >= 1"):
        RandomDownscale(0)
