"""Study-specific analyses that follow the verdicts: each writes its own tables and adds one report section.

An extra reads the finished analysis (the tidy table, the observations, the fitted thresholds, the options)
and returns the files it wrote and its report section, or None where it does not apply (no step axis, no
weighted subtasks, no composition splits, ...). Registering one is a line in `EXTRAS`; the pipeline runs
them in that order after the verdict tables are written, and `emergence figures` reruns them the same way.
The types an extra takes and returns live in `analysis.extra_types` (re-exported here), so that an extra's
module can import them while this registry imports the extra.
"""

from __future__ import annotations

from collections.abc import Sequence

from emergence_lab.analysis.composition_rule import composition_rule
from emergence_lab.analysis.extra_types import Extra, ExtraInput, ExtraSection
from emergence_lab.analysis.per_seed import per_seed
from emergence_lab.analysis.quanta import quanta

__all__ = ["EXTRAS", "Extra", "ExtraInput", "ExtraSection", "run_extras"]

EXTRAS: tuple[Extra, ...] = (per_seed, composition_rule, quanta)


def run_extras(inp: ExtraInput, extras: Sequence[Extra] | None = None) -> list[ExtraSection]:
    chosen = EXTRAS if extras is None else extras
    return [section for extra in chosen if (section := extra(inp)) is not None]
