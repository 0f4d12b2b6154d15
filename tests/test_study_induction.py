"""The `induction_text` study (docs/studies/induction_text.md): it plans its grid, its analysis block is
valid, and its verdict tables stay true.

The sweeps' evaluation rows over steps (tests/fixtures/studies/induction_text.csv for the study as committed,
induction_text_plain.csv for the kept plain-corpus run: every evaluation of every run, the metrics of the
write-up plus the `chance` and `unigram` rows, only the columns the analysis needs) go through `emergence
analyze --x step --by depth` with the study's settings; the classifications, thresholds and per-seed jumps
must be the ones the write-up states.
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


FIXTURE = Path(__file__).parent / "fixtures" / "studies" / "induction_text.csv"
STUDY = ["--x", "step", "--by", "depth", "--primary-metric", "induction_score"]  # the study's analysis block
# The write-up's verdict table for the committed study: {(metric, depth): verdict}
CLASSIFICATION = {
    **{(m, d): "smooth" for m in ("icl_score", "bits_per_byte", "loss", "token_accuracy") for d in (1, 2)},
    ("induction_score", 1): "smooth",
    ("induction_score", 2): "emergent",
}
# depth-2 seed -> (jump step, bracket low, bracket high), as the per-seed table shows
JUMPS = {0: (927, 900, 1000), 1: (2922, 2900, 3000), 2: (1082, 1000, 1100)}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("induction") / "analysis"
    assert analyze_main([str(FIXTURE), "--out", str(out), *STUDY, "--no-figures", "--quiet"]) == 0
    return out


def test_induction_fixture_is_the_written_table() -> None:
    assert FIXTURE.stat().st_size < 500_000
    rows = pd.read_csv(FIXTURE)
    assert rows.run_id.nunique() == 6 and sorted(rows.step.unique()) == list(range(0, 6001, 100))
    test = rows[(rows.split == "test") & (rows.subtask == "all")]
    at = test[test.step == 6000].pivot_table(index=["depth", "seed"], columns="metric", values="value")
    assert at.loc[2, "induction_score"].min() >= 0.969  # the positive control: every depth-2 seed copies
    assert at.loc[1, "induction_score"].max() <= 0.036  # no depth-1 seed does (chance 1/60)
    assert (
        at.loc[(2, 0), "bits_per_byte"].round(3) == 1.430 and at.loc[(2, 0), "icl_score"].round(3) == -0.160
    )
    curve = test[test.metric == "bits_per_byte"].set_index(["depth", "seed", "step"])["value"]
    assert curve[(2, 2, 1200)] - curve[(2, 2, 1000)] > 0.08  # the loss bump during seed 2's jump


def test_induction_verdict_table_regenerates(analysed: Path) -> None:
    th = pd.read_csv(analysed / "thresholds.csv")
    th = th[(th.split == "test") & (th.subtask == "all")]
    got = {(r.metric, int(r.depth)): r.classification for r in th.itertuples()}
    assert {k: got[k] for k in CLASSIFICATION} == CLASSIFICATION
    primary = th[th.primary.astype(bool)].set_index("depth")
    assert set(primary.metric) == {"induction_score"}
    assert round(primary.loc[2, "threshold"]) == 1533
    assert (round(primary.loc[2, "threshold_low"]), round(primary.loc[2, "threshold_high"])) == (1090, 1818)


def test_induction_per_seed_jumps_regenerate(analysed: Path) -> None:
    seeds = pd.read_csv(analysed / "seed_thresholds.csv")
    deep = seeds[seeds.depth == 2].set_index("seed")
    assert set(deep.classification) == {"emergent"}
    for seed, (step, low, high) in JUMPS.items():
        row = deep.loc[seed]
        got = (round(row.threshold), round(row.threshold_low), round(row.threshold_high))
        assert got == (step, low, high)
    shallow = seeds[seeds.depth == 1].set_index("seed")["classification"]
    assert shallow.to_dict() == {0: "smooth", 1: "absent", 2: "absent"}


# The plain-corpus run (copy_share 0, width 32, depths 1-3, 6000 steps; commit 4a7325e's study settings)
PLAIN = Path(__file__).parent / "fixtures" / "studies" / "induction_text_plain.csv"
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


def test_the_scale_figure_says_its_axis_is_training_steps(tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    assert analyze_main([str(FIXTURE), "--out", str(out), *STUDY, "--figures", "scale", "--quiet"]) == 0
    svg = (out / "figures" / "scale_text.svg").read_text()
    assert "text: metrics over training steps, one series per depth (test split)" in svg
    assert "against scale" not in svg
