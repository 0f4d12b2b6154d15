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
from analysis_helpers import curve_table, sigmoid, sizes

from analysis.cli import analyze_main, figures_main

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
    assert row["classification"] == "smooth" and "sharpness" in row["reason"]
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
