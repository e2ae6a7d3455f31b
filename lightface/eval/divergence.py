"""Distances between sample distributions: KL / Jensen-Shannon of histograms, Wasserstein-1, MMD.

Used to score generators against a target distribution (e.g. ``benchmarks.gan_mixture``).
Inputs are NumPy arrays or anything ``np.asarray`` accepts (CPU torch tensors included);
all functions return Python floats. SciPy supplies the core formulas
(``scipy.special.rel_entr``, ``scipy.stats.wasserstein_distance``).
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from scipy.spatial.distance import cdist, pdist
from scipy.special import rel_entr
from scipy.stats import wasserstein_distance

__all__ = [
    "normalize_histogram",
    "kl_divergence",
    "js_divergence",
    "wasserstein_1d",
    "sliced_wasserstein",
    "mmd_rbf",
    "median_bandwidth",
    "histogram2d",
]

ArrayLike = Union[np.ndarray, Sequence[float]]


def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def normalize_histogram(counts: ArrayLike, name: str = "histogram") -> np.ndarray:
    """Counts (any shape, >= 0, not all 0) -> float64 probabilities summing to 1, same shape."""
    p = _to_numpy(counts, name)
    if np.any(p < 0):
        raise ValueError(f"{name} has negative entries; histograms hold counts or probabilities >= 0")
    total = p.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to 0; it has no mass to normalise")
    return p / total


def _pair(p: ArrayLike, q: ArrayLike, smoothing: float) -> Tuple[np.ndarray, np.ndarray]:
    p_arr, q_arr = _to_numpy(p, "p"), _to_numpy(q, "q")
    if p_arr.shape != q_arr.shape:
        raise ValueError(f"histograms must have the same bins: p has shape {p_arr.shape}, q has {q_arr.shape}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    p_arr = normalize_histogram(p_arr, "p") + smoothing
    q_arr = normalize_histogram(q_arr, "q") + smoothing
    return (p_arr / p_arr.sum()).ravel(), (q_arr / q_arr.sum()).ravel()


def _log_base(base: float) -> float:
    if not base > 1:
        raise ValueError(f"logarithm base must be > 1 (2: bits, math.e: nats), got {base!r}")
    return float(np.log(base))


def kl_divergence(p: ArrayLike, q: ArrayLike, smoothing: float = 0.0, base: Optional[float] = None) -> float:
    """Kullback-Leibler divergence ``KL(p || q) = sum_i p_i log(p_i / q_i)`` between histograms.

    Both histograms are normalised first (counts are fine). ``inf`` when q has an empty
    bin where p has mass; ``smoothing`` adds that much probability to every bin of both
    (then renormalises) to avoid it.

    Args:
        p, q: counts or probabilities, same shape (any number of dims; bins must correspond).
        smoothing: pseudo-probability added per bin (e.g. 1e-10); 0 keeps the exact value.
        base: logarithm base (None: natural log, nats; 2: bits).

    Returns:
        float >= 0 (or inf).

    Example:
        >>> round(kl_divergence([0.5, 0.5], [0.25, 0.75], base=2), 4)
        0.2075
    """
    p_arr, q_arr = _pair(p, q, smoothing)
    kl = max(float(np.sum(rel_entr(p_arr, q_arr))), 0.0)  # rounding can make a near-0 sum negative
    return kl if base is None else kl / _log_base(base)


def js_divergence(p: ArrayLike, q: ArrayLike, base: float = 2.0) -> float:
    """Jensen-Shannon divergence ``JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m)``, ``m = (p + q) / 2``.

    The divergence (not SciPy's distance, which is its square root). Symmetric, always
    finite; in [0, 1] with ``base=2`` (default), in [0, ln 2] with ``base=e``.

    Args:
        p, q: counts or probabilities with the same bins (any shape).
        base: logarithm base.

    Returns:
        float in [0, log_base(2)].
    """
    p_arr, q_arr = _pair(p, q, 0.0)
    m = (p_arr + q_arr) / 2.0
    log_base = _log_base(base)
    js = 0.5 * (np.sum(rel_entr(p_arr, m)) + np.sum(rel_entr(q_arr, m))) / log_base
    # rounding can push a near-0 sum below 0 (SciPy's jensenshannon then takes sqrt of it: NaN)
    return float(min(max(js, 0.0), np.log(2.0) / log_base))


def wasserstein_1d(
    u: ArrayLike, v: ArrayLike, u_weights: Optional[ArrayLike] = None, v_weights: Optional[ArrayLike] = None
) -> float:
    """Wasserstein-1 (earth mover's) distance between two 1-D empirical distributions.

    ``W1 = integral |F_u(t) - F_v(t)| dt`` over the CDFs; same units as the samples.

    Args:
        u, v: 1-D samples (sizes may differ).
        u_weights, v_weights: optional non-negative sample weights.
    """
    u_arr, v_arr = _to_numpy(u, "u"), _to_numpy(v, "v")
    if u_arr.ndim != 1 or v_arr.ndim != 1:
        raise ValueError(
            f"wasserstein_1d needs 1-D samples, got shapes {u_arr.shape} and {v_arr.shape}; "
            "use sliced_wasserstein for multivariate samples"
        )
    return float(wasserstein_distance(u_arr, v_arr, u_weights, v_weights))


def sliced_wasserstein(x: ArrayLike, y: ArrayLike, num_projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1: mean of :func:`wasserstein_1d` over random unit directions.

    ``SW1(x, y) = E_theta W1(<x, theta>, <y, theta>)``, theta uniform on the unit sphere
    (``num_projections`` draws from a generator seeded with ``seed``, so repeated calls
    compare like with like). For 1-D input this is exactly W1.

    Args:
        x: (N, D) samples; y: (M, D) samples.
    """
    x_arr, y_arr = _to_numpy(x, "x"), _to_numpy(y, "y")
    if x_arr.ndim == 1 and y_arr.ndim == 1:
        return wasserstein_1d(x_arr, y_arr)
    if x_arr.ndim != 2 or y_arr.ndim != 2 or x_arr.shape[1] != y_arr.shape[1]:
        raise ValueError(f"sliced_wasserstein needs (N, D) and (M, D) samples, got {x_arr.shape} and {y_arr.shape}")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    theta = np.random.default_rng(seed).standard_normal((num_projections, x_arr.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    px, py = x_arr @ theta.T, y_arr @ theta.T
    return float(np.mean([wasserstein_distance(px[:, k], py[:, k]) for k in range(num_projections)]))


def _samples_2d(x, y) -> Tuple[np.ndarray, np.ndarray]:
    """Two sample sets as (N, D) and (M, D) float64 arrays (1-D input is (N,) scalars)."""
    x_arr, y_arr = _to_numpy(x, "x"), _to_numpy(y, "y")
    x_arr = x_arr[:, None] if x_arr.ndim == 1 else x_arr
    y_arr = y_arr[:, None] if y_arr.ndim == 1 else y_arr
    if x_arr.ndim != 2 or y_arr.ndim != 2 or x_arr.shape[1] != y_arr.shape[1]:
        raise ValueError(f"need samples shaped (N, D) and (M, D), got {x_arr.shape} and {y_arr.shape}")
    return x_arr, y_arr


def median_bandwidth(x: ArrayLike, y: ArrayLike) -> float:
    """Median heuristic: the median Euclidean distance between all distinct pairs of the pooled samples.

    x: (N, D) or (N,); y: (M, D) or (M,).
    """
    d = pdist(np.concatenate(_samples_2d(x, y)))
    med = float(np.median(d)) if d.size else 0.0
    if med <= 0:
        raise ValueError("median_bandwidth: all pooled samples coincide; pass an explicit bandwidth")
    return med


def mmd_rbf(
    x: ArrayLike, y: ArrayLike, bandwidth: Union[str, float, Sequence[float]] = "median", unbiased: bool = True
) -> float:
    """Squared maximum mean discrepancy with a Gaussian (RBF) kernel (Gretton et al., JMLR 2012).

    ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``;
    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)``.

    Bandwidth choice: ``"median"`` (default) sets sigma to the median pairwise distance of
    the pooled samples (the median heuristic, :func:`median_bandwidth`), which adapts to
    the data scale; a float fixes sigma; a sequence of floats sums the kernels (a
    multi-scale kernel, robust when the relevant scale is unknown).

    Args:
        x: (N, D) or (N,) samples; y: (M, D) or (M,) samples.
        bandwidth: ``"median"``, sigma > 0, or a sequence of sigmas.
        unbiased: the U-statistic (drops i == j terms; can be slightly negative when the
            distributions match, needs N, M >= 2) if True, the biased V-statistic (>= 0) otherwise.

    Returns:
        float MMD^2 (0 for identical distributions in expectation).
    """
    x_arr, y_arr = _samples_2d(x, y)
    n, m = len(x_arr), len(y_arr)
    if unbiased and (n < 2 or m < 2):
        raise ValueError("the unbiased MMD estimate needs at least 2 samples on each side")
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be 'median', a float or a list of floats, got {bandwidth!r}")
        sigmas = [median_bandwidth(x_arr, y_arr)]
    else:
        sigmas = [float(s) for s in np.atleast_1d(bandwidth)]
    if any(s <= 0 for s in sigmas):
        raise ValueError(f"RBF bandwidths must be > 0, got {sigmas}")

    def kernel(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2.0 * s * s)) for s in sigmas)

    kxx, kyy, kxy = kernel(x_arr, x_arr), kernel(y_arr, y_arr), kernel(x_arr, y_arr)
    if unbiased:
        exx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        eyy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    else:
        exx, eyy = kxx.mean(), kyy.mean()
    return float(exx + eyy - 2.0 * kxy.mean())


def histogram2d(
    points: ArrayLike, bins: int = 50, range: Optional[Sequence[Sequence[float]]] = None, density: bool = True
) -> np.ndarray:
    """2-D histogram of points (N, 2): counts (or probabilities) shaped (bins, bins), axis 0 = x.

    Points outside ``range`` (``[[xmin, xmax], [ymin, ymax]]``; default: the data's
    bounding box) are dropped, so compare two sample sets with the same explicit
    ``range`` and ``bins``. ``density=True`` returns probabilities summing to 1 over the
    kept points (all zeros when no point falls inside).
    """
    pts = _to_numpy(points, "points")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"histogram2d needs points shaped (N, 2), got {pts.shape}")
    counts, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=range)
    if density and counts.sum() > 0:
        counts = counts / counts.sum()
    return counts
