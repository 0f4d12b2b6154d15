"""Import lm-evaluation-harness result files (v0.3 and v0.4) into the results schema.

v0.3: `{"results": {task: {"acc": .., "acc_stderr": ..}}, "versions": .., "config": {"model_args": ..}}`.
v0.4: metric keys carry a filter suffix (`"acc,none"`, `"exact_match,strict-match"`), and the file adds
`configs`, `n-shot` and `higher_is_better`. The filter `none` is dropped from the metric name; any other
filter stays (`exact_match,strict-match`), so two filters of one metric never collide. v0.4's `n-samples`
(the effective count) gives `n_examples`.

The model and checkpoint come from `config.model_args` (`pretrained=NAME,revision=stepN`): one model is
one run (`run_id = NAME@REVISION`), the step is parsed from the revision. The parameter count comes from
`--params-map` (keys: the full name or the part after the last `/`), or from the name (`70m`, `1.4b`),
in which case `n_params_nominal` is true.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from emergence_lab.analysis.console import Console
from emergence_lab.contract import SCHEMA_VERSION

_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)([kmbt])(?![a-z])", re.IGNORECASE)
_UNIT = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_STEP = re.compile(r"step[_-]?(\d+)", re.IGNORECASE)


def looks_like_lm_eval(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("results"), dict)


def parse_size(name: str) -> int | None:
    """Nominal parameter count from a model name: `pythia-1.4b` -> 1.4e9. Prefers m/b/t over k (`32k`
    is usually a context length); the last match wins (`org/family-v1.1-160m` -> 160e6)."""
    matches = _SIZE.findall(name)
    if not matches:
        return None
    preferred = [m for m in matches if m[1].lower() != "k"] or matches
    number, unit = preferred[-1]
    return round(float(number) * _UNIT[unit.lower()])


def parse_model_args(model_args: Any) -> dict[str, str]:
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    out: dict[str, str] = {}
    for part in str(model_args or "").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def load_params_map(path: Path) -> dict[str, int]:
    """`model,n_params` CSV -> {model: n_params}. Raises ValueError with a one-line reason."""
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise ValueError(f"--params-map {path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if not {"model", "n_params"} <= set(df.columns):
        raise ValueError(f"--params-map {path}: needs columns model,n_params")
    counts = pd.to_numeric(df["n_params"], errors="coerce")
    if counts.isna().any() or df["model"].isna().any():
        raise ValueError(f"--params-map {path}: every row needs a model and a numeric n_params")
    return {str(m): int(n) for m, n in zip(df["model"], counts, strict=True)}


def _lookup(model: str, params_map: dict[str, int] | None) -> tuple[int | None, bool]:
    if params_map:
        for key in (model, model.rsplit("/", 1)[-1]):
            if key in params_map:
                return params_map[key], False
    size = parse_size(model.rsplit("/", 1)[-1])
    return size, size is not None


def read_lm_eval(
    path: Path, console: Console, params_map: dict[str, int] | None = None, quiet_if_foreign: bool = False
) -> pd.DataFrame | None:
    """The rows of one lm-eval result file, or None (with a warning) if it is not one."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        console.warn(f"{path}: skipped, not valid JSON ({exc})")
        return None
    if not looks_like_lm_eval(obj):
        if not quiet_if_foreign:
            console.warn(f"{path}: skipped, not an lm-evaluation-harness result file (no 'results')")
        return None
    config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    args = parse_model_args(config.get("model_args"))
    model = args.get("pretrained") or obj.get("model_name") or str(config.get("model") or path.stem)
    revision = args.get("revision")
    step_match = _STEP.search(revision or "")
    n_params, nominal = _lookup(model, params_map)
    if n_params is None:
        console.warn(f"{path}: no parameter count for model {model!r}; add it to --params-map")
    n_shot = obj.get("n-shot") if isinstance(obj.get("n-shot"), dict) else {}
    default_shot = config.get("num_fewshot")
    directions = obj.get("higher_is_better") if isinstance(obj.get("higher_is_better"), dict) else {}
    samples = obj.get("n-samples") if isinstance(obj.get("n-samples"), dict) else {}

    rows: list[dict[str, Any]] = []
    for task, metrics in obj["results"].items():
        if not isinstance(metrics, dict):
            continue
        shots = _as_int(n_shot.get(task, default_shot))
        name = f"{task}@{shots}shot" if shots else str(task)
        values, errors = _split_metrics(metrics)
        task_dirs = directions.get(task) if isinstance(directions.get(task), dict) else {}
        counted = samples.get(task) if isinstance(samples.get(task), dict) else {}
        n_examples = _as_int(counted.get("effective", counted.get("original")))
        for metric, value in values.items():
            hib = task_dirs.get(metric.split(",", 1)[0])
            rows.append(
                {
                    "task": name,
                    "metric": metric,
                    "value": value,
                    "stderr": errors.get(metric, math.nan),
                    "higher_is_better": hib if isinstance(hib, bool) else None,
                    "n_examples": n_examples,
                }
            )
    if not rows:
        console.warn(f"{path}: skipped, no numeric results")
        return None
    df = pd.DataFrame(rows)
    df["schema_version"] = SCHEMA_VERSION
    df["run_id"] = f"{model}@{revision}" if revision else model
    df["sweep"] = path.parent.name
    df["subtask"] = "all"
    df["split"] = "test"
    df["step"] = int(step_match.group(1)) if step_match else None
    df["seed"] = 0
    df["n_params"] = n_params
    df["n_params_nominal"] = nominal
    df["model"] = model
    df["status"] = "completed"
    return df


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """{metric: value} and {metric: stderr}; `acc,none` -> `acc`, `acc_stderr,none` -> stderr of `acc`."""
    values: dict[str, float] = {}
    errors: dict[str, float] = {}
    for key, raw in metrics.items():
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            continue  # "alias", "N/A" stderrs, nested dicts
        name, _, filt = str(key).partition(",")
        is_err = name.endswith("_stderr")
        if is_err:
            name = name[: -len("_stderr")]
        metric = name if filt in ("", "none") else f"{name},{filt}"
        (errors if is_err else values)[metric] = float(raw)
    return values, errors
