"""The pipeline's verdicts on the symptoms of issue 9, end to end through `emergence analyze` (the detector
itself is tested in test_detect.py). Each of these failed with the AICc classifier."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from emergence_lab.analysis.cli import analyze_main
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.curves import describe_row
from emergence_lab.analysis.pipeline import Options, analyse
from emergence_lab.analysis.schema import normalise

from analysis_helpers import FIXTURES, REFERENCE, write_manifest

LADDER = REFERENCE / "lm-eval-pythia-ladder"
ARGS = ["--no-figures", "--quiet", "--boot", "100"]


def analyze(inputs: list[Path], out: Path, *extra: str) -> pd.DataFrame:
    assert analyze_main([*map(str, inputs), "--out", str(out), *ARGS, *extra]) == 0
    return pd.read_csv(out / "thresholds.csv")


def exact_match_depth_2(table: pd.DataFrame) -> pd.Series:
    rows = table.query("split == 'test' and subtask == 'all' and metric == 'exact_match' and depth == 2")
    assert len(rows) == 1
    return rows.iloc[0]


def test_the_demo_grid_with_disjoint_seeds_does_not_contradict_itself(tmp_path: Path) -> None:
    """Symptom 1: seeds 0-1 gave `smooth` for depth-2 exact match, the README promised emergent. Now the two
    disjoint seed sets give verdicts that do not contradict each other (emergent against smooth or absent
    would), and an inconclusive one says what would decide it."""
    rows = [
        exact_match_depth_2(analyze([FIXTURES / "demo_seeds" / f"{s}.csv"], tmp_path / s))
        for s in ("s01", "s23")
    ]
    verdicts = {r["classification"] for r in rows}
    assert verdicts <= {"emergent", "inconclusive"}, verdicts
    assert [r["classification"] for r in rows] == ["emergent", "inconclusive"]  # as measured
    emergent, inconclusive = rows
    # seeds 0-1: seed 0 jumps between 14k and 25k, seed 1 between 25k and 56k
    assert 14e3 < emergent["threshold"] < 56e3
    assert emergent["seed_threshold_low"] == pytest.approx(13944) and emergent["seed_threshold_high"] == 55536
    assert emergent["seed_thresholds"] == "0: 13944-24736; 1: 24736-55536"
    statement = inconclusive["power_statement"]
    assert isinstance(statement, str) and "is found with probability" in statement
    assert "more sizes" in statement or "more seed" in statement
    # one sentence per curve for the report, from the thresholds.csv row alone
    assert describe_row(emergent, "exact match, depth 2") == (
        "exact match, depth 2: emergent at 26.4k parameters (95% CI 14.6k-55.5k; per-seed 13.9k-55.5k)"
    )
    sentence = describe_row(inconclusive, "exact match, depth 2")
    assert sentence == f"exact match, depth 2: inconclusive ({statement})"
    # the two thresholds' intervals overlap: the same place
    assert inconclusive["threshold_low"] < emergent["threshold_high"]
    assert emergent["threshold_low"] < inconclusive["threshold_high"]


def ladder_table(scores: list[float], sizes: np.ndarray) -> pd.DataFrame:
    rows = [
        {"schema_version": 1, "run_id": f"m{i}", "task": "ladder", "subtask": "all", "split": "test",
         "metric": "exact_match", "value": v, "step": 1, "seed": 0, "n_params": int(n)}
        for i, (v, n) in enumerate(zip(scores, sizes, strict=True))
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_a_published_ladder_of_five_single_scores_can_be_emergent(tmp_path: Path) -> None:
    """Symptom 2: one score per size, 5 sizes, a textbook jump: AICc could not even compare at n = 5."""
    path = tmp_path / "ladder.csv"
    ladder_table([0.00, 0.01, 0.03, 0.71, 0.95], 10 ** (8 + 0.5 * np.arange(5))).to_csv(path, index=False)
    row = analyze([path], tmp_path / "out").iloc[0]
    assert row["classification"] == "emergent", row["reason"]
    assert row["n_points"] == 5 and row["n_seeds"] == 1
    assert row["bracket_low"] == pytest.approx(10**9) and row["bracket_high"] == pytest.approx(10**9.5)
    assert row["threshold_low"] <= 10**9 * 1.001 and row["threshold_high"] >= 10**9.5 / 1.001
    assert row["noise_source"] == "curve"
    assert row["p_value"] < 0.05 and row["q_value"] == pytest.approx(row["p_value"])  # the only curve
    assert "AICc" not in row["reason"]


def _sig(u: np.ndarray, mid: float, width: float) -> np.ndarray:
    return expit(2 * math.log(9) / width * (u - mid))


def test_a_joint_jump_persists(tmp_path: Path) -> None:
    """Symptom 3: exact match and token accuracy jump at the same place (token accuracy lifting one size
    earlier) was called `metric_induced`; the continuous metric is itself emergent there: `persists`."""
    u = 6 + 0.5 * np.arange(8)
    em = 0.9 * _sig(u, 8.25, 0.3) + 0.002 * np.cos(np.arange(8))
    ta = 0.05 + 0.9 * _sig(u, 8.25, 0.9) + 0.002 * np.sin(np.arange(8))
    assert ta[4] - ta[3] > 0.05 and em[4] < 0.05
    frames = []
    for name, values in (("exact_match", em), ("token_accuracy", ta)):
        df = ladder_table(list(values), 10**u).assign(metric=name, task="joint")
        frames.append(df)
    table = normalise(pd.concat(frames, ignore_index=True).assign(answer_len=np.nan))
    analysis = analyse(table, Options(n_boot_fit=100, n_boot_points=50), Console(quiet=True))
    row = analysis.metric_check.set_index("task").loc["joint"]
    assert row["em_classification"] == "emergent"
    assert row["verdict"] == "persists", row["reason"]
    assert row["continuous_metric"] == "token_accuracy" and bool(row["continuous_jumps_with_em"])
    assert not bool(row["steady_at_floor"])


PYTHIA = {  # non-embedding parameters ~ 12 x layers x width^2
    "EleutherAI/pythia-v1.1-70m": (6, 512),
    "EleutherAI/pythia-v1.1-160m": (12, 768),
    "EleutherAI/pythia-v1.1-410m": (24, 1024),
    "EleutherAI/pythia-v1.1-1.4b": (24, 2048),
    "EleutherAI/pythia-v1.1-2.8b": (32, 2560),
    "EleutherAI/pythia-v1.1-6.9b": (32, 4096),
    "EleutherAI/pythia-v1.1-12b": (36, 5120),
}


@pytest.mark.skipif(not LADDER.is_dir(), reason="../shared/reference is not checked out")
def test_the_pythia_ladder_has_no_emergent_calls(tmp_path: Path) -> None:
    """Real data: 7 Pythia sizes on 87 lm-eval tasks, one score each. Smooth scaling (or none) throughout;
    with the false-discovery rate held over the curves, no jump is called emergent (measured: 0)."""
    params = tmp_path / "params.csv"
    pd.DataFrame(
        {"model": list(PYTHIA), "n_params": [12 * layers * width**2 for layers, width in PYTHIA.values()]}
    ).to_csv(params, index=False)
    table = analyze([LADDER], tmp_path / "out", "--params-map", str(params))
    assert len(table) > 150 and table["n_points"].max() == 7
    assert int(table["emergent"].sum()) == 0, table.loc[table["emergent"], ["task", "metric", "reason"]]
    counts = table["classification"].value_counts().to_dict()
    assert set(counts) <= {"smooth", "absent", "inconclusive"}
    # every inconclusive curve says what would decide it
    inconclusive = table.loc[table["classification"] == "inconclusive"]
    assert inconclusive["power_statement"].notna().all()
    assert (table["expected_false_emergent"] == table["expected_false_emergent"].iloc[0]).all()


def test_false_discovery_rate_over_all_curves_with_the_primary_metric_tested_alone() -> None:
    """Many curves, one report: Benjamini-Hochberg over every curve's jump test but the study's primary
    metric (subtask `all`), which is tested on its own at alpha."""
    table = normalise(pd.read_csv(FIXTURES / "verdicts" / "results.csv"))
    options = Options(n_boot_fit=50, n_boot_points=50, primary_metric="token_accuracy")
    th = analyse(table, options, Console(quiet=True)).thresholds
    primary = (th["metric"] == "token_accuracy") & (th["subtask"] == "all")
    assert th["primary"].tolist() == primary.tolist() and primary.sum() == 2
    assert np.allclose(th.loc[primary, "q_value"], th.loc[primary, "p_value"])
    p = th.loc[~primary, "p_value"].to_numpy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    q = np.empty_like(p)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    assert np.allclose(th.loc[~primary, "q_value"], q)
    assert (th.loc[th["emergent"] & ~primary, "q_value"] <= 0.05).all()
    n_sig = int((q <= 0.05).sum())
    assert th["expected_false_emergent"].iloc[0] == pytest.approx(0.05 * n_sig + 0.05 * 2)
    # a jump significant alone (p = 0.02) but not over the 18 other curves: inconclusive, with its power
    pos1 = th.query("subtask == 'pos1' and depth == 2").iloc[0]
    assert pos1["p_value"] < 0.05 < pos1["q_value"]
    assert pos1["classification"] == "inconclusive" and "false-discovery rate" in pos1["reason"]
    assert "is found with probability" in pos1["power_statement"]


def test_a_study_declares_its_primary_metric(tmp_path: Path) -> None:
    from emergence_lab.analysis.study import OPTION_OF, check_block, read_study

    write_manifest(tmp_path / "sweep", {"primary_metric": "exact_match", "by": "depth"})
    console = Console(quiet=True)
    block, source = read_study([str(tmp_path / "sweep")], console)
    assert block == {"primary_metric": "exact_match", "by": "depth"} and console.warnings == []
    assert check_block(block, source) is None and OPTION_OF["primary_metric"] == "--primary-metric"
    assert "must be a name" in str(check_block({"primary_metric": ["a", "b"]}, source))
