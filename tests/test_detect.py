"""The emergence detector (analysis/detect.py) on the symptoms of issue 9, each of which the AICc classifier
got wrong: 5-size single-seed ladders were never emergent, a jump became noise, bimodal seeds flipped the
verdict, and a joint jump was called metric_induced."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.special import expit

from emergence_lab.analysis.detect import (
    DetectOptions,
    detect,
    false_discovery,
    metric_check,
)
from emergence_lab.contract import Metric, metric

EM = metric("exact_match")
TA = metric("token_accuracy")
LOSS = metric("loss")
LADDER = 10 ** (6 + 0.5 * np.arange(5))  # 1M .. 100M, 0.5 decades apart


def test_textbook_jump_at_five_single_seed_sizes_is_emergent() -> None:
    det = detect(LADDER, [0.00, 0.01, 0.03, 0.71, 0.95], EM)
    assert det.verdict == "emergent", det.reason
    assert det.p_value < 0.05
    # the step is between the 3rd and 4th size; the CI covers at least that interval
    assert det.bracket == (pytest.approx(LADDER[2]), pytest.approx(LADDER[3]))
    assert det.ci[0] <= LADDER[2] and det.ci[1] >= LADDER[3]
    assert LADDER[2] < det.threshold < LADDER[3]
    assert det.rise_frac == pytest.approx(0.93, abs=0.05)
    assert det.noise_source == "curve"  # no seeds, no stderr: the curve's own scatter, not the jump
    assert det.noise_se < 0.05
    assert "AICc" not in det.reason
    assert det.power is None and det.power_statement is None  # simulated for inconclusive curves only


def test_the_definition_is_stated_in_plain_words() -> None:
    text = DetectOptions(min_rise_frac=0.25, max_rise_decades=0.5).definition()
    assert "at least 2 sizes" in text and "at least 25% of the metric's range" in text
    assert "at most 0.5 decade(s)" in text and "{" not in text


def test_the_same_jump_with_stderr_is_emergent_and_eval_noise_is_a_lower_bound() -> None:
    det = detect(LADDER, [0.00, 0.01, 0.03, 0.71, 0.95], EM, stderr=[0.004] * 5)
    assert det.verdict == "emergent"
    big = detect(LADDER, [0.00, 0.01, 0.03, 0.71, 0.95], EM, stderr=[0.2] * 5)
    assert big.noise_source == "eval" and big.noise_se == pytest.approx(0.2)
    assert big.verdict != "emergent"


def test_binomial_noise_from_n_examples() -> None:
    det = detect(LADDER, [0.10, 0.12, 0.11, 0.13, 0.12], EM, n_examples=20)
    assert det.noise_source == "eval"
    assert det.noise_se == pytest.approx(math.sqrt(0.12 * 0.88 / 20), rel=0.1)


def test_smooth_ladders_are_smooth() -> None:
    line = 0.1 + 0.1 * np.arange(8) + np.array([0.01, -0.01, 0.0, 0.01, -0.01, 0.0, 0.01, -0.01])
    det = detect(10 ** (6 + 0.5 * np.arange(8)), line, EM)
    assert det.verdict == "smooth", det.reason
    # a sigmoid whose 10-90% rise takes 1.5 decades: significant, but not a jump
    wide = 0.9 * expit(2 * math.log(9) / 1.5 * (6 + 0.5 * np.arange(8) - 7.75))
    det = detect(10 ** (6 + 0.5 * np.arange(8)), wide + 0.005 * np.cos(np.arange(8)), EM)
    assert det.verdict == "smooth", det.reason
    assert det.width_decades > 1.0
    assert not det.criteria["within_decades"]


def test_flat_is_absent_with_the_power_it_had() -> None:
    det = detect(LADDER, [0.02, 0.01, 0.03, 0.00, 0.02], EM)
    assert det.verdict == "absent", det.reason
    assert det.power >= 0.8
    assert det.threshold is None or det.verdict != "emergent"


def test_inverse_scaling_is_smooth_not_emergent() -> None:
    det = detect(LADDER, [0.62, 0.52, 0.41, 0.30, 0.21], EM)
    assert det.verdict == "smooth"
    assert det.rise_frac <= 0.0


def test_inconclusive_carries_a_power_statement() -> None:
    det = detect(LADDER, [0.10, 0.30, 0.05, 0.25, 0.15], EM)
    assert det.verdict == "inconclusive", det.reason
    assert det.power is not None and 0.0 <= det.power < 0.8
    assert "probability" in det.power_statement
    assert "more seed" in det.power_statement or "more sizes" in det.power_statement


def test_two_sizes_too_few_is_inconclusive_with_advice() -> None:
    det = detect(LADDER[:3], [0.0, 0.0, 0.9], EM)
    assert det.verdict == "inconclusive" and "more sizes" in det.power_statement


def demo_like(seeds: range) -> tuple[np.ndarray, list[list[float]]]:
    """The demo's grid: 6 sizes, 1.6k-55k; each seed a 0/1 step at its own size near 22k (bimodal seeds)."""
    x = np.geomspace(1.6e3, 5.5e4, 6)
    rng = np.random.default_rng(list(seeds))
    own = {s: math.log10(2.2e4) + rng.normal(0, 0.2) for s in seeds}
    values = [
        [float(np.clip(0.95 * (math.log10(xi) > own[s]) + 0.03 + rng.normal(0, 0.02), 0, 1)) for s in seeds]
        for xi in x
    ]
    return x, values


def test_bimodal_seeds_agree_across_disjoint_seed_sets() -> None:
    verdicts, cis = [], []
    for seeds in (range(0, 3), range(3, 6)):
        x, values = demo_like(seeds)
        det = detect(x, values, EM, seeds=[list(seeds)] * 6)
        verdicts.append(det.verdict)
        cis.append(det.ci)
        assert det.verdict == "emergent", det.reason
        jumps = [c for c in det.per_seed if c.verdict == "jump"]
        assert len(jumps) == 3 and {c.seed for c in jumps} == set(seeds)
        for c in jumps:  # a seed's threshold is the interval between the sizes that bracket its step
            assert c.lo < c.threshold < c.hi and np.isclose(c.hi / c.lo, x[1] / x[0])
        assert det.seed_threshold_spread[0] <= min(c.lo for c in jumps)
    assert verdicts[0] == verdicts[1]
    assert cis[0][0] < cis[1][1] and cis[1][0] < cis[0][1]  # the two CIs overlap


def test_demo_curve_of_issue_9_is_emergent_near_22k() -> None:
    x = np.geomspace(1.6e3, 5.5e4, 6)
    values = [[0.04, 0.04], [0.0, 0.0], [0.1, 0.06], [0.05, 0.05], [0.95, 0.10], [0.97, 0.97]]
    det = detect(x, values, EM)
    assert det.verdict == "emergent", det.reason
    assert det.ci[0] <= 2.2e4 <= det.ci[1]
    assert [c.verdict for c in det.per_seed] == ["jump", "jump"]
    assert det.per_seed[0].hi <= det.per_seed[1].lo  # seed 0 jumped one size earlier
    line = det.describe("exact match, depth 2")
    assert line.startswith("exact match, depth 2: emergent at 2") and "per-seed 13.4k-55k)" in line


def test_unbounded_metric_rise_is_a_fraction_of_the_gap_to_its_best_value() -> None:
    # loss (lower is better, best 0): flat at 4.0, then falls to 1.5: closes 60% of the gap
    det = detect(LADDER, [4.00, 4.01, 3.99, 2.00, 1.50], LOSS)
    assert det.verdict == "emergent", det.reason
    assert det.rise < 0  # signed as the metric: the loss fell
    assert det.rise_frac == pytest.approx(0.62, abs=0.08)
    # a sharp but small drop, 4.0 -> 3.6, closes 10% of the gap: significant, but not emergent
    small = detect(LADDER, [4.000, 4.001, 3.999, 3.650, 3.600], LOSS)
    assert small.verdict != "emergent"
    assert not small.criteria["rise"]
    # never the observed range: the same small drop would be 100% of it
    assert small.rise_frac < 0.2
    # a metric without a best value cannot be judged for its rise, whatever the curve
    free = Metric("score", True, None, None)
    assert detect(LADDER, [0.0, 0.0, 0.0, 50.0, 60.0], free).verdict != "emergent"


def test_deterministic_for_a_seed_and_independent_of_input_order() -> None:
    y = [0.00, 0.02, 0.05, 0.40, 0.62]
    a = detect(LADDER, y, EM, options=DetectOptions(seed=3))
    b = detect(LADDER, y, EM, options=DetectOptions(seed=3))
    assert a == b
    c = detect(LADDER[::-1], y[::-1], EM, options=DetectOptions(seed=3))
    assert (c.verdict, c.threshold, c.p_value) == (a.verdict, a.threshold, a.p_value)


def test_ragged_seeds_are_accepted() -> None:
    det = detect(LADDER, [[0.0, 0.01], [0.02], [0.0, 0.03, 0.01], [0.8, 0.9], [0.95]], EM)
    assert det.verdict == "emergent" and det.n_seeds == 3


def test_a_few_ms_per_curve() -> None:
    rng = np.random.default_rng(0)
    curves = [np.clip(0.9 * (np.arange(6) >= 3) + rng.normal(0, 0.03, 6), 0, 1) for _ in range(20)]
    x = 10 ** (6 + 0.5 * np.arange(6))
    detect(x, curves[0], EM)
    start = time.perf_counter()
    for y in curves:
        detect(x, y, EM)
    assert (time.perf_counter() - start) / len(curves) < 0.1  # typically ~15 ms; generous for busy CI


def test_false_discovery_rate_benjamini_hochberg() -> None:
    fam = false_discovery([0.01, 0.04, 0.03, 0.005])
    assert fam.q_values == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert fam.significant.all()
    fam = false_discovery([0.01, 0.2, 0.03, 0.04, 0.5], alpha=0.05)
    assert fam.q_values == pytest.approx([0.05, 0.25, 0.0667, 0.0667, 0.5], abs=1e-3)
    assert list(fam.significant) == [True, False, False, False, False]
    # the study's primary metric is exempt from the family: tested alone at alpha
    fam = false_discovery([0.01, 0.2, 0.03, 0.04, 0.5], exempt=[False, False, True, False, False])
    assert fam.significant[2] and fam.q_values[2] == 0.03
    assert "primary" in fam.statement and fam.expected_false == pytest.approx(0.05 * 1 + 0.05)


def _sig(u: np.ndarray, mid: float, width: float) -> np.ndarray:
    return expit(2 * math.log(9) / width * (u - mid))


def test_joint_jump_persists_issue_9() -> None:
    """Exact match and token accuracy both sigmoids with one midpoint; token accuracy lifts a size earlier."""
    u = 6 + 0.5 * np.arange(8)
    em = 0.9 * _sig(u, 8.25, 0.3) + 0.002 * np.cos(np.arange(8))
    ta = 0.05 + 0.9 * _sig(u, 8.25, 0.9) + 0.002 * np.sin(np.arange(8))
    assert ta[4] - ta[3] > 0.05 and em[4] < 0.05  # token accuracy lifts one size before exact match does
    res = metric_check(10**u, em, ta, EM, TA)
    assert res.verdict == "persists", res.reason
    assert not res.steady_at_floor


def test_power_law_per_token_accuracy_is_metric_induced() -> None:
    u = 6 + 0.5 * np.arange(8)
    length, alpha = 40, 1.6
    uc = 8.2 - math.log10(length / math.log(2)) / alpha
    ta = np.exp(-(10.0 ** (-alpha * (u - uc))))
    em = ta**length
    for answer_len in (length, None):
        res = metric_check(10**u, em, ta, EM, TA, answer_len=answer_len)
        assert res.verdict == "metric_induced", res.reason
        assert res.steady_at_floor
    assert metric_check(10**u, em, ta, EM, TA, answer_len=length).pow_l_explains


def test_no_jump_needs_no_explanation() -> None:
    res = metric_check(LADDER, [0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.4, 0.5, 0.6, 0.7], EM, TA)
    assert res.verdict == "no_jump"
