"""`emergence analyze` and `emergence figures`.

Both validate their arguments before any work (a bad input is one line on stderr and exit code 2), and
print every path they write. Nothing here imports torch or lightning; wandb only with `--wandb` or a
`wandb:` input.

`emergence analyze` takes the defaults of `--x`, `--by`, `--metrics`, `--phase-metric`, `--primary-metric`
and `--figures` from the study's `analysis` block in a sweep folder's manifest (see `analysis.study`);
options given on the command line win. The effective settings are stored with the table, so
`emergence figures` redraws the same.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from emergence_lab.analysis.options import (
    BY_CHOICES,
    CHECK_HELP,
    CRITERIA_HELP,
    FIGURE_KINDS,
    X_CHOICES,
    CheckOptions,
    Criteria,
)


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
    p.add_argument(
        "--x",
        default=None,
        help=f"scale axis: {', '.join(X_CHOICES)} (default: the study's, else n_params)",
    )
    p.add_argument(
        "--by",
        default=None,
        help="group the curves: depth (one curve per depth), none (every shape on one curve), or auto = "
        "depth when the table has more than one depth and --x is not depth (default: the study's, else auto)",
    )
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metrics shown as panels of the scale figure (default: the study's, else all)",
    )
    p.add_argument(
        "--figures",
        default=None,
        help=f"comma-separated kinds of figure to draw, of {','.join(FIGURE_KINDS)} (default: the "
        "study's, else all)",
    )
    p.add_argument("--params-map", type=Path, help="CSV model,n_params for lm-eval models")
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="analyse failed, interrupted, running and pending runs too (default: completed runs only; the "
        "others are listed in the console and the report)",
    )
    p.add_argument(
        "--keep-all-generations",
        action="store_true",
        help="count every run id of one task, shape and seed (default: only the newest, when a sweep was "
        "relaunched after a config change)",
    )
    p.add_argument("--wandb", action="store_true", help="log figures and tables to a job_type=analysis run")
    p.add_argument(
        "--wandb-project", default=None, help="wandb project (default $WANDB_PROJECT or emergence-lab)"
    )
    p.add_argument("--wandb-entity", default=None, help="wandb entity (default $WANDB_ENTITY)")
    p.add_argument("--wandb-group", default=None, help="wandb group (default: the sweep name)")
    p.add_argument(
        "--phase-metric",
        default=None,
        help="metric of the width x depth heat map (default: the study's heatmap_metric, else exact_match)",
    )
    p.add_argument(
        "--primary-metric",
        default=None,
        help="the study's primary metric: its curves are tested on their own, outside the false-discovery "
        "control over all other curves (default: the study's primary_metric)",
    )
    p.add_argument(
        "--boot",
        type=int,
        default=200,
        help="bootstrap draws of the detector's test and threshold CI (default 200, at least 100)",
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
    if args.x is not None and args.x not in X_CHOICES:
        return _fail(prog, f"unknown --x {args.x!r} (choose from {', '.join(X_CHOICES)})")
    if args.by is not None and args.by not in BY_CHOICES:
        return _fail(prog, f"unknown --by {args.by!r} (choose from {', '.join(BY_CHOICES)})")
    cli_lists = {}
    for name in ("metrics", "figures"):
        value = getattr(args, name)
        if value is not None:
            cli_lists[name] = [v.strip() for v in value.split(",") if v.strip()]
    bad = [k for k in cli_lists.get("figures", []) if k not in FIGURE_KINDS]
    if bad:
        return _fail(
            prog, f"unknown figure kind {bad[0]!r} in --figures (choose from {', '.join(FIGURE_KINDS)})"
        )
    if args.boot < 0 or args.boot_points < 1 or args.holdout < 0:
        return _fail(prog, "--boot must be >= 0, --boot-points >= 1 and --holdout >= 0")
    from emergence_lab.analysis.collect import check_inputs

    problem = check_inputs(args.inputs)
    if problem:
        return _fail(prog, problem)
    from emergence_lab.analysis.console import Console
    from emergence_lab.analysis.study import OPTION_OF, check_block, read_study

    console = Console(quiet=args.quiet)
    block, source = read_study(args.inputs, console)
    given = {
        "x": args.x,
        "by": args.by,
        "heatmap_metric": args.phase_metric,
        "primary_metric": args.primary_metric,
        **cli_lists,
    }
    block = {k: v for k, v in block.items() if given.get(k) is None}  # the command line wins
    problem = check_block(block, source)
    if problem:
        return _fail(prog, problem)
    settings = {k: given[k] if given.get(k) is not None else block.get(k) for k in OPTION_OF}
    x = settings["x"] or "n_params"
    by = settings["by"] or "auto"
    if by == "depth" and x == "depth":
        return _fail(prog, "--by depth needs a scale axis other than depth")
    if args.out.exists() and not args.out.is_dir():
        return _fail(prog, f"--out {args.out} exists and is not a folder")
    params_map = None
    if args.params_map is not None:
        from emergence_lab.analysis.lm_eval import load_params_map

        if not args.params_map.is_file():
            return _fail(prog, f"--params-map {args.params_map} not found")
        try:
            params_map = load_params_map(args.params_map)
        except ValueError as exc:
            return _fail(prog, str(exc))

    from emergence_lab.analysis.aggregate import resolve_by
    from emergence_lab.analysis.collect import collect_runs
    from emergence_lab.analysis.parallel import Workers
    from emergence_lab.analysis.pipeline import (
        WARM_UP_ROWS,
        WORKER_MODULES,
        Options,
        build,
        read_results,
        write_results,
    )

    criteria = Criteria(**{k[5:]: v for k, v in vars(args).items() if k.startswith("crit_")})
    check = CheckOptions(**{k[6:]: v for k, v in vars(args).items() if k.startswith("check_")})
    command = "emergence analyze " + shlex.join(argv)
    from emergence_lab.analysis.runs import DuplicateError

    try:
        collected = collect_runs(
            args.inputs,
            console,
            params_map,
            x if x != "step" else "n_params",
            args.out,
            args.include_incomplete,
            args.keep_all_generations,
        )
    except DuplicateError as exc:
        return _fail(prog, str(exc))
    table, left_out = collected.table, collected.left_out
    if table.empty:
        if left_out:
            statuses = sorted({r.status for r in left_out})
            hint = (
                ""
                if args.include_incomplete
                else "; --include-incomplete analyses runs that did not complete"
            )
            print(
                f"{prog}: error: no run left to analyse: all {len(left_out)} run(s) were left out "
                f"({', '.join(statuses)}){hint}",
                file=sys.stderr,
            )
        else:
            print(f"{prog}: error: no result rows found in the inputs", file=sys.stderr)
        return 1
    figures = settings["figures"]
    options = Options(
        x,
        criteria,
        check,
        args.boot_points,
        args.boot,
        args.seed,
        args.holdout,
        settings["heatmap_metric"],
        command,
        by=resolve_by(by, table, x),
        figures=tuple(FIGURE_KINDS if figures is None else dict.fromkeys(figures)),
        metrics=tuple(dict.fromkeys(settings["metrics"])) if settings["metrics"] else None,
        study=str(source) if source is not None else None,
        primary_metric=settings["primary_metric"],
    )
    with Workers(args.jobs, WORKER_MODULES) as workers:
        if len(table) >= WARM_UP_ROWS and not args.no_figures:
            workers.warm_up()  # their imports overlap writing and re-reading the table
        paths = write_results(table, args.out, options, list(console.warnings), left_out)
        for path in paths:
            print(path)
        # Analyse the table as `emergence figures` will read it, so both commands write the same bytes.
        stored = read_results(paths[0])
        figures = not args.no_figures
        _, written = build(
            stored.table,
            args.out,
            stored.options,
            Console(quiet=args.quiet),
            stored.warnings,
            figures,
            workers,
            left_out=stored.left_out,
        )
    for path in written:
        print(path)
    if args.wandb:
        written_wandb = _log_wandb(args, stored.options, stored.table, args.out, written)
        if written_wandb:
            print(written_wandb)
    return 0


def _log_wandb(args: argparse.Namespace, options, table, out_dir: Path, written: list[Path]) -> str | None:
    import os

    import pandas as pd

    from emergence_lab.analysis.wandb_io import log_analysis, parse_spec

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
            {"x": options.x, "by": options.by, "inputs": list(args.inputs)},
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
    from emergence_lab.analysis.pipeline import RESULTS_PARQUET

    parquet = args.dir / RESULTS_PARQUET
    if not parquet.is_file():
        return _fail(prog, f"{parquet} not found (run `emergence analyze ... --out {args.dir}` first)")
    from emergence_lab.analysis.console import Console
    from emergence_lab.analysis.parallel import Workers
    from emergence_lab.analysis.pipeline import WARM_UP_ROWS, WORKER_MODULES, build, read_results

    with Workers(args.jobs, WORKER_MODULES) as workers:
        try:
            if parquet.stat().st_size > WARM_UP_ROWS * 10:  # roughly WARM_UP_ROWS rows
                workers.warm_up()
            stored = read_results(parquet)
        except Exception as exc:
            return _fail(prog, f"{parquet}: cannot read ({type(exc).__name__}: {exc})")
        _, written = build(
            stored.table,
            args.dir,
            stored.options,
            Console(quiet=args.quiet),
            stored.warnings,
            True,
            workers,
            left_out=stored.left_out,
        )
    for path in written:
        print(path)
    return 0
