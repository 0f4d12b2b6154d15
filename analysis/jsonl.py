"""One run's `results.jsonl` (the results contract, `emergence_lab.contract`) read into an Arrow table.

A clean file takes Arrow's JSON parser; a file with a malformed line is read line by line, and each skipped
line is reported with its file and line number. Used by `collect` for run folders and by `wandb_io` for the
file attached to a wandb run.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from emergence_lab.analysis.console import Console
from emergence_lab.contract import MIN_COLUMNS, RESULT_COLUMNS, RUN_FILE, SCHEMA_VERSION

MAX_LINE_WARNINGS = 5

_STR = pa.string()
_ARROW_TYPES = {"str": _STR, "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
# Every column training writes, typed by the contract.
JSONL_SCHEMA = pa.schema([(c.name, _ARROW_TYPES[c.type]) for c in RESULT_COLUMNS])
_INT_FIELDS = frozenset(c.name for c in RESULT_COLUMNS if c.type == "int")
_PARSE = pa_json.ParseOptions(explicit_schema=JSONL_SCHEMA, unexpected_field_behavior="ignore")


def read_results_jsonl(path: Path, console: Console) -> pa.Table | None:
    """One run's rows. A fast Arrow parse when the file is clean; line by line (with warnings) otherwise."""
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
    status = _run_status(path.parent)
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
    return bool(pc.all(pc.equal(versions, SCHEMA_VERSION)).as_py())


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
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
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


def _run_status(run_dir: Path) -> str:
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())
        return str(info.get("status") or "unknown")
    except (OSError, ValueError, AttributeError):
        return "unknown"
