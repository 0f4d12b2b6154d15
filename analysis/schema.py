"""The tidy results table in pandas: canonical dtypes, fast masks, and what each metric means.

Columns, their types, the schema version, metric names, directions, kinds and ranges are the results contract
(`emergence_lab.contract`), shared with training; this module only applies them to pandas frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emergence_lab import contract
from emergence_lab.contract import MIN_COLUMNS, SCHEMA_VERSION, TABLE_ORDER, base_metric

__all__ = [
    "CONTINUOUS",
    "DISCONTINUOUS",
    "MIN_COLUMNS",
    "SCHEMA_VERSION",
    "TABLE_ORDER",
    "TRAINING_METRICS",
    "as_category",
    "base_metric",
    "equals",
    "higher_is_better",
    "metric_directions",
    "metric_kind",
    "normalise",
    "unit_range",
]

TRAINING_METRICS: tuple[str, ...] = contract.TRAINING_METRIC_NAMES
# The all-or-nothing metric that the metric check and the figures set against the continuous ones.
(DISCONTINUOUS,) = (m.name for m in contract.TRAINING_METRICS if m.kind == "discontinuous")
# The continuous metrics of the answer, in the contract's order (the metric check prefers the first). The
# training loss is left out: it measures the whole sequence, not the answer.
CONTINUOUS: tuple[str, ...] = tuple(
    m.name for m in contract.TRAINING_METRICS if m.kind == "continuous" and m.name != "loss"
)

_CASTS = {kind: frozenset(contract.columns_of_type(kind)) for kind in ("str", "int", "float", "bool")}


def higher_is_better(metric: str) -> bool:
    """The contract's direction; a metric it does not know is taken as higher-is-better."""
    known = contract.metric(metric)
    return True if known is None else known.higher_is_better


def metric_kind(metric: str) -> str:
    """`discontinuous` for exact match (all-or-nothing per example), `continuous` for the rest."""
    known = contract.metric(metric)
    return "continuous" if known is None else known.kind


def unit_range(metric: str) -> float | None:
    """The metric's declared range (upper - lower; 1 for a metric in [0, 1]), or None for an unbounded or
    unknown metric, whose rise is then measured against its observed range."""
    known = contract.metric(metric)
    return None if known is None else known.range


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Give every known column its contract type and the table's order; unknown columns are kept at the end.

    Strings become categoricals with sorted categories (fast group-bys, and a deterministic order);
    integers become nullable Int64 so a missing step or seed stays missing instead of turning into 0.
    """
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    src = df.reset_index(drop=True)
    for col in TABLE_ORDER:
        if col not in src.columns:
            continue
        s = src[col]
        if col in _CASTS["str"]:
            out[col] = as_category(s)
        elif col in _CASTS["int"]:
            num = pd.to_numeric(s, errors="coerce").astype("float64")
            num = num.where(np.isfinite(num))
            out[col] = num.round().astype("Int64")
        elif col in _CASTS["float"]:
            out[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif col in _CASTS["bool"]:
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
    """metric -> higher_is_better, preferring what the input file said (lm-eval v0.4) over the contract."""
    out = {str(m): higher_is_better(str(m)) for m in df["metric"].dropna().unique()}
    if "higher_is_better" in df.columns:
        given = df.dropna(subset=["higher_is_better"]).drop_duplicates("metric")
        for metric, hib in zip(given["metric"], given["higher_is_better"], strict=True):
            out[str(metric)] = bool(hib)
    return out
