"""The `mirage_arithmetic` study (docs/studies/mirage_arithmetic.md): its verdict table stays true.

The sweep's final rows (tests/fixtures/studies/mirage_arithmetic.csv, the last step of every run) go through
`emergence analyze` with the study's analysis settings; the classifications and the metric check must be the
ones the write-up states. A change to the classifier that flips one shows up here, not as a stale page.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emergence_lab.analysis.cli import analyze_main
from emergence_lab.launch.plan import plan_from_cli

FIXTURE = Path(__file__).parent / "fixtures" / "studies" / "mirage_arithmetic.csv"
STUDY = ["--x", "n_params", "--by", "none", "--primary-metric", "exact_match"]

# The verdict table of docs/studies/mirage_arithmetic.md (test split, all answer positions).
CLASSIFICATION = {
    "exact_match": "emergent",
    "token_accuracy": "smooth",
    "edit_distance": "smooth",
}
METRIC_CHECK = "persists"


def test_mirage_study_plans_its_grid():
    master, runs = plan_from_cli(["-m", "experiment=mirage_arithmetic"])
    assert len(runs) == 21
    assert {r.width for r in runs} == {8, 12, 16, 24, 32, 48, 64}
    assert {r.depth for r in runs} == {2}
    assert {r.seed for r in runs} == {0, 1, 2}
    assert {r.task for r in runs} == {"addition"}
    assert {r.max_steps for r in runs} == {3000}
    assert master.trainer.pack == "auto" and master.optim.warmup_steps == 500
    assert master.task.digits == 4 and master.task.ood_digits is None
    assert master.budget.rule == "steps"
    assert master.analysis.primary_metric == "exact_match"
    assert master.analysis.x == "n_params" and master.analysis.by == "none"
    # at least a decade of non-embedding parameters
    assert max(r.n_params for r in runs) >= 10 * min(r.n_params for r in runs)


def test_mirage_verdict_table_regenerates(tmp_path: Path):
    out = tmp_path / "analysis"
    assert analyze_main([str(FIXTURE), "--out", str(out), *STUDY, "--no-figures", "--quiet"]) == 0
    th = pd.read_csv(out / "thresholds.csv")
    th = th[(th.split == "test") & (th.subtask == "all")]
    got = {m: th.loc[th.metric == m, "classification"].item() for m in CLASSIFICATION}
    assert got == CLASSIFICATION
    assert bool(th.loc[th.metric == "exact_match", "primary"].item())

    mc = pd.read_csv(out / "metric_check.csv")
    mc = mc[mc.split == "test"]
    assert len(mc) == 1
    row = mc.iloc[0]
    assert row.verdict == METRIC_CHECK
    assert row.answer_len == 5
    # exact match ~ token_accuracy^5 holds, but token accuracy does not rise where exact match sits at its
    # floor, and answer log-prob jumps with exact match: the jump persists in a continuous metric
    assert row.em_vs_ta_pow_L_mae < 0.03
    assert row.continuous_metric == "answer_logprob" and row.continuous_classification == "emergent"
    assert bool(row.continuous_jumps_with_em)

    em = th[th.metric == "exact_match"].iloc[0]  # the jump lies between widths 32 and 48
    assert (em.bracket_low, em.bracket_high) == (24736, 55536)


def test_positive_control_every_seed_of_the_largest_width_solves_the_task() -> None:
    rows = pd.read_csv(FIXTURE)
    em = rows[(rows.metric == "exact_match") & (rows.subtask == "all") & (rows.split == "test")]
    largest = em[em.width == em.width.max()].set_index("seed").value
    assert largest.round(3).to_dict() == {0: 1.0, 1: 1.0, 2: 1.0}
    # and the second-to-last width: the jump completes by width 48 in every seed
    assert (em[em.width == 48].value >= 0.999).all()
