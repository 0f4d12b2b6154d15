"""lm-evaluation-harness import: our v0.3 and v0.4 fixtures, and the real Pythia sample files when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emergence_lab.analysis.collect import collect
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.lm_eval import load_params_map, parse_size
from emergence_lab.analysis.pipeline import Options, analyse
from emergence_lab.analysis.schema import metric_directions

from analysis_helpers import FIXTURES, REFERENCE

V03, V04 = FIXTURES / "lm_eval_v03", FIXTURES / "lm_eval_v04"
SAMPLE = REFERENCE / "lm-eval-pythia-sample"


def value(df, model: str, task: str, metric: str, column: str = "value"):
    rows = df.loc[
        (df["model"].astype(str) == model)
        & (df["task"].astype(str) == task)
        & (df["metric"].astype(str) == metric)
    ]
    assert len(rows) == 1, (model, task, metric, len(rows))
    return rows[column].iloc[0]


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("pythia-70m", 70e6),
        ("EleutherAI/pythia-1.4b-deduped", 1.4e9),
        ("org/pythia-v1.1-160m", 160e6),
        ("Qwen2.5-0.5B-Instruct", 0.5e9),
        ("llama-7b-32k", 7e9),
        ("gpt2", None),
    ],
)
def test_parse_size(name: str, size: float | None) -> None:
    assert parse_size(name) == (None if size is None else round(size))


def test_v03_fixtures() -> None:
    console = Console(quiet=True)
    df = collect([str(V03)], console)
    assert console.warnings == []
    assert sorted(df["model"].astype(str).unique()) == [
        f"EleutherAI/pythia-{s}" for s in ("160m", "410m", "70m")
    ]
    assert value(df, "EleutherAI/pythia-70m", "arc_easy", "acc") == pytest.approx(0.3817)
    assert value(df, "EleutherAI/pythia-70m", "arc_easy", "acc", "stderr") == pytest.approx(0.01)
    assert value(df, "EleutherAI/pythia-160m", "lambada_openai", "ppl") == pytest.approx(38.27)
    assert value(df, "EleutherAI/pythia-410m", "arc_easy", "acc", "n_params") == 410_000_000
    assert df["n_params_nominal"].all()
    assert set(df["step"]) == {143000}
    assert df["n_examples"].isna().all()  # v0.3 files do not count their examples
    assert set(df["run_id"].astype(str)) == {
        f"EleutherAI/pythia-{s}@step143000" for s in ("70m", "160m", "410m")
    }
    assert set(df["subtask"].astype(str)) == {"all"} and set(df["split"].astype(str)) == {"test"}


def test_v04_fixtures_with_params_map() -> None:
    console = Console(quiet=True)
    params = load_params_map(FIXTURES / "params_map.csv")
    df = collect([str(V04)], console, params_map=params)
    assert console.warnings == []
    metrics = set(df["metric"].astype(str))
    assert {
        "acc",
        "acc_norm",
        "perplexity",
        "exact_match,strict-match",
        "exact_match,flexible-extract",
    } <= metrics
    assert not any(m.endswith(",none") or "_stderr" in m for m in metrics)
    assert value(df, "EleutherAI/pythia-1b", "gsm8k@5shot", "exact_match,strict-match") == pytest.approx(
        0.0212
    )
    assert value(df, "EleutherAI/pythia-1b", "gsm8k@5shot", "exact_match,flexible-extract", "stderr") == 0.004
    # from the map (by full name, and by the name after the slash), else nominal from the name
    assert value(df, "EleutherAI/pythia-70m", "arc_easy", "acc", "n_params") == 18915328
    assert value(df, "EleutherAI/pythia-160m", "arc_easy", "acc", "n_params") == 85056000
    assert not value(df, "EleutherAI/pythia-160m", "arc_easy", "acc", "n_params_nominal")
    assert value(df, "EleutherAI/pythia-1b", "arc_easy", "acc", "n_params") == 1_000_000_000
    assert value(df, "EleutherAI/pythia-1b", "arc_easy", "acc", "n_params_nominal")
    # direction from the file's higher_is_better
    assert not value(df, "EleutherAI/pythia-70m", "lambada_openai", "perplexity", "higher_is_better")
    assert value(df, "EleutherAI/pythia-70m", "lambada_openai", "acc", "higher_is_better")
    # n_examples from the file's n-samples (schema version 2)
    assert value(df, "EleutherAI/pythia-1b", "gsm8k@5shot", "exact_match,strict-match", "n_examples") == 1319
    assert value(df, "EleutherAI/pythia-70m", "arc_easy", "acc", "n_examples") == 2376


def test_v04_perplexity_direction_used_in_analysis() -> None:
    df = collect([str(V04)], Console(quiet=True))
    t = analyse(df, Options(n_boot_fit=0, n_boot_points=50), Console(quiet=True)).thresholds
    ppl = t.loc[(t["task"] == "lambada_openai") & (t["metric"] == "perplexity")].iloc[0]
    assert not ppl["higher_is_better"]
    assert ppl["rise"] > 0  # perplexity fell with size: an improvement
    assert not t["emergent"].any()  # 4 sizes are too few to call anything emergent


def test_not_lm_eval_json_and_bad_json_warn(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.1}))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "r.json").write_text(json.dumps({"results": {"t": {"alias": "t"}}, "config": {}}))
    console = Console(quiet=True)
    assert collect([str(tmp_path)], console).empty
    text = "\n".join(console.warnings)
    assert "config.json: skipped, not an lm-evaluation-harness result file" in text
    assert "broken.json: skipped, not valid JSON" in text
    assert "r.json: skipped, no numeric results" in text


def test_params_map_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("name,size\na,1\n")
    with pytest.raises(ValueError, match="needs columns model,n_params"):
        load_params_map(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("model,n_params\na,lots\n")
    with pytest.raises(ValueError, match="numeric n_params"):
        load_params_map(tmp_path / "nan.csv")


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="reference sample data (../shared/reference) not available")
def test_real_pythia_sample_files_are_read_and_not_called_emergent() -> None:
    console = Console(quiet=True)
    df = collect([str(SAMPLE)], console)
    assert console.warnings == []
    assert df["n_params"].nunique() == 2
    assert sorted(df["n_params"].unique()) == [70_000_000, 160_000_000]
    assert value(df, "EleutherAI/pythia-v1.1-70m", "lambada_openai", "ppl") == pytest.approx(
        142.42891015470678
    )
    assert value(df, "EleutherAI/pythia-v1.1-160m", "arc_easy", "acc") == pytest.approx(0.4351851851851852)
    assert metric_directions(df)["ppl"] is False  # v0.3 files do not say; our table does
    analysis = analyse(df, Options(n_boot_fit=0, n_boot_points=50), Console(quiet=True))
    t = analysis.thresholds
    assert len(t) > 100
    assert not t["emergent"].any()
    assert (t["n_points"] == 2).all()
    # two sizes cannot show a plateau and a jump: every curve says so, and what would decide it
    assert set(t["classification"]) == {"inconclusive"}
    assert (t["power_statement"] == "measure at least 2 more sizes").all()
