"""Analyse every curve: the emergence verdict (`analysis.detect`), fits, BIG-bench scores, back-test.

One curve is one (task, split, subtask, metric) on the chosen axis (plus the depth with `by = "depth"`, and
the model size on the step axis).
The result is one row of `thresholds.csv` per curve, and the fitted models, which the figures draw.

The verdict, threshold and its CI come from `detect.detect` on the per-size observations (one per seed),
with the evaluation stderr and `n_examples` where the table has them and the metric's bounds and chance
level from the contract. The fitted line, sigmoid and hinge (chosen by AICc: a drawing, not a verdict) give
the figures' curves, `sharpness_decades` and the back-test. Over all curves of one analysis,
`detect.false_discovery` holds the false-discovery rate (Benjamini-Hochberg); a study's primary metric is
tested on its own. An emergent call that does not survive it becomes `inconclusive`, with its power
statement.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from emergence_lab.analysis.aggregate import add_depth, curve_keys
from emergence_lab.analysis.bigbench import bigbench_metric
from emergence_lab.analysis.classify import breakthroughness, linearity, rise_points
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.detect import Detection, DetectOptions, detect, false_discovery
from emergence_lab.analysis.fit import Fit, best_model, fit_all
from emergence_lab.analysis.options import Criteria
from emergence_lab.analysis.parallel import Workers
from emergence_lab.analysis.schema import metric_kind
from emergence_lab.contract import Metric, metric

ROW_ORDER: tuple[str, ...] = (
    "classification",
    "emergent",
    "threshold",
    "threshold_low",
    "threshold_high",
    "bracket_low",
    "bracket_high",
    "seed_threshold_low",
    "seed_threshold_high",
    "seed_thresholds",
    "rise",
    "rise_frac",
    "width_decades",
    "p_value",
    "p_change",
    "q_value",
    "primary",
    "expected_false_emergent",
    "noise_se",
    "noise_source",
    "power",
    "power_statement",
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
    "backtest_x",
    "backtest_model",
    "backtest_pred",
    "backtest_actual",
    "backtest_error",
    "reason",
)
PARALLEL_MIN_CURVES = 24  # below this, one process is faster than starting a pool
PARALLEL_MIN_FITS = 200  # curves whose fits and detection (~20 ms each) repay starting worker processes


@dataclass
class CurveInput:
    key: dict[str, Any]
    higher_is_better: bool
    u: np.ndarray  # per observation
    y: np.ndarray  # per observation, original orientation
    stderr: np.ndarray  # per observation (NaN if unknown)
    seeds: int
    seed_ids: np.ndarray | None = None  # per observation (None: unknown)
    n_examples: np.ndarray | None = None  # per observation (NaN if unknown)
    spec: Metric | None = None  # the metric's meaning (None: from the contract, else unknown bounds)


@dataclass
class CurveResult:
    key: dict[str, Any]
    sign: float
    fits: dict[str, Fit]
    best: str
    row: dict[str, Any]
    detection: Detection | None = None

    def predict(self, u: np.ndarray) -> np.ndarray:
        """The best fit in the metric's own orientation."""
        return self.sign * self.fits[self.best].predict(u)


def curve_seed(key: dict[str, Any], seed: int) -> int:
    text = json.dumps({k: str(v) for k, v in key.items()}, sort_keys=True)
    return (zlib.crc32(text.encode()) ^ seed) & 0x7FFFFFFF


def detect_options(criteria: Criteria, n_boot: int, seed: int) -> DetectOptions:
    """The detector's options from the written criteria; `n_boot` draws of its bootstrap (at least
    MIN_DRAWS)."""
    return DetectOptions(
        alpha=criteria.alpha,
        min_rise_frac=criteria.min_rise_frac,
        max_rise_decades=criteria.max_sharpness,
        plateau=criteria.plateau_sizes,
        near_floor_frac=criteria.near_floor_frac,
        n_boot=max(n_boot, MIN_DRAWS),
        n_power=criteria.n_power,
        power_target=criteria.power_target,
        seed=seed,
    )


# Fewer null draws than this leave p-values too coarse for the false-discovery control over many curves
# (with 20 draws, p = 1/21 was the smallest a clean jump got whenever the null's tail fit could not be used).
MIN_DRAWS = 100


def spec_of(name: str, higher_is_better: bool) -> Metric:
    """The contract's meaning of a metric; an unknown one gets the rows' direction and unknown bounds (so it
    is never judged against its observed range)."""
    known = metric(name)
    return known if known is not None else Metric(name, higher_is_better, None, None)


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


def _median(values: np.ndarray | None, groups: list[np.ndarray]) -> np.ndarray | None:
    """Per-size median of a per-observation column; None when it is unknown everywhere."""
    if values is None or not np.isfinite(values).any():
        return None
    return np.array([np.nanmedian(values[g]) if np.isfinite(values[g]).any() else np.nan for g in groups])


def detect_curve(item: CurveInput, options: DetectOptions) -> Detection:
    """`detect` on one curve's observations, grouped by size."""
    sizes, groups = _size_groups(item.u)
    spec = item.spec or spec_of(str(item.key["metric"]), item.higher_is_better)
    n_ex = _median(item.n_examples, groups)
    if n_ex is not None and not np.isfinite(n_ex).all():
        n_ex = None  # a binomial SE for some sizes only would make those look less noisy than the rest
    seeds = None
    if item.seed_ids is not None:
        seeds = [item.seed_ids[g] for g in groups]
    return detect(
        10**sizes,
        [item.y[g] for g in groups],
        spec,
        stderr=_median(item.stderr, groups),
        n_examples=n_ex,
        seeds=seeds,
        options=options,
    )


def detection_row(det: Detection, sign: float) -> dict[str, Any]:
    """The detector's fields of one thresholds.csv row. The threshold and its intervals only for emergent
    and inconclusive curves (a smooth or absent curve has no threshold); `rise` oriented, so that an
    improvement is positive whichever way the metric runs."""
    nan = float("nan")
    if det.verdict not in ("emergent", "inconclusive"):
        det = replace(det, threshold=None, ci=None, bracket=None)
    jumps = [c for c in det.per_seed if c.verdict == "jump"]
    seed_text = "; ".join(f"{c.seed}: {c.lo:.6g}-{c.hi:.6g}" for c in jumps)
    spread = det.seed_threshold_spread
    return {
        "classification": det.verdict,
        "emergent": det.verdict == "emergent",
        "threshold": det.threshold if det.threshold is not None else nan,
        "threshold_low": det.ci[0] if det.ci is not None else nan,
        "threshold_high": det.ci[1] if det.ci is not None else nan,
        "bracket_low": det.bracket[0] if det.bracket is not None else nan,
        "bracket_high": det.bracket[1] if det.bracket is not None else nan,
        "seed_threshold_low": spread[0] if spread is not None else nan,
        "seed_threshold_high": spread[1] if spread is not None else nan,
        "seed_thresholds": seed_text or None,
        "rise": sign * det.rise,
        "rise_frac": det.rise_frac,
        "width_decades": det.width_decades if det.width_decades is not None else nan,
        "p_value": det.p_value,
        "p_change": det.p_change,
        "noise_se": det.noise_se,
        "noise_source": det.noise_source,
        "power": det.power if det.power is not None else nan,
        "power_statement": det.power_statement,
        "reason": det.reason,
    }


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def describe_row(row: Mapping[str, Any], label: str, unit: str = "parameters") -> str:
    """`Detection.describe` from one thresholds.csv row (as written or read back), e.g. "exact match,
    depth 2: emergent at 22k parameters (95% CI 7k-64k; per-seed 18k-30k)"; an inconclusive curve gives its
    power statement, the others their reason."""
    lo, hi = _finite(row.get("threshold_low")), _finite(row.get("threshold_high"))
    s_lo, s_hi = _finite(row.get("seed_threshold_low")), _finite(row.get("seed_threshold_high"))
    statement = row.get("power_statement")
    det = Detection(
        verdict=str(row["classification"]),
        reason=str(row.get("reason") or ""),
        threshold=_finite(row.get("threshold")),
        ci=(lo, hi) if lo is not None and hi is not None else None,
        bracket=None,
        rise=_finite(row.get("rise")) or 0.0,
        rise_frac=_finite(row.get("rise_frac")) or 0.0,
        width_decades=_finite(row.get("width_decades")),
        p_value=_finite(row.get("p_value")) or 1.0,
        p_change=_finite(row.get("p_change")) or 1.0,
        noise_se=_finite(row.get("noise_se")) or float("nan"),
        noise_source=str(row.get("noise_source") or ""),
        power=_finite(row.get("power")),
        power_statement=statement if isinstance(statement, str) and statement else None,
        seed_threshold_spread=(s_lo, s_hi) if s_lo is not None and s_hi is not None else None,
    )
    return det.describe(label, unit)


def analyse_curve(item: CurveInput, criteria: Criteria, n_boot: int, seed: int, holdout: int) -> CurveResult:
    """Verdict (`detect`), fits, BIG-bench scores and back-test of one curve."""
    sign = 1.0 if item.higher_is_better else -1.0
    y = sign * item.y
    sizes, groups = _size_groups(item.u)
    means = np.array([y[g].mean() for g in groups])
    metric_name = str(item.key["metric"])
    row: dict[str, Any] = dict(item.key)
    row |= {"n_points": len(sizes), "n_seeds": item.seeds, "n_obs": len(y)}
    row |= {"higher_is_better": item.higher_is_better, "kind": metric_kind(metric_name)}
    row |= {"x_min": 10 ** sizes[0], "x_max": 10 ** sizes[-1]}
    det = detect_curve(item, detect_options(criteria, n_boot, curve_seed(item.key, seed)))
    row |= detection_row(det, sign)
    if len(sizes) < 2:
        row["best_fit"] = None
        return CurveResult(item.key, sign, {}, "", row, det)
    fits = fit_all(item.u, y, criteria.min_sizes)
    best = best_model(fits)
    sharp = np.nan
    if best != "linear":
        sharp = rise_points(fits[best], float(sizes[0]), float(sizes[-1]))[2]
    row |= {
        "sharpness_decades": sharp if np.isfinite(sharp) else np.nan,
        "breakthroughness": breakthroughness(means),
        "linearity": linearity(sizes, means),
        "best_fit": best,
    }
    bt = backtest(item.u, y, sizes, holdout, criteria.min_sizes)
    for k in ("backtest_pred", "backtest_actual", "backtest_error"):
        bt[k] = sign * bt[k]
    row |= bt
    return CurveResult(item.key, sign, fits, best, row, det)


def _column(obs: pd.DataFrame, name: str, order: np.ndarray, bounds: np.ndarray) -> list[np.ndarray] | None:
    if name not in obs.columns:
        return None
    return np.split(pd.to_numeric(obs[name], errors="coerce").to_numpy(dtype=float)[order], bounds)


def _inputs(obs: pd.DataFrame, x: str, directions: dict[str, bool], by: str) -> list[CurveInput]:
    """One input per curve, in key order. One group-by, then plain array slices (hundreds of curves)."""
    keys = curve_keys(x, by)
    grouped = obs.groupby(keys, observed=True, sort=True, dropna=False)
    code = grouped.ngroup().to_numpy()
    order = np.argsort(code, kind="stable")
    bounds = np.cumsum(np.bincount(code, minlength=grouped.ngroups))[:-1]
    u = np.split(obs["u"].to_numpy(dtype=float)[order], bounds)
    y = np.split(obs["value"].to_numpy(dtype=float)[order], bounds)
    stderr = _column(obs, "stderr", order, bounds) or [np.full(len(b), np.nan) for b in u]
    n_examples = _column(obs, "n_examples", order, bounds)
    seed_col = _column(obs, "seed", order, bounds)
    score_low = _column(obs, "score_low", order, bounds)
    score_high = _column(obs, "score_high", order, bounds)
    seeds = grouped["seed"].nunique()
    per_size = obs.groupby([*keys, "x"], observed=True, sort=True, dropna=False).size()
    most = per_size.groupby(level=list(range(len(keys))), sort=True, dropna=False).max()
    items = []
    for i, key_values in enumerate(seeds.index):
        key = dict(zip(keys, key_values if isinstance(key_values, tuple) else (key_values,), strict=True))
        n_seeds = int(seeds.iloc[i]) if seeds.iloc[i] > 0 else int(most.iloc[i])
        ids = None
        if seed_col is not None and np.isfinite(seed_col[i]).all():
            ids = seed_col[i].astype(int)
        spec = None
        if score_low is not None and score_high is not None and np.isfinite(score_low[i]).any():
            # a BIG-bench preferred score: its chance level and range came with the rows
            spec = bigbench_metric(
                {"metric": key["metric"], "score_low": np.nanmedian(score_low[i]),
                 "score_high": np.nanmedian(score_high[i])}
            )  # fmt: skip
        items.append(
            CurveInput(
                key=key,
                higher_is_better=directions.get(str(key["metric"]), True),
                u=u[i],
                y=y[i],
                stderr=stderr[i],
                seeds=n_seeds,
                seed_ids=ids,
                n_examples=n_examples[i] if n_examples is not None else None,
                spec=spec,
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
    primary_metric: str | None = None,
) -> tuple[pd.DataFrame, list[CurveResult]]:
    """The thresholds table (one row per curve) and every curve's fits and detection. Deterministic for
    any number of workers: each curve's bootstrap is seeded from its own key. The table always has a
    `depth` column (empty unless `by = "depth"`)."""
    items = _inputs(obs, x, directions, by) if len(obs) else []
    work = partial(analyse_curve, criteria=criteria, n_boot=n_boot, seed=seed, holdout=holdout)
    workers = workers or Workers(1)
    # Spawning workers costs seconds of imports: worth it for many curves, or when they already run.
    big = len(items) >= PARALLEL_MIN_FITS or workers.started
    min_items = PARALLEL_MIN_CURVES if big else len(items) + 1
    results = workers.map(work, items, min_items, console, f"analysing {len(items)} curves")
    _control_false_discovery(items, results, criteria, n_boot, seed, primary_metric)
    keys = curve_keys(x, by)
    table = pd.DataFrame([r.row for r in results], columns=[*keys, *ROW_ORDER])
    table.insert(len(keys), "x", x)
    if "depth" in table.columns:
        table["depth"] = pd.array(table["depth"].astype(object).where(table["depth"].notna()), dtype="Int64")
    return add_depth(table), results


def is_primary(key: dict[str, Any], primary_metric: str | None) -> bool:
    """The study's primary curves: its primary metric on the whole task (subtask `all`)."""
    return primary_metric is not None and str(key["metric"]) == primary_metric and key["subtask"] == "all"


def _control_false_discovery(
    items: list[CurveInput],
    results: list[CurveResult],
    criteria: Criteria,
    n_boot: int,
    seed: int,
    primary_metric: str | None,
) -> None:
    """Benjamini-Hochberg over every curve's jump test (the primary curves tested alone). An emergent call
    that does not survive is detected again at the level BH gives the family, which makes it `inconclusive`
    with its power statement."""
    if not results:
        return
    primary = np.array([is_primary(r.key, primary_metric) for r in results])
    p = np.array([r.row["p_value"] for r in results], dtype=float)
    family = false_discovery(p, criteria.alpha, exempt=primary)
    rejected = family.significant & ~primary
    # BH rejects the k smallest p-values, p_(k) <= alpha k / m: the level the family's curves are held to
    level = criteria.alpha * max(int(rejected.sum()), 1) / max(int((~primary).sum()), 1)
    for i, r in enumerate(results):
        r.row |= {
            "q_value": float(family.q_values[i]),
            "primary": bool(primary[i]),
            "expected_false_emergent": family.expected_false,
        }
        if r.row["classification"] != "emergent" or family.significant[i]:
            continue
        opts = detect_options(criteria, n_boot, curve_seed(r.key, seed))
        det = detect_curve(items[i], replace(opts, alpha=level))
        r.detection = det
        r.row |= detection_row(det, r.sign)
        r.row["reason"] = (
            f"a jump beats the line (p = {p[i]:.2g}), but not at the false-discovery rate held at "
            f"{criteria.alpha:g} over {int((~primary).sum())} curves (q = {family.q_values[i]:.2g}); "
            + det.reason
        )
