"""The `recall_grid` study (docs/studies/recall_grid.md): its verdict table stays true.

The sweep's final rows (tests/fixtures/studies/recall_grid.csv) go through `emergence analyze` with the
study's analysis settings; the per-depth classifications must be the ones the write-up states.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emergence_lab.analysis.cli import analyze_main
from emergence_lab.launch.plan import plan_from_cli

FIXTURE = Path(__file__).parent / "fixtures" / "studies" / "recall_grid.csv"
STUDY = ["--x", "n_params", "--by", "depth", "--primary-metric", "exact_match"]

# The verdict table of docs/studies/recall_grid.md (test split, subtask all): {metric: {depth: verdict}}.
CLASSIFICATION = {
    "exact_match": {1: "smooth", 2: "inconclusive", 3: "inconclusive"},
    "token_accuracy": {1: "absent", 2: "inconclusive", 3: "inconclusive"},
    "answer_logprob": {1: "smooth", 2: "inconclusive", 3: "inconclusive"},
}


def test_recall_study_plans_its_grid():
    master, runs = plan_from_cli(["-m", "experiment=recall_grid"])
    assert len(runs) == 54
    assert {r.width for r in runs} == {8, 12, 16, 24, 32, 48}
    assert {r.depth for r in runs} == {1, 2, 3}
    assert {r.seed for r in runs} == {0, 1, 2}
    assert {r.task for r in runs} == {"recall"}
    assert {r.max_steps for r in runs} == {1492}  # 2.1e6 tokens / (128 x 11)
    assert master.budget.rule == "tokens"
    assert master.analysis.primary_metric == "exact_match"
    assert master.analysis.x == "n_params" and master.analysis.by == "depth"


def test_recall_fixture_is_the_written_table():
    rows = pd.read_csv(FIXTURE)
    em = rows[(rows.split == "test") & (rows.metric == "exact_match")]
    assert em.run_id.nunique() == 54 and set(em.step) == {1492}
    means = em.groupby(["depth", "width"])["value"].mean().round(3)
    assert means[(1, 48)] == 0.094 and means[(2, 8)] == 0.550 and means[(3, 8)] == 0.812
    assert (em.loc[em.depth == 1, "value"] < 0.1).all()  # depth 1 never recalls
    assert (em.loc[(em.depth >= 2) & (em.width >= 24), "value"] == 1.0).all()
    largest = em[em.n_params == em.n_params.max()]  # the positive control
    assert len(largest) == 3 and (largest.value >= 0.9).all()


def test_recall_verdict_table_regenerates(tmp_path: Path):
    out = tmp_path / "analysis"
    assert analyze_main([str(FIXTURE), "--out", str(out), *STUDY, "--no-figures", "--quiet"]) == 0
    th = pd.read_csv(out / "thresholds.csv")
    th = th[(th.split == "test") & (th.subtask == "all")]
    got = {
        m: {int(r.depth): r.classification for r in th[th.metric == m].itertuples()} for m in CLASSIFICATION
    }
    assert got == CLASSIFICATION
    assert th.loc[th.metric == "exact_match", "primary"].astype(bool).all()
