"""Study-specific analyses that follow the verdicts: each writes its own tables and adds one report section.

An extra reads the finished analysis (the tidy table, the observations, the fitted thresholds, the options)
and returns the files it wrote and its report section, or None where it does not apply (no step axis, no
weighted subtasks, no composition splits, ...). Registering one is a line in `EXTRAS`; the pipeline runs
them in that order after the verdict tables are written, and `emergence figures` reruns them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emergence_lab.analysis.console import Console
from emergence_lab.analysis.options import Criteria
from emergence_lab.analysis.report import Block


@dataclass(frozen=True)
class ExtraInput:
    table: pd.DataFrame  # the tidy results table
    obs: pd.DataFrame  # one row per run, curve point and seed (aggregate.observations)
    thresholds: pd.DataFrame  # thresholds.csv
    x: str  # the scale axis (`--x`)
    by: str  # the resolved grouping (`none` or `depth`)
    criteria: Criteria
    seed: int  # for bootstraps and permutations
    n_boot: int
    out_dir: Path
    console: Console


@dataclass
class ExtraSection:
    title: str  # the report heading
    blocks: list[Block]
    files: list[Path] = field(default_factory=list)


Extra = Callable[[ExtraInput], ExtraSection | None]

EXTRAS: tuple[Extra, ...] = ()


def run_extras(inp: ExtraInput, extras: Sequence[Extra] | None = None) -> list[ExtraSection]:
    chosen = EXTRAS if extras is None else extras
    return [section for extra in chosen if (section := extra(inp)) is not None]
