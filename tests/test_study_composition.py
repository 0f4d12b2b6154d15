"""The `composition_steps` study (docs/studies/composition_steps.md): its verdict table and product-rule
verdict stay true.

The sweep's final rows (tests/fixtures/studies/composition_steps.csv: exact match of every split at the last
step of every run) go through `emergence analyze` with the study's analysis settings; the classifications,
the product-rule fit and the positive control must be the ones the write-up states.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from emergence_lab.analysis.cli import analyze_main
from emergence_lab.analysis.composition_rule import POINTS_CSV, RULE_CSV
from emergence_lab.analysis.study import check_block
from emergence_lab.launch.plan import plan_from_cli

FIXTURE = Path(__file__).parent / "fixtures" / "studies" / "composition_steps.csv"
STUDY = ["--x", "n_params", "--by", "none", "--primary-metric", "exact_match", "--metrics", "exact_match"]
WIDTHS = {4, 6, 8, 12, 16, 32, 48}

# The verdict table of docs/studies/composition_steps.md (exact match, all answer positions, per split).
CLASSIFICATION = {"test": "smooth", "step1": "smooth", "step2": "smooth", "train": "smooth"}
PRODUCT_RULE = {"verdict": "below", "points": 21}


def test_composition_study_plans_its_grid() -> None:
    master, runs = plan_from_cli(["-m", "experiment=composition_steps"])
    assert len(runs) == 21
    assert {r.width for r in runs} == WIDTHS
    assert {r.depth for r in runs} == {2} and {r.seed for r in runs} == {0, 1, 2}
    assert {r.task for r in runs} == {"composition"} and {r.max_steps for r in runs} == {1500}
    task = master.task
    assert (task.steps, task.n_maps, task.n_values, task.min_steps) == (2, 6, 16, 1)
    assert task.show_steps is False and task.step_splits is True and task.ood_steps is None
    assert master.budget.rule == "steps"
    block = OmegaConf.to_container(master.analysis)
    assert isinstance(block, dict)
    assert check_block(block, "composition_steps.yaml") is None
    assert (block["primary_metric"], block["x"], block["by"]) == ("exact_match", "n_params", "none")
    assert max(r.n_params for r in runs) >= 100 * min(r.n_params for r in runs)  # two decades


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("composition") / "analysis"
    assert analyze_main([str(FIXTURE), "--out", str(out), *STUDY, "--no-figures", "--quiet"]) == 0
    return out


def test_composition_verdict_table_regenerates(analysis: Path) -> None:
    th = pd.read_csv(analysis / "thresholds.csv")
    th = th[(th.metric == "exact_match") & (th.subtask == "all")]
    assert dict(zip(th.split, th.classification, strict=True)) == CLASSIFICATION


def test_composition_product_rule_regenerates(analysis: Path) -> None:
    fit = pd.read_csv(analysis / RULE_CSV).iloc[0]
    assert {"verdict": fit.verdict, "points": fit.points} == PRODUCT_RULE
    assert fit.mae == pytest.approx(0.727, abs=5e-4) and fit.r2 == pytest.approx(-239.0, abs=0.5)
    points = pd.read_csv(analysis / POINTS_CSV)
    assert len(points) == 21 and set(points.width) == WIDTHS
    by_width = points.groupby("width")[["step1_em", "step2_em", "product", "composed_em", "train_em"]].mean()
    # the steps are learnt from width 8 on (product >= 0.99), the held-out composition is not (<= 0.2)
    assert (by_width.loc[8:, "product"] >= 0.99).all() and by_width.loc[4, "product"] < 0.1
    assert (by_width["composed_em"] <= 0.2).all()
    # positive control: the training distribution is learnt by the largest widths
    assert (points.loc[points.width >= 16, "train_em"] >= 0.99).all()
