"""The tidy results table: its columns, their types, and what each metric means (direction, kind, range).

The table is the contract with training (schema_version 1, see `src/emergence_lab/results.py`); the
importers of CSV/Parquet, wandb and lm-evaluation-harness files produce the same columns, plus a few
of their own (`stderr`, `model`, `n_params_nominal`, `higher_is_better`, `source`, `status`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1

STRING_COLUMNS: tuple[str, ...] = ("run_id", "sweep", "task", "subtask", "split", "metric", "model", "status")
INT_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "step",
    "tokens",
    "seed",
    "width",
    "depth",
    "n_heads",
    "n_params",
    "n_params_total",
    "answer_len",
)
FLOAT_COLUMNS: tuple[str, ...] = ("value", "flops", "stderr")
BOOL_COLUMNS: tuple[str, ...] = ("n_params_nominal", "higher_is_better")
COLUMN_ORDER: tuple[str, ...] = (
    "schema_version",
    "run_id",
    "sweep",
    "task",
    "subtask",
    "split",
    "metric",
    "value",
    "stderr",
    "step",
    "tokens",
    "flops",
    "seed",
    "width",
    "depth",
    "n_heads",
    "n_params",
    "n_params_total",
    "n_params_nominal",
    "answer_len",
    "model",
    "higher_is_better",
    "status",
    "source",
)

# A CSV/Parquet input needs these plus its scale column; everything else is optional.
MIN_COLUMNS: tuple[str, ...] = ("task", "metric", "value")

DISCONTINUOUS = "exact_match"
CONTINUOUS: tuple[str, ...] = ("token_accuracy", "edit_distance", "answer_logprob", "brier")
TRAINING_METRICS: tuple[str, ...] = (DISCONTINUOUS, *CONTINUOUS, "loss")

# Direction of every metric we know; anything else is assumed higher-is-better unless the input says.
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {
        "edit_distance",
        "brier",
        "loss",
        "icl_score",  # the text task's: loss late in the window minus loss early (contract.TEXT_METRICS)
        "perplexity",
        "ppl",
        "word_perplexity",
        "byte_perplexity",
        "bits_per_byte",
        "likelihood_difference",
        "pct_stereotype",
        "ter",
    }
)
# Metrics that live in [0, 1]; their "range" for the rise criterion is 1. Others use the observed range.
UNIT_RANGE: frozenset[str] = frozenset(
    {
        "exact_match",
        "token_accuracy",
        "edit_distance",
        "brier",
        "acc",
        "acc_norm",
        "mc1",
        "mc2",
        "f1",
        "em",
        "pct_stereotype",
        "contains",
        "induction_score",
    }
)


def base_metric(metric: str) -> str:
    """lm-eval v0.4 names carry a filter suffix ("exact_match,strict-match"); the metric is before it."""
    return metric.split(",", 1)[0]


def higher_is_better(metric: str) -> bool:
    return base_metric(metric) not in LOWER_IS_BETTER


def metric_kind(metric: str) -> str:
    """`discontinuous` for exact match (all-or-nothing per example), `continuous` for the rest."""
    return "discontinuous" if base_metric(metric) in ("exact_match", "em") else "continuous"


def unit_range(metric: str) -> float | None:
    return 1.0 if base_metric(metric) in UNIT_RANGE else None


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Give every known column its canonical dtype and order; unknown columns are kept at the end.

    Strings become categoricals with sorted categories (fast group-bys, and a deterministic order);
    integers become nullable Int64 so a missing step or seed stays missing instead of turning into 0.
    """
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    src = df.reset_index(drop=True)
    for col in COLUMN_ORDER:
        if col not in src.columns:
            continue
        s = src[col]
        if col in STRING_COLUMNS or col == "source":
            out[col] = as_category(s)
        elif col in INT_COLUMNS:
            num = pd.to_numeric(s, errors="coerce").astype("float64")
            num = num.where(np.isfinite(num))
            out[col] = num.round().astype("Int64")
        elif col in FLOAT_COLUMNS:
            out[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif col in BOOL_COLUMNS:
            out[col] = s.astype("boolean")
    for col in src.columns:
        if col not in out.columns:
            out[col] = src[col].to_numpy()
    return out


def as_category(s: pd.Series) -> pd.Series:
    """A categorical of strings with sorted categories (missing values stay missing)."""
    cat = s if isinstance(s.dtype, pd.CategoricalDtype) else s.astype("category")
    names = [str(c) for c in cat.cat.categories]
    if len(set(names)) != len(names):  # e.g. 1 and "1" in one column: merge them through their text
        cat = s.astype("object").where(s.notna(), None).map(lambda v: v if v is None else str(v))
        cat = cat.astype("category")
        names = [str(c) for c in cat.cat.categories]
    cat = cat.cat.rename_categories(names)
    return cat.cat.reorder_categories(sorted(names))


def equals(s: pd.Series, value: object) -> np.ndarray:
    """Boolean mask `s == value` that is fast on categoricals (compares codes, no string conversion)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        code = s.cat.categories.get_indexer([value])[0] if value in s.cat.categories else -1
        return s.cat.codes.to_numpy() == code if code >= 0 else np.zeros(len(s), bool)
    if pd.api.types.is_numeric_dtype(s.dtype) and not isinstance(value, str):
        return s.to_numpy(dtype="float64", na_value=np.nan) == float(value)  # type: ignore[arg-type]
    if isinstance(s.dtype, pd.StringDtype):
        return (s == str(value)).to_numpy(dtype=bool, na_value=False)
    return (s.astype(str) == str(value)).to_numpy()


def metric_directions(df: pd.DataFrame) -> dict[str, bool]:
    """metric -> higher_is_better, preferring what the input file said (lm-eval v0.4) over our table."""
    out = {str(m): higher_is_better(str(m)) for m in df["metric"].dropna().unique()}
    if "higher_is_better" in df.columns:
        given = df.dropna(subset=["higher_is_better"]).drop_duplicates("metric")
        for metric, hib in zip(given["metric"], given["higher_is_better"], strict=True):
            out[str(metric)] = bool(hib)
    return out
