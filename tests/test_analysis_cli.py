"""`emergence analyze` / `emergence figures`: argument errors, printed paths, wandb logging, and no torch."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emergence_lab.analysis.cli import analyze_main, figures_main

from analysis_helpers import (
    curve_table,
    png_pixels,
    schema_row,
    sigmoid,
    sizes,
    two_depth_table,
    write_jsonl,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("emergence ") and "error:" in err[0] and needle in err[0], err


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    df = curve_table(sizes(4, 8, 7), sigmoid(0.0, 1.0, 6.0, 8.0), seeds=2, noise=0.02)
    path = tmp_path / "curve.csv"
    df.drop(columns=["step"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["missing_dir", "--out", "o"], "input not found: missing_dir"),
        (["{csv}", "--out", "o", "--x", "parameters"], "unknown --x 'parameters'"),
        (["{csv}"], "the following arguments are required: --out"),
        (["wandb:justentity", "--out", "o"], "bad wandb input"),
        (["{csv}", "--out", "o", "--params-map", "nope.csv"], "--params-map nope.csv not found"),
        (["{csv}", "--out", "o", "--boot", "-1"], "--boot must be >= 0"),
        (["{csv}", "--out", "o", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(
    argv: list[str],
    needle: str,
    table_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{csv}", str(table_csv)) for a in argv]
    assert analyze_main(argv) == 2
    one_line_error(capsys, needle)
    assert not (tmp_path / "o").exists()


def test_figures_needs_an_analysis_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert figures_main([str(tmp_path)]) == 2
    one_line_error(capsys, "results.parquet not found")
    assert figures_main([]) == 2
    one_line_error(capsys, "the following arguments are required: dir")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze_main(["--help"]) == 0
    assert "--params-map" in capsys.readouterr().out


def test_no_rows_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert analyze_main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no result rows" in capsys.readouterr().err


def test_analyze_prints_every_path_it_wrote(table_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert analyze_main([str(table_csv), "--out", str(out), "--boot", "20", "--jobs", "1"]) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    written = {p for p in out.rglob("*") if p.is_file()}
    assert set(printed) == written
    names = {p.name for p in printed}
    assert {
        "results.parquet",
        "results.csv",
        "thresholds.csv",
        "metric_check.csv",
        "report.md",
        "report.html",
    } <= names
    assert {"scale_toy.png", "scale_toy.pdf", "scale_toy.svg"} <= names
    row = pd.read_csv(out / "thresholds.csv").iloc[0]
    assert row["classification"] == "emergent"
    assert abs(np.log10(row["threshold"]) - 6.0) < 0.15


def test_criteria_options_change_the_verdict(table_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    assert (
        analyze_main(
            [
                str(table_csv),
                "--out",
                str(out),
                "--boot",
                "0",
                "--no-figures",
                "--quiet",
                "--max-sharpness",
                "0.1",
            ]
        )
        == 0
    )
    row = pd.read_csv(out / "thresholds.csv").iloc[0]
    assert row["classification"] == "smooth" and "decades (> 0.1)" in row["reason"], row["reason"]
    assert "| max_sharpness | 0.1 |" in (out / "report.md").read_text()


class FakeWandb(types.ModuleType):
    def __init__(self, fail_log: bool = False) -> None:
        super().__init__("wandb")
        self.inits: list[dict] = []
        self.logged: list[str] = []
        self.finished = 0
        self.fail_log = fail_log

    def init(self, **kwargs):
        self.inits.append(kwargs)
        module = self

        class Run:
            def log(self, data: dict) -> None:
                if module.fail_log:
                    raise RuntimeError("disk full")
                module.logged += list(data)

        return Run()

    def Image(self, path: str) -> str:
        return path

    def Table(self, dataframe: pd.DataFrame) -> int:
        return len(dataframe)

    def finish(self) -> None:
        self.finished += 1


@pytest.mark.parametrize("fail_log", [False, True])
def test_wandb_logs_analysis_run_and_always_finishes(
    fail_log: bool, table_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    fake = FakeWandb(fail_log)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "out"
    assert analyze_main([str(table_csv), "--out", str(out), "--boot", "0", "--jobs", "1", "--wandb"]) == 0
    assert fake.finished == 1
    (init,) = fake.inits
    assert init["job_type"] == "analysis" and init["mode"] == "offline"
    assert init["group"] == "curve"  # the sweep name (a CSV's sweep defaults to its file name)
    if fail_log:
        assert "wandb logging failed (RuntimeError: disk full)" in capsys.readouterr().err
    else:
        assert "figures/scale_toy" in fake.logged and "tables/thresholds" in fake.logged
        assert "job_type=analysis, mode=offline" in capsys.readouterr().out


@pytest.mark.slow
def test_analyze_and_figures_run_where_torch_cannot_be_imported(table_csv: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    for name in ("torch", "lightning"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)]), "WANDB_MODE": "disabled"}
    out = tmp_path / "out"
    check = [sys.executable, "-c", "import torch"]
    assert subprocess.run(check, env=env, capture_output=True).returncode != 0
    analyze = [
        sys.executable,
        "-m",
        "emergence_lab",
        "analyze",
        str(table_csv),
        "--out",
        str(out),
        "--boot",
        "10",
    ]
    proc = subprocess.run(analyze, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert str(out / "thresholds.csv") in proc.stdout.split()
    png = out / "figures" / "scale_toy.png"
    before = png.read_bytes()
    figures = [sys.executable, "-m", "emergence_lab", "figures", str(out)]
    proc = subprocess.run(figures, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert str(png) in proc.stdout.split()
    assert png.read_bytes() == before


# ---- the study's analysis block (manifest.json) and --by ------------------------------------------------

STUDY = {
    "x": "n_params",
    "metrics": ["exact_match"],
    "heatmap_metric": "token_accuracy",
    "figures": ["scale", "phase"],
}


def study_sweep(root: Path, analysis: dict | None = STUDY, name: str = "demo") -> Path:
    """A sweep folder of 60 runs (2 depths x 10 widths x 3 seeds; exact match and token accuracy) with the
    bookkeeping `emergence sweep` leaves: manifest.json with the study's block, run.json, config.yaml."""
    from emergence_lab.analysis.synthetic import write_run_folders

    em = two_depth_table()
    df = pd.concat([em, em.assign(metric="token_accuracy", value=0.5 + 0.5 * em["value"])], ignore_index=True)
    df["run_id"] = name + "-" + df["run_id"]
    df["sweep"], df["schema_version"] = name, 1
    sweep = root / name
    for folder in write_run_folders(df, sweep):
        (folder / "config.yaml").write_text("seed: 0\n")
    write_manifest(sweep, analysis, name)
    return sweep


def options_of(out: Path) -> dict:
    import json

    import pyarrow.parquet as pq

    meta = pq.read_schema(out / "results.parquet").metadata[b"emergence_analysis"]
    return json.loads(meta)["options"]


FAST = ["--boot", "20", "--boot-points", "100", "--jobs", "1"]


def test_the_study_block_gives_the_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = study_sweep(tmp_path)
    out = tmp_path / "out"
    assert analyze_main([str(sweep), "--out", str(out), *FAST]) == 0
    assert "manifest.json" not in capsys.readouterr().err  # bookkeeping, not an input: no warning
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        f"{kind}_toy.{fmt}" for kind in ("phase", "scale") for fmt in ("pdf", "png", "svg")
    ]
    options = options_of(out)
    assert options["x"] == "n_params" and options["by"] == "depth"  # auto: two depths
    assert options["figures"] == ["scale", "phase"] and options["metrics"] == ["exact_match"]
    assert options["phase_metric"] == "token_accuracy" and options["study"] == str(sweep / "manifest.json")
    width = png_pixels(out / "figures" / "scale_toy.png").shape[1]
    assert width < 600  # one panel (the study's one metric), not two
    thresholds = pd.read_csv(out / "thresholds.csv")
    em = thresholds.query("metric == 'exact_match'").set_index("depth")
    assert em.loc[1, "classification"] == "absent" and em.loc[2, "classification"] == "emergent"
    assert abs(np.log10(em.loc[2, "threshold"]) - 5.5) < 0.15
    report = (out / "report.md").read_text()
    assert "Curves are grouped by depth (`--by depth`)" in report
    assert f"defaults from the study: `{sweep / 'manifest.json'}`" in report
    # `emergence figures` redraws the same figures, byte for byte, from the stored settings
    before = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    for path in (out / "figures").iterdir():
        path.unlink()
    assert figures_main([str(out), "--quiet", "--jobs", "1"]) == 0
    assert {p.name: p.read_bytes() for p in (out / "figures").iterdir()} == before


def test_options_on_the_command_line_beat_the_study_block(tmp_path: Path) -> None:
    sweep = study_sweep(tmp_path)
    out = tmp_path / "out"
    argv = [
        str(sweep),
        "--out",
        str(out),
        "--figures",
        "scale",
        "--by",
        "none",
        "--metrics",
        "exact_match,token_accuracy",
    ]
    assert analyze_main([*argv, "--phase-metric", "exact_match", *FAST, "--quiet"]) == 0
    options = options_of(out)
    assert options["figures"] == ["scale"] and options["by"] == "none"
    assert (
        options["metrics"] == ["exact_match", "token_accuracy"] and options["phase_metric"] == "exact_match"
    )
    assert options["x"] == "n_params"  # not given: still the study's
    assert {p.stem for p in (out / "figures").iterdir()} == {"scale_toy"}
    thresholds = pd.read_csv(out / "thresholds.csv")
    assert len(thresholds) == 2 and thresholds["depth"].isna().all()  # one pooled curve per metric
    assert "Curves pool every model shape (`--by none`)" in (out / "report.md").read_text()


def test_sweeps_with_different_study_blocks_use_the_first_and_warn_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = study_sweep(tmp_path, name="a")
    second = study_sweep(tmp_path, {**STUDY, "figures": ["phase"], "x": "width"}, name="b")
    same = study_sweep(tmp_path, STUDY, name="c")
    out = tmp_path / "out"
    assert analyze_main([str(first), str(second), str(same), "--out", str(out), *FAST, "--no-figures"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert "differ (figures, x)" in warnings[0] and str(first / "manifest.json") in warnings[0]
    assert str(second / "manifest.json") in warnings[0] and str(same / "manifest.json") not in warnings[0]
    assert options_of(out)["figures"] == ["scale", "phase"] and options_of(out)["x"] == "n_params"


def test_a_folder_of_sweeps_finds_their_blocks(tmp_path: Path) -> None:
    study_sweep(tmp_path / "sweeps", name="a")
    out = tmp_path / "out"
    assert analyze_main([str(tmp_path / "sweeps"), "--out", str(out), *FAST, "--no-figures", "--quiet"]) == 0
    assert options_of(out)["study"] == str(tmp_path / "sweeps" / "a" / "manifest.json")


@pytest.mark.parametrize(
    ("block", "argv", "needle"),
    [
        ({"figures": ["scale", "heatmap"]}, [], "analysis.figures: unknown figure kind 'heatmap'"),
        ({"x": "params"}, [], "analysis.x: unknown scale axis 'params'"),
        ({"metrics": "exact_match"}, [], "analysis.metrics must be a list of names"),
        (None, ["--by", "width"], "unknown --by 'width'"),
        (None, ["--figures", "scale,heat"], "unknown figure kind 'heat' in --figures"),
        (None, ["--by", "depth", "--x", "depth"], "--by depth needs a scale axis other than depth"),
    ],
)
def test_bad_study_values_and_grouping_options_are_usage_errors(
    block: dict | None, argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "demo"
    write_jsonl(sweep / "r1" / "results.jsonl", [schema_row()])
    write_manifest(sweep, block)
    assert analyze_main([str(sweep), "--out", str(tmp_path / "o"), *argv]) == 2
    one_line_error(capsys, needle)
    assert not (tmp_path / "o").exists()


def test_a_bad_block_value_overridden_on_the_command_line_is_fine(tmp_path: Path) -> None:
    sweep = study_sweep(tmp_path, {"figures": ["heatmap"]})
    argv = [str(sweep), "--out", str(tmp_path / "o"), "--figures", "phase", *FAST, "--quiet"]
    assert analyze_main(argv) == 0


# ---- only what finished --------------------------------------------------------------------------------


def failed_sweep(root: Path, statuses: tuple[str, ...]) -> Path:
    """Run folders written by hand: one run per status, each a small exact-match curve over 7 sizes."""
    import json

    for i, status in enumerate(statuses):
        for size_index, n_params in enumerate(10 ** sizes(4, 7, 7)):
            run_id = f"r{i}-{size_index}"
            rows = [
                schema_row(run_id=run_id, n_params=round(n_params), seed=i, step=step, value=0.1 * size_index)
                for step in (0, 100)
            ]
            write_jsonl(root / run_id / "results.jsonl", rows)
            (root / run_id / "run.json").write_text(json.dumps({"status": status}))
    return root


def test_a_sweep_where_every_run_failed_exits_1_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = failed_sweep(tmp_path / "sweep", ("failed", "interrupted"))
    out = tmp_path / "out"
    assert analyze_main([str(sweep), "--out", str(out), "--no-figures", "--boot", "5"]) == 1
    err = capsys.readouterr().err
    assert (
        "emergence analyze: error: no run left to analyse: all 14 run(s) were left out (failed, "
        "interrupted); --include-incomplete analyses runs that did not complete"
    ) in err
    assert err.count("  left out: r") == 14 and "left out: r0-0 (failed, not completed): " in err
    assert not (out / "thresholds.csv").exists()
    # opting in analyses them, and the report says loudly what they are
    args = [str(sweep), "--out", str(out), "--no-figures", "--boot", "5", "--include-incomplete", "--quiet"]
    assert analyze_main(args) == 0
    md = (out / "report.md").read_text()
    first = md.split("\n## ", 1)[0]
    assert "> **Warning:** EVERY run analysed here did not complete (7 failed, 7 interrupted)" in first
    assert (
        "<p class='alert'><strong>Warning:</strong> EVERY run analysed" in (out / "report.html").read_text()
    )


def test_runs_left_out_are_listed_in_the_report_and_survive_a_rebuild(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = failed_sweep(tmp_path / "sweep", ("completed", "completed", "failed"))
    out = tmp_path / "out"
    assert analyze_main([str(sweep), "--out", str(out), "--no-figures", "--boot", "5", "--quiet"]) == 0
    md = (out / "report.md").read_text()
    assert "> **Warning:** 7 run(s) left out of this analysis (7 failed): listed under Runs left out." in md
    section = md.split("## Runs left out", 1)[1].split("\n## ", 1)[0]
    for k in range(7):
        assert f"| r2-{k} | failed | not completed | {sweep / f'r2-{k}'} |" in section
    assert "r0-" not in section
    html = (out / "report.html").read_text()
    assert f"<td>r2-3</td><td>failed</td><td>not completed</td><td>{sweep / 'r2-3'}</td>" in html
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["status"].astype(str)) == {"completed"} and results["run_id"].nunique() == 14
    (out / "report.md").unlink()
    assert figures_main([str(out), "--quiet", "--jobs", "1"]) == 0  # (this one draws the figures too)
    rebuilt = (out / "report.md").read_text()
    assert rebuilt.split("## Runs left out", 1)[1].split("\n## ", 1)[0] == section
    assert "> **Warning:** 7 run(s) left out of this analysis (7 failed)" in rebuilt


def test_conflicting_duplicates_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    df = curve_table(sizes(4, 7, 6), sigmoid(0.0, 1.0, 5.5, 8.0), seeds=2)
    bad = df.iloc[[3]].assign(value=0.77)
    pd.concat([df, bad]).to_csv(path, index=False)
    assert analyze_main([str(path), "--out", str(tmp_path / "o"), "--no-figures"]) == 2
    one_line_error(capsys, "1 measurement(s) recorded twice with different values: run_id toy-")
    # exact duplicates only: a warning, and the seeds stay 2 per size
    pd.concat([df, df]).to_csv(path, index=False)
    out = tmp_path / "o2"
    assert analyze_main([str(path), "--out", str(out), "--no-figures", "--boot", "5", "--quiet"]) == 0
    assert set(pd.read_csv(out / "points.csv")["n_seeds"]) == {2}
    assert (
        f"dropped {len(df)} exact duplicate row(s) (the same measurement twice): {len(df)} in {path}"
        in (out / "report.md").read_text()
    )


def test_a_sweep_that_failed_at_step_0_exits_1_naming_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    for i in range(2):
        (tmp_path / "sweep" / f"r{i}").mkdir(parents=True)
        (tmp_path / "sweep" / f"r{i}" / "run.json").write_text(json.dumps({"status": "failed"}))
    out = tmp_path / "out"
    assert analyze_main([str(tmp_path / "sweep"), "--out", str(out), "--include-incomplete"]) == 1
    err = capsys.readouterr().err
    assert "emergence analyze: error: no run left to analyse: all 2 run(s) were left out (failed)\n" in err
    for i in range(2):
        assert f"left out: r{i} (failed, no results written): {tmp_path / 'sweep' / f'r{i}'}" in err
