"""Golden tests: a refactor must not change what users already have on disk.

- Every shipped study plans the same run ids (a changed id orphans existing sweep folders: a rerun would
  train everything again instead of skipping or resuming).
- The analysis of a committed fixture table gives the same verdict tables. A deliberate change to the
  classifier regenerates `tests/fixtures/verdicts/` (see `regenerate` below) and says why in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ANALYZE_ARGS = ["--no-figures", "--quiet", "--boot", "50"]


@pytest.mark.parametrize("study", sorted(json.loads((FIXTURES / "golden" / "run_ids.json").read_text())))
def test_shipped_studies_keep_their_run_ids(study: str) -> None:
    from emergence_lab.launch.plan import plan_from_cli

    expected = json.loads((FIXTURES / "golden" / "run_ids.json").read_text())[study]
    _, runs = plan_from_cli(["-m", f"experiment={study}"])
    assert sorted(r.run_id for r in runs) == expected


def regenerate(out: Path) -> None:
    """Analyse the fixture table into `out` (the tests compare against the committed copies)."""
    from emergence_lab.analysis.cli import analyze_main

    code = analyze_main([str(FIXTURES / "verdicts" / "results.csv"), "--out", str(out), *ANALYZE_ARGS])
    assert code == 0


@pytest.mark.parametrize("name", ["thresholds.csv", "metric_check.csv"])
def test_fixture_table_keeps_its_verdicts(tmp_path: Path, name: str) -> None:
    regenerate(tmp_path)
    got = pd.read_csv(tmp_path / name)
    want = pd.read_csv(FIXTURES / "verdicts" / name)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-6, atol=1e-9)
