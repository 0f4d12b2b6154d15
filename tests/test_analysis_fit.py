"""Fits, thresholds and classification on synthetic curves with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.optimize

import emergence_lab.analysis.fit
from emergence_lab.analysis.aggregate import resolve_by
from emergence_lab.analysis.classify import breakthroughness, linearity
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.fit import (
    best_model,
    fit_all,
    fit_linear,
    fit_nonlinear,
)
from emergence_lab.analysis.options import Criteria
from emergence_lab.analysis.pipeline import Options, analyse
from emergence_lab.analysis.schema import normalise

from analysis_helpers import curve_table, flat, linear, sigmoid, sizes, two_depth_table


def thresholds_of(df: pd.DataFrame, n_boot: int = 200, by: str = "auto", **criteria) -> pd.DataFrame:
    options = Options(criteria=Criteria(**criteria), n_boot_fit=n_boot, n_boot_points=200, by=by)
    return analyse(normalise(df), options, Console(quiet=True)).thresholds


@pytest.mark.parametrize("u0", [5.0, 5.8, 6.5])
def test_sigmoid_midpoint_found_within_015_decades_and_ci_covers_truth(u0: float) -> None:
    df = curve_table(sizes(), sigmoid(0.0, 0.9, u0, 8.0), seeds=3, noise=0.03, seed=int(u0 * 10))
    row = thresholds_of(df).iloc[0]
    assert row["classification"] == "emergent"
    assert bool(row["emergent"]) is True
    assert row["best_fit"] in ("sigmoid", "hinge")
    assert abs(np.log10(row["threshold"]) - u0) < 0.15
    assert row["threshold_low"] <= 10**u0 <= row["threshold_high"]
    assert np.log10(row["threshold_high"] / row["threshold_low"]) < 1.5  # a CI that says something
    # 10%-90% of a logistic with slope k per decade takes 2 ln 9 / k decades
    assert row["sharpness_decades"] == pytest.approx(2 * np.log(9) / 8.0, rel=0.35)
    assert row["n_points"] == 13 and row["n_seeds"] == 3 and row["n_obs"] == 39


def test_lower_is_better_metric_is_oriented() -> None:
    df = curve_table(sizes(), sigmoid(0.9, 0.05, 6.0, 8.0), noise=0.02, metric="edit_distance", seed=3)
    row = thresholds_of(df).iloc[0]
    assert not row["higher_is_better"]
    assert row["classification"] == "emergent"
    assert abs(np.log10(row["threshold"]) - 6.0) < 0.15
    assert row["rise"] == pytest.approx(0.85, abs=0.1)  # the rise is an improvement, so positive
    assert row["noise_source"] in ("seeds", "curve") and 0 < row["noise_se"] < 0.05


def test_linear_curve_is_smooth_not_emergent() -> None:
    df = curve_table(sizes(), linear(-0.8, 0.2), noise=0.02, seed=1)
    row = thresholds_of(df).iloc[0]
    assert row["classification"] == "smooth"
    assert not row["emergent"]
    assert row["breakthroughness"] == pytest.approx(12, rel=0.3)  # a steady rise: ~ the number of steps
    assert np.isnan(row["threshold"]) or row["best_fit"] != "linear"


def test_flat_curve_at_chance_is_absent() -> None:
    df = curve_table(sizes(), flat(0.25), noise=0.02, seed=2)
    row = thresholds_of(df).iloc[0]
    assert row["classification"] == "absent"
    assert np.isnan(row["threshold"])


def test_saturating_rise_is_smooth() -> None:
    df = curve_table(sizes(), lambda u: 0.95 - 0.85 * 10.0 ** (-(u - 4.0)), noise=0.02, seed=4)
    row = thresholds_of(df).iloc[0]
    assert row["classification"] == "smooth"
    assert "does not sit near its floor" in row["reason"]


def test_noise_is_never_called_emergent() -> None:
    frames = [
        curve_table(sizes(4, 8, 9), flat(0.3), noise=0.05, seed=100 + i, task=f"noise{i}", clip=None)
        for i in range(12)
    ]
    table = thresholds_of(pd.concat(frames), n_boot=0)
    assert len(table) == 12
    assert not table["emergent"].any()
    assert (table["classification"] == "absent").mean() >= 0.75


def test_four_sizes_can_be_emergent_but_only_with_a_floor_of_two() -> None:
    """The old AICc classifier needed 5 sizes for its 4-parameter fits; the detector needs the plateau (2
    sizes) plus 2: a clean step after 2 floor sizes is emergent; with one floor size it cannot be."""
    df = curve_table(np.array([5.0, 5.5, 6.0, 6.5]), sigmoid(0.0, 1.0, 6.2, 20.0), noise=0.01)
    row = thresholds_of(df).iloc[0]
    assert row["classification"] == "emergent", row["reason"]
    assert row["bracket_low"] == pytest.approx(10**6.0, rel=1e-3)
    assert row["best_fit"] == "linear"  # the drawn 4-parameter models still need 5 sizes
    early = curve_table(np.array([5.0, 5.5, 6.0, 6.5]), sigmoid(0.0, 1.0, 5.2, 20.0), noise=0.01)
    assert thresholds_of(early).iloc[0]["classification"] != "emergent"


def test_sharpness_criterion_is_configurable() -> None:
    df = curve_table(sizes(), sigmoid(0.0, 0.9, 6.0, 3.0), noise=0.02, seed=5)  # 10-90% in 1.46 decades
    assert thresholds_of(df, n_boot=0).iloc[0]["classification"] == "smooth"
    assert thresholds_of(df, n_boot=0, max_sharpness=2.0).iloc[0]["classification"] == "emergent"


def test_hinge_breakpoint_recovered() -> None:
    u = np.repeat(sizes(4, 8, 17), 2)
    y = np.where(u < 6.0, 0.1, 0.1 + 0.35 * (u - 6.0)) + np.random.default_rng(0).normal(0, 0.01, len(u))
    fit = fit_nonlinear("hinge", u, y)
    assert fit is not None
    assert fit.threshold == pytest.approx(6.0, abs=0.1)
    assert fit.params[2] == pytest.approx(0.35, abs=0.05)
    fits = fit_all(u, y, min_sizes=5)
    assert best_model(fits) == "hinge"


def test_aicc_prefers_line_for_linear_data() -> None:
    u = np.repeat(sizes(), 3)
    y = 0.1 * u + np.random.default_rng(1).normal(0, 0.02, len(u))
    fits = fit_all(u, y, min_sizes=5)
    assert set(fits) == {"linear", "sigmoid", "hinge"}
    assert fits["linear"].aicc < fits["sigmoid"].aicc
    line = fit_linear(u, y)
    assert line.params[1] == pytest.approx(0.1, abs=0.01)


def test_breakthroughness_and_linearity_values() -> None:
    steady = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    jump = np.array([0.0, 0.01, 0.02, 0.03, 1.0])
    u = np.arange(5.0)
    assert breakthroughness(steady) == pytest.approx(4.0)
    assert breakthroughness(jump) == pytest.approx(100.0)
    assert breakthroughness(steady[::-1]) == pytest.approx(-4.0)  # getting worse is negative
    assert linearity(u, steady) == pytest.approx(1.0)
    assert linearity(u, jump) == pytest.approx(1.0 / (np.sqrt(0.0003 + 0.9409) * 2.0))


def test_backtest_predicts_the_largest_size() -> None:
    df = curve_table(sizes(), linear(-0.8, 0.2), noise=0.01, seed=6)
    row = thresholds_of(df, n_boot=0).iloc[0]
    assert row["backtest_x"] == pytest.approx(1e8, rel=1e-6)
    assert row["backtest_actual"] == pytest.approx(0.8, abs=0.03)
    assert abs(row["backtest_error"]) < 0.05
    emergent = curve_table(sizes(), sigmoid(0.0, 1.0, 7.6, 10.0), noise=0.01, seed=7)
    row = thresholds_of(emergent, n_boot=0).iloc[0]
    assert abs(row["backtest_error"]) > 0.2  # a jump at the last sizes is not predictable from before it


def test_thresholds_are_deterministic() -> None:
    df = curve_table(sizes(), sigmoid(0.0, 0.9, 6.0, 8.0), noise=0.03, seed=8)
    a, b = thresholds_of(df, n_boot=50), thresholds_of(df, n_boot=50)
    pd.testing.assert_frame_equal(a, b)


def test_each_depth_is_its_own_curve_and_only_the_deep_one_jumps() -> None:
    """Depth 1 never learns the task, depth 2 jumps at 10^5.5 parameters; their sizes interleave."""
    df = two_depth_table(u0=5.5)
    by_depth = thresholds_of(df)  # auto: more than one depth, x is not depth
    assert list(by_depth["depth"]) == [1, 2]
    shallow, deep = by_depth.iloc[0], by_depth.iloc[1]
    assert shallow["classification"] == "absent" and np.isnan(shallow["threshold"])
    assert deep["classification"] == "emergent"
    assert abs(np.log10(deep["threshold"]) - 5.5) < 0.15
    assert deep["threshold_low"] <= 10**5.5 <= deep["threshold_high"]
    assert deep["n_points"] == 10 and deep["n_seeds"] == 3
    pooled = thresholds_of(df, by="none")  # one zigzag curve: the jump is hidden
    assert len(pooled) == 1 and pd.isna(pooled["depth"].iloc[0])
    assert pooled["classification"].iloc[0] != "emergent"
    assert list(pooled.columns) == list(by_depth.columns)


def test_auto_grouping() -> None:
    two = normalise(two_depth_table())
    assert resolve_by("auto", two, "n_params") == "depth"
    assert resolve_by("auto", two, "depth") == "none"  # depth is the axis itself
    assert resolve_by("auto", two.loc[two["depth"] == 2], "n_params") == "none"
    assert resolve_by("auto", two.drop(columns="depth"), "n_params") == "none"
    assert resolve_by("none", two, "n_params") == "none"


def test_every_fit_runs_through_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(*args, **kwargs):
        calls.append(1)
        return scipy.optimize.leastsq(*args, **kwargs)

    monkeypatch.setattr(emergence_lab.analysis.fit, "leastsq", counted)
    df = curve_table(sizes(), sigmoid(0.0, 0.9, 6.0, 8.0), seeds=3, noise=0.03, seed=9)
    u, y = np.log10(df["n_params"].to_numpy(float)), df["value"].to_numpy(float)
    fit = fit_nonlinear("sigmoid", u, y)
    assert fit is not None and calls


@pytest.mark.parametrize("model", ["sigmoid", "hinge"])
def test_float_and_array_callbacks_agree(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Short problems compute in Python floats, long ones in numpy arrays: the same numbers."""
    rng = np.random.default_rng(3)
    u, y, w = np.sort(rng.uniform(4, 8, 9)), rng.normal(size=9), rng.uniform(0.5, 2.0, 9)
    start = np.array([0.1, 0.8, 5.0, 6.0])
    p = np.array([0.2, 0.7, 8.0, u[4]])  # the hinge's breakpoint exactly on a size
    monkeypatch.setattr(emergence_lab.analysis.fit, "SHORT_PROBLEM", 1000)
    floats = [np.asarray(f(p)) for f in emergence_lab.analysis.fit._problem(model, u, y, start, w, 0.3)]
    monkeypatch.setattr(emergence_lab.analysis.fit, "SHORT_PROBLEM", 0)
    arrays = [f(p) for f in emergence_lab.analysis.fit._problem(model, u, y, start, w, 0.3)]
    for a, b in zip(floats, arrays, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
