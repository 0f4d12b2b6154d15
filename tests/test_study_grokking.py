"""The `grokking_modular` study (docs/studies/grokking_modular.md): its verdict table and per-seed step
thresholds stay true.

The sweep's evaluation rows over steps (tests/fixtures/studies/grokking_modular.csv: every evaluation of
every run, subtask `all`, the metrics of the write-up's table, only the columns the analysis needs) go through
`emergence analyze --x step` with the study's settings; the classifications, each seed's threshold and CI,
the train saturation steps and the delays must be the ones the write-up states.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from emergence_lab.analysis.cli import analyze_main
from emergence_lab.analysis.study import check_block
from emergence_lab.launch.plan import plan_from_cli

FIXTURE = Path(__file__).parent / "fixtures" / "studies" / "grokking_modular.csv"
STUDY = ["--x", "step", "--by", "none", "--primary-metric", "exact_match"]

# The verdict table of docs/studies/grokking_modular.md: (split, metric) -> classification, subtask `all`.
# Over log-steps every curve is a jump, the train split's too: grokking is the delay, not the verdict.
CLASSIFICATION = {
    (split, metric): "emergent"
    for split in ("test", "train")
    for metric in ("exact_match", "loss", "answer_logprob", "brier")
}
# seed -> (threshold, CI low, CI high, train saturation step, delay), as the write-up's per-seed table shows
PER_SEED = {
    0: (815, 800, 850, 700, 1.16),
    1: (1307, 1300, 1350, 900, 1.45),
    2: (1359, 1350, 1400, 900, 1.51),
    3: (1161, 1150, 1200, 850, 1.37),
    4: (1333, 1300, 1350, 900, 1.48),
    5: (815, 800, 850, 800, 1.02),
}


def test_grokking_study_plans_its_grid() -> None:
    master, runs = plan_from_cli(["-m", "experiment=grokking_modular"])
    assert len(runs) == 6
    assert {r.seed for r in runs} == set(range(6))
    assert {(r.task, r.width, r.depth, r.max_steps) for r in runs} == {("modular", 64, 1, 2500)}
    assert (master.task.p, master.task.op, master.task.train_fraction) == (97, "add", 0.3)
    assert master.budget.rule == "steps"
    o = master.optim
    assert (o.lr, o.lr_rule, o.weight_decay, o.batch_size) == (1e-3, "constant", 1.0, 256)
    assert o.min_lr_ratio == 1.0  # no decay
    assert master.trainer.eval_every == 50
    block = OmegaConf.to_container(master.analysis)
    assert isinstance(block, dict)
    assert block["primary_metric"] == "exact_match" and block["x"] == "step" and block["by"] == "none"
    assert check_block(block, "experiments/grokking_modular.yaml") is None


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grokking") / "analysis"
    assert analyze_main([str(FIXTURE), "--out", str(out), *STUDY, "--no-figures", "--quiet"]) == 0
    return out


def test_fixture_is_small_and_complete() -> None:
    assert FIXTURE.stat().st_size < 500_000
    rows = pd.read_csv(FIXTURE)
    assert rows["run_id"].nunique() == 6 and set(rows["split"]) == {"test", "train"}
    assert sorted(rows["step"].unique()) == list(range(0, 2501, 50))  # every evaluation, none subsampled


def test_grokking_verdict_table_regenerates(analysed: Path) -> None:
    th = pd.read_csv(analysed / "thresholds.csv")
    th = th[th.subtask == "all"]
    got = {(s, m): c for s, m, c in th[["split", "metric", "classification"]].itertuples(index=False)}
    assert {k: got[k] for k in CLASSIFICATION} == CLASSIFICATION
    primary = th[th.primary.astype(bool)].set_index("split")
    assert set(primary.index) == {"test", "train"} and set(primary.metric) == {"exact_match"}
    # pooled over seeds: held-out exact match jumps at ~1.1k steps, train exact match at ~350
    assert round(primary.loc["test", "threshold"]) == 1107
    assert (primary.loc["test", "bracket_low"], primary.loc["test", "bracket_high"]) == (1100, 1150)
    assert round(primary.loc["train", "threshold"]) == 354


def test_grokking_metric_check_compares_with_log_prob_not_token_accuracy(analysed: Path) -> None:
    """A one-token answer's token accuracy is exact match itself; the write-up's check uses log-prob."""
    mc = pd.read_csv(analysed / "metric_check.csv").set_index("split")
    assert mc.loc["test", "continuous_metric"] == "answer_logprob"
    assert mc.loc["test", "verdict"] == "persists"


def test_grokking_per_seed_thresholds_regenerate(analysed: Path) -> None:
    seeds = pd.read_csv(analysed / "seed_thresholds.csv").set_index("seed")
    delays = pd.read_csv(analysed / "delays.csv").set_index("seed")
    assert sorted(seeds.index) == sorted(PER_SEED) == sorted(delays.index)
    for seed, (threshold, low, high, saturation, delay) in PER_SEED.items():
        row, d = seeds.loc[seed], delays.loc[seed]
        assert row.split == "test" and row.metric == "exact_match"
        got = (round(row.threshold), round(row.threshold_low), round(row.threshold_high))
        assert got == (threshold, low, high)
        assert d.train_saturation_step == saturation
        assert round(d.delay, 2) == delay
