"""The quantization model's test (Michaud et al. 2023): do frequent subtasks emerge at smaller scale?

For every task whose rows carry subtask weights (the `subtask_weight` column, from run.json's
`subtask_weights`: each subtask's share of the training distribution), the per-subtask thresholds of
thresholds.csv are set against those weights. The quantization model predicts a negative rank correlation:
the more frequent a subtask, the smaller the model at which it is learned.

- `quanta_subtasks.csv`: one row per task, split, metric (and depth, with curves grouped by depth) and
  subtask: its weight, its frequency rank (1 = most frequent), its verdict and its threshold with CI.
- `quanta.csv`: one row per task, split and metric (and depth): Spearman's rho between threshold and weight
  over the subtasks that have a threshold (emergent or inconclusive curves), a two-sided permutation
  p-value (exact over every permutation up to `EXACT_MAX` subtasks, else `N_PERMUTATIONS` random ones), and
  n, the subtasks behind it. Fewer than 3 subtasks with a threshold: rho and p are missing.

Subtasks without a threshold (learned at every size, never learned, or smooth) are listed with their verdict
but left out of rho: where such a subtask's threshold lies is not known, only that it is outside the range.

Seeds may jump at different sizes, so `quanta.csv` also gives rho seed by seed: each seed's own jump of a
subtask (thresholds.csv `seed_thresholds`, the pair of sizes it steps between) placed at the pair's
geometric mean, over the subtasks that seed jumps on (`seed_rhos`, and their median `seed_rho_median`).
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pandas as pd
from scipy import stats

from emergence_lab.analysis.extra_types import ExtraInput, ExtraSection
from emergence_lab.analysis.report import Block

WEIGHT = "subtask_weight"
EXACT_MAX = 8  # 8! = 40,320 permutations: exact
N_PERMUTATIONS = 20_000
MIN_SUBTASKS = 3
SUBTASK_COLUMNS = (
    "subtask",
    "subtask_weight",
    "frequency_rank",
    "classification",
    "threshold",
    "threshold_low",
    "threshold_high",
    "seed_thresholds",
)


def subtask_weights(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, subtask) with a weight: task, subtask, subtask_weight (the mean where runs
    recorded different weights, which a sweep over the Zipf exponent would)."""
    if WEIGHT not in table.columns:
        return pd.DataFrame(columns=["task", "subtask", WEIGHT])
    rows = table.loc[table[WEIGHT].notna(), ["task", "subtask", WEIGHT]]
    rows = rows.astype({"task": str, "subtask": str, WEIGHT: float})
    return rows.groupby(["task", "subtask"], sort=True)[WEIGHT].mean().reset_index()


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; NaN (without scipy's warning) where either side is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def permutation_p(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Spearman's rho of x and y and its two-sided permutation p-value (x's ranks permuted; ties get
    average ranks). Exact up to EXACT_MAX points, else from N_PERMUTATIONS random permutations."""
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    rho = _spearman(x, y)
    if not math.isfinite(rho):
        return rho, math.nan
    n = len(rx)
    if n <= EXACT_MAX:
        perms = np.array(list(permutations(range(n))), dtype=np.int64)
        exact = True
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((N_PERMUTATIONS, n)), axis=1)
        exact = False
    cx = rx[perms] - rx.mean()
    cy = ry - ry.mean()
    null = (cx @ cy) / (np.sqrt((cx**2).sum(axis=1)) * np.sqrt((cy**2).sum()))
    hits = int((np.abs(null) >= abs(rho) - 1e-12).sum())
    p = hits / len(perms) if exact else (hits + 1) / (len(perms) + 1)
    return rho, float(p)


def seed_jumps(text: object) -> dict[int, float]:
    """thresholds.csv `seed_thresholds` ("0: 3516-6224; 2: 6224-13944") as {seed: geometric midpoint}."""
    if not isinstance(text, str) or not text.strip():
        return {}
    out: dict[int, float] = {}
    for part in text.split(";"):
        seed, _, bracket = part.partition(":")
        lo, _, hi = bracket.strip().partition("-")
        try:
            out[int(seed)] = math.sqrt(float(lo) * float(hi))
        except ValueError:
            continue
    return out


def seed_rhos(group: pd.DataFrame, seed: int = 0) -> dict[int, tuple[float, int]]:
    """{seed: (rho, n)} over the subtasks each seed jumps on (rho missing below MIN_SUBTASKS)."""
    per_seed: dict[int, list[tuple[float, float]]] = {}
    for text, weight in zip(group["seed_thresholds"], group[WEIGHT], strict=True):
        for s, where in seed_jumps(text).items():
            per_seed.setdefault(s, []).append((where, float(weight)))
    out: dict[int, tuple[float, int]] = {}
    for s, pairs in sorted(per_seed.items()):
        rho = math.nan
        if len(pairs) >= MIN_SUBTASKS:
            x, y = np.array(pairs).T
            rho = _spearman(x, y)
        out[s] = (rho, len(pairs))
    return out


def quanta_tables(
    thresholds: pd.DataFrame, weights: pd.DataFrame, by: str = "none", seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(quanta.csv, quanta_subtasks.csv) from thresholds.csv and the weights of `subtask_weights`."""
    if thresholds.empty or weights.empty:
        return pd.DataFrame(), pd.DataFrame()
    keys = ["task", "split", "metric"] + ([by] if by != "none" and by in thresholds.columns else [])
    rows = thresholds.assign(task=thresholds["task"].astype(str), subtask=thresholds["subtask"].astype(str))
    rows = rows.merge(weights, on=["task", "subtask"], how="inner")
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame()
    for col in SUBTASK_COLUMNS:
        if col not in rows.columns:
            rows[col] = np.nan
    rows["frequency_rank"] = (
        rows.groupby(keys, dropna=False)[WEIGHT].rank(ascending=False, method="min").astype(int)
    )
    subtasks = rows[[*keys, *SUBTASK_COLUMNS]].sort_values([*keys, "frequency_rank", "subtask"])
    summary = []
    for key, group in subtasks.groupby(keys, sort=True, dropna=False):
        known = group[pd.to_numeric(group["threshold"], errors="coerce").notna()]
        rho = p = math.nan
        if len(known) >= MIN_SUBTASKS:
            rho, p = permutation_p(known["threshold"].to_numpy(float), known[WEIGHT].to_numpy(float), seed)
        values = key if isinstance(key, tuple) else (key,)
        by_seed = seed_rhos(group, seed)
        finite = [r for r, _ in by_seed.values() if math.isfinite(r)]
        summary.append(
            {
                **dict(zip(keys, values, strict=True)),
                "rho": rho,
                "p_value": p,
                "n": len(known),
                "n_subtasks": len(group),
                "emergent": int((group["classification"].astype(str) == "emergent").sum()),
                "seed_rho_median": float(np.median(finite)) if finite else math.nan,
                "seed_rhos": "; ".join(
                    f"{s}: {'' if not math.isfinite(r) else f'{r:.2f} '}(n={n})"
                    for s, (r, n) in by_seed.items()
                )
                or None,
            }
        )
    return pd.DataFrame(summary), subtasks.reset_index(drop=True)


def _sentence(row: pd.Series) -> str:
    where = f"{row['task']} {row['metric']} ({row['split']}"
    where += f", depth {row['depth']})" if "depth" in row.index and pd.notna(row.get("depth")) else ")"
    counts = f"{row['n']} of {row['n_subtasks']} subtasks have a threshold, {row['emergent']} emergent"
    if not math.isfinite(float(row["rho"])):
        return f"{where}: {counts}; too few for a rank correlation (at least {MIN_SUBTASKS})."
    direction = (
        "frequent subtasks emerge at smaller scale, as the quantization model predicts"
        if row["rho"] < 0
        else "frequent subtasks do not emerge earlier"
    )
    return (
        f"{where}: Spearman rho = {row['rho']:.2f} between threshold and subtask frequency "
        f"(permutation p = {row['p_value']:.3g}, n = {row['n']}): {direction}; {counts}."
    )


def quanta(inp: ExtraInput) -> ExtraSection | None:
    """The extra: None where no task has subtask weights."""
    weights = subtask_weights(inp.table)
    if weights.empty:
        return None
    summary, subtasks = quanta_tables(inp.thresholds, weights, inp.by, inp.seed)
    if summary.empty:
        return None
    paths = [inp.out_dir / "quanta.csv", inp.out_dir / "quanta_subtasks.csv"]
    summary.to_csv(paths[0], index=False)
    subtasks.to_csv(paths[1], index=False)
    blocks = [
        Block(
            "text",
            "Per-subtask thresholds against each subtask's training frequency (Michaud et al. 2023): the "
            "quantization model predicts a negative rank correlation. Subtasks without a threshold are "
            "listed but left out of rho (`quanta_subtasks.csv`).",
        ),
        Block("list", [_sentence(row) for _, row in summary.iterrows()]),
        Block("table", summary),
    ]
    return ExtraSection("Subtask thresholds against frequency", blocks, paths)
