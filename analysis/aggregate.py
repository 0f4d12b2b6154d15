"""From the tidy table to the points of a scaling curve.

`observations` picks the rows for the chosen scale axis: the final evaluation of every run (the row with
the largest step) for n_params / flops / tokens / width / depth, or every evaluation for `step`, where each
model size is its own curve (`series`). With `by = "depth"` every depth is its own curve too: models of
different depth differ in capability at equal parameter count, so pooling them makes one zigzag curve.
`aggregate` then summarises each (curve, scale point): mean, standard deviation, number of seeds, and a
bootstrap 95% CI of the mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emergence_lab.analysis.console import Console

CURVE_KEYS: tuple[str, ...] = ("task", "split", "subtask", "metric")
RUN_KEYS: tuple[str, ...] = ("run_id", "task", "split", "subtask", "metric")


def curve_keys(x: str, by: str = "none") -> list[str]:
    """Columns that identify one curve: with `by = "depth"` every depth is a separate curve, and on the
    step axis every model size."""
    return [*CURVE_KEYS, *(["depth"] if by == "depth" else []), *(["series"] if x == "step" else [])]


def resolve_by(by: str, table: pd.DataFrame, x: str) -> str:
    """`auto` -> `depth` when the table holds more than one depth and the scale axis is not depth."""
    if by != "auto":
        return by
    if x == "depth" or "depth" not in table.columns:
        return "none"
    return "depth" if table["depth"].nunique(dropna=True) > 1 else "none"


def add_depth(df: pd.DataFrame, after: str = "metric") -> pd.DataFrame:
    """`df` with an empty `depth` column after `after` when it has none (`by = "none"`): every table keeps
    the same columns whatever the grouping."""
    if "depth" in df.columns:
        return df
    out = df.copy()
    out.insert(out.columns.get_loc(after) + 1, "depth", pd.array([pd.NA] * len(out), dtype="Int64"))
    return out


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of each run (per task, split, subtask and metric). Rows without a step are all
    final (tables that only hold final results)."""
    if "step" not in df.columns or df["step"].isna().all():
        return df
    has_step = df["step"].notna()
    ranked = df.loc[has_step].sort_values("step", kind="stable")
    keys = [k for k in RUN_KEYS if k in df.columns]
    last = ranked.drop_duplicates(keys, keep="last")
    return pd.concat([last, df.loc[~has_step]]).sort_index()


def observations(df: pd.DataFrame, x: str, console: Console) -> pd.DataFrame:
    """One row per (run, curve) for the chosen axis, with `x`, `u = log10(x)` and `value` (and `depth`
    when the table has it)."""
    if x not in df.columns or df[x].isna().all():
        console.warn(f"no values for the scale axis {x!r}: nothing to fit")
        return pd.DataFrame(columns=[*curve_keys(x), "x", "u", "value", "seed", "run_id"])
    rows = df if x == "step" else final_rows(df)
    wanted = (
        *CURVE_KEYS,
        "depth",
        "run_id",
        "seed",
        "value",
        "stderr",
        "n_examples",
        "score_low",
        "score_high",
        "n_params",
        "answer_len",
        x,
    )
    keep = [c for c in wanted if c in rows.columns]
    obs = rows[list(dict.fromkeys(keep))].copy()
    obs["x"] = obs[x].astype("float64")
    if x == "step":
        obs["series"] = obs["n_params"].astype("float64") if "n_params" in obs.columns else np.nan
        obs = obs.loc[obs["x"] != 0]  # step 0 (before training) has no place on a log axis
    finite = np.isfinite(obs["value"].to_numpy(dtype="float64"))
    if (~finite).any():
        console.warn(f"{int((~finite).sum())} row(s) with a non-finite value left out of the fits")
    positive = obs["x"].to_numpy(dtype="float64") > 0  # NaN compares False
    if (finite & ~positive).any():
        console.warn(f"{int((finite & ~positive).sum())} row(s) without a positive {x} left out of the fits")
    obs = obs.loc[finite & positive].reset_index(drop=True)
    obs["u"] = np.log10(obs["x"].to_numpy(dtype="float64"))
    if "seed" not in obs.columns:
        obs["seed"] = pd.array([pd.NA] * len(obs), dtype="Int64")
    return obs


def aggregate(obs: pd.DataFrame, x: str, n_boot: int = 1000, seed: int = 0, by: str = "none") -> pd.DataFrame:
    """Mean, std, number of seeds and a bootstrap 95% CI of the mean for every (curve, scale point).

    The bootstrap is vectorised: all points with n seeds share one matrix of resampling counts
    (B x n, multinomial), so the B resampled means of every such point are one matrix product.
    A point with a single seed gets mean +- 1.96 stderr when the input gave a standard error.
    """
    keys = [*curve_keys(x, by), "x"]
    if obs.empty:
        return pd.DataFrame(columns=[*keys, "u", "mean", "std", "n_seeds", "ci_low", "ci_high"])
    ordered = obs.sort_values(keys, kind="stable").reset_index(drop=True)
    grouped = ordered.groupby(keys, observed=True, sort=False, dropna=False)
    stats = grouped["value"].agg(mean="mean", std="std", n_seeds="size").reset_index()
    stats["u"] = np.log10(stats["x"].to_numpy(dtype="float64"))
    code = grouped.ngroup().to_numpy()
    values = ordered["value"].to_numpy(dtype="float64")
    counts = stats["n_seeds"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    low = np.full(len(stats), np.nan)
    high = np.full(len(stats), np.nan)
    rng = np.random.default_rng(seed)
    assert np.all(np.diff(code) >= 0), "rows must be ordered by group"
    for n in np.unique(counts):
        if n < 2:
            continue
        idx = np.flatnonzero(counts == n)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).T / n  # n x B
        for chunk in np.array_split(idx, max(1, len(idx) // 4096)):
            block = values[starts[chunk, None] + np.arange(n)[None, :]]  # G x n
            means = block @ weights  # G x B
            low[chunk], high[chunk] = np.quantile(means, [0.025, 0.975], axis=1)
    single = counts == 1
    if single.any() and "stderr" in ordered.columns:
        err = grouped["stderr"].first().to_numpy(dtype="float64")
        low = np.where(single, stats["mean"] - 1.96 * err, low)
        high = np.where(single, stats["mean"] + 1.96 * err, high)
    stats["ci_low"] = low
    stats["ci_high"] = high
    return stats
