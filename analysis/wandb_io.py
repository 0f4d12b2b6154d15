"""wandb in both directions: read runs of a project (or group) into the results table, and log an analysis.

`wandb` is imported only here and only when used, so the rest of the package runs without it.

Reading takes the run's attached `results.jsonl` (the contract's RESULTS_FILE, every row exactly as
training wrote it) as the source, and reads it as a run folder's file is read.

Fallback, for a run with no attached file (older runs, or runs whose upload failed): the rows are rebuilt
from the run history, whose keys the training logger writes as `<split>/<metric>/<subtask>` at step
`trainer/global_step`, with task, seed, width, depth, n_params ... taken from the run config. Only the
contract's training metrics are read this way, and what the logger does not log (answer_len) stays missing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from emergence_lab.analysis.console import Console
from emergence_lab.analysis.jsonl import read_results_jsonl
from emergence_lab.contract import RESULTS_FILE, SCHEMA_VERSION, TRAINING_METRIC_NAMES

CONFIG_COLUMNS = (
    "run_id",
    "sweep",
    "task",
    "seed",
    "width",
    "depth",
    "n_heads",
    "n_params",
    "n_params_total",
)
STATE_TO_STATUS = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "interrupted"}


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """`wandb:<entity>/<project>[/<group>]` -> (entity, project, group)."""
    body = spec.removeprefix("wandb:")
    parts = body.split("/", 2)
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"bad wandb input {spec!r}: expected wandb:<entity>/<project>[/<group>]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def read_wandb(spec: str, console: Console, api: Any = None) -> pd.DataFrame | None:
    entity, project, group = parse_spec(spec)
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        runs = list(api.runs(f"{entity}/{project}", filters={"group": group} if group else None))
    except Exception as exc:  # no wandb, no network, no such project: say so and go on with other inputs
        console.warn(f"{spec}: skipped, cannot list wandb runs ({type(exc).__name__}: {exc})")
        return None
    frames = []
    for run in console.track(runs, f"reading {len(runs)} wandb runs", len(runs)):
        name = getattr(run, "name", "?")
        try:
            frame = _run_rows(run, console, f"{spec}: run {name}")
        except Exception as exc:
            console.warn(f"{spec}: run {name} skipped ({type(exc).__name__}: {exc})")
            continue
        if frame is None or not len(frame):
            console.warn(f"{spec}: run {name} has no results rows")
            continue
        frames.append(frame)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True, sort=False)


def _config(run: Any) -> dict[str, Any]:
    raw = dict(getattr(run, "config", {}) or {})
    # Older API versions wrap every value as {"value": ..., "desc": ...}.
    return {k: v["value"] if isinstance(v, Mapping) and "value" in v else v for k, v in raw.items()}


def _run_rows(run: Any, console: Console, label: str) -> pd.DataFrame | None:
    status = STATE_TO_STATUS.get(str(getattr(run, "state", "")), str(getattr(run, "state", "unknown")))
    attached = _attached_results(run, console, label)
    if attached is not None:
        attached["status"] = status
        return attached
    return _history_rows(run, status)


def _history_rows(run: Any, status: str) -> pd.DataFrame | None:
    """The documented fallback for a run without an attached results file: its rows rebuilt from the
    logger's history keys and the run config."""
    config = _config(run)
    static = {c: config.get(c) for c in CONFIG_COLUMNS}
    static["run_id"] = static["run_id"] or getattr(run, "name", None) or getattr(run, "id", None)
    static["sweep"] = static["sweep"] or getattr(run, "group", None)
    tokens_per_step = config.get("tokens_per_step")
    flops_per_step = config.get("flops_per_step")
    rows = []
    for entry in run.scan_history():
        step = entry.get("trainer/global_step", entry.get("_step"))
        for key, value in entry.items():
            parts = str(key).split("/")
            if len(parts) != 3 or parts[1] not in TRAINING_METRIC_NAMES:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            rows.append(
                {
                    "split": parts[0],
                    "metric": parts[1],
                    "subtask": parts[2],
                    "value": float(value),
                    "step": step,
                }
            )
    if not rows:
        return None
    df = pd.DataFrame(rows)
    for col, value in static.items():
        df[col] = value
    df["schema_version"] = SCHEMA_VERSION
    df["status"] = status
    if tokens_per_step is not None:
        df["tokens"] = df["step"] * tokens_per_step
    if flops_per_step is not None:
        df["flops"] = df["step"] * float(flops_per_step)
    return df


def _attached_results(run: Any, console: Console, label: str) -> pd.DataFrame | None:
    """The rows of the run's attached results.jsonl, or None. Its skipped lines are reported on `console`,
    named `<label>, results.jsonl:<line>` (the downloaded copy lives in a folder that is gone afterwards)."""
    try:
        files = [f for f in run.files(names=[RESULTS_FILE]) if getattr(f, "name", "") == RESULTS_FILE]
    except Exception:
        return None
    if not files:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        files[0].download(root=tmp, replace=True)
        local = Path(tmp) / RESULTS_FILE
        scratch = Console(quiet=True)
        table = read_results_jsonl(local, scratch)
    for message in scratch.warnings:
        console.warn(message.replace(str(local), f"{label}, {RESULTS_FILE}"))
    return None if table is None else table.to_pandas()


def log_analysis(
    figures: list[Path],
    tables: dict[str, pd.DataFrame],
    out_dir: Path,
    group: str,
    project: str,
    entity: str | None,
    config: dict[str, Any],
) -> str:
    """Log figures and tables to a `job_type=analysis` run of the sweep's group; returns the wandb mode."""
    import wandb

    mode = os.environ.get("WANDB_MODE", "offline")
    try:
        run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            job_type="analysis",
            name=f"analysis-{group}",
            mode=mode,
            dir=str(out_dir),
            config=config,
        )
        for path in figures:
            if path.suffix == ".png":
                run.log({f"figures/{path.stem}": wandb.Image(str(path))})
        for name, df in tables.items():
            run.log({f"tables/{name}": wandb.Table(dataframe=df.astype(object).where(df.notna(), None))})
    finally:
        wandb.finish()
    return mode
