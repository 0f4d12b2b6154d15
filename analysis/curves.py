"""Analyse every curve: fits, threshold with its bootstrap CI, classification, BIG-bench scores, back-test.

One curve is one (task, split, subtask, metric) on the chosen axis (plus the depth with `by = "depth"`, and
the model size on the step axis).
The result is one row of `thresholds.csv` per curve, and the fitted models, which the figures draw.
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from emergence_lab.analysis.aggregate import add_depth, curve_keys
from emergence_lab.analysis.classify import breakthroughness, classify, linearity, noise_se
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.fit import (
    MODELS,
    Fit,
    best_model,
    bootstrap_thresholds,
    fit_all,
    on_bound,
    refit_thresholds,
    resample_flat,
)
from emergence_lab.analysis.options import Criteria
from emergence_lab.analysis.parallel import Workers
from emergence_lab.analysis.schema import metric_kind, unit_range

ROW_ORDER: tuple[str, ...] = (
    "classification",
    "emergent",
    "threshold",
    "threshold_low",
    "threshold_high",
    "sharpness_decades",
    "breakthroughness",
    "linearity",
    "best_fit",
    "n_points",
    "n_seeds",
    "n_obs",
    "x_min",
    "x_max",
    "higher_is_better",
    "kind",
    "rise",
    "noise_se",
    "floor",
    "rise_start",
    "rise_end",
    "plateau_sizes",
    "aicc_linear",
    "aicc_sigmoid",
    "aicc_hinge",
    "backtest_x",
    "backtest_model",
    "backtest_pred",
    "backtest_actual",
    "backtest_error",
    "reason",
)
MIN_VALID_BOOT = 0.5  # a threshold CI needs at least this share of bootstrap refits to succeed
PARALLEL_MIN_CURVES = 24  # below this, one process is faster than starting a pool
PARALLEL_MIN_FITS = 200  # curves whose fits (~10 ms each) repay starting worker processes
PARALLEL_MIN_ROWS = 20_000  # bootstrap refits (~0.2 ms each) that repay starting worker processes
PARALLEL_WARM_ROWS = 1_000  # bootstrap refits worth splitting over workers that already run


@dataclass
class CurveInput:
    key: dict[str, Any]
    higher_is_better: bool
    u: np.ndarray  # per observation
    y: np.ndarray  # per observation, original orientation
    stderr: np.ndarray  # per observation (NaN if unknown)
    seeds: int


@dataclass
class CurveResult:
    key: dict[str, Any]
    sign: float
    fits: dict[str, Fit]
    best: str
    row: dict[str, Any]
    boot: np.ndarray = field(default_factory=lambda: np.empty(0))
    pending: Fit | None = None  # the fit whose bootstrap `analyse_curves` still has to run

    def set_boot(self, boot: np.ndarray) -> None:
        """Store the bootstrap thresholds (in u) and the threshold CI they give."""
        self.boot, self.pending = boot, None
        if len(boot) and np.isfinite(boot).mean() >= MIN_VALID_BOOT:
            low, high = np.nanpercentile(boot, [2.5, 97.5])
            self.row["threshold_low"], self.row["threshold_high"] = 10**low, 10**high

    def predict(self, u: np.ndarray) -> np.ndarray:
        """The best fit in the metric's own orientation."""
        return self.sign * self.fits[self.best].predict(u)


def curve_seed(key: dict[str, Any], seed: int) -> int:
    text = json.dumps({k: str(v) for k, v in key.items()}, sort_keys=True)
    return (zlib.crc32(text.encode()) ^ seed) & 0x7FFFFFFF


def _size_groups(u: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    sizes, inverse = np.unique(u, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse))[:-1]
    return sizes, np.split(order, bounds)


def backtest(u: np.ndarray, y: np.ndarray, sizes: np.ndarray, holdout: int, min_sizes: int) -> dict[str, Any]:
    """Fit on all but the `holdout` largest sizes (model chosen again by AICc), predict the largest."""
    out: dict[str, Any] = {"backtest_x": np.nan, "backtest_model": None, "backtest_pred": np.nan}
    out |= {"backtest_actual": np.nan, "backtest_error": np.nan}
    if holdout < 1 or len(sizes) - holdout < 3:
        return out
    train = u < sizes[-holdout]
    fits = fit_all(u[train], y[train], min_sizes)
    model = best_model(fits)
    pred = float(fits[model].predict(np.array([sizes[-1]]))[0])
    actual = float(y[u == sizes[-1]].mean())
    out |= {"backtest_x": 10 ** sizes[-1], "backtest_model": model, "backtest_pred": pred}
    out |= {"backtest_actual": actual, "backtest_error": pred - actual}
    return out


def analyse_curve(
    item: CurveInput, criteria: Criteria, n_boot: int, seed: int, holdout: int, defer_boot: bool = False
) -> CurveResult:
    """Fits, classification, threshold with its bootstrap CI, BIG-bench scores and back-test of one curve.
    With `defer_boot`, the bootstrap is left to the caller (`pending`), which runs many curves' at once."""
    sign = 1.0 if item.higher_is_better else -1.0
    y = sign * item.y
    sizes, groups = _size_groups(item.u)
    means = np.array([y[g].mean() for g in groups])
    counts = np.array([len(g) for g in groups])
    stds = np.array([y[g].std(ddof=1) if len(g) > 1 else np.nan for g in groups])
    stderr = np.array(
        [np.nanmedian(item.stderr[g]) if np.isfinite(item.stderr[g]).any() else np.nan for g in groups]
    )
    metric = str(item.key["metric"])
    row: dict[str, Any] = dict(item.key)
    row |= {"n_points": len(sizes), "n_seeds": item.seeds, "n_obs": len(y)}
    row |= {"higher_is_better": item.higher_is_better, "kind": metric_kind(metric)}
    row |= {"x_min": 10 ** sizes[0], "x_max": 10 ** sizes[-1]}
    if len(sizes) < 2:
        row |= {
            "classification": "absent",
            "emergent": False,
            "best_fit": None,
            "reason": "fewer than 2 sizes",
        }
        return CurveResult(item.key, sign, {}, "", row)
    fits = fit_all(item.u, y, criteria.min_sizes)
    best = best_model(fits)
    dof = max(len(y) - len(fits[best].params), 1)
    se = noise_se(counts, stds, stderr, float(np.sqrt(fits[best].rss / dof)))
    verdict = classify(sizes, means, fits, best, se, unit_range(metric), criteria)
    threshold = low = high = np.nan
    reason = verdict.reason
    pending = None
    if best != "linear" and verdict.label != "absent":
        threshold = fits[best].threshold
        if on_bound(fits[best], item.u, y):
            reason += "; no threshold CI: the best fit rests on a parameter bound"
        elif n_boot:
            pending = fits[best]
    row |= {
        "classification": verdict.label,
        "emergent": verdict.label == "emergent",
        "threshold": 10**threshold,
        "threshold_low": 10**low,
        "threshold_high": 10**high,
        "sharpness_decades": verdict.sharpness if np.isfinite(verdict.sharpness) else np.nan,
        "breakthroughness": breakthroughness(means),
        "linearity": linearity(sizes, means),
        "best_fit": best,
        "rise": verdict.rise,
        "noise_se": verdict.noise_se,
        "floor": sign * verdict.floor,
        "rise_start": 10**verdict.u10,
        "rise_end": 10**verdict.u90,
        "plateau_sizes": verdict.plateau_sizes,
        **{f"aicc_{m}": fits[m].aicc if m in fits else np.nan for m in MODELS},
        "reason": reason,
    }
    bt = backtest(item.u, y, sizes, holdout, criteria.min_sizes)
    for k in ("backtest_pred", "backtest_actual", "backtest_error"):
        bt[k] = sign * bt[k]
    row |= bt
    result = CurveResult(item.key, sign, fits, best, row, pending=pending)
    if pending is not None and not defer_boot:
        result.set_boot(bootstrap_thresholds(pending, item.u, y, groups, n_boot, curve_seed(item.key, seed)))
    return result


def _inputs(obs: pd.DataFrame, x: str, directions: dict[str, bool], by: str) -> list[CurveInput]:
    """One input per curve, in key order. One group-by, then plain array slices (hundreds of curves)."""
    keys = curve_keys(x, by)
    grouped = obs.groupby(keys, observed=True, sort=True, dropna=False)
    code = grouped.ngroup().to_numpy()
    order = np.argsort(code, kind="stable")
    bounds = np.cumsum(np.bincount(code, minlength=grouped.ngroups))[:-1]
    u = np.split(obs["u"].to_numpy(dtype=float)[order], bounds)
    y = np.split(obs["value"].to_numpy(dtype=float)[order], bounds)
    stderr = obs["stderr"].to_numpy(dtype=float) if "stderr" in obs.columns else np.full(len(obs), np.nan)
    stderr = np.split(stderr[order], bounds)
    seeds = grouped["seed"].nunique()
    per_size = obs.groupby([*keys, "x"], observed=True, sort=True, dropna=False).size()
    most = per_size.groupby(level=list(range(len(keys))), sort=True, dropna=False).max()
    items = []
    for i, key_values in enumerate(seeds.index):
        key = dict(zip(keys, key_values if isinstance(key_values, tuple) else (key_values,), strict=True))
        n_seeds = int(seeds.iloc[i]) if seeds.iloc[i] > 0 else int(most.iloc[i])
        items.append(
            CurveInput(
                key=key,
                higher_is_better=directions.get(str(key["metric"]), True),
                u=u[i],
                y=y[i],
                stderr=stderr[i],
                seeds=n_seeds,
            )
        )
    return items


def analyse_curves(
    obs: pd.DataFrame,
    x: str,
    directions: dict[str, bool],
    criteria: Criteria,
    console: Console,
    n_boot: int = 200,
    seed: int = 0,
    holdout: int = 1,
    workers: Workers | None = None,
    by: str = "none",
) -> tuple[pd.DataFrame, list[CurveResult]]:
    """The thresholds table (one row per curve) and every curve's fits. Deterministic for any number of
    workers: each curve's bootstrap is seeded from its own key. The table always has a `depth` column
    (empty unless `by = "depth"`)."""
    items = _inputs(obs, x, directions, by) if len(obs) else []
    work = partial(
        analyse_curve, criteria=criteria, n_boot=n_boot, seed=seed, holdout=holdout, defer_boot=True
    )
    workers = workers or Workers(1)
    # Spawning workers costs seconds of imports: worth it for many curves, or when they already run.
    big = len(items) >= PARALLEL_MIN_FITS or workers.started
    min_items = PARALLEL_MIN_CURVES if big else len(items) + 1
    results = workers.map(work, items, min_items, console, f"fitting {len(items)} curves")
    _bootstrap(items, results, n_boot, seed, workers)
    keys = curve_keys(x, by)
    table = pd.DataFrame([r.row for r in results], columns=[*keys, *ROW_ORDER])
    table.insert(len(keys), "x", x)
    if "depth" in table.columns:
        table["depth"] = pd.array(table["depth"].astype(object).where(table["depth"].notna()), dtype="Int64")
    return add_depth(table), results


@dataclass(frozen=True)
class Refits:
    """Resamples `first`, `first` + 1, ... of one curve's bootstrap, for one worker: the curve's points `u`,
    `y` (oriented), its resamples' indices `flat` (of `lengths`) and the fit they start from."""

    curve: int
    first: int
    fit: Fit
    u: np.ndarray
    y: np.ndarray
    flat: np.ndarray
    lengths: np.ndarray


def refit_part(part: Refits) -> np.ndarray:
    return refit_thresholds(part.fit, part.u, part.y, part.flat, part.lengths)


def _bootstrap(
    items: list[CurveInput], results: list[CurveResult], n_boot: int, seed: int, workers: Workers
) -> None:
    """Every pending threshold bootstrap, split over the workers. Each curve's resamples are seeded from its
    key and each is refitted on its own (one scipy fit per resample), so the result does not depend on the
    split or the workers."""
    pending = [i for i, r in enumerate(results) if r.pending is not None]
    total = len(pending) * n_boot
    parallel = total >= PARALLEL_MIN_ROWS or (workers.started and total >= PARALLEL_WARM_ROWS)
    # Several parts per process: curves differ in cost, and the processes should finish together.
    pieces = math.ceil(4 * workers.jobs / len(pending)) if parallel and pending else 1
    parts = []
    for i in pending:
        item, fit = items[i], results[i].pending
        assert fit is not None
        _, groups = _size_groups(item.u)
        flat, lengths = resample_flat(groups, np.random.default_rng(curve_seed(item.key, seed)), n_boot)
        ends = np.concatenate([[0], np.cumsum(lengths)])
        y = results[i].sign * item.y
        for first, stop in _ranges(n_boot, pieces):
            part = flat[ends[first] : ends[stop]]
            parts.append(Refits(i, first, fit, item.u, y, part, lengths[first:stop]))
    found_all = workers.map(refit_part, parts, 2 if parallel else len(parts) + 1)
    boots = {i: np.full(n_boot, np.nan) for i in pending}
    for part, found in zip(parts, found_all, strict=True):
        boots[part.curve][part.first : part.first + len(found)] = found
    for i, boot in boots.items():
        results[i].set_boot(boot)


def _ranges(n: int, pieces: int) -> list[tuple[int, int]]:
    """[start, stop) of `pieces` near-equal, non-empty parts of range(n)."""
    bounds = np.linspace(0, n, max(min(pieces, n), 1) + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
