"""Per-seed thresholds over training steps, and how long after training accuracy saturated they came.

On the step axis (`--x step`) each run's evaluations form a curve of its own: grokking is one seed's held-out
accuracy jumping long after its training accuracy saturated, and pooling the seeds blurs when. For every seed
of every primary curve (the study's primary metric, subtask `all`, on each split but `train`) this extra runs
the project's detector on that seed's curve alone (`curves.detect_curve`, the same test, noise model and
threshold CI as the pooled verdicts) and, where the task also scores a `train` split, finds the step at which
the seed's training curve of the same metric saturated: the first evaluation reaching SATURATION_FRAC of its
final value. The delay is the held-out threshold divided by that step.

Writes seed_thresholds.csv (one row per seed and curve) and delays.csv (one row per seed with a train
curve), and returns the report section "Per seed (step axis)"; None on any other axis.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from emergence_lab.analysis.aggregate import curve_keys
from emergence_lab.analysis.curves import CurveInput, curve_seed, detect_curve, detect_options, detection_row
from emergence_lab.analysis.extra_types import ExtraInput, ExtraSection
from emergence_lab.analysis.report import Block
from emergence_lab.contract import metric

# the train curve has saturated at its first evaluation reaching this share of its final value
SATURATION_FRAC = 0.99
# The detector places a threshold on a grid of candidate midpoints (25 by default) and its CI is at least the
# grid's spacing: over 50 evaluations that is ~0.07 decades, a 9% quantisation of the threshold, wider
# than a dense, sharp step curve's CI. A few candidates per evaluation make the grid finer than the data.
MIDPOINTS_PER_STEP = 4
TRAIN_SPLIT = "train"
TITLE = "Per seed (step axis)"
DELAY_SHOWN = [
    "split", "metric", "seed", "train_final", "train_saturation_step", "threshold", "delay", "delay_low",
    "delay_high",
]  # fmt: skip

SEED_COLUMNS = [
    "task", "split", "subtask", "metric", "depth", "series", "seed", "classification", "threshold",
    "threshold_low", "threshold_high", "bracket_low", "bracket_high", "rise_frac", "p_value", "noise_source",
]  # fmt: skip
DELAY_COLUMNS = [
    "task", "split", "metric", "depth", "series", "seed", "threshold", "threshold_low", "threshold_high",
    "train_final", "train_saturation_step", "delay", "delay_low", "delay_high",
]  # fmt: skip


def saturation_step(steps: np.ndarray, values: np.ndarray, frac: float = SATURATION_FRAC) -> float:
    """The first step whose value reaches `frac` of the value at the last step (steps in any order); NaN
    for an empty curve or one that ends at or below zero (nothing saturated)."""
    if len(steps) == 0:
        return float("nan")
    order = np.argsort(steps, kind="stable")
    s, v = np.asarray(steps, dtype=float)[order], np.asarray(values, dtype=float)[order]
    final = v[-1]
    if not final > 0:
        return float("nan")
    return float(s[np.flatnonzero(v >= frac * final)[0]])


def _primary_keys(inp: ExtraInput) -> list[dict[str, Any]]:
    """The primary curves (thresholds.csv's `primary` rows) other than the train split's."""
    th = inp.thresholds
    if th.empty or "primary" not in th.columns:
        return []
    rows = th[th["primary"].astype(bool) & (th["split"] != TRAIN_SPLIT)]
    keys = curve_keys(inp.x, inp.by)
    return [{k: row[k] for k in keys} for _, row in rows.iterrows()]


def _curve_rows(obs: pd.DataFrame, key: dict[str, Any]) -> pd.DataFrame:
    mask = np.ones(len(obs), dtype=bool)
    for k, v in key.items():
        mask &= (obs[k] == v).to_numpy()
    return obs.loc[mask]


def _higher_is_better(name: str) -> bool:
    spec = metric(name)
    return spec.higher_is_better if spec is not None else True


def _seed_detection(rows: pd.DataFrame, key: dict[str, Any], seed: int, inp: ExtraInput) -> dict[str, Any]:
    higher = _higher_is_better(str(key["metric"]))
    n_ex = rows["n_examples"].to_numpy(dtype=float) if "n_examples" in rows.columns else None
    stderr = rows["stderr"].to_numpy(dtype=float) if "stderr" in rows.columns else np.full(len(rows), np.nan)
    item = CurveInput(
        key=key,
        higher_is_better=higher,
        u=rows["u"].to_numpy(dtype=float),
        y=rows["value"].to_numpy(dtype=float),
        stderr=stderr,
        seeds=1,
        n_examples=n_ex,
    )
    opts = detect_options(inp.criteria, inp.n_boot, curve_seed({**key, "seed": seed}, inp.seed))
    n_sizes = int(np.unique(item.u).size)
    opts = replace(opts, n_midpoints=max(opts.n_midpoints, MIDPOINTS_PER_STEP * n_sizes))
    row = detection_row(detect_curve(item, opts), 1.0 if higher else -1.0)
    return {**key, "seed": seed, **{c: row[c] for c in SEED_COLUMNS if c in row}}


def _delay(seed_row: dict[str, Any], train: pd.DataFrame) -> dict[str, Any] | None:
    """The seed's train saturation and the delay of its held-out threshold; None without a train curve."""
    if train.empty:
        return None
    final = float(train.sort_values("x")["value"].iloc[-1])
    sat = saturation_step(train["x"].to_numpy(dtype=float), train["value"].to_numpy(dtype=float))
    out = {k: seed_row.get(k) for k in ("task", "split", "metric", "depth", "series", "seed")}
    out |= {k: seed_row[k] for k in ("threshold", "threshold_low", "threshold_high")}
    out |= {"train_final": final, "train_saturation_step": sat}
    for bound in ("", "_low", "_high"):
        threshold = seed_row[f"threshold{bound}"]
        out[f"delay{bound}"] = threshold / sat if np.isfinite(sat) and sat > 0 else float("nan")
    return out


def per_seed(inp: ExtraInput) -> ExtraSection | None:
    """The extra (registered in analysis.extras.EXTRAS)."""
    if inp.x != "step" or inp.obs.empty:
        return None
    keys = _primary_keys(inp)
    if not keys:
        return None
    higher = {str(k["metric"]): _higher_is_better(str(k["metric"])) for k in keys}
    seed_rows: list[dict[str, Any]] = []
    delays: list[dict[str, Any]] = []
    for key in keys:
        rows = _curve_rows(inp.obs, key)
        train_rows = _curve_rows(inp.obs, {**key, "split": TRAIN_SPLIT})
        for seed, one in rows.groupby("seed", sort=True):
            seed_row = _seed_detection(one, key, int(seed), inp)
            seed_rows.append(seed_row)
            if higher[str(key["metric"])]:  # "a share of the final value" needs higher-is-better
                delay = _delay(seed_row, train_rows[train_rows["seed"] == seed])
                if delay is not None:
                    delays.append(delay)
    seeds = pd.DataFrame(seed_rows, columns=SEED_COLUMNS)
    delay_table = pd.DataFrame(delays, columns=DELAY_COLUMNS)
    files = [inp.out_dir / "seed_thresholds.csv", inp.out_dir / "delays.csv"]
    seeds.to_csv(files[0], index=False)
    delay_table.to_csv(files[1], index=False)
    return ExtraSection(TITLE, _blocks(seeds, delay_table), files)


def _blocks(seeds: pd.DataFrame, delays: pd.DataFrame) -> list[Block]:
    shown = ["split", "metric", "seed", "classification", "threshold", "threshold_low", "threshold_high"]
    blocks = [
        Block(
            "text",
            "Each seed's curve over training steps, detected on its own (seed_thresholds.csv): the step "
            "threshold and its 95% CI.",
        ),
        Block("table", seeds[shown]),
    ]
    if not delays.empty:
        blocks += [
            Block(
                "text",
                f"Train saturation: the first evaluation step at which the seed's `{TRAIN_SPLIT}` split "
                f"reached {SATURATION_FRAC:g} of its final value; delay = held-out threshold / that step, "
                "with the threshold's CI (delays.csv).",
            ),
            Block("table", delays[DELAY_SHOWN]),
        ]
    return blocks
