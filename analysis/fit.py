"""Three models of a metric y against u = log10(x), fitted with scipy, and chosen by AICc.

- linear:  y = a + b u
- sigmoid: y = floor + (ceiling - floor) / (1 + exp(-k (u - u0)))     (k >= 0; u0 is the threshold)
- hinge:   y = a + b1 min(u - ub, 0) + b2 max(u - ub, 0)             (broken stick; ub is the threshold)

The nonlinear fits start from the best point of a coarse grid (the linear parameters solved exactly at each
grid point) and are refined by `scipy.optimize.least_squares` with analytic Jacobians and bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares, leastsq
from scipy.special import expit

MODELS: tuple[str, ...] = ("linear", "sigmoid", "hinge")
K_MAX = 60.0  # steepest sigmoid, per decade: 10%-90% in 0.07 decades is a step for any sweep
U_MARGIN = 0.5  # a sigmoid midpoint may sit this many decades outside the measured sizes


@dataclass(frozen=True)
class Fit:
    model: str
    params: tuple[float, ...]
    rss: float
    n: int

    @property
    def n_free(self) -> int:
        return len(self.params) + 1  # + the noise variance

    @property
    def aicc(self) -> float:
        k, n = self.n_free, self.n
        if n - k - 1 <= 0:
            return np.inf
        rss = max(self.rss, 1e-300)
        return n * np.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)

    @property
    def threshold(self) -> float:
        """u of the threshold: the sigmoid midpoint or the hinge breakpoint (NaN for a line)."""
        if self.model == "sigmoid":
            return self.params[3]
        if self.model == "hinge":
            return self.params[3]
        return np.nan

    def predict(self, u: np.ndarray) -> np.ndarray:
        return predict(self.model, np.asarray(self.params), np.asarray(u, dtype=float))


def predict(model: str, p: np.ndarray, u: np.ndarray) -> np.ndarray:
    if model == "linear":
        return p[0] + p[1] * u
    if model == "sigmoid":
        return p[0] + (p[1] - p[0]) * expit(p[2] * (u - p[3]))
    if model == "hinge":
        d = u - p[3]
        return p[0] + p[1] * np.minimum(d, 0.0) + p[2] * np.maximum(d, 0.0)
    raise ValueError(model)


def _jacobian(model: str, p: np.ndarray, u: np.ndarray) -> np.ndarray:
    jac = np.empty((len(u), 4))
    d = u - p[3]
    if model == "sigmoid":
        s = expit(p[2] * d)
        ds = s * (1.0 - s) * (p[1] - p[0])
        jac[:, 0] = 1.0 - s
        jac[:, 1] = s
        jac[:, 2] = ds * d
        jac[:, 3] = -ds * p[2]
        return jac
    jac[:, 0] = 1.0
    jac[:, 1] = np.minimum(d, 0.0)
    jac[:, 2] = np.maximum(d, 0.0)
    jac[:, 3] = np.where(d < 0, -p[1], -p[2])
    return jac


def fit_linear(u: np.ndarray, y: np.ndarray) -> Fit:
    slope, intercept = np.polyfit(u, y, 1)
    rss = float(np.sum((y - intercept - slope * u) ** 2))
    return Fit("linear", (float(intercept), float(slope)), rss, len(u))


def _bounds(model: str, u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo_y, hi_y = float(y.min()), float(y.max())
    span = max(hi_y - lo_y, 1e-9)
    levels = (lo_y - span, hi_y + span)
    if model == "sigmoid":
        lower = [levels[0], levels[0], 0.0, u.min() - U_MARGIN]
        upper = [levels[1], levels[1], K_MAX, u.max() + U_MARGIN]
    else:
        sizes = np.unique(u)
        slope = 50.0 * span / max(sizes[-1] - sizes[0], 1e-9)
        lower = [levels[0], -slope, -slope, sizes[1] if len(sizes) > 3 else sizes[0]]
        upper = [levels[1], slope, slope, sizes[-2] if len(sizes) > 3 else sizes[-1]]
    return np.array(lower, dtype=float), np.array(upper, dtype=float)


def _grid_start(model: str, u: np.ndarray, y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The best starting point on a grid of the nonlinear parameter(s), the linear ones solved exactly."""
    centres = np.linspace(max(lower[3], u.min()), min(upper[3], u.max()), 24)
    if model == "sigmoid":
        ks = np.array([1.0, 3.0, 10.0, 30.0])
        kk, cc = np.repeat(ks, len(centres)), np.tile(centres, len(ks))
        s = expit(kk[:, None] * (u[None, :] - cc[:, None]))  # C x n
        s_mean, y_mean = s.mean(axis=1, keepdims=True), y.mean()
        var = ((s - s_mean) ** 2).sum(axis=1)
        slope = ((s - s_mean) * (y - y_mean)).sum(axis=1) / np.maximum(var, 1e-12)
        floor = y_mean - slope * s_mean[:, 0]
        rss = ((floor[:, None] + slope[:, None] * s - y) ** 2).sum(axis=1)
        i = int(np.argmin(rss))
        start = np.array([floor[i], floor[i] + slope[i], kk[i], cc[i]])
    else:
        d = u[None, :] - centres[:, None]
        X = np.stack([np.ones_like(d), np.minimum(d, 0.0), np.maximum(d, 0.0)], axis=2)  # C x n x 3
        xtx = np.einsum("cni,cnj->cij", X, X) + 1e-9 * np.eye(3)
        beta = np.linalg.solve(xtx, np.einsum("cni,n->ci", X, y)[..., None])[..., 0]
        rss = ((np.einsum("cni,ci->cn", X, beta) - y) ** 2).sum(axis=1)
        i = int(np.argmin(rss))
        start = np.array([*beta[i], centres[i]])
    return np.clip(start, lower, upper)


def fit_nonlinear(
    model: str, u: np.ndarray, y: np.ndarray, start: np.ndarray | None = None, max_nfev: int = 200
) -> Fit | None:
    """Least-squares fit of `sigmoid` or `hinge`; `start` (e.g. the full-data fit) skips the grid."""
    lower, upper = _bounds(model, u, y)
    x0 = _grid_start(model, u, y, lower, upper) if start is None else np.clip(start, lower, upper)
    x0 = np.where(
        x0 <= lower, lower + 1e-9 * (upper - lower), np.where(x0 >= upper, upper - 1e-9 * (upper - lower), x0)
    )
    try:
        res = least_squares(
            lambda p: predict(model, p, u) - y,
            x0,
            jac=lambda p: _jacobian(model, p, u),
            bounds=(lower, upper),
            method="trf",
            x_scale="jac",
            max_nfev=max_nfev,
        )
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(res.x)):
        return None
    return Fit(model, tuple(float(v) for v in res.x), float(2.0 * res.cost), len(u))


def fit_all(u: np.ndarray, y: np.ndarray, min_sizes: int) -> dict[str, Fit]:
    """Every model the data can support: the line always (2+ sizes), the 4-parameter models from
    `min_sizes` distinct sizes on."""
    fits = {"linear": fit_linear(u, y)}
    if len(np.unique(u)) >= min_sizes:
        for model in ("sigmoid", "hinge"):
            fit = fit_nonlinear(model, u, y)
            if fit is not None:
                fits[model] = fit
    # Residuals below rounding error carry no information: on exact (e.g. constant) data every model
    # would "win" by log(0); flooring the RSS lets ties go to the simpler model.
    floor = max(
        1e-12 * float(np.sum((y - y.mean()) ** 2)), len(y) * (1e-12 * float(np.abs(y).max())) ** 2, 1e-300
    )
    return {m: replace(f, rss=max(f.rss, floor)) for m, f in fits.items()}


def best_model(fits: dict[str, Fit]) -> str:
    """Lowest AICc; ties go to the simpler model (MODELS order)."""
    return min(fits, key=lambda m: (round(fits[m].aicc, 9), MODELS.index(m)))


def resample(groups: list[np.ndarray], rng: np.random.Generator, n_boot: int) -> list[np.ndarray]:
    """Index sets of a two-level bootstrap: scale points with replacement, then seeds within each."""
    order = np.concatenate(groups)
    counts = np.array([len(g) for g in groups])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = []
    for _ in range(n_boot):
        picks = rng.integers(0, len(groups), len(groups))
        n = counts[picks]
        within = (rng.random(int(n.sum())) * np.repeat(n, n)).astype(np.int64)
        out.append(order[np.repeat(starts[picks], n) + within])
    return out


def refit_threshold(fit: Fit, u: np.ndarray, y: np.ndarray) -> float:
    """Threshold of `fit.model` refitted to (u, y), starting from `fit`'s parameters.

    Unbounded Levenberg-Marquardt (MINPACK `leastsq`) first: from a warm start it converges in a few steps,
    several times faster than the bounded trust-region fit, which is the fallback when LM fails or leaves
    the bounds. A sigmoid steeper than K_MAX is accepted: its midpoint still says where the step is."""
    lower, upper = _bounds(fit.model, u, y)
    start = np.asarray(fit.params, dtype=float)
    try:
        p, _, _, _, ier = leastsq(
            lambda q: predict(fit.model, q, u) - y,
            start,
            Dfun=lambda q: _jacobian(fit.model, q, u),
            full_output=True,
            ftol=1e-7,
            xtol=1e-7,
            maxfev=80,  # from a warm start LM needs ~10; more means it is running off to infinity
        )
        valid = np.all(np.isfinite(p)) and (fit.model != "sigmoid" or p[2] >= 0)
        if valid and ier in (1, 2, 3, 4) and lower[3] <= p[3] <= upper[3]:
            return float(p[3])
    except (ValueError, np.linalg.LinAlgError):
        pass
    bounded = fit_nonlinear(fit.model, u, y, start, max_nfev=60)
    return bounded.threshold if bounded is not None else np.nan


def on_bound(fit: Fit, u: np.ndarray, y: np.ndarray) -> bool:
    """Does the fit rest on a bound (within 0.1% of the bound's span)? A sigmoid at the steepest slope is
    a clean step and does not count; a level, midpoint, breakpoint or hinge slope on its bound means the
    model is stretched past what the data show, and its threshold is not identified."""
    lower, upper = _bounds(fit.model, u, y)
    p, tol = np.asarray(fit.params), 1e-3 * (upper - lower)
    hits = (p <= lower + tol) | (p >= upper - tol)
    if fit.model == "sigmoid":
        hits[2] = False
    return bool(hits.any())


def bootstrap_thresholds(
    fit: Fit, u: np.ndarray, y: np.ndarray, groups: list[np.ndarray], n_boot: int, seed: int
) -> np.ndarray:
    """Thresholds (in u) of `fit.model` refitted on bootstrap resamples of scale points and seeds."""
    rng = np.random.default_rng(seed)
    out = np.full(n_boot, np.nan)
    for b, idx in enumerate(resample(groups, rng, n_boot)):
        if len(np.unique(u[idx])) < 3:
            continue
        out[b] = refit_threshold(fit, u[idx], y[idx])
    return out
