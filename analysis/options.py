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
    """When is a curve `emergent`? (see `analysis.classify` for how each is measured)"""

    min_sizes: int = 5
    # 6: "strong" support by Burnham & Anderson's scale. With 2, 1.8% of noisy linear curves (exact match,
    # seed noise 0.1, 0.1 per decade, 6-8 sizes, 3 seeds) were called emergent, with 6 0.4%, at the same 94%
    # detection of real 0.6-decade jumps under that noise (500 draws each, tests/test_analysis_axes.py).
    aicc_margin: float = 6.0
    snr: float = 3.0
    min_rise_frac: float = 0.2
    max_sharpness: float = 1.0
    plateau_sizes: int = 2
    plateau_k: float = 2.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


CRITERIA_HELP = {
    "min_sizes": "distinct sizes needed for the nonlinear fits and for `emergent`",
    "aicc_margin": "AICc by which sigmoid or hinge must beat the line",
    "snr": "a rise counts only above this many standard errors of a size's mean (else `absent`)",
    "min_rise_frac": "emergent rise: at least this fraction of the metric's range",
    "max_sharpness": "emergent rise: 10% to 90% within this many decades",
    "plateau_sizes": "sizes that must sit on the floor before the rise",
    "plateau_k": "'on the floor': within this many standard errors (or 10% of the rise)",
}


@dataclass(frozen=True)
class CheckOptions:
    """When did a continuous metric move while exact match sat at its floor? (`analysis.metric_check`)"""

    z_min: float = 2.0
    min_frac: float = 0.05
    same_place_decades: float = 0.5


CHECK_HELP = {
    "z_min": "a continuous metric 'moved' (at the floor) or 'jumped' (across the rise) by this many SEs",
    "min_frac": "... and by at least this fraction of its range",
    "same_place_decades": "two thresholds within this many decades are 'the same place'",
}
