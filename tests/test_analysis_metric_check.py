"""The metric-artefact check (Schaeffer et al. 2023) on synthetic tasks with known verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emergence_lab.analysis.console import Console
from emergence_lab.analysis.pipeline import Options, analyse
from emergence_lab.analysis.schema import normalise

from analysis_helpers import curve_table, linear, power_law_tokens, sigmoid, sizes


def task_table(
    task: str, metrics: dict, u: np.ndarray, answer_len: int | None = None, seed: int = 0
) -> pd.DataFrame:
    frames = []
    for i, (metric, fn) in enumerate(metrics.items()):
        df = curve_table(u, fn, noise=0.01, seed=seed + i, task=task, metric=metric)
        if answer_len is not None:
            df["answer_len"] = answer_len
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def check(df: pd.DataFrame) -> pd.DataFrame:
    analysis = analyse(normalise(df), Options(n_boot_fit=20, n_boot_points=100), Console(quiet=True))
    return analysis.metric_check.set_index("task")


def test_power_law_per_token_gives_metric_induced_jump() -> None:
    length = 10
    token, em = power_law_tokens(length)
    u = sizes(4.0, 8.0, 17)
    mc = check(task_table("mirage", {"exact_match": em, "token_accuracy": token}, u, answer_len=length))
    row = mc.loc["mirage"]
    assert row["em_classification"] == "emergent"
    assert row["verdict"] == "metric_induced"
    assert row["continuous_metric"] == "token_accuracy"
    assert row["floor_sizes"] >= 2
    assert bool(row["pow_l_explains"]) is True and bool(row["steady_at_floor"]) is True
    assert row["answer_len"] == length
    assert row["em_vs_ta_pow_L_mae"] < 0.02  # exact match = token_accuracy^L holds here by construction


def test_jump_in_both_metrics_at_the_same_place_persists() -> None:
    u = sizes(4.0, 8.0, 17)
    metrics = {"exact_match": sigmoid(0.0, 1.0, 6.0, 20.0), "token_accuracy": sigmoid(0.1, 1.0, 6.0, 20.0)}
    row = check(task_table("real", metrics, u)).loc["real"]
    assert row["em_classification"] == "emergent"
    assert row["verdict"] == "persists"
    assert bool(row["continuous_jumps_with_em"]) is True
    assert abs(np.log10(row["continuous_threshold"]) - 6.0) < 0.15


def test_smooth_exact_match_has_no_jump() -> None:
    u = sizes(4.0, 8.0, 13)
    metrics = {"exact_match": linear(-0.8, 0.2), "token_accuracy": linear(-0.6, 0.2)}
    row = check(task_table("steady", metrics, u)).loc["steady"]
    assert row["verdict"] == "no_jump"
    assert row["em_classification"] == "smooth"


def test_lower_is_better_continuous_metric_counts() -> None:
    """1 - token accuracy of Schaeffer's power law falls from 1 to 0 within 0.75 decades, just before exact
    match jumps: without the answer length (no ^L test) it is itself emergent at nearly the same place, so
    the jump `persists`; the fall of edit distance counts as an improvement."""
    u = sizes(4.0, 8.0, 17)
    token, em = power_law_tokens(8)
    metrics = {"exact_match": em, "edit_distance": lambda x: 1.0 - token(x)}
    row = check(task_table("edits", metrics, u)).loc["edits"]
    assert row["verdict"] == "persists"
    assert row["continuous_metric"] == "edit_distance"
    assert row["continuous_classification"] == "emergent"
    assert 0 < np.log10(row["em_threshold"] / row["continuous_threshold"]) <= 0.5
    assert bool(row["steady_at_floor"]) is True  # an improvement, although edit distance went down
    assert np.isnan(row["answer_len"]) and pd.isna(row["pow_l_explains"])


def test_one_row_per_task_and_only_tasks_with_both_kinds() -> None:
    u = sizes(4.0, 8.0, 9)
    token, em = power_law_tokens(6)
    both = task_table("both", {"exact_match": em, "token_accuracy": token}, u)
    only_em = task_table("only_em", {"exact_match": em}, u)
    ood = both.assign(split="ood")
    mc = check(pd.concat([both, ood, only_em], ignore_index=True))
    assert list(mc.index) == ["both"]
    assert mc.loc["both", "split"] == "test"
    assert set(mc["verdict"]) <= {"metric_induced", "persists", "inconclusive", "no_jump"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_flat_continuous_metric_neither_explains_nor_confirms_a_jump(seed: int) -> None:
    u = sizes(4.0, 8.0, 17)
    metrics = {"exact_match": sigmoid(0.0, 1.0, 6.5, 20.0), "brier": lambda x: np.full_like(x, 0.7)}
    row = check(task_table("flatbrier", metrics, u, seed=seed)).loc["flatbrier"]
    assert row["em_classification"] == "emergent"
    assert row["verdict"] == "inconclusive"
    assert not bool(row["steady_at_floor"])
    assert "neither improves steadily" in row["reason"] and "nor jumps with it" in row["reason"]


def test_a_continuous_step_far_above_its_floor_is_inconclusive() -> None:
    """Token accuracy climbs slowly from 0.3, then steps up by 0.4 where exact match jumps. `persists`
    needs the continuous metric to be emergent itself (near its floor first); at 0.3 of its range it is not,
    and a climb of 0.04 over the floor sizes is too little to explain the jump: `inconclusive`."""
    u = sizes(4.0, 8.0, 17)
    step = sigmoid(0.0, 0.4, 6.0, 20.0)
    metrics = {
        "exact_match": sigmoid(0.0, 1.0, 6.0, 20.0),
        "token_accuracy": lambda x: 0.3 + 0.02 * (x - 4) + step(x),
    }
    row = check(task_table("stepped", metrics, u)).loc["stepped"]
    assert row["em_classification"] == "emergent"
    assert row["verdict"] == "inconclusive"
    assert row["continuous_classification"] == "smooth"
    assert "does not sit near its floor" in check_reason(metrics, u)


def check_reason(metrics: dict, u: np.ndarray) -> str:
    df = task_table("stepped", metrics, u)
    analysis = analyse(normalise(df), Options(n_boot_fit=20, n_boot_points=100), Console(quiet=True))
    th = analysis.thresholds
    return str(th.loc[th["metric"] == "token_accuracy", "reason"].iloc[0])


def test_one_row_per_task_and_depth_when_grouped_by_depth() -> None:
    """Depth 1 improves steadily (no jump to explain), depth 2 shows Schaeffer's mirage."""
    length = 10
    token, em = power_law_tokens(length)
    shallow = task_table(
        "mix", {"exact_match": linear(-0.5, 0.1), "token_accuracy": linear(-0.2, 0.1)}, sizes(4.0, 8.0, 13)
    )
    deep = task_table("mix", {"exact_match": em, "token_accuracy": token}, sizes(4.0, 8.0, 17) + np.log10(2))
    df = pd.concat([shallow.assign(depth=1), deep.assign(depth=2, answer_len=length)], ignore_index=True)
    analysis = analyse(normalise(df), Options(n_boot_fit=20, n_boot_points=100), Console(quiet=True))
    mc = analysis.metric_check
    assert analysis.by == "depth"
    assert list(mc["task"]) == ["mix", "mix"] and list(mc["depth"]) == [1, 2]
    assert list(mc["verdict"]) == ["no_jump", "metric_induced"]
    assert mc["answer_len"].iloc[1] == length
    pooled = analyse(normalise(df), Options(by="none", n_boot_fit=20, n_boot_points=100), Console(quiet=True))
    assert len(pooled.metric_check) == 1 and pd.isna(pooled.metric_check["depth"].iloc[0])
    assert list(pooled.metric_check.columns) == list(mc.columns)


def test_a_one_token_answer_is_not_explained_by_its_own_token_accuracy() -> None:
    """With L = 1 token accuracy is exact match itself: an emergent exact match cannot be `metric_induced`
    by it. Log-prob, a different continuous metric, still can: it rises steadily while accuracy sits at 0."""
    u = sizes(4.0, 8.0, 17)
    em = sigmoid(0.0, 1.0, 6.0, 20.0)
    alone = check(task_table("one", {"exact_match": em, "token_accuracy": em}, u, answer_len=1)).loc["one"]
    assert alone["em_classification"] == "emergent"
    assert alone["verdict"] == "inconclusive" and "one-token answer" in alone["reason"]
    # log-prob -1.6 at 10^4 nats rising steadily to -0.2 at 10^8 (not clipped to [0, 1])
    logprob = curve_table(u, linear(-3.0, 0.35), noise=0.01, seed=5, task="one", clip=None)
    logprob = logprob.assign(metric="answer_logprob", answer_len=1)
    exact = task_table("one", {"exact_match": em, "token_accuracy": em}, u, answer_len=1)
    row = check(pd.concat([exact, logprob], ignore_index=True)).loc["one"]
    assert row["continuous_metric"] == "answer_logprob"
    assert row["verdict"] == "metric_induced"
