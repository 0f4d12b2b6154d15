"""Is one metric-vs-scale curve emergent? A detector valid at 5 single-seed sizes and at 2-5 bimodal seeds.

Pure functions on arrays; no pandas, no I/O. `detect` classifies one curve, `false_discovery` controls the
false-discovery rate over the curves of a report, `metric_check` asks whether an exact-match jump is an
artefact of the metric (Schaeffer et al. 2023).

Why these statistics (issue 9):
- The curve is analysed in u = log10(size) and in "z units": the metric oriented so that higher is better,
  minus its floor (chance, else the bound on the bad side), divided by its range (from the metric's bounds).
- Noise of a size's mean is the largest of: evaluation sampling (stderr, or binomial from n_examples; a lower
  bound), the spread between seeds (pooled over sizes with the noisiest size left out, and that size's own
  spread where it is larger), and the curve's own scatter where neither is known to be larger. The curve's
  scatter is the smallest of three estimates that one jump cannot inflate: the root mean square and the
  standard deviation of the successive differences with the largest left out (in the spirit of BIG-bench's
  breakthroughness), and the residual scatter around the best-fitting jump. Any of them is valid because the
  bootstrap re-estimates it in every draw; the smallest keeps the power to see a jump at 5 sizes. The
  estimate that decided is reported as `noise_source` ("eval", "seeds" or "curve").
- Model comparison is a parametric-bootstrap likelihood-ratio test, never AICc: the statistic is the drop in
  the noise-weighted residual sum of squares from the line to the best "jump" (a sigmoid whose 10-90% rise
  takes at most `max_rise_decades`), simulated under the fitted line with every noise estimate redone in
  every draw (so the test accounts for the noise being estimated from 5 points; with seeds every observation
  is simulated). `smooth` needs the same kind of
  test of any change against the flat mean. Fits are closed-form least squares on a grid of midpoints and
  widths, vectorised over bootstrap draws: about 6 ms of CPU per single-seed curve, 13 ms with seeds.
- `absent` needs a jump of `min_rise_frac` after the plateau sizes to have been findable at every place
  (noncentrality of noise-free steps, no simulation); the power simulation (capped at `n_power` draws) runs
  only for `inconclusive` curves.
- Small p-values beyond the bootstrap's resolution come from a scaled chi-square fitted to the null draws,
  so that a report's Benjamini-Hochberg step can use them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.special import expit

from emergence_lab.contract import Metric

DEFINITION = re.sub(
    r"\s+",
    " ",
    """
    A curve is called emergent when (1) the metric sits near its floor (chance, or its worst bound) for at
    least {plateau} sizes, (2) then rises by at least {frac:.0%} of the metric's range, the rise (10% to 90%
    of it) taking at most {decades:g} decade(s) of scale, and (3) a jump explains the curve significantly
    better than a straight line in log-scale (parametric-bootstrap likelihood-ratio test, level {alpha:g}).
    The noise is the largest of evaluation sampling, the spread between seeds and the curve's own
    size-to-size scatter (which one jump cannot inflate). For a metric without a range (loss,
    log-probability) the floor is the level of the first {plateau} sizes and the rise must close at least
    {frac:.0%} of the gap between that level and the metric's best possible value (0 for a loss or
    log-probability, 1 for perplexity); a metric with no best value is never called emergent. `smooth`: it
    changes significantly, but not as such a jump. `absent`: no significant change, and a jump of the
    minimum size would have been found. `inconclusive`: the data cannot decide; a power statement says what
    would.
    """,
).strip()

VERDICTS = ("emergent", "smooth", "absent", "inconclusive")
_WIDTH_FACTOR = 2.0 * math.log(9.0)  # k = _WIDTH_FACTOR / (10-90% width of a logistic)
_MAD = 0.6744897501960817  # median |N(0,1)|


@dataclass(frozen=True)
class DetectOptions:
    alpha: float = 0.05
    min_rise_frac: float = 0.2
    max_rise_decades: float = 1.0
    plateau: int = 2  # sizes near the floor before the rise
    near_floor_frac: float = 0.1  # "near the floor": within this fraction of the range (plus 2 SE)
    n_boot: int = 200
    n_power: int = 100  # cap on simulated draws per power evaluation (inconclusive curves only)
    power_target: float = 0.8
    seed: int = 0
    n_midpoints: int = 25
    min_se_frac: float = 1e-6  # guards against zero noise only: a larger floor breaks the bootstrap's pivot

    def definition(self) -> str:
        return DEFINITION.format(
            plateau=self.plateau, frac=self.min_rise_frac, decades=self.max_rise_decades, alpha=self.alpha
        )


@dataclass(frozen=True)
class SeedCurve:
    """One seed's curve: `jump` (rises by >= min_rise_frac of the range between two adjacent sizes after at
    least `plateau` sizes at its floor), `rise` (rises as much, but not in one step) or `flat`."""

    seed: int
    verdict: str
    threshold: float | None  # geometric mean of the bracketing sizes
    lo: float | None  # the bracketing sizes
    hi: float | None


@dataclass(frozen=True)
class Detection:
    verdict: str
    reason: str
    threshold: float | None  # size at the jump's midpoint (x units)
    ci: tuple[float, float] | None  # 95% CI of the threshold, at least the interval of the bracketing sizes
    bracket: tuple[float, float] | None  # the two measured sizes either side of the threshold
    rise: float  # the fitted jump's rise over the measured sizes, in metric units (signed as the metric)
    rise_frac: float  # the same, as a fraction of the range (or of the gap to the best value)
    width_decades: float | None  # 10-90% width of the best-fitting sigmoid
    p_value: float  # jump vs line
    p_change: float  # any change vs flat
    noise_se: float  # median SE of a size's mean, metric units
    noise_source: str  # "eval" | "seeds" | "curve" | "floor"
    power: float | None = None
    power_statement: str | None = None
    per_seed: tuple[SeedCurve, ...] = ()
    seed_threshold_spread: tuple[float, float] | None = None  # lowest lo and highest hi of the jumping seeds
    criteria: dict[str, bool] = field(default_factory=dict)
    n_sizes: int = 0
    n_seeds: int = 0

    def describe(self, label: str, unit: str = "parameters") -> str:
        """One line for a report, e.g. "exact match, depth 2: emergent at 22k parameters (95% CI 7k-64k;
        per-seed 18k-30k)"."""
        text = f"{label}: {self.verdict}"
        if self.verdict == "emergent" and self.threshold is not None and self.ci is not None:
            text += f" at {_fmt(self.threshold)} {unit} (95% CI {_fmt(self.ci[0])}-{_fmt(self.ci[1])}"
            if self.seed_threshold_spread is not None:
                lo, hi = self.seed_threshold_spread
                text += f"; per-seed {_fmt(lo)}-{_fmt(hi)}"
            text += ")"
        elif self.verdict == "inconclusive" and self.power_statement:
            text += f" ({self.power_statement})"
        else:
            text += f" ({self.reason})"
        return text


# ---- the curve in z units ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Curve:
    u: np.ndarray  # log10 sizes, ascending
    z: np.ndarray  # oriented, normalised size means
    k: np.ndarray  # observations per size
    fixed_se: np.ndarray  # per-size SE of the mean from eval sampling and seeds (z units)
    fixed_source: np.ndarray  # "eval" / "seeds" / "floor" per size
    scale: float | None  # metric units per z unit; None: no rise criterion possible
    sign: float  # +1 higher is better, -1 lower is better
    origin: float  # metric value at z = 0
    bounds: tuple[float, float]  # the metric's bounds in z units (simulated draws are clipped to them)
    obs_z: np.ndarray  # every observation (z units), grouped by size
    idx: np.ndarray  # the size index of each observation
    eval_se: np.ndarray  # per-size lower bound of the SE of the mean: evaluation sampling (or the floor)


def _as_obs(values: Sequence) -> list[np.ndarray]:
    out = []
    for v in values:
        arr = np.atleast_1d(np.asarray(v, dtype=float)).ravel()
        out.append(arr[np.isfinite(arr)])
    return out


def _curve_noise_batch(z: np.ndarray) -> np.ndarray:
    """The curve's own scatter as the SE of one size's mean, (B, n) -> (B,). From the successive differences
    with the largest left out (one jump cannot inflate it): the smaller of their root mean square (the curve
    as a series of plateaus) and their standard deviation (blind to a linear trend), each divided by sqrt(2).
    Either is a valid choice because the bootstrap re-estimates it in every draw; the smaller keeps power both
    for a jump on a plateau and for one on a rising trend. Sums of squares, not medians: at 5 sizes a median
    of 3 differences is too often near zero."""
    d = np.diff(z, axis=1)
    if d.shape[1] < 2:
        return np.zeros(z.shape[0])
    rest = np.take_along_axis(d, np.argsort(np.abs(d), axis=1)[:, :-1], axis=1)
    rms = np.sqrt((rest**2).mean(axis=1) / 2.0)
    if rest.shape[1] < 2:
        return rms
    return np.minimum(rms, rest.std(axis=1, ddof=1) / math.sqrt(2.0))


def _prepare(
    x: np.ndarray,
    obs: list[np.ndarray],
    stderr: np.ndarray | None,
    n_examples: np.ndarray | None,
    spec: Metric,
    opts: DetectOptions,
) -> _Curve:
    sign = 1.0 if spec.higher_is_better else -1.0
    means = np.array([o.mean() for o in obs])
    k = np.array([len(o) for o in obs], dtype=float)
    g = sign * means
    if spec.range is not None:
        floor = (
            spec.chance if spec.chance is not None else (spec.lower if spec.higher_is_better else spec.upper)
        )
        origin, scale = float(floor), float(spec.range)
    else:
        origin = float(means[: opts.plateau].mean())
        best = spec.upper if spec.higher_is_better else spec.lower
        gap = abs(best - origin) if best is not None else abs(origin)
        scale = gap if gap > 0 else None
    unit = scale if scale is not None else max(float(np.ptp(means)), 1e-12)  # only to express noise in z
    z = (g - sign * origin) / unit

    se_eval = np.zeros(len(obs))
    if stderr is not None:
        se_eval = np.where(np.isfinite(stderr), stderr, 0.0) / unit
    if n_examples is not None and spec.lower == 0.0 and spec.upper == 1.0:
        n = np.asarray(n_examples, dtype=float)
        p = np.clip(means, 0.5 / n, 1 - 0.5 / n)
        se_eval = np.maximum(se_eval, np.sqrt(p * (1 - p) / n))
    floor_se = opts.min_se_frac * (spec.range / unit if spec.range is not None else 1.0)
    eval_mean = np.maximum(floor_se, se_eval / np.sqrt(k))
    obs_z = np.concatenate([(sign * o - sign * origin) / unit for o in obs])
    idx = np.repeat(np.arange(len(obs)), k.astype(int))
    _, fixed = _seed_noise(obs_z[None, :], idx, k, eval_mean)
    seeds_se = fixed[0]
    src = np.where(seeds_se > eval_mean, "seeds", np.where(se_eval / np.sqrt(k) > floor_se, "eval", "floor"))
    lo, hi = spec.lower, spec.upper
    if sign < 0:
        lo, hi = hi, lo
    zb = tuple(
        float((sign * b - sign * origin) / unit) if b is not None else float(edge)
        for b, edge in ((lo, -np.inf), (hi, np.inf))
    )
    return _Curve(np.log10(x), z, k, seeds_se, src, scale, sign, origin, zb, obs_z, idx, eval_mean)


def _seed_noise(
    y: np.ndarray, idx: np.ndarray, k: np.ndarray, eval_mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Size means (B, n) of observations y (B, N), and the SE of each mean from evaluation sampling and the
    spread between seeds: pooled over sizes with the noisiest size left out (one transition size with
    bimodal seeds cannot inflate every size), or that size's own spread where it is larger."""
    onehot = (idx[:, None] == np.arange(k.size)[None, :]).astype(float)
    means = np.einsum("bN,Nn->bn", y, onehot) / k[None, :]
    ss = np.einsum("bN,Nn->bn", (y - means[:, idx]) ** 2, onehot)
    df = k - 1
    has = df > 0
    own = np.where(has[None, :], ss / np.maximum(df, 1)[None, :], 0.0)
    seed_var = own
    if has.any():
        keep = np.broadcast_to(has, ss.shape).copy()
        if has.sum() >= 3:
            keep[np.arange(y.shape[0]), np.argmax(np.where(has[None, :], own, -1.0), axis=1)] = False
        pooled = (ss * keep).sum(axis=1) / (df[None, :] * keep).sum(axis=1)
        seed_var = np.maximum(pooled[:, None], own)
    return means, np.maximum(eval_mean[None, :], np.sqrt(seed_var / k[None, :]))


# ---- vectorised fits --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Grid:
    mids: np.ndarray  # (G,)
    widths: np.ndarray  # (G,)
    basis: np.ndarray  # (G, n) sigmoid values
    jump: np.ndarray  # (G,) bool: width <= max_rise_decades


def _grid(u: np.ndarray, opts: DetectOptions) -> _Grid:
    jump_w = opts.max_rise_decades * np.array([0.02, 0.15, 0.3, 0.5, 0.75, 1.0])
    wide_w = opts.max_rise_decades * np.array([1.3, 1.8, 2.5, 4.0, 8.0])
    widths = np.concatenate([jump_w, wide_w])
    mids = np.linspace(u[0], u[-1], opts.n_midpoints)
    mm, ww = np.meshgrid(mids, widths, indexing="ij")
    mm, ww = mm.ravel(), ww.ravel()
    basis = expit((_WIDTH_FACTOR / ww)[:, None] * (u[None, :] - mm[:, None]))
    return _Grid(mm, ww, basis, ww <= opts.max_rise_decades + 1e-12)


def _wls_two(z: np.ndarray, w: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of z (B, n) on [1, basis_g] for every g: (rss, a, h), each (B, G). Weights are
    (B, n), or (n,) shared by all rows (then the weight-only sums are computed once)."""
    # einsum, not `@`: BLAS threads on a busy machine cost 10x more than these small products
    if w.ndim == 1:
        sw = np.full((1, 1), w.sum())
        sx = np.einsum("n,gn->g", w, basis)[None, :]
        sxx = np.einsum("n,gn->g", w, basis * basis)[None, :]
        wz = z * w[None, :]
    else:
        sw = w.sum(axis=1, keepdims=True)
        sx = np.einsum("bn,gn->bg", w, basis)
        sxx = np.einsum("bn,gn->bg", w, basis * basis)
        wz = w * z
    sy = wz.sum(axis=1, keepdims=True)
    syy = (wz * z).sum(axis=1, keepdims=True)
    sxy = np.einsum("bn,gn->bg", wz, basis)
    det = sw * sxx - sx * sx
    ok = det > 1e-12 * sw * sw
    det = np.where(ok, det, 1.0)
    h = np.where(ok, (sw * sxy - sx * sy) / det, 0.0)
    a = (sy - h * sx) / sw
    rss = np.maximum(syy - a * sy - h * sxy, 0.0)
    return rss, a, h


@dataclass(frozen=True)
class _Stats:
    t_jump: np.ndarray  # (B,) RSS_line - RSS_best_rising_jump
    t_change: np.ndarray  # (B,) RSS_flat - RSS_best_any
    rss: np.ndarray  # (B, G) sigmoid RSS
    a: np.ndarray
    h: np.ndarray
    rss_line: np.ndarray
    line: tuple[np.ndarray, np.ndarray]  # intercept, slope (B,)
    se: np.ndarray  # (B, n)


def _statistics(z: np.ndarray, fixed_se: np.ndarray, u: np.ndarray, grid: _Grid) -> _Stats:
    sigma_c = _curve_noise_batch(z)
    # ... and the residual scatter around the best rising jump (weighted as the fixed noise): small when the
    # curve is a clean jump, as large as the noise otherwise; re-estimated in every draw like sigma_c
    shared = fixed_se.ndim == 1
    if shared:
        rel = (fixed_se.min() / fixed_se) ** 2
    else:
        rel = (fixed_se.min(axis=1, keepdims=True) / fixed_se) ** 2
    r0, a0, h0 = _wls_two(z, rel, grid.basis)
    if u.size > 3:
        best = np.where(grid.jump[None, :] & (h0 > 0), r0, np.inf).min(axis=1)
        best = np.where(np.isfinite(best), best, r0.min(axis=1))
        sigma_c = np.minimum(sigma_c, np.sqrt(best / (u.size - 3)))
    se = np.maximum(fixed_se if not shared else fixed_se[None, :], sigma_c[:, None])
    w = 1.0 / se**2
    if shared and np.all(fixed_se == fixed_se[0]):
        # equal fixed noise (one seed, no stderr: the usual published ladder): every row's weights are equal
        # too, so the fits above only need rescaling
        scale = 1.0 / se[:, :1] ** 2
        rss, a, h = r0 * scale, a0, h0
        rl, a_l, b_l = _wls_two(z, np.ones(u.size), u[None, :])
        rss_line = rl * scale
    else:
        rss, a, h = _wls_two(z, w, grid.basis)
        rss_line, a_l, b_l = _wls_two(z, w, u[None, :])
    rss_flat = np.maximum((w * z * z).sum(1) - (w * z).sum(1) ** 2 / w.sum(1), 0.0)
    rising = np.where(grid.jump[None, :] & (h > 0), rss, np.inf)
    t_jump = np.maximum(rss_line[:, 0] - rising.min(axis=1), 0.0)
    t_change = np.maximum(rss_flat - np.minimum(rss.min(axis=1), rss_line[:, 0]), 0.0)
    return _Stats(t_jump, t_change, rss, a, h, rss_line[:, 0], (a_l[:, 0], b_l[:, 0]), se)


def _null(
    mean: np.ndarray, se: np.ndarray, curve: _Curve, grid: _Grid, rng: np.random.Generator, draws: int
) -> _Stats:
    """Statistics of curves simulated under a null mean with the curve's noise, every noise estimate redone
    per draw. One seed: size means, clipped to the metric's bounds as scores at a floor are. Seeds: every
    observation, so that the seed noise is re-estimated the way it was estimated from the data; not clipped,
    because the pooled spread is given to every size and clipping it at a floor would simulate less spread
    than the data showed (measured: bimodal 5-seed ladders found 93% unclipped, 86% clipped; flat 3-seed
    ladders absent 96% either way)."""
    if curve.k.max() <= 1:
        sims = np.clip(mean[None, :] + rng.standard_normal((draws, mean.size)) * se[None, :], *curve.bounds)
        return _statistics(sims, curve.fixed_se, curve.u, grid)
    sd = (se * np.sqrt(curve.k))[curve.idx]
    obs = mean[curve.idx][None, :] + rng.standard_normal((draws, sd.size)) * sd
    means, fixed = _seed_noise(obs, curve.idx, curve.k, curve.eval_se)
    return _statistics(means, fixed, curve.u, grid)


def _p_value(t: float, null: np.ndarray) -> float:
    """Bootstrap p-value; beyond its resolution, the tail of a scaled chi-square fitted to the null draws."""
    exceed = int((null >= t - 1e-12).sum())
    p_emp = (1 + exceed) / (1 + null.size)
    if exceed > 0:
        return p_emp
    mean, var = float(null.mean()), float(null.var())
    if mean <= 0 or var <= 0:
        return p_emp
    scale, dof = var / (2 * mean), 2 * mean**2 / var
    return float(min(p_emp, stats.chi2.sf(t / scale, dof)))


# ---- the per-seed view ------------------------------------------------------------------------------------
def _seed_view(
    x: np.ndarray, obs: list[np.ndarray], labels: list[np.ndarray], curve: _Curve, opts: DetectOptions
) -> tuple[tuple[SeedCurve, ...], tuple[float, float] | None]:
    seeds = sorted({int(s) for lab in labels for s in lab})
    if len(seeds) < 2 or curve.scale is None:
        return (), None
    out = []
    for s in seeds:
        idx, vals = [], []
        for i, (o, lab) in enumerate(zip(obs, labels, strict=True)):
            hit = np.flatnonzero(lab == s)
            if hit.size:
                idx.append(i)
                vals.append(o[hit[0]])
        if len(idx) < opts.plateau + 1:
            continue
        zs = (curve.sign * np.array(vals) - curve.sign * curve.origin) / curve.scale
        steps = np.diff(zs)
        j = int(np.argmax(steps))
        rise = float(zs.max() - zs[: opts.plateau].mean())
        near = zs[: j + 1].mean() <= opts.near_floor_frac + 0.5 * opts.min_rise_frac
        if steps[j] >= opts.min_rise_frac and j + 1 >= opts.plateau and near:
            lo, hi = float(x[idx[j]]), float(x[idx[j + 1]])
            out.append(SeedCurve(s, "jump", math.sqrt(lo * hi), lo, hi))
        elif rise >= opts.min_rise_frac:
            out.append(SeedCurve(s, "rise", None, None, None))
        else:
            out.append(SeedCurve(s, "flat", None, None, None))
    jumps = [c for c in out if c.verdict == "jump"]
    spread = (min(c.lo for c in jumps), max(c.hi for c in jumps)) if jumps else None
    return tuple(out), spread


# ---- power ------------------------------------------------------------------------------------------------
def _power(
    mean: np.ndarray,
    se: np.ndarray,
    fixed_se: np.ndarray,
    u: np.ndarray,
    grid: _Grid,
    crit: float,
    rng: np.random.Generator,
    n: int,
    bounds: tuple[float, float],
) -> float:
    """Share of simulated curves (mean + noise) whose jump statistic exceeds the test's critical value."""
    draws = np.clip(mean[None, :] + rng.standard_normal((n, mean.size)) * se[None, :], *bounds)
    return float((_statistics(draws, fixed_se, u, grid).t_jump > crit).mean())


def _approx_power(
    base: float, opts: DetectOptions, se: np.ndarray, u: np.ndarray, grid: _Grid, crit: float
) -> float:
    """Approximate power against the weakest noise-free step of min_rise_frac after `plateau` sizes: the
    statistic of a noise-free step is its noncentrality lambda; power ~ P(chi2_1(lambda) > crit)."""
    steps = np.arange(opts.plateau, u.size)
    if steps.size == 0:
        return 0.0
    planted = base + opts.min_rise_frac * (np.arange(u.size)[None, :] >= steps[:, None])
    root = np.sqrt(_statistics(planted, se, u, grid).t_jump)
    c = math.sqrt(max(crit, 0.0))
    return float((stats.norm.sf(c - root) + stats.norm.cdf(-c - root)).min())


def _fmt(v: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


# ---- the detector -----------------------------------------------------------------------------------------
def detect(
    sizes: Sequence[float],
    values: Sequence,
    spec: Metric,
    *,
    stderr: Sequence[float] | None = None,
    n_examples: Sequence[float] | float | None = None,
    seeds: Sequence[Sequence[int]] | None = None,
    options: DetectOptions | None = None,
) -> Detection:
    """Classify one curve. `values[i]` holds the observations (one per seed) at `sizes[i]`; ragged is fine.
    `seeds[i]` labels them (default: their position) for the per-seed view. `stderr[i]` is the evaluation SE
    of one observation at size i; `n_examples` (for [0, 1] metrics) gives a binomial SE instead or as well."""
    opts = options or DetectOptions()
    x = np.asarray(sizes, dtype=float)
    obs = _as_obs(values)
    if x.ndim != 1 or len(obs) != x.size:
        raise ValueError("sizes and values must have one entry per size")
    if np.any(x <= 0):
        raise ValueError("sizes must be positive")
    labels = (
        [np.asarray(s, dtype=int) for s in seeds] if seeds is not None else [np.arange(len(o)) for o in obs]
    )
    keep = [i for i, o in enumerate(obs) if o.size]
    order = sorted(keep, key=lambda i: x[i])
    x = x[order]
    obs = [obs[i] for i in order]
    labels = [labels[i][: len(obs[j])] for j, i in enumerate(order)]
    se_in = None if stderr is None else np.asarray(stderr, dtype=float)[order]
    n_ex = None
    if n_examples is not None:
        n_ex = np.broadcast_to(np.asarray(n_examples, dtype=float), (len(sizes),))[order]
    if np.unique(x).size != x.size:
        raise ValueError("sizes must be distinct (pool the observations of one size)")
    n = x.size
    n_seeds = int(max((len(o) for o in obs), default=0))
    if n < opts.plateau + 2:
        return Detection(
            "inconclusive", f"only {n} sizes; at least {opts.plateau + 2} are needed", None, None, None,
            0.0, 0.0, None, 1.0, 1.0, float("nan"), "none", None,
            f"measure at least {opts.plateau + 2 - n} more sizes", n_sizes=n, n_seeds=n_seeds,
        )  # fmt: skip

    curve = _prepare(x, obs, se_in, n_ex, spec, opts)
    u, z = curve.u, curve.z
    grid = _grid(u, opts)
    rng = np.random.default_rng(opts.seed)

    obs_st = _statistics(z[None, :], curve.fixed_se, u, grid)
    se = obs_st.se[0]
    source_per_size = np.where(se > curve.fixed_se, "curve", curve.fixed_source)
    values_, counts = np.unique(source_per_size, return_counts=True)
    noise_source = str(values_[np.argmax(counts)])
    unit = curve.scale if curve.scale is not None else max(float(np.ptp([o.mean() for o in obs])), 1e-12)

    # null: the fitted line, and the flat mean, with the noise re-estimated in every draw
    a_l, b_l = obs_st.line[0][0], obs_st.line[1][0]
    line_mean = a_l + b_l * u
    w = 1 / se**2
    flat_mean = np.full(n, float((w * z).sum() / w.sum()))
    null_line = _null(line_mean, se, curve, grid, rng, opts.n_boot)
    null_flat = _null(flat_mean, se, curve, grid, rng, opts.n_boot)
    t_jump, t_change = float(obs_st.t_jump[0]), float(obs_st.t_change[0])
    p_jump = _p_value(t_jump, null_line.t_jump)
    p_change = _p_value(t_change, null_flat.t_change)
    crit = float(np.quantile(null_line.t_jump, 1 - opts.alpha))

    # the best rising jump, and the best sigmoid of any width (and direction)
    rss, a, h = obs_st.rss[0], obs_st.a[0], obs_st.h[0]
    rising = np.where(grid.jump & (h > 0), rss, np.inf)
    g_best = int(np.argmin(rising))
    any_best = int(np.argmin(rss))
    has_jump = bool(np.isfinite(rising[g_best]))
    width = float(grid.widths[any_best])
    jump_wins = has_jump and rising[g_best] <= rss[any_best] + 1e-9 * (1 + rss[any_best])

    threshold = ci = bracket = None
    rise_z = 0.0
    plateau_ok = False
    if has_jump:
        tie = np.flatnonzero(
            (grid.widths == grid.widths[g_best]) & (rising <= rising[g_best] + 1e-6 * (1 + rising[g_best]))
        )
        u0 = float(grid.mids[tie].mean())
        s = grid.basis[g_best]
        hb, ab = float(h[g_best]), float(a[g_best])
        rise_z = hb * float(s[-1] - s[0])
        before = s <= 0.1
        floor_level = ab + hb * float(s[before].mean()) if before.any() else np.inf
        plateau_ok = int(before.sum()) >= opts.plateau and floor_level <= opts.near_floor_frac + 2 * float(
            np.median(se)
        )
        j = int(np.clip(np.searchsorted(u, u0, side="right") - 1, 0, n - 2))
        prof = np.full(opts.n_midpoints, np.inf)
        np.minimum.at(prof, np.searchsorted(np.unique(grid.mids), grid.mids), rising)
        mids = np.unique(grid.mids)
        inside = mids[prof <= rising[g_best] + stats.chi2.ppf(0.95, 1)]
        lo_u, hi_u = min(float(inside.min()), u[j]), max(float(inside.max()), u[j + 1])
        threshold, ci, bracket = 10**u0, (10**lo_u, 10**hi_u), (float(x[j]), float(x[j + 1]))
    if curve.scale is None:
        rise_z = 0.0
    rise_ok = curve.scale is not None and rise_z >= opts.min_rise_frac
    criteria = {
        "floor_plateau": bool(plateau_ok),
        "rise": bool(rise_ok),
        "within_decades": bool(jump_wins),
        "significant": p_jump < opts.alpha,
    }
    shape_ok = plateau_ok and rise_ok and jump_wins
    per_seed, spread = _seed_view(x, obs, labels, curve, opts)
    rise = curve.sign * rise_z * unit
    med_se = float(np.median(se)) * unit

    def fmt_thr() -> str:
        return f"{_fmt(threshold)} (95% CI {_fmt(ci[0])}-{_fmt(ci[1])})" if threshold is not None else ""

    power = statement = None
    if shape_ok and p_jump < opts.alpha:
        verdict = "emergent"
        reason = (
            f"flat near the floor, then a rise of {rise_z:.0%} of the range within {width:g} decade(s) at "
            f"{fmt_thr()}; a jump beats the line (p = {p_jump:.2g})"
        )
    elif p_change < opts.alpha and not shape_ok:
        verdict = "smooth"
        why = []
        if b_l < 0:
            why.append("it falls with scale (inverse scaling)")
        elif curve.scale is not None and not rise_ok:
            why.append(f"its steepest rise is {rise_z:.0%} of the range (< {opts.min_rise_frac:.0%})")
        if not plateau_ok:
            why.append(f"it does not sit near its floor for {opts.plateau} sizes before rising")
        if has_jump and not jump_wins:
            why.append(f"its rise takes about {width:g} decades (> {opts.max_rise_decades:g})")
        if curve.scale is None:
            why.append("the metric has no best value, so no rise can be judged")
        reason = f"changes significantly (p = {p_change:.2g}) but not as a jump: " + "; ".join(why)
        if spread is not None and all(c.verdict == "jump" for c in per_seed):
            reason += (
                f"; yet each of the {len(per_seed)} seeds jumps on its own, between {_fmt(spread[0])} and "
                f"{_fmt(spread[1])}: the mean curve is smoothed by seeds that jump at different sizes"
            )
    else:
        # no significant jump: absent if a jump of the minimum size would have been found, else inconclusive
        planted_z = max(rise_z if shape_ok else 0.0, opts.min_rise_frac)
        if has_jump and shape_ok:
            place = grid.mids[g_best]
            planted_shape = grid.basis[g_best]
        else:
            place = float(u[min(opts.plateau, n - 1)] + u[max(opts.plateau - 1, 0)]) / 2
            planted_shape = (u >= place).astype(float)
        planted = float(z[: opts.plateau].mean()) + planted_z * planted_shape
        n_pow = min(opts.n_power, opts.n_boot)
        if p_change >= opts.alpha and not shape_ok:
            # absent needs a minimum jump to have been findable at every place; decided without simulation
            # (noncentrality of noise-free steps), so that only inconclusive curves pay for a power simulation
            power = _approx_power(float(z[: opts.plateau].mean()), opts, se, u, grid, crit)
            if power >= opts.power_target:
                verdict = "absent"
                reason = (
                    f"no significant change (p = {p_change:.2g}); a jump of {opts.min_rise_frac:.0%} of the "
                    f"range after the first {opts.plateau} sizes would have been found with probability "
                    f"{power:.2f} or more"
                )
            else:
                verdict = "inconclusive"
                power = _power(planted, se, curve.fixed_se, u, grid, crit, rng, n_pow, curve.bounds)
                reason = f"no significant change (p = {p_change:.2g}), but the noise could hide a jump"
        else:
            verdict = "inconclusive"
            power = _power(planted, se, curve.fixed_se, u, grid, crit, rng, n_pow, curve.bounds)
            reason = f"jump-shaped, but a jump does not beat the line significantly (p = {p_jump:.2g})"
        if verdict == "inconclusive":
            j = int(np.clip(np.searchsorted(u, place, side="right") - 1, 0, n - 2))
            where = f"{_fmt(x[j])}-{_fmt(x[j + 1])}"
            extra = None
            # more seeds where the jump is first, then at every size; the curve's own scatter is re-estimated
            # from the simulated draws, so seeds at two sizes help only where those sizes dominate the noise
            for scope, at in ((f"at the {where} sizes", [j, j + 1]), ("at every size", list(range(n)))):
                for m in (1, 2, 3, 5, 10):
                    se_m = se.copy()
                    se_m[at] = se[at] * np.sqrt(curve.k[at] / (curve.k[at] + m))
                    p_m = _power(
                        planted, se_m, curve.fixed_se * se_m / se, u, grid, crit, rng, n_pow, curve.bounds
                    )
                    if p_m >= opts.power_target:
                        extra = (m, scope, p_m)
                        break
                if extra is not None:
                    break
            statement = (
                f"with this noise (SE {med_se:.3g}) a jump of {planted_z:.0%} of the range at "
                f"{_fmt(10**place)} is found with probability {power:.2f}; "
            )
            if extra is not None:
                m, scope, p_m = extra
                statement += f"{m} more seed(s) (or evaluations) {scope} would raise it to {p_m:.2f}"
            else:
                statement += f"even 10 more seeds at every size would not; measure more sizes around {where}"
    return Detection(
        verdict=verdict,
        reason=reason,
        threshold=threshold,
        ci=ci,
        bracket=bracket,
        rise=float(rise),
        rise_frac=float(rise_z),
        width_decades=width if has_jump else None,
        p_value=float(p_jump),
        p_change=float(p_change),
        noise_se=med_se,
        noise_source=noise_source,
        power=power,
        power_statement=statement,
        per_seed=per_seed,
        seed_threshold_spread=spread,
        criteria=criteria,
        n_sizes=n,
        n_seeds=n_seeds,
    )


# ---- many curves ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Benjamini-Hochberg over the curves of one report. `significant[i]`: curve i's jump test survives
    (exempt curves, e.g. the study's primary metric, are tested alone at alpha). `expected_false`: the
    expected number of false `emergent` calls among the significant non-exempt curves (at most alpha x their
    number under BH), plus alpha for each exempt one."""

    q_values: np.ndarray
    significant: np.ndarray
    expected_false: float
    statement: str


def false_discovery(
    p_values: Sequence[float], alpha: float = 0.05, exempt: Sequence[bool] | None = None
) -> Family:
    p = np.asarray(p_values, dtype=float)
    ex = np.zeros(p.size, bool) if exempt is None else np.asarray(exempt, dtype=bool)
    q = np.where(ex, p, np.nan)
    fam = np.flatnonzero(~ex)
    if fam.size:
        order = fam[np.argsort(p[fam], kind="stable")]
        ranked = p[order] * fam.size / np.arange(1, fam.size + 1)
        q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    sig = q <= alpha
    n_fam = int(sig[~ex].sum())
    n_ex = int(sig[ex].sum())
    expected = alpha * n_fam + alpha * int(ex.sum())
    statement = (
        f"{n_fam + n_ex} of {p.size} curves pass the jump test; with the false-discovery rate held at "
        f"{alpha:g} over {fam.size} curves (Benjamini-Hochberg), about {alpha * n_fam:.2g} of those {n_fam} "
        "calls may be false"
    )
    if ex.any():
        statement += f"; {int(ex.sum())} primary curve(s) tested alone at {alpha:g}"
    return Family(q, sig, float(expected), statement)


# ---- the metric check -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricCheck:
    """`metric_induced`, `persists`, `inconclusive`, or `no_jump` (exact match is not emergent)."""

    verdict: str
    reason: str
    exact: Detection
    continuous: Detection
    pow_l_explains: bool | None  # exact match ~ continuous^L within noise (None: L unknown)
    steady_at_floor: bool  # the continuous metric improves steadily where exact match sits at its floor


def _means(values: Sequence) -> np.ndarray:
    return np.array([o.mean() if o.size else np.nan for o in _as_obs(values)])


def metric_check(
    sizes: Sequence[float],
    exact: Sequence,
    continuous: Sequence,
    exact_spec: Metric,
    continuous_spec: Metric,
    *,
    answer_len: int | None = None,
    same_place_decades: float = 0.5,
    exact_stderr: Sequence[float] | None = None,
    continuous_stderr: Sequence[float] | None = None,
    n_examples: Sequence[float] | float | None = None,
    options: DetectOptions | None = None,
    detections: tuple[Detection, Detection] | None = None,
) -> MetricCheck:
    """Is exact match's jump an artefact of the metric (Schaeffer et al. 2023)?

    1. Where the answer length L is known and the continuous metric is a per-token accuracy, exact match ~
       token_accuracy^L within noise, together with a continuous metric that improves steadily across the
       sizes where exact match sits at its floor, makes the jump `metric_induced`.
    2. A continuous metric that is itself emergent, its threshold within `same_place_decades` of exact
       match's, makes it `persists` (also when ^L fits: then the per-token accuracy itself jumped).
    3. Otherwise a continuous metric improving steadily over exact match's floor sizes: `metric_induced`.
    4. Else `inconclusive`.
    `detections`: the two curves' `detect` results on exactly these sizes, when the caller has them.
    "Steadily": over the floor sizes (at least 3) it rises by at least 2 SE of a difference, and not all in
    its last step (its last step before exact match rises is at most 2/3 of it; a power law's first steps
    are its largest), so a metric that lifts one size before exact match
    (a joint jump seen at coarse sizes) does not count as a smooth precursor."""
    opts = options or DetectOptions()
    x = np.asarray(sizes, dtype=float)
    if detections is not None:  # both curves already detected on these sizes (a report's pipeline)
        em, ct = detections
    else:
        em = detect(x, exact, exact_spec, stderr=exact_stderr, n_examples=n_examples, options=opts)
        ct = detect(
            x, continuous, continuous_spec, stderr=continuous_stderr, n_examples=n_examples, options=opts
        )
    if em.verdict != "emergent":
        return MetricCheck("no_jump", f"exact match is {em.verdict}: nothing to explain", em, ct, None, False)
    order = np.argsort(x)
    xs = x[order]
    e = _means(exact)[order]
    c = _means(continuous)[order]
    sign = 1.0 if continuous_spec.higher_is_better else -1.0
    unit = continuous_spec.range or max(float(np.ptp(c)), 1e-12)
    floor_idx = np.flatnonzero(xs <= em.bracket[0]) if em.bracket else np.array([], int)
    steady = False
    if floor_idx.size >= 3:
        cz = sign * c[floor_idx] / unit
        steps = np.diff(cz)
        total = float(cz[-1] - cz[0])
        se_diff = math.sqrt(2.0) * (ct.noise_se / unit)
        steady = total >= max(2 * se_diff, 0.02) and float(steps[-1]) <= (2 / 3) * total
    pow_ok = None
    if answer_len is not None and continuous_spec.name == "token_accuracy":
        pred = np.clip(c, 0, 1) ** answer_len
        se_e = max(em.noise_se, 1e-3)
        se_pred = answer_len * np.clip(c, 1e-9, 1) ** (answer_len - 1) * ct.noise_se
        chi2 = float((((e - pred) / np.sqrt(se_e**2 + se_pred**2)) ** 2).sum())
        pow_ok = chi2 <= stats.chi2.ppf(1 - opts.alpha, e.size)
    same_place = (
        ct.verdict == "emergent"
        and ct.threshold is not None
        and abs(math.log10(ct.threshold) - math.log10(em.threshold)) <= same_place_decades
    )
    if pow_ok and steady:
        return MetricCheck(
            "metric_induced",
            f"exact match ~ token_accuracy^{answer_len} within noise, and token accuracy improves steadily "
            "where exact match sits at its floor",
            em, ct, pow_ok, steady,
        )  # fmt: skip
    if same_place:
        return MetricCheck(
            "persists",
            f"{continuous_spec.name} is itself emergent at {_fmt(ct.threshold)}, within "
            f"{same_place_decades:g} decades of exact match's {_fmt(em.threshold)}",
            em, ct, pow_ok, steady,
        )  # fmt: skip
    if steady and pow_ok is not False:
        return MetricCheck(
            "metric_induced",
            f"{continuous_spec.name} improves steadily where exact match sits at its floor",
            em, ct, pow_ok, steady,
        )  # fmt: skip
    return MetricCheck(
        "inconclusive",
        f"{continuous_spec.name} neither improves steadily at exact match's floor nor jumps with it "
        f"({ct.verdict})",
        em, ct, pow_ok, steady,
    )  # fmt: skip
