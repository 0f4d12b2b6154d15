"""The written, configurable criteria of the classification and of the metric check, with their meaning.

Kept free of heavy imports: `emergence analyze --help` lists them without loading numpy or scipy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from emergence_lab.analysis.figure_kinds import FIGURE_KINDS

__all__ = ["BY_CHOICES", "FIGURE_KINDS", "X_CHOICES", "CheckOptions", "Criteria"]

X_CHOICES: tuple[str, ...] = ("n_params", "flops", "tokens", "width", "depth", "step")
# `--by`: which column splits one metric's points into separate curves. `auto` is `depth` when the table
# holds more than one depth and the scale axis is not depth itself, else `none`.
BY_CHOICES: tuple[str, ...] = ("auto", "none", "depth")


@dataclass(frozen=True)
class Criteria:
    """When is a curve `emergent`? (`analysis.detect`: the operational definition and how it is tested)"""

    alpha: float = 0.05
    min_rise_frac: float = 0.2
    max_sharpness: float = 1.0
    plateau_sizes: int = 2
    near_floor_frac: float = 0.1
    power_target: float = 0.8
    n_power: int = 100
    min_sizes: int = 5

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


CRITERIA_HELP = {
    "alpha": "level of the jump-vs-line test; the false-discovery rate over all curves is held at it too",
    "min_rise_frac": "emergent rise: at least this fraction of the range (or of the gap to the best value)",
    "max_sharpness": "emergent rise: 10% to 90% within this many decades",
    "plateau_sizes": "sizes that must sit near the floor before the rise",
    "near_floor_frac": "'near the floor': within this fraction of the range (plus 2 standard errors)",
    "power_target": "`absent` needs a minimal jump to have been found with this probability",
    "n_power": "simulated draws per power evaluation (inconclusive curves only)",
    "min_sizes": "distinct sizes needed for the fitted sigmoid and hinge drawn in the figures",
}


@dataclass(frozen=True)
class CheckOptions:
    """Is exact match's jump an artefact of the metric? (`analysis.detect.metric_check`)"""

    same_place_decades: float = 0.5


CHECK_HELP = {
    "same_place_decades": "a continuous metric emergent within this many decades of exact match 'persists'",
}
