"""Is a scaling curve `emergent`, `smooth` or `absent`? Written, configurable criteria.

All criteria work on the oriented curve (higher is better; lower-is-better metrics are negated) and on the
per-size means m_j, with SE = the standard error of one size's mean (pooled seed-to-seed spread / sqrt(seeds);
the input's stderr when there is one seed; the best fit's residual spread otherwise).

- `absent`:   no significant rise: the fitted rise over the measured sizes, f(u_max) - f(u_min), is not
              above `snr` x SE (a flat curve at chance, pure noise, or a curve that gets worse).
- `emergent`: all of
    1. at least `min_sizes` distinct sizes (so the nonlinear models could be fitted at all);
    2. a nonlinear model (sigmoid or hinge) wins: its AICc is lower than the line's by `aicc_margin`;
    3. a substantial rise: at least `min_rise_frac` of the metric's range (1 for metrics in [0, 1], the
       observed range otherwise);
    4. sharp: 10% to 90% of the fitted rise within `max_sharpness` decades;
    5. a plateau: at least `plateau_sizes` sizes lie before the rise starts (the 10% point), and each of
       their means is within `plateau_k` x SE of the floor (the fitted value at the smallest size), or within
       10% of the rise when the noise is smaller than that.
- `smooth`:   a significant rise that is not emergent (a steady rise, or a rise that saturates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emergence_lab.analysis.fit import Fit
from emergence_lab.analysis.options import Criteria

SHARP_GRID = 4001


@dataclass(frozen=True)
class Verdict:
    label: str
    reason: str
    rise: float
    noise_se: float
    floor: float
    u10: float
    u90: float
    sharpness: float
    plateau_sizes: int
    nonlinear_wins: bool


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


def noise_se(means_n: np.ndarray, stds: np.ndarray, stderr: np.ndarray, residual_sd: float) -> float:
    """Standard error of one size's mean (see module docstring for the order of preference)."""
    multi = means_n >= 2
    if multi.any() and np.isfinite(stds[multi]).any():
        ok = multi & np.isfinite(stds)
        pooled = np.sqrt(np.sum((means_n[ok] - 1) * stds[ok] ** 2) / np.sum(means_n[ok] - 1))
        return float(pooled / np.sqrt(np.median(means_n)))
    if np.isfinite(stderr).any():
        return float(np.nanmedian(stderr))
    return float(residual_sd)


def classify(
    u_sizes: np.ndarray,
    means: np.ndarray,
    fits: dict[str, Fit],
    best: str,
    se: float,
    metric_range: float | None,
    criteria: Criteria,
) -> Verdict:
    """Classify one oriented curve (u_sizes sorted ascending, means of those sizes)."""
    u_min, u_max = float(u_sizes[0]), float(u_sizes[-1])
    fit = fits[best]
    scale = metric_range or max(float(np.ptp(means)), float(np.max(np.abs(means))), 1e-12)
    se = max(se, 1e-6 * scale) if np.isfinite(se) else 1e-6 * scale
    rise = float(fit.predict(np.array([u_max]))[0] - fit.predict(np.array([u_min]))[0])
    floor = float(fit.predict(np.array([u_min]))[0])
    nonlinear = best != "linear" and fits["linear"].aicc - fit.aicc >= criteria.aicc_margin
    u10, u90, sharp = rise_points(fit, u_min, u_max)
    before = u_sizes < u10 if np.isfinite(u10) else np.zeros(len(u_sizes), bool)
    tolerance = max(criteria.plateau_k * se, 0.1 * abs(rise))
    on_floor = bool(np.all(np.abs(means[before] - floor) <= tolerance))
    n_plateau = int(before.sum())

    def verdict(label: str, reason: str) -> Verdict:
        return Verdict(label, reason, rise, se, floor, u10, u90, sharp, n_plateau, nonlinear)

    if not rise > criteria.snr * se:
        return verdict("absent", f"no significant rise (rise {rise:.3g} <= {criteria.snr:g} x SE {se:.3g})")
    range_used = metric_range if metric_range else float(np.ptp(means))
    failed = []
    if len(u_sizes) < criteria.min_sizes:
        failed.append(f"only {len(u_sizes)} sizes (< {criteria.min_sizes})")
    if not nonlinear:
        failed.append(f"no nonlinear model beats the line by {criteria.aicc_margin:g} AICc")
    if rise < criteria.min_rise_frac * range_used:
        failed.append(f"rise {rise:.3g} < {criteria.min_rise_frac:g} of range {range_used:.3g}")
    if not sharp <= criteria.max_sharpness:
        failed.append(f"sharpness {sharp:.2f} > {criteria.max_sharpness:g} decades")
    if n_plateau < criteria.plateau_sizes:
        failed.append(f"{n_plateau} sizes before the rise (< {criteria.plateau_sizes})")
    elif not on_floor:
        failed.append("the small sizes are not on the floor")
    if failed:
        return verdict("smooth", "; ".join(failed))
    return verdict(
        "emergent", f"plateau of {n_plateau} sizes, then a rise of {rise:.3g} in {sharp:.2f} decades"
    )


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
