"""The analysis scale benchmark: `python -m emergence_lab.analysis.bench` (or `emergence bench analysis`).

It generates synthetic data in a temporary folder and times the two things that must stay fast:
1. collecting 1,000 run folders (`results.jsonl` + `run.json`, a few with a torn last line), limit 10 s;
2. `emergence analyze` on a 1,000,000-row results table, end to end (read, points and bootstrap CIs, fits
   with bootstrap threshold CIs, classification, metric check, every figure in 3 formats, report), limit 30 s.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from emergence_lab.analysis.collect import collect
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.parallel import Workers
from emergence_lab.analysis.pipeline import (
    WARM_UP_ROWS,
    WORKER_MODULES,
    Options,
    build,
    read_results,
    write_results,
)
from emergence_lab.analysis.synthetic import synthetic_table, write_run_folders
from emergence_lab.contract import RESULTS_FILE

COLLECT_LIMIT_S = 10.0
ANALYZE_LIMIT_S = 30.0


def bench_collect(root: Path, runs: int) -> tuple[float, int]:
    """Seconds to collect `runs` run folders, and the rows found."""
    seeds = max(1, runs // 50)
    df = synthetic_table(
        widths=(16, 24, 32, 48, 64, 96, 128, 192, 256, 384),
        depths=(1, 2, 3, 4, 6),
        seeds=seeds,
        steps=tuple(range(0, 2001, 100)),
        splits=("test",),
    )
    folders = write_run_folders(df, root)
    for folder in folders[:: max(1, len(folders) // 10)]:  # crashed runs: a torn last line
        with open(folder / RESULTS_FILE, "a") as f:
            f.write('{"schema_version": 1, "run_id": "torn", "task": "addi')
    console = Console(quiet=True)
    start = time.perf_counter()
    table = collect([str(root)], console)
    return time.perf_counter() - start, len(table)


def big_table(rows: int):
    """About `rows` rows: 3 tasks x 2 splits x 10 curves, 30 configurations x 5 seeds, many evaluations."""
    per_step = 3 * 2 * 10 * 30 * 5
    steps = max(2, int(np.ceil(rows / per_step)))
    return synthetic_table(
        tasks=("addition", "parity", "composition"),
        widths=(32, 64, 128, 256, 512, 1024),
        depths=(1, 2, 3, 4, 6),
        seeds=5,
        steps=tuple(int(s) for s in np.linspace(0, 20000, steps)),
        splits=("test", "ood"),
    )


def bench_analyze(
    root: Path, rows: int, jobs: int | None, figures: bool = True
) -> tuple[float, int, dict[str, float], int]:
    """Seconds for the whole `emergence analyze` on one Parquet table; rows; phase timings; files."""
    root.mkdir(parents=True, exist_ok=True)
    table_path = root / "table.parquet"
    big_table(rows).to_parquet(table_path)
    out = root / "out"
    timings: dict[str, float] = {}
    console = Console(quiet=True)
    start = time.perf_counter()
    # The same steps as analysis.cli.analyze_main, with a clock between them.
    with Workers(jobs, WORKER_MODULES) as workers:
        table = collect([str(table_path)], console)
        timings["collect"] = time.perf_counter() - start
        if len(table) >= WARM_UP_ROWS and figures:
            workers.warm_up()
        options = Options(command=f"emergence analyze {table_path} --out {out}")
        paths = write_results(table, out, options, console.warnings)
        stored = read_results(paths[0])
        table, options, warnings = stored.table, stored.options, stored.warnings
        timings["write+read results"] = time.perf_counter() - start - timings["collect"]
        _, written = build(table, out, options, Console(quiet=True), warnings, figures, workers, timings)
    return time.perf_counter() - start, len(table), timings, len(paths) + len(written)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m emergence_lab.analysis.bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--runs", type=int, default=1000, help="run folders to collect (default 1000)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the analysed table (default 1e6)")
    p.add_argument("--jobs", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    p.add_argument("--no-figures", action="store_true", help="time `emergence analyze --no-figures`")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="emergence-analysis-bench-"))
    try:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        seconds, rows = bench_collect(tmp / "sweep", args.runs)
        verdict = "ok" if seconds < COLLECT_LIMIT_S else "OVER LIMIT"
        limit = f"(limit {COLLECT_LIMIT_S:g} s) {verdict}"
        print(f"collect: {args.runs} run folders, {rows:,} rows in {seconds:.2f} s {limit}")
        figures = not args.no_figures
        seconds, rows, timings, files = bench_analyze(tmp / "analyze", args.rows, args.jobs, figures)
        verdict = "ok" if seconds < ANALYZE_LIMIT_S else "OVER LIMIT"
        limit = f"(limit {ANALYZE_LIMIT_S:g} s) {verdict}"
        what = "" if figures else " without figures"
        print(f"analyze{what}: {rows:,}-row table in {seconds:.2f} s {limit}; {files} files written")
        print("  " + ", ".join(f"{name} {value:.2f} s" for name, value in timings.items()))
        print(f"load average at the end {os.getloadavg()[0]:.2f} (other processes slow both timings)")
        if args.keep:
            print(f"data kept in {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
