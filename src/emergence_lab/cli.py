"""The `emergence` command: one entry point, one subcommand per job.

Subcommands import their modules lazily: `analyze` and `figures` must run where torch cannot be imported.
"""

from __future__ import annotations

import sys

USAGE = """usage: emergence <command> [args]

commands:
  train     train one model, or a Hydra multirun with -m   (emergence train --help)
  sweep     launch a named study from experiments/         (emergence sweep demo --dry-run)
  status    table of completed/running/failed/pending runs of a sweep folder
  analyze   collect results into one table, fit thresholds, draw figures and a report
  figures   rebuild every figure and the report from <dir>/results.parquet
  calibrate detection and false-emergent rates of the verdicts on synthetic ladders with known truth
  bench     side-by-side speed benchmarks (train | analysis | gpu)
  generate  sample text from a run's checkpoint            (emergence generate RUN --prompt TEXT --tokens N)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from emergence_lab.launch.app import run_cli

        return run_cli(rest)
    if command == "sweep":
        from emergence_lab.launch.sweep import sweep_cli

        return sweep_cli(rest)
    if command == "status":
        from emergence_lab.launch.status import status_cli

        return status_cli(rest)
    if command == "analyze":
        from emergence_lab.analysis.cli import analyze_main

        return analyze_main(rest)
    if command == "figures":
        from emergence_lab.analysis.cli import figures_main

        return figures_main(rest)
    if command == "calibrate":
        from emergence_lab.analysis.calibration import calibrate_main

        return calibrate_main(rest)
    if command == "generate":
        from emergence_lab.generate import generate_cli

        return generate_cli(rest)
    if command == "bench":
        from emergence_lab.bench import bench_cli

        return bench_cli(rest)
    print(f"emergence: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
