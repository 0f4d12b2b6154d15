"""The product rule of composition (Okawa et al. 2023, "Compositional Abilities Emerge Multiplicatively").

For a task evaluated on the one-step splits `step1..stepk` beside its composed `test` split, every finished
run gives a point: the composed exact match against the product of its per-step exact matches. If the model
composes whatever steps it has learnt, and the steps fail independently, the points lie on the diagonal, and
the composed ability rises later and more sharply than its parts. The rule's fit over all points:

- MAE: mean |composed - product|; R^2: 1 - sum (composed - product)^2 / sum (composed - mean composed)^2
  (the product as the prediction, nothing fitted; negative where it predicts worse than the mean);
- verdict: `follows` when MAE <= FOLLOWS_MAX_MAE, else `below` or `above` by the sign of the mean residual
  (composed - product): `below` means the steps are there but the composition is not.

Writes composition_points.csv (one row per run: size, seed, per-step exact matches, product, composed) and
composition_rule.csv (one row per task: points, MAE, R^2, mean residual, verdict). Not applicable (None)
where no task has step splits.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from emergence_lab.analysis.extra_types import ExtraInput, ExtraSection
from emergence_lab.analysis.report import Block

METRIC = "exact_match"
COMPOSED_SPLIT = "test"
STEP_SPLIT = re.compile(r"step(\d+)")
FOLLOWS_MAX_MAE = 0.1  # the product rule holds when composed and product differ by at most this on average
POINTS_CSV = "composition_points.csv"
RULE_CSV = "composition_rule.csv"
VERDICT_TEXT = {
    "follows": "composed exact match tracks the product of the per-step exact matches",
    "below": "composed exact match falls short of the product: the steps are learnt, not their composition",
    "above": "composed exact match exceeds the product: the composition is learnt beyond its steps",
}


def composition_points(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """One row per run with step splits: its final composed exact match and per-step exact matches."""
    if not {"task", "run_id", "split", "metric", "value"} <= set(table.columns):
        return pd.DataFrame()
    names = {str(s) for s in table["split"].unique()}
    steps = sorted((s for s in names if STEP_SPLIT.fullmatch(s)), key=lambda s: int(s[4:]))
    if not steps or COMPOSED_SPLIT not in names:
        return pd.DataFrame()
    rows = table[table["metric"] == METRIC]
    if "subtask" in rows:
        rows = rows[rows["subtask"].astype(str) == "all"]
    if "step" in rows:  # a table without steps holds final rows only
        rows = rows[rows["step"] == rows.groupby("run_id")["step"].transform("max")]
    splits = rows["split"].astype(str)
    keys = [*dict.fromkeys(c for c in ("task", "run_id", x, "width", "depth", "seed") if c in rows)]
    wide = rows.pivot_table(index=keys, columns=splits.rename("split_name"), values="value", aggfunc="mean")
    wide = wide.dropna(subset=[COMPOSED_SPLIT, *steps]).reset_index()
    wide.columns.name = None
    out = wide[keys].copy()
    for s in steps:
        out[f"{s}_em"] = wide[s].to_numpy(dtype=float)
    out["product"] = np.prod(out[[f"{s}_em" for s in steps]].to_numpy(), axis=1)
    out["composed_em"] = wide[COMPOSED_SPLIT].to_numpy(dtype=float)
    if "train" in wide:
        out["train_em"] = wide["train"].to_numpy(dtype=float)
    out["residual"] = out["composed_em"] - out["product"]
    return out.sort_values([k for k in (x, "seed") if k in out] or keys).reset_index(drop=True)


def product_rule_fit(points: pd.DataFrame) -> dict[str, float | int | str]:
    """MAE, R^2, mean residual and verdict of `composed = product` over the points of one task."""
    composed = points["composed_em"].to_numpy(dtype=float)
    resid = points["residual"].to_numpy(dtype=float)
    mae = float(np.mean(np.abs(resid)))
    spread = float(np.sum((composed - composed.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / spread if spread > 0 else float("nan")
    mean_resid = float(np.mean(resid))
    verdict = "follows" if mae <= FOLLOWS_MAX_MAE else "below" if mean_resid < 0 else "above"
    return {"points": len(points), "mae": mae, "r2": r2, "mean_residual": mean_resid, "verdict": verdict}


def per_size(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Means over seeds at every size, with the composed exact match's seed range."""
    size = [c for c in dict.fromkeys((x, "width")) if c in points]
    values = [c for c in points if c.endswith("_em") or c == "product"]
    grouped = points.groupby(["task", *size])
    out = grouped[values].mean()
    out["composed_min"] = grouped["composed_em"].min()
    out["composed_max"] = grouped["composed_em"].max()
    out["seeds"] = grouped["seed"].nunique() if "seed" in points else grouped.size()
    return out.reset_index()


def composition_rule(inp: ExtraInput) -> ExtraSection | None:
    points = composition_points(inp.table, inp.x)
    if points.empty:
        return None
    fits = pd.DataFrame(
        [{"task": task, **product_rule_fit(pts)} for task, pts in points.groupby("task", sort=True)]
    )
    points_path, rule_path = inp.out_dir / POINTS_CSV, inp.out_dir / RULE_CSV
    points.to_csv(points_path, index=False)
    fits.to_csv(rule_path, index=False)
    blocks = [
        Block(
            "text",
            f"Composed {METRIC} ({COMPOSED_SPLIT} split) against the product of the per-step {METRIC}s "
            f"(splits step1..stepk), final evaluation of every run. Verdict: `follows` when the mean "
            f"absolute difference is <= {FOLLOWS_MAX_MAE}, else `below` / `above` by the sign of the mean "
            f"residual (composed - product).",
        ),
        Block("table", per_size(points, inp.x)),
        Block("table", fits),
        Block("list", [f"{r.task}: {r.verdict}: {VERDICT_TEXT[r.verdict]}" for r in fits.itertuples()]),
    ]
    return ExtraSection("Composition: the product rule", blocks, [points_path, rule_path])
