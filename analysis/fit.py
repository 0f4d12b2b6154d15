"""Three models of a metric y against u = log10(x), fitted with scipy, and chosen by AICc.

- linear:  y = a + b u
- sigmoid: y = floor + (ceiling - floor) / (1 + exp(-k (u - u0)))     (k >= 0; u0 is the threshold)
- hinge:   y = a + b1 min(u - ub, 0) + b2 max(u - ub, 0)             (broken stick; ub is the threshold)

The line is `np.polyfit`. The sigmoid and the hinge are fitted by MINPACK's Levenberg-Marquardt,
`scipy.optimize.leastsq`, with analytic Jacobians: a fit from the best point of a coarse grid (the linear
parameters solved exactly at each grid point), a bootstrap refit from the full-data fit. Where the unbounded
fit fails or leaves the bounds, the same routine fits within them, through the sine transform of MINUIT and
lmfit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import tanh
from typing import Any

import numpy as np
from scipy.optimize import leastsq
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
    a, b, c, d = p.tolist()  # floats: numpy scalars slow down the arithmetic on small arrays
    if model == "sigmoid":
        return a + (b - a) * expit(c * (u - d))
    if model == "hinge":
        du = u - d
        low = np.minimum(du, 0.0)
        return a + b * low + c * (du - low)
    raise ValueError(model)


def _jacobian(model: str, p: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d (w predict) / d p, one row per parameter."""
    a, b, c, d = p.tolist()
    du = u - d
    if model == "sigmoid":
        s = expit(c * du)
        ws = w * s
        wds = ws * (1.0 - s) * (b - a)
        return np.array((w - ws, ws, wds * du, -c * wds))
    w_low = w * np.minimum(du, 0.0)
    return np.array((w, w_low, w * du - w_low, np.where(du < 0, -b, -c) * w))


Callback = Callable[[np.ndarray], Any]  # an array, or (nested) lists of floats: `leastsq` takes either

# Up to this many residuals the callbacks compute in Python floats: there (a bootstrap refit has one residual
# per size) numpy's cost per call exceeds the arithmetic, and the fit runs ~3x faster.
SHORT_PROBLEM = 24
# Weight of the pull toward the start, per unit of each parameter: far below any noise, so it moves only what
# the data leave free (a resample with fewer sizes than parameters, the slope of a step too steep to
# measure), and there it picks the fit nearest to the start. It also keeps the Jacobian of full rank:
# on an exactly singular one, scipy's MINPACK (1.17) was seen to step differently from run to run.
PULL = 1e-6


def _problem(
    model: str,
    u: np.ndarray,
    y: np.ndarray,
    start: np.ndarray,
    w: np.ndarray | float = 1.0,
    extra: float = 0.0,
) -> tuple[Callback, Callback]:
    """scipy's callbacks for the fit of `model` that minimises sum w^2 (f(u) - y)^2 + `extra` (+ the pull
    toward `start`): the residuals and their Jacobian, one row per parameter (`leastsq`'s col_deriv layout).
    The residual sqrt(extra) is a point of weight 0: no parameter changes it, but the relative convergence
    tests see it."""
    n = len(u)
    padded = np.zeros((3, n + 1))
    padded[0, :n], padded[0, n] = u, u[-1]
    padded[1, :n] = w
    padded[2, :n], padded[2, n] = w * y, -np.sqrt(extra)
    if n + 1 <= SHORT_PROBLEM:
        return _float_callbacks(model, padded.T.tolist(), start.tolist())
    u, w, wy = padded
    pull = PULL * np.eye(4)
    return (
        lambda p: np.concatenate((w * predict(model, p, u) - wy, PULL * (p - start))),
        lambda p: np.concatenate((_jacobian(model, p, u, w), pull), axis=1),
    )


def _float_callbacks(model: str, points: list[list[float]], start: list[float]) -> tuple[Callback, Callback]:
    """`_problem`'s callbacks on points (u, w, w y) in Python floats; expit(x) = (1 + tanh(x / 2)) / 2."""
    a0, b0, c0, d0 = start
    identity = [[PULL if i == j else 0.0 for j in range(4)] for i in range(4)]

    def pull(a: float, b: float, c: float, d: float) -> list[float]:
        return [PULL * (a - a0), PULL * (b - b0), PULL * (c - c0), PULL * (d - d0)]

    def with_pull(rows: tuple[list[float], ...]) -> list[list[float]]:
        return [row + extra for row, extra in zip(rows, identity, strict=True)]

    if model == "sigmoid":

        def residuals(p: np.ndarray) -> list[float]:
            a, b, c, d = p.tolist()
            half = 0.5 * (b - a)
            return [w * (a + half + half * tanh(0.5 * c * (u - d))) - wy for u, w, wy in points] + pull(
                a, b, c, d
            )

        def jacobian(p: np.ndarray) -> list[list[float]]:
            a, b, c, d = p.tolist()
            rows: tuple[list[float], ...] = ([], [], [], [])
            for u, w, _ in points:
                s = 0.5 + 0.5 * tanh(0.5 * c * (u - d))
                ws = w * s
                wds = ws * (1.0 - s) * (b - a)
                rows[0].append(w - ws)
                rows[1].append(ws)
                rows[2].append(wds * (u - d))
                rows[3].append(-c * wds)
            return with_pull(rows)

    else:

        def residuals(p: np.ndarray) -> list[float]:
            a, b, c, d = p.tolist()
            return [w * (a + (b if u < d else c) * (u - d)) - wy for u, w, wy in points] + pull(a, b, c, d)

        def jacobian(p: np.ndarray) -> list[list[float]]:
            _, b, c, d = p.tolist()
            rows: tuple[list[float], ...] = ([], [], [], [])
            for u, w, _ in points:
                rows[0].append(w)
                rows[1].append(w * min(u - d, 0.0))
                rows[2].append(w * max(u - d, 0.0))
                rows[3].append(-w * (b if u < d else c))
            return with_pull(rows)

    return residuals, jacobian


CONVERGED = (1, 2, 3, 4)  # `leastsq`'s codes for convergence; 5: it used up its evaluations


def _leastsq(
    residuals: Callback, jacobian: Callback, start: np.ndarray, tol: float, maxfev: int
) -> tuple[np.ndarray, int]:
    """MINPACK's Levenberg-Marquardt (`leastsq`) from `start`: where it stopped, and its code (0: failed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # leastsq warns where it stops unconverged
        try:
            p, ier = leastsq(
                residuals, start, Dfun=jacobian, col_deriv=True, ftol=tol, xtol=tol, maxfev=maxfev
            )
        except (TypeError, ValueError, np.linalg.LinAlgError):  # TypeError: fewer residuals than parameters
            return np.full(len(start), np.nan), 0
    return p, int(ier) if np.all(np.isfinite(p)) else 0


def _bounded_leastsq(
    residuals: Callback,
    jacobian: Callback,
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    tol: float,
    maxfev: int,
) -> np.ndarray:
    """`_leastsq` within the bounds, wherever it stops: in z with p = mid + half sin(z), the bounds transform
    of MINUIT and lmfit, every z is a p within the bounds."""
    half = (upper - lower) / 2.0
    mid = lower + half
    # From just inside the bounds: on a bound, dp/dz = 0 and the parameter could never leave it.
    z0 = np.arcsin(np.clip((start - mid) / half, -1.0 + 1e-6, 1.0 - 1e-6))
    z, _ = _leastsq(
        lambda z: residuals(mid + half * np.sin(z)),
        lambda z: np.asarray(jacobian(mid + half * np.sin(z))) * (half * np.cos(z))[:, None],
        z0,
        tol,
        maxfev,
    )
    return mid + half * np.sin(z)


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


def fit_nonlinear(model: str, u: np.ndarray, y: np.ndarray) -> Fit | None:
    """Least-squares fit of `sigmoid` or `hinge` from the best grid point: unbounded where it converges
    strictly inside the bounds (then it is the bounded fit's local minimum too, found faster), bounded
    otherwise."""
    lower, upper = _bounds(model, u, y)
    start = _grid_start(model, u, y, lower, upper)
    residuals, jacobian = _problem(model, u, y, start)
    p, ier = _leastsq(residuals, jacobian, start, 1e-10, 200)
    margin = 1e-3 * (upper - lower)
    if ier not in CONVERGED or np.any(p <= lower + margin) or np.any(p >= upper - margin):
        p = _bounded_leastsq(residuals, jacobian, start, lower, upper, 1e-10, 400)
        if not np.all(np.isfinite(p)):
            return None
    rss = float(np.sum((predict(model, p, u) - y) ** 2))
    return Fit(model, tuple(float(v) for v in p), rss, len(u))


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
