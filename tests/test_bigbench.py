"""The BIG-bench results importer on invented fixtures in the scores_<model>.json format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emergence_lab.analysis.bigbench import bigbench_metric, is_bigbench, read_bigbench
from emergence_lab.analysis.detect import detect

FIXTURES = Path(__file__).parent / "fixtures" / "bigbench"


def read_all() -> pd.DataFrame:
    return pd.concat([read_bigbench(p) for p in sorted(FIXTURES.glob("scores_*.json"))], ignore_index=True)


def test_one_row_per_score_and_score_dict_key() -> None:
    df = read_all()
    assert len(df) == 10 * 5  # 10 files x (2 + 2 + 1 score_dict keys)
    assert set(df["model_family"]) == {"BIG-G T=0", "GPT"}
    assert set(df["subtask"]) == {"2_digit_multiplication", "choose_the_sum", "all"}
    assert set(df["task"]) == {"toy_arithmetic"}
    assert set(df["shots"]) == {0, 1}
    assert list(df.columns[:4]) == ["run_id", "task", "subtask", "split"]  # contract.TABLE_ORDER first


def test_model_block_gives_the_scale_columns() -> None:
    df = read_bigbench(FIXTURES / "scores_GPT_1.3B.json")
    assert (df["n_params"] == 1_300_000_000).all()  # non-embedding: the default x
    assert (df["n_params_total"] == 1_690_000_000).all()
    assert (df["n_params_flop_matched"] == 1_430_000_000).all()
    assert set(df["model"]) == {"1.3B"}


def test_preferred_score_carries_chance_and_range() -> None:
    df = read_bigbench(FIXTURES / "scores_GPT_1.3B.json")
    mc = df[df["metric"] == "multiple_choice_grade"].iloc[0]
    assert mc["preferred"] and mc["chance"] == 0.25 and mc["score_high"] == 1.0
    spec = bigbench_metric(mc)
    assert spec.chance == 0.25 and spec.range == pytest.approx(0.75) and spec.higher_is_better
    other = df[df["metric"] == "calibration_multiple_choice_brier_score"].iloc[0]
    assert not other["preferred"] and bigbench_metric(other) is None


def test_is_bigbench(tmp_path: Path) -> None:
    assert is_bigbench(FIXTURES / "scores_GPT_125M.json")
    lm_eval = tmp_path / "lm_eval.json"
    lm_eval.write_text(json.dumps({"results": {"piqa": {"acc": 0.6}}, "config": {}}))
    assert not is_bigbench(lm_eval)
    assert not is_bigbench(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    assert not is_bigbench(tmp_path / "bad.json")
    with pytest.raises(ValueError):
        read_bigbench(lm_eval)


def test_families_are_separate_curves_and_the_jump_is_found() -> None:
    df = read_all()
    em = df[(df["subtask"] == "2_digit_multiplication") & df["preferred"]]
    for family, curve in em.groupby("model_family"):
        curve = curve.sort_values("n_params")
        assert len(curve) == 5
        det = detect(curve["n_params"].to_numpy(), curve["value"].to_numpy(), bigbench_metric(curve.iloc[0]))
        assert det.verdict == "emergent", (family, det.reason)
        assert np.all(curve["n_params"].diff().dropna() > 0)
    mc = df[(df["subtask"] == "choose_the_sum") & df["preferred"]]
    for _, curve in mc.groupby("model_family"):
        curve = curve.sort_values("n_params")
        det = detect(curve["n_params"].to_numpy(), curve["value"].to_numpy(), bigbench_metric(curve.iloc[0]))
        assert det.verdict != "emergent"  # a slow rise from chance


def test_analyze_reads_bigbench_files_and_keeps_model_families_apart(tmp_path: Path) -> None:
    from emergence_lab.analysis.cli import analyze_main

    out = tmp_path / "out"
    assert analyze_main([str(FIXTURES), "--out", str(out), "--no-figures", "--quiet"]) == 0
    th = pd.read_csv(out / "thresholds.csv")
    preferred = th[(th["metric"] == "exact_str_match") & (th["subtask"] == "all")]
    assert set(preferred["split"]) == {"BIG-G T=0, 0-shot", "GPT, 0-shot"}  # one curve per family
    by_family = preferred.set_index("split")
    assert (by_family["classification"] == "emergent").all()
    assert by_family.loc["GPT, 0-shot", "threshold"] > 3 * by_family.loc["BIG-G T=0, 0-shot", "threshold"]
