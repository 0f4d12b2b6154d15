"""`emergence analyze` and `emergence figures`.

Both validate their arguments before any work (a bad input is one line on stderr and exit code 2), and
print every path they write. Nothing here imports torch or lightning; wandb only with `--wandb` or a
`wandb:` input.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from analysis.options import CHECK_HELP, CRITERIA_HELP, X_CHOICES, CheckOptions, Criteria


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and lets the caller return exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _analyze_parser() -> _Parser:
    p = _Parser(
        prog="emergence analyze", description="Collect results, fit thresholds, draw figures and a report."
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="run/sweep folders, CSV/Parquet tables, lm-eval JSON (files or "
        "folders), wandb:<entity>/<project>[/<group>]",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--x", default="n_params", help=f"scale axis: {', '.join(X_CHOICES)} (default n_params)")
    p.add_argument("--params-map", type=Path, help="CSV model,n_params for lm-eval models")
    p.add_argument("--wandb", action="store_true", help="log figures and tables to a job_type=analysis run")
    p.add_argument(
        "--wandb-project", default=None, help="wandb project (default $WANDB_PROJECT or emergence-lab)"
    )
    p.add_argument("--wandb-entity", default=None, help="wandb entity (default $WANDB_ENTITY)")
    p.add_argument("--wandb-group", default=None, help="wandb group (default: the sweep name)")
    p.add_argument(
        "--phase-metric", default=None, help="metric of the width x depth heat map (default exact_match)"
    )
    p.add_argument(
        "--boot", type=int, default=200, help="bootstrap refits for each threshold CI (default 200)"
    )
    p.add_argument(
        "--boot-points", type=int, default=1000, help="bootstrap resamples for point CIs (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every bootstrap (default 0)")
    p.add_argument(
        "--holdout", type=int, default=1, help="largest sizes held out by the back-test (default 1)"
    )
    p.add_argument("--jobs", type=int, default=None, help="processes for the fits (default: all cores)")
    p.add_argument("--no-figures", action="store_true", help="tables and report only")
    p.add_argument("--quiet", action="store_true", help="print only the written paths")
    group = p.add_argument_group("classification criteria (written into report.md)")
    for name, value in Criteria().as_dict().items():
        flag, help_text = (
            f"--{name.replace('_', '-')}",
            f"{CRITERIA_HELP[name]} (default {value})".replace("%", "%%"),
        )
        metavar = type(value).__name__.upper()
        group.add_argument(
            flag, type=type(value), default=value, dest=f"crit_{name}", help=help_text, metavar=metavar
        )
    group = p.add_argument_group("metric check")
    for name, value in vars(CheckOptions()).items():
        flag, help_text = (
            f"--check-{name.replace('_', '-')}",
            f"{CHECK_HELP[name]} (default {value})".replace("%", "%%"),
        )
        metavar = type(value).__name__.upper()
        group.add_argument(
            flag, type=type(value), default=value, dest=f"check_{name}", help=help_text, metavar=metavar
        )
    return p


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def analyze_main(argv: list[str]) -> int:
    prog = "emergence analyze"
    try:
        args = _analyze_parser().parse_args(argv)
    except _UsageError as exc:
        return _fail(prog, str(exc))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.x not in X_CHOICES:
        return _fail(prog, f"unknown --x {args.x!r} (choose from {', '.join(X_CHOICES)})")
    if args.boot < 0 or args.boot_points < 1 or args.holdout < 0:
        return _fail(prog, "--boot must be >= 0, --boot-points >= 1 and --holdout >= 0")
    from analysis.collect import check_inputs

    problem = check_inputs(args.inputs)
    if problem:
        return _fail(prog, problem)
    if args.out.exists() and not args.out.is_dir():
        return _fail(prog, f"--out {args.out} exists and is not a folder")
    params_map = None
    if args.params_map is not None:
        from analysis.lm_eval import load_params_map

        if not args.params_map.is_file():
            return _fail(prog, f"--params-map {args.params_map} not found")
        try:
            params_map = load_params_map(args.params_map)
        except ValueError as exc:
            return _fail(prog, str(exc))

    from analysis.collect import collect
    from analysis.console import Console
    from analysis.parallel import Workers
    from analysis.pipeline import WARM_UP_ROWS, Options, build, read_results, write_results

    console = Console(quiet=args.quiet)
    criteria = Criteria(**{k[5:]: v for k, v in vars(args).items() if k.startswith("crit_")})
    check = CheckOptions(**{k[6:]: v for k, v in vars(args).items() if k.startswith("check_")})
    command = "emergence analyze " + shlex.join(argv)
    options = Options(
        args.x,
        criteria,
        check,
        args.boot_points,
        args.boot,
        args.seed,
        args.holdout,
        args.phase_metric,
        command,
    )
    table = collect(
        args.inputs, console, params_map, args.x if args.x != "step" else "n_params", exclude=args.out
    )
    if table.empty:
        print(f"{prog}: error: no result rows found in the inputs", file=sys.stderr)
        return 1
    with Workers(args.jobs) as workers:
        if len(table) >= WARM_UP_ROWS and not args.no_figures:
            workers.warm_up()  # their imports overlap writing and re-reading the table
        paths = write_results(table, args.out, options, list(console.warnings))
        for path in paths:
            print(path)
        # Analyse the table as `emergence figures` will read it, so both commands write the same bytes.
        table, options, collect_warnings = read_results(paths[0])
        figures = not args.no_figures
        _, written = build(
            table, args.out, options, Console(quiet=args.quiet), collect_warnings, figures, workers
        )
    for path in written:
        print(path)
    if args.wandb:
        written_wandb = _log_wandb(args, table, args.out, written)
        if written_wandb:
            print(written_wandb)
    return 0


def _log_wandb(args: argparse.Namespace, table, out_dir: Path, written: list[Path]) -> str | None:
    import os

    import pandas as pd

    from analysis.wandb_io import log_analysis, parse_spec

    group = args.wandb_group
    if group is None:
        specs = [parse_spec(s) for s in args.inputs if s.startswith("wandb:")]
        groups = [g for _, _, g in specs if g]
        sweeps = sorted(map(str, table["sweep"].dropna().unique())) if "sweep" in table.columns else []
        group = groups[0] if groups else (sweeps[0] if len(sweeps) == 1 else "analysis")
    project = args.wandb_project or os.environ.get("WANDB_PROJECT") or "emergence-lab"
    entity = args.wandb_entity or os.environ.get("WANDB_ENTITY")
    tables = {p.stem: pd.read_csv(p) for p in written if p.suffix == ".csv"}
    try:
        mode = log_analysis(
            [p for p in written if p.parent.name == "figures"],
            tables,
            out_dir,
            group,
            project,
            entity,
            {"x": args.x, "inputs": list(args.inputs)},
        )
    except Exception as exc:  # logging is a convenience: the analysis on disk is complete either way
        print(f"warning: wandb logging failed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    return f"wandb: logged to {project}/{group} (job_type=analysis, mode={mode})"


def figures_main(argv: list[str]) -> int:
    prog = "emergence figures"
    p = _Parser(
        prog=prog, description="Rebuild every figure, table and the report from <dir>/results.parquet."
    )
    p.add_argument("dir", type=Path, help="an `emergence analyze` output folder")
    p.add_argument("--jobs", type=int, default=None, help="processes for the fits (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="print only the written paths")
    try:
        args = p.parse_args(argv)
    except _UsageError as exc:
        return _fail(prog, str(exc))
    except SystemExit as exc:
        return int(exc.code or 0)
    from analysis.pipeline import RESULTS_PARQUET

    parquet = args.dir / RESULTS_PARQUET
    if not parquet.is_file():
        return _fail(prog, f"{parquet} not found (run `emergence analyze ... --out {args.dir}` first)")
    from analysis.console import Console
    from analysis.parallel import Workers
    from analysis.pipeline import WARM_UP_ROWS, build, read_results

    with Workers(args.jobs) as workers:
        try:
            if parquet.stat().st_size > WARM_UP_ROWS * 10:  # roughly WARM_UP_ROWS rows
                workers.warm_up()
            table, options, collect_warnings = read_results(parquet)
        except Exception as exc:
            return _fail(prog, f"{parquet}: cannot read ({type(exc).__name__}: {exc})")
        _, written = build(
            table, args.dir, options, Console(quiet=args.quiet), collect_warnings, True, workers
        )
    for path in written:
        print(path)
    return 0
