"""lightface.eval.divergence: hand-computed values on tiny inputs."""
import math

import numpy as np
import pytest
import torch

from lightface.eval.divergence import (
    histogram2d,
    js_divergence,
    kl_divergence,
    median_bandwidth,
    mmd_rbf,
    normalize_histogram,
    sliced_wasserstein,
    wasserstein_1d,
)


def test_kl_hand_values():
    # KL([.5,.5] || [.25,.75]) = .5 ln 2 + .5 ln(2/3)
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert kl_divergence([1, 1], [1, 3], base=2) == pytest.approx(expected / math.log(2))  # counts normalised
    assert kl_divergence([1, 0], [1, 0]) == 0.0
    assert kl_divergence([1, 1], [1, 0]) == math.inf
    assert math.isfinite(kl_divergence([1, 1], [1, 0], smoothing=1e-6))


def test_js_hand_values():
    # disjoint supports: JS = ln 2 nats = 1 bit
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([1, 0], [0, 1], base=math.e) == pytest.approx(math.log(2))
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    m = (p + q) / 2
    expected = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert js_divergence(p, q) == pytest.approx(expected)
    assert js_divergence(np.ones((3, 3)), np.ones((3, 3))) == pytest.approx(0.0, abs=1e-12)  # 2-D bins


def test_histogram_errors():
    with pytest.raises(ValueError, match="same bins"):
        js_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="negative"):
        kl_divergence([1, -1], [1, 1])
    with pytest.raises(ValueError, match="sums to 0"):
        normalize_histogram([0, 0])
    with pytest.raises(ValueError, match="NaN"):
        js_divergence([1, float("nan")], [1, 1])


def test_wasserstein_hand_values():
    assert wasserstein_1d([0.0, 1.0], [2.0, 3.0]) == pytest.approx(2.0)
    assert wasserstein_1d([0.0], [1.0, 3.0]) == pytest.approx(2.0)  # mass 1/2 moves 1, 1/2 moves 3
    assert wasserstein_1d(torch.tensor([0.0, 0.0]), [0.0, 4.0], v_weights=[3, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sliced_wasserstein"):
        wasserstein_1d(np.zeros((2, 2)), np.zeros(2))


def test_sliced_wasserstein_translation():
    """Shifting a 2-D cloud by t moves every projection by <t, theta>: SW1 = |t| E|cos(angle)| ~ |t| * 2/pi."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 2))
    sw = sliced_wasserstein(x, x + np.array([3.0, 0.0]), num_projections=2000)
    assert sw == pytest.approx(3.0 * 2 / math.pi, rel=0.03)
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein([0.0, 1.0], [2.0, 3.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        sliced_wasserstein(np.zeros((3, 2)), np.zeros((3, 3)))


def test_mmd_hand_values():
    x, y = np.array([[0.0]]), np.array([[1.0]])
    # biased, sigma=1: k(x,x)=1, k(y,y)=1, k(x,y)=exp(-1/2)
    assert mmd_rbf(x, y, bandwidth=1.0, unbiased=False) == pytest.approx(2 - 2 * math.exp(-0.5))
    # two sigmas sum their kernels
    assert mmd_rbf(x, y, bandwidth=[1.0, 2.0], unbiased=False) == pytest.approx(4 - 2 * (math.exp(-0.5) + math.exp(-1 / 8)))
    # unbiased on 2 + 2 points: (k(x0,x1) + k(y0,y1)) - 2 mean k(x, y)
    x2, y2 = np.array([0.0, 1.0]), np.array([0.0, 2.0])
    k = lambda a, b: math.exp(-((a - b) ** 2) / 2)
    expected = k(0, 1) + k(0, 2) - 2 * (k(0, 0) + k(0, 2) + k(1, 0) + k(1, 2)) / 4
    assert mmd_rbf(x2, y2, bandwidth=1.0) == pytest.approx(expected)


def test_mmd_median_bandwidth_and_power():
    # pooled points 0, 1, 3: pairwise distances 1, 3, 2 -> median 2
    assert median_bandwidth([0.0, 1.0], [3.0]) == pytest.approx(2.0)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((200, 2)), rng.standard_normal((200, 2))
    shifted = b + 1.0
    assert abs(mmd_rbf(a, b)) < 0.02 < mmd_rbf(a, shifted)
    with pytest.raises(ValueError):
        mmd_rbf(a, b, bandwidth="silverman")
    with pytest.raises(ValueError):
        mmd_rbf(a, b, bandwidth=0.0)


def test_histogram2d():
    pts = np.array([[0.1, 0.1], [0.1, 0.9], [0.9, 0.9], [0.9, 0.95], [5.0, 5.0]])
    h = histogram2d(pts, bins=2, range=[[0, 1], [0, 1]], density=False)
    assert h.tolist() == [[1.0, 1.0], [0.0, 2.0]]  # axis 0 = x; the outlier is dropped
    p = histogram2d(pts, bins=2, range=[[0, 1], [0, 1]])
    assert p.sum() == pytest.approx(1.0) and p[1, 1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        histogram2d(np.zeros((3, 3)))


def test_near_identical_histograms_give_finite_non_negative_divergences():
    # p vs p*(1 + 1e-15 noise): rounding made SciPy's JS distance sqrt a negative sum (NaN)
    # and the KL sum slightly negative; both must be ~0, finite and >= 0 as documented
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    for _ in range(20):
        q = p * (1 + 1e-15 * rng.standard_normal(1000))
        js, kl = js_divergence(p, q), kl_divergence(p, q)
        assert 0.0 <= js <= 1e-12 and 0.0 <= kl <= 1e-12
    assert 0.0 <= js_divergence(p, p[::-1], base=math.e) <= math.log(2)


def test_divergence_base_must_exceed_one():
    with pytest.raises(ValueError, match="base must be > 1"):
        js_divergence([1, 0], [0, 1], base=1)
    with pytest.raises(ValueError, match="base must be > 1"):
        kl_divergence([1, 1], [1, 3], base=0.5)
