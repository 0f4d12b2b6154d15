"""`emergence status <sweep_dir>`: what happened to every run of a sweep."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from emergence_lab.launch.runs import run_states

ORDER = ("failed", "unreadable", "interrupted", "running", "pending", "completed")


def _sort_key(state: dict[str, Any]) -> tuple[int, str]:
    status = state["status"]
    return (ORDER.index(status) if status in ORDER else len(ORDER), state["run_id"])


def status_cli(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: emergence status <sweep_dir>", file=sys.stderr)
        return 2
    sweep_dir = Path(argv[0])
    if not sweep_dir.is_dir():
        print(f"emergence status: no such sweep folder: {sweep_dir}", file=sys.stderr)
        return 2
    states = run_states(sweep_dir)
    if not states:
        print(f"emergence status: {sweep_dir} holds no runs and no manifest", file=sys.stderr)
        return 2
    table = Table(title=str(sweep_dir))
    for col in ("run", "status", "step", "attempts", "wall time", "reason"):
        table.add_column(col, overflow="fold")
    for s in sorted(states, key=_sort_key):
        step = f"{s.get('step', '-')}/{s.get('max_steps', '-')}"
        wall = f"{s['wall_time_s']:.0f}s" if s.get("wall_time_s") is not None else "-"
        reason = str(s.get("reason") or "")
        table.add_row(s["run_id"], s["status"], step, str(s.get("attempts", 0)), wall, reason)
    counts = {k: sum(1 for s in states if s["status"] == k) for k in ORDER}
    if not counts["unreadable"]:  # rare: listed only when there is one
        del counts["unreadable"]
    console = Console(width=200)
    console.print(table)
    console.print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0
