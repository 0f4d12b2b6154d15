"""The product-rule extra (analysis/composition_rule.py) on synthetic sweeps with a known answer: composed
exact match equal to the product of the per-step ones follows the rule, one far below it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from emergence_lab.analysis import composition_rule as rule
from emergence_lab.analysis.cli import analyze_main

WIDTHS = (4, 6, 8, 12, 16, 32, 48)
SEEDS = 3


def _table(composed_of_product, steps: int = 2, step_splits: bool = True) -> pd.DataFrame:
    """Final and earlier rows of a 2-step composition sweep: step i's exact match rises with width, the
    composed split's is `composed_of_product(product)`; an earlier step's rows are there to be ignored."""
    rng = np.random.default_rng(0)
    rows = []
    for width in WIDTHS:
        n_params = 12 * 2 * width**2
        for seed in range(SEEDS):
            run = f"composition-w{width}-d2-s{seed}"
            per_step = [
                float(np.clip(expit(3.0 * (np.log2(width) - 2.5 - 0.3 * i)) + rng.normal(0, 0.01), 0, 1))
                for i in range(steps)
            ]
            values = {"test": composed_of_product(float(np.prod(per_step))), "train": 1.0}
            if step_splits:
                values |= {f"step{i + 1}": p for i, p in enumerate(per_step)}
            for step, scale in ((500, 0.5), (1500, 1.0)):
                for split, value in values.items():
                    for metric in ("exact_match", "token_accuracy"):
                        rows.append(
                            {
                                "run_id": run,
                                "task": "composition",
                                "subtask": "all",
                                "split": split,
                                "metric": metric,
                                "value": value * scale,
                                "step": step,
                                "n_params": n_params,
                                "width": width,
                                "depth": 2,
                                "seed": seed,
                            }
                        )
    return pd.DataFrame(rows)


def _analyze(table: pd.DataFrame, tmp_path: Path) -> Path:
    csv, out = tmp_path / "results.csv", tmp_path / "analysis"
    table.to_csv(csv, index=False)
    args = [str(csv), "--out", str(out), "--x", "n_params", "--by", "none", "--no-figures", "--quiet"]
    assert analyze_main(args) == 0
    return out


def test_composed_equal_to_product_follows_the_rule(tmp_path: Path) -> None:
    out = _analyze(_table(lambda p: p), tmp_path)
    points = pd.read_csv(out / rule.POINTS_CSV)
    assert len(points) == len(WIDTHS) * SEEDS
    assert {"step1_em", "step2_em", "product", "composed_em", "train_em"} <= set(points.columns)
    # final-step values, not the earlier evaluation's halves
    assert np.allclose(points["product"], points["step1_em"] * points["step2_em"])
    assert np.allclose(points["composed_em"], points["product"])
    assert (points["train_em"] == 1.0).all()
    fit = pd.read_csv(out / rule.RULE_CSV).iloc[0]
    assert fit.verdict == "follows" and fit.points == 21
    assert fit.mae == pytest.approx(0.0, abs=1e-9) and fit.r2 == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert report.count("## Composition: the product rule") == 1
    assert "composition: follows" in report


def test_composed_far_below_product_is_below(tmp_path: Path) -> None:
    out = _analyze(_table(lambda p: 0.1 * p), tmp_path)
    points = pd.read_csv(out / rule.POINTS_CSV)
    fit = pd.read_csv(out / rule.RULE_CSV).iloc[0]
    expected_mae = float((0.9 * points["product"]).mean())
    assert expected_mae > rule.FOLLOWS_MAX_MAE
    assert fit.verdict == "below"
    assert fit.mae == pytest.approx(expected_mae) and fit.mean_residual == pytest.approx(-expected_mae)
    assert fit.r2 < 0  # the product predicts worse than the composed mean


def test_composed_above_product_is_above() -> None:
    points = rule.composition_points(_table(lambda p: min(1.0, p + 0.3)), "n_params")
    assert rule.product_rule_fit(points)["verdict"] == "above"


def test_per_size_means_and_seed_range() -> None:
    points = rule.composition_points(_table(lambda p: p), "n_params")
    sizes = rule.per_size(points, "n_params")
    assert sizes["width"].tolist() == list(WIDTHS) and (sizes["seeds"] == SEEDS).all()
    widest = points[points.width == 48]
    row = sizes[sizes.width == 48].iloc[0]
    assert row.composed_em == pytest.approx(widest.composed_em.mean())
    assert (row.composed_min, row.composed_max) == (widest.composed_em.min(), widest.composed_em.max())


def test_no_step_splits_no_section(tmp_path: Path) -> None:
    out = _analyze(_table(lambda p: p, step_splits=False), tmp_path)
    assert not (out / rule.POINTS_CSV).exists() and not (out / rule.RULE_CSV).exists()
    assert "Composition: the product rule" not in (out / "report.md").read_text()


def test_tables_without_steps_or_step_splits_are_not_applicable() -> None:
    final = _table(lambda p: p).query("step == 1500").drop(columns="step")
    points = rule.composition_points(final, "n_params")  # final rows only: read as they are
    assert len(points) == len(WIDTHS) * SEEDS and np.allclose(points["composed_em"], points["product"])
    assert rule.composition_points(final.drop(columns="split"), "n_params").empty
    assert rule.composition_points(final[final.split != "test"], "n_params").empty
