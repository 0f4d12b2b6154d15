"""The analysis, end to end: tidy table -> points, fits, classification, metric check -> files.

`emergence analyze` collects the inputs, writes `results.parquet` (with the analysis options and the
collection warnings in its metadata) and then runs `build` on the table read back from that file;
`emergence figures` runs the same `build` on the same file. So both give identical outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from emergence_lab.analysis.aggregate import add_depth, aggregate, observations, resolve_by
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.curves import CurveResult, analyse_curves
from emergence_lab.analysis.detect import VERDICTS, false_discovery
from emergence_lab.analysis.extras import ExtraInput, run_extras
from emergence_lab.analysis.figures import FigureData, draw_all
from emergence_lab.analysis.metric_check import metric_check
from emergence_lab.analysis.options import FIGURE_KINDS, CheckOptions, Criteria
from emergence_lab.analysis.parallel import Workers
from emergence_lab.analysis.report import build_blocks, write_report
from emergence_lab.analysis.runs import COUNTED_STATUSES, LeftOut
from emergence_lab.analysis.schema import metric_directions, normalise

RESULTS_PARQUET = "results.parquet"
WARM_UP_ROWS = 100_000  # from this many rows on, start worker processes while the table is written
# What the worker processes run: the curve fits and the figures.
WORKER_MODULES = ("emergence_lab.analysis.curves", "emergence_lab.analysis.figures")
RESULTS_CSV = "results.csv"
META_KEY = b"emergence_analysis"


@dataclass
class Options:
    """The effective settings of one analysis (command line over the study's block over the defaults).
    Stored in results.parquet, so `emergence figures` rebuilds exactly what `emergence analyze` drew."""

    x: str = "n_params"
    criteria: Criteria = field(default_factory=Criteria)
    check: CheckOptions = field(default_factory=CheckOptions)
    n_boot_points: int = 1000
    n_boot_fit: int = 200
    seed: int = 0
    holdout: int = 1
    phase_metric: str | None = None
    command: str = ""
    by: str = "auto"  # none | depth, or auto (resolved against the table)
    figures: tuple[str, ...] = FIGURE_KINDS  # the kinds of figure drawn
    metrics: tuple[str, ...] | None = None  # the scale figure's panels (None: every metric)
    study: str | None = None  # the sweep manifest whose analysis block gave defaults
    primary_metric: str | None = None  # tested on its own, outside the false-discovery control

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Options:
        raw = json.loads(text)
        # an older file's criteria that no longer exist (the AICc classifier's) are dropped
        crit = Criteria(**_known(Criteria, raw.pop("criteria", {})))
        check = CheckOptions(**_known(CheckOptions, raw.pop("check", {})))
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        for name in ("figures", "metrics"):
            if isinstance(known.get(name), list):
                known[name] = tuple(known[name])
        return cls(criteria=crit, check=check, **known)


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}


@dataclass
class Analysis:
    table: pd.DataFrame
    options: Options
    obs: pd.DataFrame
    points: pd.DataFrame
    thresholds: pd.DataFrame
    curves: list[CurveResult]
    metric_check: pd.DataFrame
    by: str = "none"


@dataclass
class Stored:
    """What results.parquet holds: the table, the analysis options, the collection's warnings and the runs
    it left out (so `emergence figures` rebuilds the report `emergence analyze` wrote)."""

    table: pd.DataFrame
    options: Options
    warnings: list[str]
    left_out: list[LeftOut]


def write_results(
    table: pd.DataFrame,
    out_dir: Path,
    options: Options,
    warnings: list[str],
    left_out: Sequence[LeftOut] = (),
) -> list[Path]:
    """results.parquet (options, collection warnings and left-out runs in its metadata) and results.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = {
        "options": json.loads(options.to_json()),
        "warnings": warnings,
        "left_out": [r.as_dict() for r in left_out],
    }
    arrow = arrow.replace_schema_metadata(
        {**(arrow.schema.metadata or {}), META_KEY: json.dumps(meta).encode()}
    )
    parquet, csv = out_dir / RESULTS_PARQUET, out_dir / RESULTS_CSV
    pq.write_table(arrow, parquet)
    plain = pa.table(
        {
            name: col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
            for name, col in zip(arrow.column_names, arrow.columns, strict=True)
        }
    )
    pa_csv.write_csv(plain, csv)
    return [parquet, csv]


def read_results(path: Path) -> Stored:
    arrow = pq.read_table(path)
    raw = (arrow.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    options = Options.from_json(json.dumps(meta.get("options", {})))
    left_out = [LeftOut(**r) for r in meta.get("left_out", [])]
    return Stored(normalise(arrow.to_pandas()), options, list(meta.get("warnings", [])), left_out)


def analyse(
    table: pd.DataFrame, options: Options, console: Console, workers: Workers | None = None
) -> Analysis:
    directions = metric_directions(table) if len(table) else {}
    by = resolve_by(options.by, table, options.x)
    if by == "depth" and (
        options.x == "depth" or "depth" not in table.columns or table["depth"].isna().all()
    ):
        console.warn(
            "curves not grouped by depth: "
            + ("depth is the scale axis" if options.x == "depth" else "the results have no depth")
        )
        by = "none"
    obs = observations(table, options.x, console)
    points = add_depth(aggregate(obs, options.x, options.n_boot_points, options.seed, by))
    thresholds, curves = analyse_curves(
        obs,
        options.x,
        directions,
        options.criteria,
        console,
        options.n_boot_fit,
        options.seed,
        options.holdout,
        workers,
        by,
        options.primary_metric,
    )
    check = metric_check(
        thresholds,
        obs,
        options.x,
        directions,
        options.check,
        by,
        options.criteria,
        options.n_boot_fit,
        options.seed,
        [r.detection for r in curves],
    )
    return Analysis(table, options, obs, points, thresholds, curves, check, by)


def summary(analysis: Analysis) -> dict[str, Any]:
    t = analysis.table
    out: dict[str, Any] = {"command": analysis.options.command, "rows": len(t)}
    for col, label in (("run_id", "runs"), ("task", "tasks"), ("sweep", "sweeps")):
        if col in t.columns:
            out[label] = int(t[col].nunique())
    out["scale axis (--x)"] = analysis.options.x
    out["curves grouped by (--by)"] = analysis.by
    if analysis.options.study:
        out["defaults from the study"] = f"`{analysis.options.study}`"
    out["curves fitted"] = len(analysis.thresholds)
    if len(analysis.thresholds):
        counts = analysis.thresholds["classification"].value_counts()
        for label in VERDICTS:
            out[label] = int(counts.get(label, 0))
        th = analysis.thresholds
        family = false_discovery(
            th["p_value"].to_numpy(dtype=float),
            analysis.options.criteria.alpha,
            exempt=th["primary"].fillna(False).to_numpy(dtype=bool),
        )
        out["false-discovery control"] = family.statement
        if analysis.options.primary_metric:
            out["primary metric"] = analysis.options.primary_metric
    if "n_params_nominal" in t.columns and t["n_params_nominal"].fillna(False).astype(bool).any():
        out["note"] = "some parameter counts are nominal (parsed from model names)"
    return out


def alerts(table: pd.DataFrame, left_out: Sequence[LeftOut]) -> list[str]:
    """What the report must say before any verdict: runs analysed that did not complete (loudly when that is
    every run), and runs left out."""
    out = []
    if "status" in table.columns and "run_id" in table.columns and len(table):
        runs = table[["run_id", "status"]].astype(str).drop_duplicates("run_id")
        incomplete = runs.loc[~runs["status"].isin(list(COUNTED_STATUSES)) & (runs["status"] != "nan")]
        if len(incomplete):
            counts = ", ".join(f"{n} {s}" for s, n in sorted(incomplete["status"].value_counts().items()))
            if len(incomplete) == len(runs):
                out.append(
                    f"EVERY run analysed here did not complete ({counts}); the verdicts below describe "
                    "unfinished training (`--include-incomplete`)."
                )
            else:
                out.append(
                    f"{len(incomplete)} of {len(runs)} runs analysed did not complete ({counts}; "
                    "`--include-incomplete`)."
                )
    if left_out:
        counts = ", ".join(
            f"{n} {s}" for s, n in sorted(pd.Series([r.status for r in left_out]).value_counts().items())
        )
        out.append(
            f"{len(left_out)} run(s) left out of this analysis ({counts}): listed under Runs left out."
        )
    return out


def build(
    table: pd.DataFrame,
    out_dir: Path,
    options: Options,
    console: Console,
    collect_warnings: list[str],
    figures: bool = True,
    workers: Workers | None = None,
    timings: dict[str, float] | None = None,
    left_out: Sequence[LeftOut] = (),
) -> tuple[Analysis, list[Path]]:
    """Analyse the table and write thresholds.csv, points.csv, metric_check.csv, figures and the report.
    `timings`, if given, receives the seconds spent in each phase."""
    clock = _Clock(timings)
    before = len(console.warnings)
    with Workers(1) if workers is None else nullcontext(workers) as pool:
        analysis, paths, figure_paths = _build(table, out_dir, options, console, figures, pool, clock)
    sections = run_extras(
        ExtraInput(
            analysis.table,
            analysis.obs,
            analysis.thresholds,
            options.x,
            analysis.by,
            options.criteria,
            options.seed,
            options.n_boot_fit,
            out_dir,
            console,
        )
    )
    paths += [f for s in sections for f in s.files]
    clock.lap("extras")
    warnings = collect_warnings + console.warnings[before:]
    blocks = build_blocks(
        analysis.thresholds,
        analysis.metric_check,
        figure_paths,
        out_dir,
        summary(analysis),
        options.criteria,
        warnings,
        analysis.by,
        left_out,
        alerts(analysis.table, left_out),
        [(s.title, s.blocks) for s in sections],
    )
    paths += figure_paths + write_report(blocks, out_dir)
    clock.lap("report")
    return analysis, paths


class _Clock:
    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def _build(
    table: pd.DataFrame,
    out_dir: Path,
    options: Options,
    console: Console,
    figures: bool,
    workers: Workers,
    clock: _Clock,
) -> tuple[Analysis, list[Path], list[Path]]:
    analysis = analyse(table, options, console, workers)
    clock.lap("analysis")
    paths = []
    for name, df in (
        ("thresholds.csv", analysis.thresholds),
        ("points.csv", analysis.points),
        ("metric_check.csv", analysis.metric_check),
    ):
        path = out_dir / name
        df.to_csv(path, index=False, float_format="%.10g")
        paths.append(path)
    clock.lap("tables")
    figure_paths: list[Path] = []
    if figures and options.figures:
        if options.metrics and "scale" in options.figures:
            present = set(map(str, analysis.points["metric"].unique()))
            missing = [m for m in options.metrics if m not in present]
            if missing:
                console.warn(f"metric(s) for the scale figure not in the results: {', '.join(missing)}")
        data = FigureData(
            analysis.table,
            options.x,
            analysis.obs,
            analysis.points,
            analysis.thresholds,
            analysis.curves,
            analysis.metric_check,
            options.phase_metric,
            by=analysis.by,
            metrics=options.metrics,
        )
        figure_paths = draw_all(data, out_dir, workers, console, options.figures)
    clock.lap("figures")
    return analysis, paths, figure_paths
