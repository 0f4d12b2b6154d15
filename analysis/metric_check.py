"""Is a jump under exact match an artefact of the metric (Schaeffer et al. 2023)?

For every task measured with exact match and at least one continuous metric (token_accuracy, edit_distance,
answer_logprob, brier), on subtask `all` of its main split (`test` when present), and for every depth of it
when the curves are grouped by depth:

- `no_jump`: exact match is not classified `emergent`: there is nothing to explain.
- `metric_induced`: exact match is emergent, and a continuous metric was already improving measurably
  across the sizes where exact match sat at its floor (the sizes before its rise starts, its 10% point).
  "Measurably": the least-squares slope of the continuous metric against log-size over those sizes is
  `z_min` standard errors above zero (with fewer than 4 observations: the change between the first and last
  floor size exceeds `z_min` x sqrt(2) x the metric's SE), and the change is at least `min_frac` of the
  metric's range.
- `persists`: exact match is emergent, no continuous metric moved while it sat at its floor, and a
  continuous metric jumps at the same place: either it is itself `emergent` with a threshold within
  `same_place_decades` of exact match's (`continuous_jumps_with_em`), or its change across exact match's rise
  (from the last floor size to the first size past the rise's 90% point, or past the threshold) exceeds what
  its floor trend predicts by `z_min` standard errors and by `min_frac` of its range
  (`continuous_jump_excess`, `continuous_jump_z`).
- `inconclusive`: exact match is emergent but the data cannot tell: fewer than 2 sizes sit at its floor,
  or no continuous metric either moved at the floor or jumped with it (e.g. a noisy, flat continuous metric).

Where the answer length L is known, `em_vs_ta_pow_L_mae` / `_max` say how well exact match ~= token_accuracy^L
holds across sizes (it is exact for independent per-token errors).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from emergence_lab.analysis.aggregate import add_depth, curve_keys
from emergence_lab.analysis.options import CheckOptions
from emergence_lab.analysis.schema import CONTINUOUS, DISCONTINUOUS, equals, unit_range


def _floor_change(u: np.ndarray, y: np.ndarray, se: float, opts: CheckOptions) -> tuple[float, float]:
    """(change over the floor sizes, its z-score) of an oriented continuous metric."""
    sizes = np.unique(u)
    span = sizes[-1] - sizes[0]
    if len(y) >= 4 and len(sizes) >= 3:
        fit = stats.linregress(u, y)
        z = fit.slope / fit.stderr if fit.stderr > 0 else np.sign(fit.slope) * np.inf
        return float(fit.slope * span), float(z)
    first, last = y[u == sizes[0]].mean(), y[u == sizes[-1]].mean()
    denom = np.sqrt(2.0) * se
    return float(last - first), float((last - first) / denom) if denom > 0 else np.inf * np.sign(last - first)


def metric_check(
    thresholds: pd.DataFrame,
    obs: pd.DataFrame,
    x: str,
    directions: dict[str, bool],
    opts: CheckOptions,
    by: str = "none",
) -> pd.DataFrame:
    """One row per task (per task and depth with `by = "depth"`; per model size too on the step axis);
    the `depth` column is always there (empty unless `by = "depth"`)."""
    group_keys = [k for k in curve_keys(x, by) if k not in ("split", "subtask", "metric")]
    columns = [*group_keys, "split", "verdict"]
    if thresholds.empty:
        return add_depth(pd.DataFrame(columns=columns), after="task")
    rows = []
    top = thresholds.loc[equals(thresholds["subtask"], "all")]
    top_obs = obs.loc[equals(obs["subtask"], "all")]
    for key_values, task_rows in top.groupby(group_keys, sort=True, dropna=False, observed=True):
        key = dict(
            zip(group_keys, key_values if isinstance(key_values, tuple) else (key_values,), strict=True)
        )
        metrics_by_split = task_rows.groupby("split", observed=True)["metric"].agg(lambda s: set(map(str, s)))
        usable = [
            s for s, m in metrics_by_split.items() if DISCONTINUOUS in m and any(c in m for c in CONTINUOUS)
        ]
        if not usable:
            continue
        split = "test" if "test" in usable else sorted(map(str, usable))[0]
        here = task_rows.loc[equals(task_rows["split"], split)]
        by_metric = {str(r["metric"]): r for _, r in here.iterrows()}
        mask = np.ones(len(top_obs), bool)
        for k, v in {**key, "split": split}.items():
            col = top_obs[k]
            mask &= equals(col, v) if not pd.isna(v) else col.isna().to_numpy()
        rows.append(_check_task(key, split, by_metric, top_obs.loc[mask], directions, opts))
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    if "depth" in table.columns:
        table["depth"] = pd.array(table["depth"].astype(object).where(table["depth"].notna()), dtype="Int64")
    return add_depth(table, after="task")


def _check_task(
    key: dict[str, Any],
    split: str,
    by_metric: dict[str, pd.Series],
    obs: pd.DataFrame,
    directions: dict[str, bool],
    opts: CheckOptions,
) -> dict[str, Any]:
    em = by_metric[DISCONTINUOUS]
    continuous = [c for c in CONTINUOUS if c in by_metric]
    row: dict[str, Any] = {**key, "split": split, "em_classification": em["classification"]}
    row |= {"em_threshold": em.get("threshold", np.nan), "em_rise_start": em.get("rise_start", np.nan)}
    row |= _power_law_fit(obs)
    chosen = continuous[0]
    floor_sizes = 0
    verdict, reason = "no_jump", "exact match is not emergent"
    improvements: dict[str, tuple[float, float]] = {}
    if em["classification"] == "emergent":
        start = float(em["rise_start"])
        in_floor = obs["x"].to_numpy(dtype=float) < start
        floor_sizes = int(obs.loc[in_floor, "x"].nunique())
        for metric in continuous:
            part = obs.loc[in_floor & equals(obs["metric"], metric)]
            if part["x"].nunique() < 2:
                continue
            sign = 1.0 if directions.get(metric, True) else -1.0
            se = float(by_metric[metric].get("noise_se", np.nan))
            change, z = _floor_change(
                part["u"].to_numpy(float), sign * part["value"].to_numpy(float), se, opts
            )
            improvements[metric] = (change, z)
        rng = {m: unit_range(m) or abs(float(by_metric[m].get("rise", np.nan))) for m in continuous}
        moving = [m for m, (c, z) in improvements.items() if z >= opts.z_min and c >= opts.min_frac * rng[m]]
        jumps = {m: _jump_across_rise(obs, m, em, by_metric[m], directions, opts) for m in continuous}
        jumping = [
            m
            for m in continuous
            if _same_place(by_metric[m], em, opts)
            or (jumps[m][1] >= opts.z_min and jumps[m][0] >= opts.min_frac * rng[m])
        ]
        if floor_sizes < 2:
            verdict = "inconclusive"
            reason = f"{floor_sizes} size(s) at exact match's floor: too few to see a continuous metric move"
        elif moving:
            chosen = moving[0]
            change, z = improvements[chosen]
            verdict = "metric_induced"
            reason = f"{chosen} improved by {change:.3g} (z = {z:.1f}) while exact match sat at its floor"
        elif jumping:
            chosen = jumping[0]
            excess, jz = jumps[chosen]
            verdict = "persists"
            reason = (
                f"no continuous metric moved while exact match sat at its floor; {chosen} jumps with it "
                f"(excess over its floor trend {excess:.3g}, z = {jz:.1f})"
            )
        else:
            verdict = "inconclusive"
            reason = "no continuous metric moved at exact match's floor, and none jumped with it"
    else:
        jumps = {}
    cont = by_metric[chosen]
    same_place = _same_place(cont, em, opts)
    change, z = improvements.get(chosen, (np.nan, np.nan))
    row |= {
        "continuous_metric": chosen,
        "continuous_classification": cont["classification"],
        "continuous_threshold": cont.get("threshold", np.nan),
        "continuous_jumps_with_em": same_place,
        "floor_sizes": floor_sizes,
        "continuous_floor_change": change,
        "continuous_floor_z": z,
        "continuous_jump_excess": jumps.get(chosen, (np.nan, np.nan))[0],
        "continuous_jump_z": jumps.get(chosen, (np.nan, np.nan))[1],
        "verdict": verdict,
        "reason": reason,
    }
    return row


def _same_place(cont: pd.Series, em: pd.Series, opts: CheckOptions) -> bool:
    """Is the continuous curve itself emergent, with a threshold near exact match's?"""
    t_cont, t_em = float(cont.get("threshold", np.nan)), float(em.get("threshold", np.nan))
    return bool(
        cont["classification"] == "emergent"
        and np.isfinite(t_cont)
        and np.isfinite(t_em)
        and abs(np.log10(t_cont) - np.log10(t_em)) <= opts.same_place_decades
    )


def _jump_across_rise(
    obs: pd.DataFrame,
    metric: str,
    em: pd.Series,
    cont: pd.Series,
    directions: dict[str, bool],
    opts: CheckOptions,
) -> tuple[float, float]:
    """(excess, z): how much more an oriented continuous metric rises across exact match's rise than its
    trend over the floor sizes predicts. NaN when the sizes do not bracket the rise."""
    start = float(em.get("rise_start", np.nan))
    end = float(em.get("rise_end", np.nan))
    threshold = float(em.get("threshold", np.nan))
    part = obs.loc[equals(obs["metric"], metric)]
    x = part["x"].to_numpy(float)
    floor, after = x < start, x >= (end if np.isfinite(end) else threshold)
    if not floor.any() or not after.any():
        after = x > threshold
        if not floor.any() or not after.any():
            return np.nan, np.nan
    sign = 1.0 if directions.get(metric, True) else -1.0
    u, y = part["u"].to_numpy(float), sign * part["value"].to_numpy(float)
    u0, u1 = u[floor].max(), u[after].min()
    y0, y1 = y[u == u0].mean(), y[u == u1].mean()
    slope = 0.0
    if len(np.unique(u[floor])) >= 3:
        slope = max(float(stats.linregress(u[floor], y[floor]).slope), 0.0)
    excess = float((y1 - y0) - slope * (u1 - u0))
    se = float(cont.get("noise_se", np.nan))
    z = excess / (np.sqrt(2.0) * se) if se > 0 else np.inf * np.sign(excess)
    return excess, float(z)


def _power_law_fit(obs: pd.DataFrame) -> dict[str, Any]:
    """How well exact match ~= token_accuracy^L holds across sizes (per-size means)."""
    out: dict[str, Any] = {"answer_len": np.nan, "em_vs_ta_pow_L_mae": np.nan, "em_vs_ta_pow_L_max": np.nan}
    if "answer_len" not in obs.columns or obs["answer_len"].isna().all():
        return out
    length = int(obs["answer_len"].dropna().median())
    means = obs.groupby([obs["metric"].astype(str), "x"])["value"].mean().unstack(0)
    out["answer_len"] = length
    if DISCONTINUOUS not in means or "token_accuracy" not in means:
        return out
    both = means[[DISCONTINUOUS, "token_accuracy"]].dropna()
    if both.empty:
        return out
    err = (both[DISCONTINUOUS] - both["token_accuracy"] ** length).abs()
    out["em_vs_ta_pow_L_mae"] = float(err.mean())
    out["em_vs_ta_pow_L_max"] = float(err.max())
    return out
