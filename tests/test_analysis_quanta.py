"""The quanta extra: per-subtask thresholds against subtask frequency, Spearman's rho with a permutation
p-value, on synthetic sweeps whose answer is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emergence_lab.analysis import extras
from emergence_lab.analysis.cli import analyze_main
from emergence_lab.analysis.quanta import permutation_p, quanta, quanta_tables, seed_jumps, subtask_weights

from analysis_helpers import sigmoid

N_TASKS = 6
ZIPF = np.arange(1, N_TASKS + 1, dtype=float) ** -1.4
WEIGHTS = ZIPF / ZIPF.sum()
U = np.linspace(3.0, 5.5, 11)  # log10 n_params


def _thresholds(values: list[float | None], metric: str = "loss") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": "parity",
            "split": "test",
            "subtask": [f"task{i}" for i in range(len(values))],
            "metric": metric,
            "classification": ["emergent" if v is not None else "absent" for v in values],
            "threshold": [np.nan if v is None else v for v in values],
        }
    )


def _weights(n: int = N_TASKS) -> pd.DataFrame:
    return pd.DataFrame(
        {"task": "parity", "subtask": [f"task{i}" for i in range(n)], "subtask_weight": WEIGHTS}
    )


def test_thresholds_ordered_by_frequency_give_rho_minus_one_and_the_exact_p() -> None:
    summary, subtasks = quanta_tables(_thresholds([1e3, 2e3, 4e3, 8e3, 16e3, 32e3]), _weights())
    row = summary.iloc[0]
    assert row["rho"] == pytest.approx(-1.0) and row["n"] == 6 and row["n_subtasks"] == 6
    # exact two-sided permutation p: the identity and its reverse are the only |rho| = 1 orders of 6! = 720
    assert row["p_value"] == pytest.approx(2 / 720)
    assert subtasks["frequency_rank"].tolist() == [1, 2, 3, 4, 5, 6]


def test_shuffled_thresholds_give_a_small_rho_and_a_large_p() -> None:
    # ranks 3, 6, 1, 5, 2, 4 against frequency ranks 1..6: sum d^2 = 4+16+4+1+9+4 = 38; rho against the
    # weight (frequency rank 1 is the largest weight) is minus rho against the rank
    summary, _ = quanta_tables(_thresholds([3e3, 6e3, 1e3, 5e3, 2e3, 4e3]), _weights())
    row = summary.iloc[0]
    assert row["rho"] == pytest.approx(-(1 - 6 * 38 / 210)) and abs(row["rho"]) < 0.1
    assert row["p_value"] > 0.5


def test_subtasks_without_threshold_are_listed_but_not_in_rho() -> None:
    summary, subtasks = quanta_tables(_thresholds([1e3, 2e3, None, 8e3, None, 32e3]), _weights())
    row = summary.iloc[0]
    assert (
        row["n"] == 4 and row["n_subtasks"] == 6 and row["emergent"] == 4 and row["rho"] == pytest.approx(-1)
    )
    assert row["p_value"] == pytest.approx(2 / 24)
    assert subtasks["classification"].tolist().count("absent") == 2
    few, _ = quanta_tables(_thresholds([1e3, None, None, 8e3, None, None]), _weights())
    assert few.iloc[0]["n"] == 2 and math.isnan(few.iloc[0]["rho"]) and math.isnan(few.iloc[0]["p_value"])


def test_random_permutations_beyond_the_exact_limit() -> None:
    x = np.arange(12, dtype=float)
    rho, p = permutation_p(x, -x, seed=1)
    assert rho == pytest.approx(-1.0) and p == pytest.approx(1 / 20_001)
    rng = np.random.default_rng(3)
    rho, p = permutation_p(rng.random(12), rng.random(12), seed=1)
    assert p > 0.05 or abs(rho) > 0.5  # a null draw: significant only with a large |rho|


def test_no_weights_no_tables() -> None:
    assert subtask_weights(pd.DataFrame({"task": ["a"], "subtask": ["all"]})).empty
    summary, subtasks = quanta_tables(_thresholds([1e3, 2e3, 3e3]), subtask_weights(pd.DataFrame()))
    assert summary.empty and subtasks.empty


def _sweep(order: list[int], seeds: int = 3) -> pd.DataFrame:
    """A synthetic parity sweep: subtask i's loss falls from ln 2 to 0 at log10 size 3.6 + 0.3 * order[i];
    the mean over subtasks is the `all` row."""
    rng = np.random.default_rng(0)
    rows = []
    for u in U:
        for s in range(seeds):
            losses = []
            for i in range(N_TASKS):
                drop = sigmoid(math.log(2), 0.0, 3.6 + 0.3 * order[i], 12.0)(np.array([u]))[0]
                losses.append(max(0.0, float(drop + rng.normal(0, 0.01))))
            for sub, value, weight in [
                *zip([f"task{i}" for i in range(N_TASKS)], losses, WEIGHTS, strict=True),
                ("all", np.mean(losses), np.nan),
            ]:
                rows.append(
                    {
                        "task": "parity", "subtask": sub, "split": "test", "metric": "loss", "value": value,
                        "n_params": round(10**u), "seed": s, "run_id": f"parity-{round(10**u)}-s{s}",
                        "step": 1000, "subtask_weight": weight,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("order", "negative"), [([0, 1, 2, 3, 4, 5], True), ([3, 0, 5, 2, 4, 1], False)])
def test_analyze_reports_the_correlation_for_a_task_with_subtask_weights(
    tmp_path: Path, order: list[int], negative: bool
) -> None:
    assert quanta in extras.EXTRAS
    csv = tmp_path / "sweep.csv"
    _sweep(order).to_csv(csv, index=False)
    out = tmp_path / "a"
    assert analyze_main([str(csv), "--out", str(out), "--by", "none", "--no-figures", "--quiet"]) == 0
    summary = pd.read_csv(out / "quanta.csv")
    row = summary[(summary["metric"] == "loss") & (summary["split"] == "test")].iloc[0]
    subtasks = pd.read_csv(out / "quanta_subtasks.csv")
    loss = subtasks[subtasks["metric"] == "loss"].set_index("subtask")
    assert (loss["classification"] == "emergent").all() and row["n"] == N_TASKS
    # each threshold near its planted 10^(3.6 + 0.3 * order)
    planted = {f"task{i}": 10 ** (3.6 + 0.3 * o) for i, o in enumerate(order)}
    for sub, where in planted.items():
        assert abs(math.log10(loss.loc[sub, "threshold"] / where)) < 0.15
    if negative:
        assert row["rho"] == pytest.approx(-1.0) and row["p_value"] < 0.01
    else:  # threshold ranks 4,1,6,3,5,2 against frequency ranks 1..6: sum d^2 = 9+1+9+1+0+16 = 36
        assert row["rho"] == pytest.approx(-(1 - 6 * 36 / 210)) and row["p_value"] > 0.3
    report = (out / "report.md").read_text()
    assert "## Subtask thresholds against frequency" in report and "Spearman rho" in report


def test_a_task_without_subtask_weights_adds_no_section(tmp_path: Path) -> None:
    csv = tmp_path / "sweep.csv"
    _sweep(list(range(N_TASKS))).drop(columns="subtask_weight").to_csv(csv, index=False)
    out = tmp_path / "a"
    assert analyze_main([str(csv), "--out", str(out), "--by", "none", "--no-figures", "--quiet"]) == 0
    assert not (out / "quanta.csv").exists()
    assert "Subtask thresholds against frequency" not in (out / "report.md").read_text()


def test_rho_seed_by_seed_from_each_seeds_own_jumps() -> None:
    assert seed_jumps("0: 100-400; 2: 400-900") == {0: 200.0, 2: 600.0}
    assert seed_jumps(None) == {} and seed_jumps("") == {}
    rho, p = permutation_p(np.array([5.0, 5.0, 5.0]), np.array([1.0, 2.0, 3.0]))  # all at one size
    assert math.isnan(rho) and math.isnan(p)
    thresholds = _thresholds([1e3, 2e3, 4e3, 8e3, None, None])
    # seed 0 jumps in frequency order, seed 1 in the reverse order, seed 2 on two subtasks only
    brackets = [(100, 200), (200, 400), (400, 800), (800, 1600)]
    thresholds["seed_thresholds"] = [
        f"0: {lo}-{hi}; 1: {brackets[3 - i][0]}-{brackets[3 - i][1]}" + ("; 2: 100-200" if i < 2 else "")
        for i, (lo, hi) in enumerate(brackets)
    ] + [None, None]
    summary, _ = quanta_tables(thresholds, _weights())
    row = summary.iloc[0]
    assert row["seed_rhos"] == "0: -1.00 (n=4); 1: 1.00 (n=4); 2: (n=2)"
    assert row["seed_rho_median"] == pytest.approx(0.0)
