"""Collect every input into one tidy results table.

Inputs may be mixed freely: run folders and sweep folders (searched recursively for `results.jsonl`,
and for lm-evaluation-harness `*.json`), CSV/Parquet tables in the results schema, single lm-eval JSON
files, and `wandb:<entity>/<project>[/<group>]` specs. A malformed file or line is skipped with a warning
that names it; it never stops the collection. A sweep's own bookkeeping (its manifest, each run's
`run.json`, `config.yaml`, `.hydra/`, `.submitit/`, `wandb/`, `checkpoints/`) is not an input and is
skipped silently. (File names come from the results contract, `emergence_lab.contract`.)

What was read is then narrowed to what counts (`analysis.runs`): completed runs only unless
`include_incomplete`, the newest generation of a relaunched run, exact duplicate rows once (conflicting
ones are an error). Every row records its `source` (the run folder, file or wandb spec), and every run left
out is returned with its status and folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from emergence_lab.analysis.bigbench import is_bigbench, read_bigbench
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.jsonl import read_results_jsonl, run_info, warn_lines, with_subtask_weights
from emergence_lab.analysis.lm_eval import read_lm_eval
from emergence_lab.analysis.runs import LeftOut, select
from emergence_lab.analysis.schema import MIN_COLUMNS, normalise
from emergence_lab.contract import MANIFEST_FILE, RESULTS_FILE, RUN_FILE

# A sweep's and its runs' own bookkeeping: never an input, skipped without a word. (Folders whose name
# starts with a dot, such as `.hydra/` and `.submitit/`, are skipped too.)
BOOKKEEPING_FILES = frozenset({RUN_FILE, MANIFEST_FILE})
SKIP_DIRS = frozenset(
    {"wandb", "__pycache__", "checkpoints", "lightning_logs", "node_modules", ".hydra", ".submitit"}
)
TABLE_SUFFIXES = frozenset({".csv", ".parquet", ".pq"})


def is_wandb_spec(spec: str) -> bool:
    return spec.startswith("wandb:")


def check_inputs(inputs: list[str]) -> str | None:
    """The first problem with the inputs, as one line, or None. Cheap: nothing is read."""
    from emergence_lab.analysis.wandb_io import parse_spec

    if not inputs:
        return "no inputs given"
    for spec in inputs:
        if is_wandb_spec(spec):
            try:
                parse_spec(spec)
            except ValueError as exc:
                return str(exc)
        elif not Path(spec).exists():
            return f"input not found: {spec}"
    return None


@dataclass
class Collected:
    """The rows that count, and every run left out of them (with its status, folder and why)."""

    table: pd.DataFrame
    left_out: list[LeftOut] = field(default_factory=list)


def collect(inputs: list[str], console: Console, **options: Any) -> pd.DataFrame:
    """Read every input and return one normalised table (possibly empty) of the rows that count; `options`
    are `collect_runs`'s."""
    return collect_runs(inputs, console, **options).table


def collect_runs(
    inputs: list[str],
    console: Console,
    params_map: dict[str, int] | None = None,
    scale_column: str = "n_params",
    exclude: Path | None = None,
    include_incomplete: bool = False,
    keep_all_generations: bool = False,
) -> Collected:
    """Read every input into one normalised table, then keep what counts (`runs.select`: completed runs,
    the newest generation, no duplicates). Raises `runs.DuplicateError` on conflicting duplicates."""
    frames: list[pd.DataFrame] = []
    tables: list[pa.Table] = []
    times: dict[str, float | None] = {}  # source -> when its run last ran
    no_results: list[LeftOut] = []  # run folders without a readable row
    planned: dict[str, tuple[str, ...]] = {}  # run id -> the overrides its sweep's manifest planned
    unkeyed: set[str] = set()

    def add_frame(frame: pd.DataFrame | None, source: str, path: Path | None) -> None:
        if frame is None or not len(frame):
            return
        if "source" not in frame.columns:
            frame["source"] = source
        if frame.attrs.get("unkeyed"):
            unkeyed.add(source)
        times[source] = _mtime(path) if path is not None else None
        frames.append(frame)

    def add_run(results: Path) -> None:
        folder = results.parent
        info = run_info(folder)
        table = read_results_jsonl(results, console, info.status)
        if table is None:
            no_results.append(LeftOut(folder.name, info.status, str(folder), "no valid results"))
        else:
            source = str(folder)
            times[source] = info.time
            table = with_subtask_weights(table, info.subtask_weights)
            tables.append(table.append_column("source", pa.array([source] * table.num_rows, pa.string())))

    for spec in inputs:
        if is_wandb_spec(spec):
            from emergence_lab.analysis.wandb_io import read_wandb

            add_frame(read_wandb(spec, console), spec, None)
            continue
        path = Path(spec)
        if path.is_dir():
            run_files, json_files, bare, manifests = _walk(path, exclude)
            for manifest in manifests:
                planned.update(_planned(manifest))
            for folder in bare:
                status = run_info(folder).status
                no_results.append(LeftOut(folder.name, status, str(folder), "no results written"))
            for run_file in console.track(run_files, f"reading {len(run_files)} runs", len(run_files)):
                add_run(run_file)
            for json_file in json_files:
                add_frame(_read_json(json_file, console, params_map), str(json_file), json_file)
        elif path.name.endswith(".jsonl"):
            add_run(path)
        elif path.suffix.lower() in TABLE_SUFFIXES:
            add_frame(read_table_file(path, console, scale_column), str(path), path)
        elif path.name in BOOKKEEPING_FILES:
            console.warn(f"{path}: skipped, a sweep's or run's bookkeeping file (pass the folder instead)")
        elif path.suffix.lower() == ".json":
            add_frame(_read_json(path, console, params_map), str(path), path)
        else:
            console.warn(f"{path}: skipped, not a results.jsonl, CSV, Parquet or lm-eval JSON file")
    if tables:
        merged = pa.concat_tables(tables, promote_options="permissive")
        frames.insert(0, merged.to_pandas())
    frames = [f for f in frames if len(f)]
    if not frames:
        empty = normalise(pd.DataFrame({c: [] for c in MIN_COLUMNS}))
        return Collected(*select(empty, console, times, without_results=no_results))
    if len(frames) == 1:
        table = normalise(frames[0])
    else:
        # Categoricals from different inputs have different categories; plain objects concatenate cleanly.
        plain = [
            f.apply(lambda s: s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s)
            for f in frames
        ]
        table = normalise(pd.concat(plain, ignore_index=True, sort=False))
    table, left_out = select(
        table,
        console,
        times,
        frozenset(unkeyed),
        include_incomplete,
        keep_all_generations,
        no_results,
        planned,
    )
    return Collected(table, left_out)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _walk(root: Path, exclude: Path | None) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """Under `root`, in a stable order: run folders' results files, lm-eval JSON candidates, run folders
    with a run.json but no results file (a run that failed or was stopped before its first evaluation), and
    sweep manifests."""
    exclude_str = str(exclude.resolve()) if exclude is not None else None
    run_files: list[Path] = []
    json_files: list[Path] = []
    bare: list[Path] = []
    manifests: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and (exclude_str is None or str(Path(dirpath, d).resolve()) != exclude_str)
        )
        if MANIFEST_FILE in filenames:
            manifests.append(Path(dirpath, MANIFEST_FILE))
        if RESULTS_FILE in filenames:
            run_files.append(Path(dirpath, RESULTS_FILE))
            continue  # a run folder's other JSON files (run.json, ...) are not lm-eval results
        if RUN_FILE in filenames:
            bare.append(Path(dirpath))
        json_files.extend(
            Path(dirpath, f) for f in sorted(filenames) if f.endswith(".json") and f not in BOOKKEEPING_FILES
        )
    return run_files, json_files, bare, manifests


def _planned(manifest: Path) -> dict[str, tuple[str, ...]]:
    """run id -> the overrides a sweep manifest planned it with (empty where the manifest is unreadable)."""
    try:
        doc = json.loads(manifest.read_text())
        runs = doc.get("runs", []) if isinstance(doc, dict) else []
        return {
            str(r["run_id"]): tuple(sorted(map(str, r.get("overrides") or [])))
            for r in runs
            if isinstance(r, dict) and "run_id" in r
        }
    except (OSError, ValueError, TypeError):
        return {}


# ---- CSV / Parquet -----------------------------------------------------------------------------------


def read_table_file(path: Path, console: Console, scale_column: str = "n_params") -> pd.DataFrame | None:
    """A CSV or Parquet table in the results schema: `task, metric, value` plus the scale column.

    Skipped with a warning that names the file and the CSV lines (Parquet: the rows), keeping the rest: a
    CSV line with more fields than the header, a row without task, metric or a numeric value, and a row
    whose scale column holds something that is not a number (an empty one stays missing)."""
    is_csv = path.suffix.lower() == ".csv"
    lines: list[int] | None = None  # the CSV line of every row, where known
    try:
        if is_csv:
            df, lines = _read_csv(path, console)
        else:
            df = pd.read_parquet(path)
    except Exception as exc:  # any parser error means a malformed file: skip it, say which
        console.warn(f"{path}: skipped, cannot read table ({type(exc).__name__}: {exc})")
        return None
    missing = [c for c in (*MIN_COLUMNS, scale_column) if c not in df.columns]
    if missing:
        console.warn(f"{path}: skipped, missing column(s) {', '.join(missing)}")
        return None
    df = df.reset_index(drop=True)

    def numbered(mask: np.ndarray) -> tuple[str, str]:
        """("line", "3, 7") for a CSV (its file lines), ("row", "1, 5") otherwise (data rows from 1)."""
        nonlocal lines
        index = np.flatnonzero(mask)
        if is_csv and lines is None:  # a clean file took the fast parser: find the lines only now
            scanned = _scan_csv(path)[1]
            lines = scanned if len(scanned) == len(df) else []
        numbers = np.asarray(lines)[index] if lines else index + 1
        shown = ", ".join(map(str, numbers[:10].tolist())) + (" ..." if len(numbers) > 10 else "")
        return "line" if lines else "row", shown

    value = pd.to_numeric(df["value"], errors="coerce")
    bad = (df["task"].isna() | df["metric"].isna() | value.isna()).to_numpy(dtype=bool)
    if bad.any():
        what, shown = numbered(bad)
        console.warn(f"{path}: skipped {int(bad.sum())} malformed {what}(s): {shown}")
    scale = df[scale_column]
    if not pd.api.types.is_numeric_dtype(scale.dtype):
        number = pd.to_numeric(scale, errors="coerce")
        blank = scale.isna().to_numpy(dtype=bool) | (scale.astype(str).str.strip() == "").to_numpy(dtype=bool)
        not_number = number.isna().to_numpy(dtype=bool) & ~blank & ~bad
        if not_number.any():
            what, shown = numbered(not_number)
            count = int(not_number.sum())
            console.warn(f"{path}: skipped {count} {what}(s) whose {scale_column} is not a number: {shown}")
            bad = bad | not_number
        df[scale_column] = number
    if bad.any():
        df = df.loc[~bad].reset_index(drop=True)
        value = value.loc[~bad].reset_index(drop=True)
    df["value"] = value
    defaults = {"subtask": "all", "split": "test", "sweep": path.stem, "status": "unknown"}
    for col, default in defaults.items():
        if col not in df.columns:
            df[col] = default
    # Without run ids or seeds, two rows of one size may be two seeds or one row twice: nobody can tell.
    df.attrs["unkeyed"] = "run_id" not in df.columns and "seed" not in df.columns
    if "run_id" not in df.columns:  # one run per configuration and seed
        config = [c for c in ("sweep", "model", "n_params", "width", "depth", "seed") if c in df.columns]
        run_id = df[config[0]].astype(str)
        for col in config[1:]:
            run_id = run_id + ":" + df[col].astype(str)
        df["run_id"] = run_id
    return df


def _read_json(path: Path, console: Console, params_map: dict[str, int] | None) -> pd.DataFrame | None:
    """A BIG-bench `scores_<model>.json` or an lm-evaluation-harness results file. BIG-bench rows carry the
    model family and the number of shots in `split` ("GPT, 0-shot"), so that families and shot counts are
    separate curves."""
    if is_bigbench(path):
        try:
            rows = read_bigbench(path)
        except (ValueError, KeyError, TypeError) as exc:
            console.warn(f"{path}: skipped, a malformed BIG-bench file ({exc})")
            return None
        rows["split"] = rows["model_family"].astype(str) + ", " + rows["shots"].astype(str) + "-shot"
        return rows
    return read_lm_eval(path, console, params_map, quiet_if_foreign=False)


def _read_csv(path: Path, console: Console) -> tuple[pd.DataFrame, list[int] | None]:
    """A CSV table, and the file line of every row when they had to be found. A clean file takes pandas'
    C parser; one with a line longer than the header is re-read line by line, skipping such lines with a
    warning each. (`index_col=False`: a longer first row must not silently become the index.)"""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, index_col=False), None
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        pass
    text, lines, problems = _scan_csv(path)
    warn_lines(path, problems, console)
    return pd.read_csv(io.StringIO(text), index_col=False), lines


def _scan_csv(path: Path) -> tuple[str, list[int], list[str]]:
    """The CSV's header and well-formed records as text, the line each record starts on, and a message for
    every skipped record (more fields than the header). Blank lines are skipped, as pandas does."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    lines: list[int] = []
    problems: list[str] = []
    width: int | None = None
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        start = 1
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if width is None:
                width = len(record)
            elif len(record) > width:
                problems.append(
                    f"{path}:{line}: skipped malformed line (expected {width} fields, saw {len(record)})"
                )
                continue
            else:
                lines.append(line)
            writer.writerow(record)
    return out.getvalue(), lines, problems
