"""A small fixed-seed subset of the calibration suite as a permanent gate on issue 9's targets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emergence_lab.analysis.calibration import calibrate, calibrate_main

GATE = [
    "jump n=5 se=0.03",
    "boundary <=0.5 dec n=8",
    "boundary 1.2-2 dec n=8",
    "smooth n=8 se=0.03",
    "saturating n=8 se=0.03",
    "flat n=8 se=0.03",
]


def test_calibration_gate() -> None:
    df = calibrate(draws=30, seed=0, regimes=GATE).set_index("regime")
    assert set(df.index) == set(GATE)
    # at least 90% of planted jumps found at 5 single-seed sizes with noise SE 0.03
    assert df.loc["jump n=5 se=0.03", "detection_rate"] >= 0.9
    assert df.loc["boundary <=0.5 dec n=8", "detection_rate"] >= 0.9
    # at most 2% false emergent on smooth, saturating and flat curves (30 draws: none)
    for regime in (
        "smooth n=8 se=0.03",
        "saturating n=8 se=0.03",
        "flat n=8 se=0.03",
        "boundary 1.2-2 dec n=8",
    ):
        assert df.loc[regime, "false_emergent_rate"] <= 0.02, regime
    # 1.2-2 decade sigmoids come out smooth
    assert df.loc["boundary 1.2-2 dec n=8", "correct"] >= 0.9
    # thresholds within 0.25 decades or between the bracketing sizes
    assert df.loc["jump n=5 se=0.03", "threshold_ok"] >= 0.9


def test_calibrate_main_writes_the_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal.csv"
    assert calibrate_main(["--draws", "2", "--seed", "1", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert {"regime", "n", "detection_rate", "false_emergent_rate", "threshold_ok"} <= set(table.columns)
    assert (table["n"] == 2).all()
    assert "jump n=5 se=0.03" in capsys.readouterr().out


def test_emergence_calibrate_refuses_zero_draws(capsys) -> None:
    from emergence_lab.cli import main

    assert main(["calibrate", "--draws", "0"]) == 2
    assert capsys.readouterr().err.strip() == "emergence calibrate: --draws must be >= 1, got 0"
