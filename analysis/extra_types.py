"""What an extra (analysis.extras) receives and returns: kept apart from the registry, so that the extras it
lists can import these types without an import cycle."""

from __future__ import annotations

from collections.abc import Callable
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
