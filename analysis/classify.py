"""Shape scores of a scaling curve: the fitted rise's sharpness, and BIG-bench's breakthroughness and
linearity. The verdict itself (`emergent`, `smooth`, `absent`, `inconclusive`) is `analysis.detect`'s.
"""

from __future__ import annotations

import numpy as np

from emergence_lab.analysis.fit import Fit

SHARP_GRID = 4001


def rise_points(fit: Fit, u_min: float, u_max: float) -> tuple[float, float, float]:
    """(u10, u90, sharpness in decades) of the fitted rise. The sigmoid's are analytic (10%-90% of its
    full rise: 2 ln 9 / k); the others are read off the fitted curve between the smallest and largest size."""
    if fit.model == "sigmoid":
        k, u0 = fit.params[2], fit.params[3]
        if k <= 0:
            return np.nan, np.nan, np.inf
        half = np.log(9.0) / k
        return u0 - half, u0 + half, 2.0 * half
    grid = np.linspace(u_min, u_max, SHARP_GRID)
    f = fit.predict(grid)
    rise = f[-1] - f[0]
    if not np.isfinite(rise) or rise <= 0:
        return np.nan, np.nan, np.inf
    frac = (np.maximum.accumulate(f) - f[0]) / rise  # first crossing of a monotone envelope
    u10 = float(grid[np.searchsorted(frac, 0.1)])
    u90 = float(grid[min(np.searchsorted(frac, 0.9), SHARP_GRID - 1)])
    return u10, u90, u90 - u10


def breakthroughness(y: np.ndarray) -> float:
    """BIG-bench breakthroughness B = I(y) / sqrt(median_i (y_i - y_{i-1})^2), sizes in order, where
    I(y) = sign(argmax y - argmin y) (max y - min y). Infinite when most steps are exactly flat."""
    if len(y) < 2:
        return np.nan
    impr = np.sign(np.argmax(y) - np.argmin(y)) * (np.max(y) - np.min(y))
    denom = np.sqrt(np.median(np.diff(y) ** 2))
    if denom == 0:
        return 0.0 if impr == 0 else float(np.sign(impr) * np.inf)
    return float(impr / denom)


def linearity(u: np.ndarray, y: np.ndarray) -> float:
    """Linearity L = I(y) * sum_i dy_i du_i / (sqrt(sum_i dy_i^2) sqrt(sum_i du_i^2)), d = step between
    consecutive sizes, u = log10 size: the improvement I(y) times the cosine between the steps in y and the
    steps in log-size. A steady rise keeps all of I(y); a single jump among n steps keeps ~I(y)/sqrt(n).
    (Our reading of BIG-bench, Srivastava et al. 2022, App. B; check it before comparing across papers.)"""
    if len(y) < 2:
        return np.nan
    impr = np.sign(np.argmax(y) - np.argmin(y)) * (np.max(y) - np.min(y))
    dy, du = np.diff(y), np.diff(u)
    denom = np.sqrt(np.sum(dy**2) * np.sum(du**2))
    return float(impr * np.sum(dy * du) / denom) if denom > 0 else 0.0
