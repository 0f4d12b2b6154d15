"""The hook for study-specific analyses: an extra's tables are written and its section lands in the report
between the per-task findings and the figures; an extra that does not apply adds nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from emergence_lab.analysis import extras
from emergence_lab.analysis.cli import analyze_main
from emergence_lab.analysis.extras import ExtraInput, ExtraSection
from emergence_lab.analysis.report import Block

FIXTURE = Path(__file__).parent / "fixtures" / "studies" / "mirage_arithmetic.csv"


def _count_runs(inp: ExtraInput) -> ExtraSection:
    runs = inp.table.groupby("width")["run_id"].nunique().rename("runs").reset_index()
    path = inp.out_dir / "runs_per_width.csv"
    runs.to_csv(path, index=False)
    return ExtraSection("Runs per width", [Block("table", runs)], [path])


def _not_applicable(inp: ExtraInput) -> None:
    return None


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "EXTRAS", (_count_runs, _not_applicable))


def test_extra_writes_its_table_and_report_section(registered: None, tmp_path: Path) -> None:
    out = tmp_path / "a"
    assert analyze_main([str(FIXTURE), "--out", str(out), "--by", "none", "--no-figures", "--quiet"]) == 0
    runs = pd.read_csv(out / "runs_per_width.csv")
    assert runs.set_index("width")["runs"].to_dict() == {w: 3 for w in (8, 12, 16, 24, 32, 48, 64)}
    report = (out / "report.md").read_text()
    assert report.count("## Runs per width") == 1
    assert report.index("## addition") < report.index("## Runs per width") < report.index("## Figures")
    assert "| 64 | 3 |" in report.replace("  ", " ")


def test_no_extras_no_section(tmp_path: Path) -> None:
    out = tmp_path / "a"
    assert analyze_main([str(FIXTURE), "--out", str(out), "--by", "none", "--no-figures", "--quiet"]) == 0
    assert "Runs per width" not in (out / "report.md").read_text()
    assert not (out / "runs_per_width.csv").exists()
