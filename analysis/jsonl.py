"""One run's `results.jsonl` (the results contract, `emergence_lab.contract`) read into an Arrow table.

A clean file takes Arrow's JSON parser; a file with a malformed line is read line by line, and each skipped
line is reported with its file and line number. Used by `collect` for run folders and by `wandb_io` for the
file attached to a wandb run.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from emergence_lab.analysis.console import Console
from emergence_lab.contract import (
    MIN_COLUMNS,
    READABLE_SCHEMA_VERSIONS,
    RESULT_COLUMNS,
    RESULTS_FILE,
    RUN_FILE,
    SUBTASK_WEIGHTS_KEY,
    live_status,
)

MAX_LINE_WARNINGS = 5

_STR = pa.string()
_ARROW_TYPES = {"str": _STR, "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
# Every column training writes, typed by the contract.
JSONL_SCHEMA = pa.schema([(c.name, _ARROW_TYPES[c.type]) for c in RESULT_COLUMNS])
_INT_FIELDS = frozenset(c.name for c in RESULT_COLUMNS if c.type == "int")
_PARSE = pa_json.ParseOptions(explicit_schema=JSONL_SCHEMA, unexpected_field_behavior="ignore")


@dataclass(frozen=True)
class RunInfo:
    """What a run folder's run.json says about the run: its live status (a `running` run whose lock is free
    is `interrupted`; `unknown` without a readable run.json) and when it last ran (ended_at, else
    started_at, else the results file's mtime; POSIX seconds), which orders relaunched generations, and
    each subtask's training frequency where the task records one (run.json `subtask_weights`)."""

    status: str
    time: float | None
    subtask_weights: dict[str, float] | None = None


def run_info(run_dir: Path) -> RunInfo:
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        info = {}
    status = live_status(run_dir, str(info.get("status") or "unknown"))
    weights = _subtask_weights(info.get(SUBTASK_WEIGHTS_KEY))
    for key in ("ended_at", "started_at"):
        try:
            return RunInfo(status, datetime.fromisoformat(str(info[key])).timestamp(), weights)
        except (KeyError, TypeError, ValueError):
            continue
    try:
        return RunInfo(status, (run_dir / RESULTS_FILE).stat().st_mtime, weights)
    except OSError:
        return RunInfo(status, None, weights)


def _subtask_weights(value: object) -> dict[str, float] | None:
    """run.json's `subtask_weights` as {subtask: weight}; None when absent or not a mapping of numbers."""
    if not isinstance(value, dict) or not value:
        return None
    try:
        return {str(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError):
        return None


def with_subtask_weights(table: pa.Table, weights: dict[str, float] | None) -> pa.Table:
    """`table` with a `subtask_weight` column: each row's subtask's weight (null for `all`, answer
    positions and any subtask the mapping lacks). Unchanged without weights."""
    if not weights:
        return table
    subtasks = table.column("subtask").to_pylist()
    column = pa.array([weights.get(s) if s is not None else None for s in subtasks], pa.float64())
    return table.append_column("subtask_weight", column)


def read_results_jsonl(path: Path, console: Console, status: str | None = None) -> pa.Table | None:
    """One run's rows. A fast Arrow parse when the file is clean; line by line (with warnings) otherwise.
    `status` (default: the run folder's, from its run.json) fills the `status` column."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        console.warn(f"{path}: skipped, cannot read ({exc})")
        return None
    table = None
    if data.strip():
        try:
            table = pa_json.read_json(io.BytesIO(data), parse_options=_PARSE)
        except pa.ArrowInvalid:
            table = None
        if table is not None and not _clean(table):
            table = None
        if table is None:
            table = _read_lines(path, data, console)
    if table is None or table.num_rows == 0:
        console.warn(f"{path}: no valid rows")
        return None
    if status is None:
        status = run_info(path.parent).status
    table = table.append_column("status", pa.array(np.full(table.num_rows, status, dtype=object), _STR))
    if table.column("run_id").null_count:
        fill = pc.fill_null(table.column("run_id"), path.parent.name)
        table = table.set_column(table.schema.get_field_index("run_id"), "run_id", fill)
    return table


def _clean(table: pa.Table) -> bool:
    for col in ("task", "metric", "value"):
        if table.column(col).null_count:
            return False
    versions = table.column("schema_version")
    if versions.null_count == table.num_rows:
        return True
    readable = pa.array(READABLE_SCHEMA_VERSIONS, pa.int64())
    return bool(pc.all(pc.is_in(versions, value_set=readable)).as_py())


def _read_lines(path: Path, data: bytes, console: Console) -> pa.Table:
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"{path}:{number}: skipped malformed line ({exc.msg})")
            continue
        row, problem = _validate_row(obj)
        if problem:
            bad.append(f"{path}:{number}: skipped malformed line ({problem})")
        else:
            rows.append(row)
    warn_lines(path, bad, console)
    return pa.Table.from_pylist(rows, schema=JSONL_SCHEMA)


def warn_lines(path: Path, messages: list[str], console: Console) -> None:
    """The first few skipped lines one by one, then how many more."""
    for message in messages[:MAX_LINE_WARNINGS]:
        console.warn(message)
    if len(messages) > MAX_LINE_WARNINGS:
        console.warn(f"{path}: {len(messages) - MAX_LINE_WARNINGS} more malformed lines skipped")


def _validate_row(obj: Any) -> tuple[dict[str, Any], str | None]:
    if not isinstance(obj, dict):
        return {}, "not a JSON object"
    version = obj.get("schema_version", READABLE_SCHEMA_VERSIONS[-1])
    if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
        return {}, f"unsupported schema_version {version!r}"
    row: dict[str, Any] = {}
    for field in JSONL_SCHEMA:
        value = obj.get(field.name)
        if value is None:
            if field.name in MIN_COLUMNS:
                return {}, f"missing {field.name}"
            row[field.name] = None
        elif pa.types.is_string(field.type):
            if not isinstance(value, str | int) or isinstance(value, bool):
                return {}, f"{field.name} is not a string"
            row[field.name] = str(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return {}, f"{field.name} is not a number"
            if field.name in _INT_FIELDS:
                if not math.isfinite(value) or value != int(value):
                    return {}, f"{field.name} is not an integer"
                value = int(value)
            row[field.name] = value
    return row, None
