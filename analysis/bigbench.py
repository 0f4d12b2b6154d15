"""Importer for BIG-bench result files (`scores_<model>.json`; google/BIG-bench, bigbench/api/results.py).

One file holds one model's scores on one task: a `model` block (model_family, model_name, total_params,
non_embedding_params, flop_matched_non_embedding_params, ...), a `task` block (task_name) and `scores[]`, each
with `score_dict` (metric -> value), `preferred_score`, `number_of_shots`, `low_score`, `high_score` and
`subtask_description` (`task:subtask`, or the task's own name for the whole task).

`read_bigbench` returns one row per `scores[]` entry and `score_dict` key, in the tidy table's columns:
`n_params` is the non-embedding parameter count (the default x), `n_params_total` the total, and
`n_params_flop_matched` the flop-matched count; `model_family` keeps families apart (part of the curve key);
`shots` is `number_of_shots`. For the preferred score, `chance` is `low_score` and `score_low`/`score_high`
its range; `bigbench_metric` turns them into a contract `Metric` for `detect`. BIG-bench's preferred scores
can share a name across tasks with different chance levels (multiple_choice_grade: 0.25 on one task, 0.5 on
another), so they are not declared in the global registry: the rows carry them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from emergence_lab.contract import TABLE_ORDER, Metric

EXTRA_COLUMNS: tuple[str, ...] = (
    "model_family",
    "n_params_flop_matched",
    "shots",
    "preferred",
    "chance",
    "score_low",
    "score_high",
)


def _doc(path_or_doc: str | Path | dict) -> dict | None:
    if isinstance(path_or_doc, dict):
        return path_or_doc
    path = Path(path_or_doc)
    if path.suffix != ".json" or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def is_bigbench(path_or_doc: str | Path | dict) -> bool:
    """A BIG-bench results document: a `model` block with parameter counts and a list of `scores` with
    `score_dict`s (an lm-eval file has `results` instead)."""
    doc = _doc(path_or_doc)
    if doc is None:
        return False
    model, scores = doc.get("model"), doc.get("scores")
    return (
        isinstance(model, dict)
        and "non_embedding_params" in model
        and isinstance(scores, list)
        and all(isinstance(s, dict) and isinstance(s.get("score_dict"), dict) for s in scores)
    )


def _task_and_subtask(desc: str, task: str | None) -> tuple[str, str]:
    if task is None:
        task = desc.split(":", 1)[0] if desc else "unknown"
    if not desc or desc == task:
        return task, "all"
    if desc.startswith(task + ":"):
        return task, desc[len(task) + 1 :]
    return task, desc


def read_bigbench(path: str | Path) -> pd.DataFrame:
    """The rows of one `scores_<model>.json` file (see the module docstring)."""
    path = Path(path)
    doc = _doc(path)
    if doc is None or not is_bigbench(doc):
        raise ValueError(f"{path} is not a BIG-bench results file (model block and scores[] with score_dict)")
    model: dict[str, Any] = doc["model"]
    task_name = (doc.get("task") or {}).get("task_name")
    rows = []
    for entry in doc["scores"]:
        task, subtask = _task_and_subtask(str(entry.get("subtask_description", "")), task_name)
        preferred = entry.get("preferred_score")
        low, high = entry.get("low_score"), entry.get("high_score")
        for name, value in entry["score_dict"].items():
            is_pref = name == preferred
            rows.append(
                {
                    "run_id": f"{model.get('model_family')}/{model.get('model_name')}",
                    "task": task,
                    "subtask": subtask,
                    "split": "test",
                    "metric": name,
                    "value": float(value),
                    "n_params": int(model["non_embedding_params"]),
                    "n_params_total": _int(model.get("total_params")),
                    "n_params_flop_matched": _int(model.get("flop_matched_non_embedding_params")),
                    "model": str(model.get("model_name")),
                    "model_family": str(model.get("model_family")),
                    "shots": _int(entry.get("number_of_shots")),
                    "preferred": is_pref,
                    "chance": float(low) if is_pref and low is not None else None,
                    "score_low": float(low) if is_pref and low is not None else None,
                    "score_high": float(high) if is_pref and high is not None else None,
                    "higher_is_better": (high >= low) if is_pref and None not in (low, high) else None,
                    "source": str(path),
                }
            )
    df = pd.DataFrame(rows)
    order = [c for c in TABLE_ORDER if c in df.columns] + [c for c in EXTRA_COLUMNS if c in df.columns]
    df = df[order + [c for c in df.columns if c not in order]]
    for col in ("n_params_total", "n_params_flop_matched", "shots"):
        df[col] = df[col].astype("Int64")
    return df


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def bigbench_metric(row: pd.Series | dict) -> Metric | None:
    """The contract Metric of a preferred-score row: chance = low_score, bounds low_score..high_score (a model
    can score below chance; the range is what the rise criterion measures against)."""
    low, high = row.get("score_low"), row.get("score_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high) or low == high:
        return None
    low, high = float(low), float(high)
    return Metric(str(row["metric"]), high > low, min(low, high), max(low, high), chance=low)
