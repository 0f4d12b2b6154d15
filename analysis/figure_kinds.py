"""The kinds of figure: one registry of each kind's name, drawing cost and caption.

Kept free of heavy imports (the CLI and the study block list the kinds without loading matplotlib); each
kind's draw function is bound to it in `analysis.figures` (`DRAW`), which checks that every kind here has
exactly one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FigureKind:
    name: str  # also the file name's prefix: `<name>_<task>.png`
    cost: int  # rough relative drawing time: the slowest figures are handed out first
    caption: str
    depth_caption: str | None = None  # where curves are grouped by depth and the figure says so

    def caption_for(self, by: str) -> str:
        return self.depth_caption if by == "depth" and self.depth_caption else self.caption


REGISTRY: tuple[FigureKind, ...] = (
    FigureKind(
        "scale",
        4,
        "Metrics against scale: seeds (points), mean with 95% bootstrap CI, best fit (dashed), "
        "threshold with its 95% CI (dotted line and band).",
        "Metrics against scale, one colour per depth (main split only; every split is in the tables): "
        "seeds (points), mean with 95% bootstrap CI, best fit (dashed), threshold with its 95% CI (diamond "
        "and bar on the fit).",
    ),
    FigureKind(
        "phase", 1, "Phase diagram: the metric over width x depth at the final step, mean over seeds."
    ),
    FigureKind("training", 3, "Metrics over training, one line per model size."),
    FigureKind(
        "artefact",
        2,
        "Metric artefact check: exact match beside a continuous metric; shaded: sizes where exact "
        "match sat at its floor.",
        "Metric artefact check, one colour per depth: exact match beside the continuous metric of "
        "the check (legend: each depth's verdict); dotted: token_accuracy^L; triangles: where exact match "
        "leaves its floor.",
    ),
    FigureKind(
        "positions",
        2,
        "Token accuracy per answer position against scale.",
        "Token accuracy per answer position against scale, for the deepest depth.",
    ),
    FigureKind(
        "subtasks",
        2,
        "Each subtask against scale, coloured by its training frequency rank (dark: most frequent); dashed: "
        "the mean over subtasks; triangles: each subtask's threshold.",
        "Each subtask against scale for the deepest depth, coloured by its training frequency rank (dark: "
        "most frequent); dashed: the mean over subtasks; triangles: each subtask's threshold.",
    ),
)
FIGURE_KINDS: tuple[str, ...] = tuple(k.name for k in REGISTRY)
_BY_NAME = {k.name: k for k in REGISTRY}


def figure_kind(name: str) -> FigureKind | None:
    return _BY_NAME.get(name)


def safe_name(text: str) -> str:
    """A task name as it appears in figure file names (`<kind>_<safe task>.png`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "task"
