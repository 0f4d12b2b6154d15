"""The `induction_text` study (docs/studies/induction_text.md): it plans its grid, its analysis block is
valid, and its verdict table stays true.

The sweep's evaluation rows over steps (tests/fixtures/studies/induction_text.csv: every evaluation of every
run, the metrics of the write-up, only the columns the analysis needs) go through `emergence analyze --x step
--by depth` with the study's settings; the classifications must be the ones the write-up states.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from emergence_lab.analysis.cli import analyze_main
from emergence_lab.analysis.study import check_block
from emergence_lab.launch.plan import plan_from_cli


def test_induction_study_plans_its_grid() -> None:
    master, runs = plan_from_cli(["-m", "experiment=induction_text"])
    assert len(runs) == 6
    assert {(r.width, r.depth, r.seed) for r in runs} == {(64, d, s) for d in (1, 2) for s in (0, 1, 2)}
    assert {(r.task, r.max_steps) for r in runs} == {("text", 6000)}
    assert (master.task.seq_len, master.task.copy_share, master.task.corpus_bytes) == (64, 1.0, 12_000_000)
    assert master.optim.batch_size == 32 and master.budget.rule == "steps"
    assert master.trainer.eval_every == 100
    block = OmegaConf.to_container(master.analysis)
    assert isinstance(block, dict)
    assert (block["primary_metric"], block["x"], block["by"]) == ("induction_score", "step", "depth")
    assert check_block(block, "experiments/induction_text.yaml") is None


# The plain-corpus run (copy_share 0, width 32, depths 1-3, 6000 steps; commit 4a7325e's study settings)
PLAIN = Path(__file__).parent / "fixtures" / "studies" / "induction_text_plain.csv"
STUDY = ["--x", "step", "--by", "depth", "--primary-metric", "induction_score"]
# Its verdict table in docs/studies/induction_text.md: {metric: verdict} at every depth (1, 2, 3).
PLAIN_CLASSIFICATION = {
    "induction_score": "absent",
    "icl_score": "smooth",
    "bits_per_byte": "smooth",
    "loss": "smooth",
    "token_accuracy": "smooth",
}


def test_plain_corpus_fixture_is_the_written_table() -> None:
    assert PLAIN.stat().st_size < 500_000
    rows = pd.read_csv(PLAIN)
    assert rows.run_id.nunique() == 9 and sorted(rows.step.unique()) == list(range(0, 6001, 200))
    last = rows[(rows.step == 6000) & (rows.subtask == "all")]
    at = last.pivot_table(index=["depth", "seed"], columns="metric", values="value")
    bpb = at["bits_per_byte"].groupby("depth").mean().round(3)
    assert (bpb[1], bpb[2], bpb[3]) == (1.435, 1.378, 1.367)
    assert at.loc[(1, 2), "icl_score"].round(3) == -0.084 and at.loc[(3, 0), "icl_score"].round(3) == -0.056
    chance = rows.loc[rows.subtask == "chance", "value"].unique()
    assert len(chance) == 1 and chance[0] == pytest.approx(1 / 60, abs=1e-6)
    induction = rows[(rows.subtask == "all") & (rows.metric == "induction_score") & (rows.step >= 200)]
    assert induction.value.max() <= 0.0205 and induction.value.min() >= 0.013  # chance throughout
    # the positive control is not met: next-byte accuracy of the largest model, far below 0.9
    assert at["token_accuracy"].max() < 0.7


def test_plain_corpus_verdict_table_regenerates(tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    assert analyze_main([str(PLAIN), "--out", str(out), *STUDY, "--no-figures", "--quiet"]) == 0
    th = pd.read_csv(out / "thresholds.csv")
    th = th[(th.split == "test") & (th.subtask == "all")]
    got = {(r.metric, int(r.depth)): r.classification for r in th.itertuples()}
    assert {(m, d): got[m, d] for m in PLAIN_CLASSIFICATION for d in (1, 2, 3)} == {
        (m, d): v for m, v in PLAIN_CLASSIFICATION.items() for d in (1, 2, 3)
    }
    primary = th[th.primary.astype(bool)]
    assert set(primary.metric) == {"induction_score"} and sorted(primary.depth) == [1, 2, 3]
    assert th.threshold.isna().all()  # nothing jumps, so no step threshold to report
