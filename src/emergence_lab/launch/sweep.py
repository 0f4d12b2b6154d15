"""`emergence sweep <study>`: launch a named study from experiments/, or price it with `--dry-run`."""

from __future__ import annotations

import sys

from emergence_lab.launch.configs import studies
from emergence_lab.launch.packing import pack_argv
from emergence_lab.launch.plan import (
    HYDRA_FLAGS_WITHOUT_RUN,
    PlannedRun,
    job_overrides,
    one_line,
    plan_from_cli,
)
from emergence_lab.run.memory import human_bytes


def sweep_cli(argv: list[str]) -> int:
    try:
        known = studies()
    except ValueError as exc:
        print(f"emergence sweep: {exc}", file=sys.stderr)
        return 2
    if not argv or argv[0].startswith("-"):
        print(f"usage: emergence sweep <study> [overrides...] [--dry-run]\nstudies: {', '.join(known)}")
        return 2
    study, rest = argv[0], argv[1:]
    if study not in known:
        choices = ", ".join(known)
        print(f"emergence sweep: unknown study {study!r}; choose from {choices}", file=sys.stderr)
        return 2
    dry_run = "--dry-run" in rest
    rest = [a for a in rest if a != "--dry-run"]
    # --cfg / --info / --help print instead of running, and Hydra takes them only without --multirun
    info_only = any(a.split("=")[0] in HYDRA_FLAGS_WITHOUT_RUN for a in rest)
    hydra_argv = [*([] if info_only else ["-m"]), f"experiment={study}", *rest]
    if not dry_run:
        from emergence_lab.launch.app import run_cli

        return run_cli(hydra_argv)
    try:
        master, runs = plan_from_cli(pack_argv(hydra_argv))
    except Exception as exc:
        print(f"emergence sweep: {one_line(exc)}", file=sys.stderr)
        return 2
    print_plan(runs, f"{study}: {runs_line(runs)} -> {master.hydra.sweep.dir}")
    return 0


def runs_line(runs: list[PlannedRun]) -> str:
    """`24 runs`, or `24 runs in 8 packed jobs` when seeds train together."""
    n_jobs = len(job_overrides(runs))
    return f"{len(runs)} runs" + (f" in {n_jobs} packed jobs" if n_jobs < len(runs) else "")


def print_plan(runs: list[PlannedRun], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_footer=True)
    total_time = sum(r.est_seconds for r in runs)
    columns = [
        ("run", "run_id", "TOTAL"),
        ("width", "width", ""),
        ("depth", "depth", ""),
        ("seed", "seed", ""),
        ("n_params", "n_params", f"{sum(r.n_params for r in runs):,}"),
        ("steps", "max_steps", f"{sum(r.max_steps for r in runs):,}"),
        ("tokens", "tokens", f"{sum(r.tokens for r in runs):.3g}"),
        ("FLOPs", "flops", f"{sum(r.flops for r in runs):.3g}"),
        ("est. time", "est_seconds", _duration(total_time)),
        ("memory", "mem_bytes", "max " + human_bytes(max((r.mem_bytes for r in runs), default=0))),
    ]
    for header, _, footer in columns:
        table.add_column(header, footer=footer, justify="left" if header == "run" else "right")
    for r in runs:
        table.add_row(
            r.run_id,
            str(r.width),
            str(r.depth),
            str(r.seed),
            f"{r.n_params:,}",
            f"{r.max_steps:,}",
            f"{r.tokens:.3g}",
            f"{r.flops:.3g}",
            _duration(r.est_seconds),
            human_bytes(r.mem_bytes),
        )
    Console(width=160).print(table)
    n_params, tokens, flops = (sum(getattr(r, k) for r in runs) for k in ("n_params", "tokens", "flops"))
    print(
        f"TOTAL {runs_line(runs)}, {n_params:,} params, {tokens:.3g} tokens, {flops:.3g} FLOPs, "
        f"est. {_duration(total_time)} serial"
    )


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
