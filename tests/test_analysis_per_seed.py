"""The per-seed extra on the step axis (analysis/per_seed.py): each seed's step threshold with its CI, the
step its train curve saturated, and the delay between them, on a synthetic grokking sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from emergence_lab.analysis.cli import analyze_main
from emergence_lab.analysis.extras import EXTRAS
from emergence_lab.analysis.per_seed import SATURATION_FRAC, per_seed, saturation_step

STEPS = np.arange(0, 3001, 50)
# seed -> (step of the held-out jump, step at which the train curve is half-way up)
SEEDS = {0: (1020.0, 200.0), 1: (730.0, 150.0), 2: (1380.0, 300.0)}  # jumps between two evaluations
STUDY = ["--x", "step", "--by", "none", "--primary-metric", "exact_match", "--no-figures", "--quiet"]


def _table() -> pd.DataFrame:
    """Modular-like runs: train exact match rises early (a logistic in log-step), held-out exact match
    jumps later and sharply, evaluation noise of 4000 examples."""
    rng = np.random.default_rng(0)
    rows = []
    u = np.log10(np.maximum(STEPS, 1))
    for seed, (jump, half) in SEEDS.items():
        test = 0.01 + 0.98 * expit(25.0 * (u - np.log10(jump)))
        train = 0.01 + 0.99 * expit(12.0 * (u - np.log10(half)))
        for split, values in (("test", test), ("train", np.minimum(train, 1.0))):
            values = np.clip(values + rng.normal(0, 0.004, len(STEPS)), 0.0, 1.0)
            values[STEPS == 0] = 0.01
            for step, value in zip(STEPS, values, strict=True):
                rows.append(
                    {"run_id": f"modular-w64-d1-s{seed}", "task": "modular", "subtask": "all", "split": split,
                     "metric": "exact_match", "value": value, "step": step, "seed": seed, "width": 64,
                     "depth": 1, "n_params": 49152, "answer_len": 1, "n_examples": 4000}
                )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("per_seed")
    csv = root / "results.csv"
    _table().to_csv(csv, index=False)
    out = root / "analysis"
    assert analyze_main([str(csv), "--out", str(out), *STUDY]) == 0
    return out


def test_registered() -> None:
    assert per_seed in EXTRAS


def test_saturation_step() -> None:
    steps = np.array([300, 100, 200, 400, 500])
    values = np.array([0.95, 0.2, 0.6, 0.995, 1.0])
    assert SATURATION_FRAC == 0.99
    assert saturation_step(steps, values) == 400  # 0.995 >= 0.99 * 1.0; 0.95 is not
    assert saturation_step(steps, values, frac=0.9) == 300
    assert saturation_step(steps, np.array([0.2, 0.1, 0.2, 0.5, 0.5])) == 400  # of its own final value
    assert np.isnan(saturation_step(steps, np.zeros(5)))
    assert np.isnan(saturation_step(np.array([]), np.array([])))


def test_each_seed_gets_its_threshold_with_a_ci(analysed: Path) -> None:
    seeds = pd.read_csv(analysed / "seed_thresholds.csv")
    assert len(seeds) == 3
    assert set(seeds["split"]) == {"test"} and set(seeds["metric"]) == {"exact_match"}
    for _, row in seeds.iterrows():
        jump = SEEDS[int(row.seed)][0]
        assert row.classification == "emergent"
        assert row.threshold_low <= jump <= row.threshold_high  # the CI covers the true jump
        assert abs(np.log10(row.threshold / jump)) < 0.01  # and the threshold is within 2.3% of it
        assert row.threshold_high / row.threshold_low < 1.6  # a sharp jump: a tight CI


def test_saturation_and_delay(analysed: Path) -> None:
    delays = pd.read_csv(analysed / "delays.csv").set_index("seed")
    assert sorted(delays.index) == [0, 1, 2]
    table = _table()
    for seed, (jump, half) in SEEDS.items():
        row = delays.loc[seed]
        train = table[(table.seed == seed) & (table.split == "train") & (table.step > 0)]
        final = train.sort_values("step")["value"].iloc[-1]
        first = train[train.value >= SATURATION_FRAC * final]["step"].min()
        assert row.train_final == pytest.approx(final)
        assert row.train_saturation_step == first
        # 0.99 of the way up a logistic of slope 12 per decade: about 0.4 decades after its midpoint
        assert 2.0 * half <= row.train_saturation_step <= 3.6 * half
        assert row.delay == pytest.approx(row.threshold / row.train_saturation_step)
        assert row.delay_low <= jump / first <= row.delay_high
        assert row.delay == pytest.approx(jump / first, rel=0.15)


def test_report_section(analysed: Path) -> None:
    report = (analysed / "report.md").read_text()
    assert report.count("## Per seed (step axis)") == 1
    assert report.index("## Per seed (step axis)") < report.index("## Figures")


def test_other_axes_get_nothing(tmp_path: Path) -> None:
    csv = tmp_path / "results.csv"
    _table().to_csv(csv, index=False)
    out = tmp_path / "analysis"
    args = ["--x", "n_params", "--by", "none", "--primary-metric", "exact_match", "--no-figures", "--quiet"]
    assert analyze_main([str(csv), "--out", str(out), *args]) == 0
    assert not (out / "seed_thresholds.csv").exists() and not (out / "delays.csv").exists()
    assert "Per seed (step axis)" not in (out / "report.md").read_text()
