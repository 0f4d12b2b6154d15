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
    if start is None:
        interior = _interior_fit(model, u, y, x0, lower, upper)
        if interior is not None:
            return interior
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


def _interior_fit(
    model: str, u: np.ndarray, y: np.ndarray, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> Fit | None:
    """The unbounded Levenberg-Marquardt fit (MINPACK) from `x0` when it converges strictly inside the
    bounds: then it is the bounded fit's local minimum too, found several times faster. None otherwise."""
    try:
        p, _, _, _, ier = leastsq(
            lambda q: predict(model, q, u) - y,
            x0,
            Dfun=lambda q: _jacobian(model, q, u),
            full_output=True,
            ftol=1e-10,
            xtol=1e-10,
            maxfev=200,
        )
    except (ValueError, np.linalg.LinAlgError):
        return None
    margin = 1e-3 * (upper - lower)
    if ier not in (1, 2, 3, 4) or not np.all(np.isfinite(p)):
        return None
    if np.any(p <= lower + margin) or np.any(p >= upper - margin):
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


def resample(groups: list[np.ndarray], rng: np.random.Generator, n_boot: int) -> list[np.ndarray]:
    """Index sets of a two-level bootstrap: scale points with replacement, then seeds within each."""
    flat, lengths = resample_flat(groups, rng, n_boot)
    return np.split(flat, np.cumsum(lengths)[:-1])


def resample_flat(
    groups: list[np.ndarray], rng: np.random.Generator, n_boot: int
) -> tuple[np.ndarray, np.ndarray]:
    """`resample`'s index sets, concatenated, and their lengths (all resamples drawn at once)."""
    order = np.concatenate(groups)
    counts = np.array([len(g) for g in groups])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picks = rng.integers(0, len(groups), (n_boot, len(groups)))
    n = counts[picks].ravel()
    within = (rng.random(int(n.sum())) * np.repeat(n, n)).astype(np.int64)
    flat = order[np.repeat(starts[picks].ravel(), n) + within]
    return flat, counts[picks].sum(axis=1)


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
    """Thresholds (in u) of `fit.model` refitted on bootstrap resamples of scale points and seeds
    (NaN for a resample with fewer than 3 distinct sizes). All resamples are refitted at once, see
    `refit_thresholds`."""
    return refit_thresholds(fit, u, y, *resample_flat(groups, np.random.default_rng(seed), n_boot))


# ---- many refits at once -------------------------------------------------------------------------------
#
# A bootstrap refits one model to hundreds of resamples of one curve. Fitting them one by one spends
# most of its time in Python calls per function evaluation; here every resample is one row of a
# (resamples x points) array, and one damped Gauss-Newton (Levenberg-Marquardt) step is a handful of
# array operations for all rows together. The rules are those of `refit_threshold`: an unbounded
# Levenberg-Marquardt from the full-data fit first, accepted when it converges with the threshold inside
# the bounds (a sigmoid's slope must stay >= 0); otherwise a bounded refit (here: the same iteration, each
# step projected onto the bounds) of at most 60 steps.

# From a warm start LM needs ~10 steps; a resample that needs many more is one the model does not fit
# (fewer sizes than it has parameters, or a gap where the rise is): it goes to the bounded refit, which
# stops wherever it is after its last step, as `refit_threshold`'s does.
LM_STEPS = 40
BOUNDED_STEPS = 30
_TOL = 1e-7


def _predict_rows(model: str, p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """`predict` for many parameter rows (R x 4) and point rows (R x L) at once."""
    a, b, c, d = (p[:, i : i + 1] for i in range(4))
    if model == "sigmoid":
        return a + (b - a) * expit(c * (u - d))
    du = u - d
    return a + b * np.minimum(du, 0.0) + c * np.maximum(du, 0.0)


def _jacobian_rows(model: str, p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """`_jacobian` for many rows, parameters first: R x 4 x L."""
    a, b, c, d = (p[:, i : i + 1] for i in range(4))
    du = u - d
    if model == "sigmoid":
        s = expit(c * du)
        ds = s * (1.0 - s) * (b - a)
        return np.stack([1.0 - s, s, ds * du, -ds * c], axis=1)
    return np.stack(
        [np.ones_like(du), np.minimum(du, 0.0), np.maximum(du, 0.0), np.where(du < 0, -b, -c)], axis=1
    )


def _solve(m: np.ndarray, g: np.ndarray) -> np.ndarray:
    """x with m x = g for many small systems (R x 4 x 4, R x 4)."""
    try:
        return np.linalg.solve(m, g[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a singular system somewhere: least squares for all
        return np.einsum("rij,rj->ri", np.linalg.pinv(m), g)


def _lm_rows(
    model: str,
    p0: np.ndarray,
    u: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    steps: int,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    tol: float = _TOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on every row of weighted points at once (sum w^2 (f(u) - y)^2); with bounds,
    every step is projected onto them. Returns the parameters and which rows converged: the relative
    decrease of the residual sum of squares (plus `offset`, the part no parameter can change) or the
    relative step below `tol`. Rows that are done leave the arrays, so late steps cost less."""
    rows = len(p0)
    out, converged = p0.copy(), np.zeros(rows, bool)
    idx = np.arange(rows)
    p, u, y, w = p0.copy(), np.array(u, dtype=float), np.array(y, dtype=float), np.array(w, dtype=float)
    lo, hi = (lower, upper) if lower is not None and upper is not None else (None, None)
    extra = np.zeros(rows) if offset is None else np.asarray(offset, dtype=float)
    bounded = lo is not None
    with np.errstate(all="ignore"):
        resid = w * (_predict_rows(model, p, u) - y)
        cost = np.sum(resid**2, axis=1)
        keep = np.isfinite(cost)
        damping, scale, growth = np.full(rows, 1e-3), np.zeros((rows, 4)), np.full(rows, 2.0)
        for _ in range(steps):
            if not keep.all():
                idx, p, u, y, w, resid, cost = (
                    idx[keep],
                    p[keep],
                    u[keep],
                    y[keep],
                    w[keep],
                    resid[keep],
                    cost[keep],
                )
                damping, scale, extra, growth = damping[keep], scale[keep], extra[keep], growth[keep]
                if bounded:
                    lo, hi = lo[keep], hi[keep]
            if not len(idx):
                break
            jac = w[:, None, :] * _jacobian_rows(model, p, u)  # R x 4 x L
            jtj = jac @ jac.transpose(0, 2, 1)
            grad = np.einsum("ril,rl->ri", jac, resid)
            if bounded:
                # A parameter on a bound that the descent direction pushes outward stays there: it
                # leaves the step's equations (a projected Newton step on the free parameters).
                span = hi - lo
                pinned = ((p <= lo + 1e-10 * span) & (grad > 0)) | ((p >= hi - 1e-10 * span) & (grad < 0))
                if pinned.any():
                    free = ~pinned
                    jtj = jtj * (free[:, :, None] & free[:, None, :]) + np.einsum(
                        "ri,ij->rij", pinned, np.eye(4)
                    )
                    grad = np.where(pinned, 0.0, grad)
            diag = np.einsum("rii->ri", jtj)
            scale = np.maximum(scale, diag)  # Marquardt's scaling, never shrinking
            floor = 1e-12 * scale.max(axis=1, keepdims=True) + 1e-300
            damped = jtj + np.einsum("ri,ij->rij", damping[:, None] * np.maximum(scale, floor), np.eye(4))
            trial = p + _solve(damped, -grad)
            if bounded:
                trial = np.clip(trial, lo, hi)
            step = trial - p
            new_resid = w * (_predict_rows(model, trial, u) - y)
            new_cost = np.sum(new_resid**2, axis=1)
            better = np.isfinite(new_cost) & (new_cost <= cost)
            moved = np.sqrt(np.sum(step**2, axis=1))
            small_step = ~(moved > tol * (np.sqrt(np.sum(p**2, axis=1)) + tol))  # NaN steps count as small
            small_gain = better & (cost - new_cost <= tol * (cost + extra))
            # Nielsen's damping update: the better the quadratic model predicted the gain, the less damping
            predicted = 2.0 * np.sum(-step * grad, axis=1) - np.sum(
                step * np.einsum("rij,rj->ri", jtj, step), axis=1
            )
            ratio = (cost - new_cost) / np.where(predicted > 0, predicted, np.inf)
            shrink = np.maximum(1.0 / 3.0, 1.0 - (2.0 * np.clip(ratio, 0.0, 1.0) - 1.0) ** 3)
            p = np.where(better[:, None], trial, p)
            resid = np.where(better[:, None], new_resid, resid)
            cost = np.where(better, new_cost, cost)
            damping = np.where(better, np.maximum(damping * shrink, 1e-12), damping * growth)
            growth = np.where(better, 2.0, growth * 2.0)
            stuck = damping > 1e16
            done = small_step | small_gain | (cost == 0.0) | stuck
            out[idx[done]] = p[done]
            converged[idx[done & ~stuck]] = True
            keep = ~done
        out[idx] = p
    return out, converged


@dataclass
class BootRows:
    """Bootstrap resamples of curves, one row each, ready for `solve_rows`: per row the sizes `u`, the
    weights sqrt(n) and means `m` of the points drawn at each size (weight 0: none drawn, or padding), the
    start and the bounds of the refit, the spread within sizes (`within`), and which curve (`curve`) and
    which of its resamples (`slot`) the row is."""

    model: str
    start: np.ndarray
    u: np.ndarray
    w: np.ndarray
    m: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    within: np.ndarray
    slot: np.ndarray
    curve: np.ndarray


def boot_rows(
    fit: Fit, u: np.ndarray, y: np.ndarray, flat: np.ndarray, lengths: np.ndarray, curve: int = 0
) -> BootRows:
    """The rows of the resamples `flat` (index arrays concatenated, of `lengths`) of one curve, leaving
    out those with fewer than 3 distinct sizes.

    A least-squares fit depends on the points of one size only through their count n and mean m:
    sum (f(u) - y_i)^2 = n (f(u) - m)^2 + a constant. So each resample is one row of (size, sqrt(n), m),
    as many columns as the curve has sizes, whatever its number of seeds."""
    sizes, inverse = np.unique(u, return_inverse=True)
    n_sizes, rows = len(sizes), len(lengths)
    row_of = np.repeat(np.arange(rows), lengths)
    cell = row_of * n_sizes + inverse[flat]
    counts = np.bincount(cell, minlength=rows * n_sizes).reshape(rows, n_sizes)
    sums = np.bincount(cell, weights=y[flat], minlength=rows * n_sizes).reshape(rows, n_sizes)
    squares = np.bincount(cell, weights=y[flat] ** 2, minlength=rows * n_sizes).reshape(rows, n_sizes)
    present = counts > 0
    n_present = present.sum(axis=1)
    usable = np.flatnonzero(n_present >= 3)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    y_low = np.minimum.reduceat(y[flat], starts)[usable] if rows else np.empty(0)
    y_high = np.maximum.reduceat(y[flat], starts)[usable] if rows else np.empty(0)
    present, counts, sums, n_present = present[usable], counts[usable], sums[usable], n_present[usable]
    # The spread within sizes, which no fit changes: the convergence tests see the whole RSS, as they
    # would point by point.
    within = np.maximum(squares[usable].sum(axis=1) - np.sum(sums**2 / np.maximum(counts, 1), axis=1), 0.0)
    lower, upper = _row_bounds(fit.model, sizes, present, n_present, y_low, y_high)
    return BootRows(
        fit.model,
        np.tile(np.asarray(fit.params, dtype=float), (len(usable), 1)),
        np.repeat(sizes[None, :], len(usable), axis=0),
        np.sqrt(counts),
        np.where(present, sums / np.maximum(counts, 1), 0.0),
        lower,
        upper,
        within,
        usable,
        np.full(len(usable), curve),
    )


def stack_rows(parts: list[BootRows]) -> BootRows:
    """The rows of several curves (of one model) in one block, each padded to the most sizes (weight 0)."""
    width = max(p.u.shape[1] for p in parts)

    def pad(a: np.ndarray, value: np.ndarray | float) -> np.ndarray:
        extra = width - a.shape[1]
        if not extra:
            return a
        fill = np.broadcast_to(value if np.ndim(value) else np.full((len(a), 1), value), (len(a), extra))
        return np.concatenate([a, fill], axis=1)

    return BootRows(
        parts[0].model,
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("start",)),
        np.concatenate([pad(p.u, p.u[:, :1]) for p in parts]),
        np.concatenate([pad(p.w, 0.0) for p in parts]),
        np.concatenate([pad(p.m, 0.0) for p in parts]),
        *(
            np.concatenate([getattr(p, f) for p in parts])
            for f in ("lower", "upper", "within", "slot", "curve")
        ),
    )


def solve_rows(rows: BootRows) -> np.ndarray:
    """The refitted threshold of every row, by the rules of `refit_threshold`."""
    found = np.full(len(rows.start), np.nan)
    if not len(found):
        return found
    model, lower, upper = rows.model, rows.lower, rows.upper
    p, converged = _lm_rows(model, rows.start, rows.u, rows.m, rows.w, LM_STEPS, offset=rows.within)
    ok = converged & np.all(np.isfinite(p), axis=1) & (lower[:, 3] <= p[:, 3]) & (p[:, 3] <= upper[:, 3])
    if model == "sigmoid":
        ok &= p[:, 2] >= 0
    found[ok] = p[ok, 3]
    rest = np.flatnonzero(~ok)
    if rest.size:
        lo, hi = lower[rest], upper[rest]
        x0 = np.clip(rows.start[rest], lo, hi)
        x0 = np.where(x0 <= lo, lo + 1e-9 * (hi - lo), np.where(x0 >= hi, hi - 1e-9 * (hi - lo), x0))
        u, m, w, within = rows.u[rest], rows.m[rest], rows.w[rest], rows.within[rest]
        q, _ = _lm_rows(model, x0, u, m, w, BOUNDED_STEPS, lo, hi, within, 1e-8)
        found[rest] = q[:, 3]
    return found


def refit_thresholds(
    fit: Fit, u: np.ndarray, y: np.ndarray, flat: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """`refit_threshold(fit, u[idx], y[idx])` for every index array `idx` (concatenated in `flat`, of
    `lengths`), all at once; NaN where `idx` holds fewer than 3 distinct sizes."""
    out = np.full(len(lengths), np.nan)
    rows = boot_rows(fit, u, y, flat, lengths)
    out[rows.slot] = solve_rows(rows)
    return out


def _row_bounds(
    model: str,
    sizes: np.ndarray,
    present: np.ndarray,
    n_present: np.ndarray,
    y_low: np.ndarray,
    y_high: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`_bounds` of every row: its sizes are `sizes[present[row]]`, its values span y_low..y_high."""
    span = np.maximum(y_high - y_low, 1e-9)
    levels = (y_low - span, y_high + span)
    rank = np.cumsum(present, axis=1)  # 1 at the smallest present size, n_present at the largest
    first = np.argmax(present, axis=1)
    last = len(sizes) - 1 - np.argmax(present[:, ::-1], axis=1)
    u_min, u_max = sizes[first], sizes[last]
    if model == "sigmoid":
        lower = np.stack([levels[0], levels[0], np.zeros_like(span), u_min - U_MARGIN], axis=1)
        upper = np.stack([levels[1], levels[1], np.full_like(span, K_MAX), u_max + U_MARGIN], axis=1)
        return lower, upper
    second = sizes[np.argmax(present & (rank == 2), axis=1)]
    before_last = sizes[np.argmax(present & (rank == (n_present - 1)[:, None]), axis=1)]
    slope = 50.0 * span / np.maximum(u_max - u_min, 1e-9)
    many = n_present > 3
    lower = np.stack([levels[0], -slope, -slope, np.where(many, second, u_min)], axis=1)
    upper = np.stack([levels[1], slope, slope, np.where(many, before_last, u_max)], axis=1)
    return lower, upper
