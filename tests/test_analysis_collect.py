"""Collecting run folders, sweep folders, CSV/Parquet tables and wandb runs into one tidy table."""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emergence_lab.analysis.aggregate import aggregate, final_rows, observations
from emergence_lab.analysis.collect import collect, collect_runs
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.runs import DuplicateError
from emergence_lab.analysis.schema import normalise
from emergence_lab.contract import RESULTS_FILE, SCHEMA_VERSION

from analysis_helpers import schema_row, write_jsonl


def run_rows(
    run_id: str, n_params: int, steps=(0, 100, 200), seed: int = 0, value=lambda s: s / 1000
) -> list[dict]:
    return [
        schema_row(run_id=run_id, n_params=n_params, step=s, seed=seed, metric=m, value=value(s))
        for s in steps
        for m in ("exact_match", "token_accuracy")
    ]


def test_sweep_folder_is_searched_recursively_and_status_recorded(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    write_jsonl(sweep / "a" / "results.jsonl", run_rows("a", 1000))
    (sweep / "a" / "run.json").write_text(json.dumps({"status": "completed"}))
    write_jsonl(sweep / "nested" / "b" / "results.jsonl", run_rows("b", 2000, seed=1))
    (sweep / "nested" / "b" / "run.json").write_text(json.dumps({"status": "failed", "reason": "nan"}))
    console = Console(quiet=True)
    df = collect([str(sweep)], console, include_incomplete=True)
    assert len(df) == 12
    assert sorted(df["run_id"].astype(str).unique()) == ["a", "b"]
    status = df.groupby("run_id", observed=True)["status"].first().astype(str).to_dict()
    assert status == {"a": "completed", "b": "failed"}  # with --include-incomplete: kept, with their status
    assert console.warnings == [
        "1 run(s) did not complete and are analysed anyway (--include-incomplete): 1 failed"
    ]
    assert df["value"].dtype == np.float64
    assert str(df["step"].dtype) == "Int64"


def test_sweep_bookkeeping_is_skipped_silently_but_malformed_lm_eval_files_still_warn(tmp_path: Path) -> None:
    sweep = tmp_path / "demo"
    sweep.mkdir()
    manifest = {"sweep": "demo", "runs": [{"run_id": "a"}], "analysis": {"x": "n_params"}}
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    for run_id, done in (("a", True), ("pending", False)):
        run = sweep / run_id
        if done:
            write_jsonl(run / "results.jsonl", run_rows(run_id, 1000))
        for sub in (".hydra", ".submitit/123", "checkpoints", "wandb/run-1/files"):
            (run / sub).mkdir(parents=True, exist_ok=True)
        (run / "run.json").write_text(json.dumps({"status": "completed" if done else "running"}))
        (run / "config.yaml").write_text("seed: 0\n")
        (run / ".submitit" / "123" / "job.json").write_text("{}")
        (run / "wandb" / "run-1" / "files" / "wandb-summary.json").write_text('{"loss": 1}')
        (run / "checkpoints" / "meta.json").write_text("{}")
    # the run that never wrote a result (its process is gone: interrupted) is listed, nothing else is said
    left = (
        "1 run(s) left out (1 interrupted), each listed in the console and the report; --include-incomplete "
        "analyses runs that did not complete"
    )
    console = Console(quiet=True)
    result = collect_runs([str(sweep)], console)
    assert len(result.table) == 6 and console.warnings == [left]
    assert [(r.run_id, r.status, r.why) for r in result.left_out] == [
        ("pending", "interrupted", "no results written")
    ]
    (sweep / "lm_eval").mkdir()
    (sweep / "lm_eval" / "results.json").write_text(json.dumps({"config": {}}))  # no 'results'
    console = Console(quiet=True)
    assert len(collect([str(sweep)], console)) == 6
    assert len(console.warnings) == 2 and console.warnings[1] == left
    assert "lm_eval/results.json: skipped, not an lm-evaluation-harness result file" in console.warnings[0]
    console = Console(quiet=True)  # the manifest named as an input: say what it is
    assert collect([str(sweep / "manifest.json")], console).empty
    assert console.warnings == [
        f"{sweep / 'manifest.json'}: skipped, a sweep's or run's bookkeeping file (pass the folder instead)"
    ]


def test_malformed_lines_are_skipped_with_a_warning_naming_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "run" / "results.jsonl",
        run_rows("r", 1000),
        extra_lines=[
            "not json at all\n",
            json.dumps(schema_row(value="high")) + "\n",
            json.dumps({k: v for k, v in schema_row().items() if k != "metric"}) + "\n",
            json.dumps(schema_row(schema_version=3)) + "\n",
            '{"schema_version": 1, "run_id": "r", "task": "addi',  # torn last line after a crash
        ],
    )
    console = Console(quiet=True)
    df = collect([str(tmp_path)], console)
    assert len(df) == 6
    text = "\n".join(console.warnings)
    for line in (7, 8, 9, 10, 11):
        assert f"{path}:{line}:" in text
    assert "value is not a number" in text and "missing metric" in text and "schema_version 3" in text


@pytest.mark.parametrize("torn", [False, True])
def test_schema_version_1_and_2_rows_load_side_by_side(tmp_path: Path, torn: bool) -> None:
    """A v1 file (no n_examples) and a v2 file (with it) load together, through the fast parser and
    through the line-by-line one (a torn last line); v1's n_examples stays missing, never guessed."""
    v1 = {k: v for k, v in schema_row(run_id="old", schema_version=1).items() if k != "n_examples"}
    v2 = schema_row(run_id="new", schema_version=2, n_examples=500)
    write_jsonl(tmp_path / "old" / "results.jsonl", [v1], ['{"torn' if torn else ""])
    write_jsonl(tmp_path / "new" / "results.jsonl", [v2])
    console = Console(quiet=True)
    df = collect([str(tmp_path)], console)
    assert len(console.warnings) == int(torn)
    got = df.set_index(df["run_id"].astype(str))
    assert got.loc["new", "n_examples"] == 500 and pd.isna(got.loc["old", "n_examples"])
    assert str(df["n_examples"].dtype) == "Int64"
    assert sorted(got["schema_version"].tolist()) == [1, 2]
    obs = observations(df, "n_params", Console(quiet=True))
    assert dict(zip(obs["run_id"].astype(str), obs["n_examples"], strict=True))["new"] == 500


def test_csv_with_and_without_n_examples(tmp_path: Path) -> None:
    base = pd.DataFrame({"task": ["t", "t"], "metric": ["exact_match"] * 2, "value": [0.1, 0.9]})
    base.assign(n_params=[1e4, 1e5]).to_csv(tmp_path / "v1.csv", index=False)
    base.assign(n_params=[1e6, 1e7], n_examples=[200, 300]).to_csv(tmp_path / "v2.csv", index=False)
    df = collect([str(tmp_path / "v1.csv"), str(tmp_path / "v2.csv")], Console(quiet=True))
    got = dict(zip(df["n_params"].tolist(), df["n_examples"].tolist(), strict=True))
    assert got[10**6] == 200 and got[10**7] == 300 and pd.isna(got[10**4]) and pd.isna(got[10**5])


def test_empty_and_unreadable_inputs_warn(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("hello")
    console = Console(quiet=True)
    df = collect([str(tmp_path / "empty"), str(tmp_path / "notes.txt")], console)
    assert df.empty
    assert any("no valid rows" in w for w in console.warnings)
    assert any("notes.txt" in w for w in console.warnings)


def test_csv_and_parquet_with_minimum_columns(tmp_path: Path) -> None:
    minimal = pd.DataFrame(
        {
            "task": ["t"] * 4,
            "metric": ["exact_match"] * 4,
            "value": [0.0, 0.1, 0.9, 1.0],
            "n_params": [1e4, 1e5, 1e6, 1e7],
        }
    )
    minimal.to_csv(tmp_path / "min.csv", index=False)
    minimal.assign(task="u").to_parquet(tmp_path / "min.parquet")
    console = Console(quiet=True)
    df = collect([str(tmp_path / "min.csv"), str(tmp_path / "min.parquet")], console)
    assert len(df) == 8
    assert set(df["subtask"].astype(str)) == {"all"} and set(df["split"].astype(str)) == {"test"}
    obs = observations(df, "n_params", console)
    assert len(obs) == 8  # no step column: every row is final
    assert console.warnings == []


def test_table_missing_columns_or_values_is_reported(tmp_path: Path) -> None:
    pd.DataFrame({"task": ["t"], "value": [1.0], "n_params": [10]}).to_csv(
        tmp_path / "nometric.csv", index=False
    )
    pd.DataFrame(
        {"task": ["t", "t", None], "metric": ["m"] * 3, "value": [1.0, "x", 2.0], "n_params": [1, 2, 3]}
    ).to_csv(tmp_path / "badrows.csv", index=False)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    console = Console(quiet=True)
    df = collect([str(tmp_path / p) for p in ("nometric.csv", "badrows.csv", "broken.parquet")], console)
    assert len(df) == 1
    text = "\n".join(console.warnings)
    assert "nometric.csv: skipped, missing column(s) metric" in text
    assert "badrows.csv: skipped 2 malformed line(s): 3, 4" in text
    assert "broken.parquet: skipped, cannot read table" in text


def test_scale_column_follows_x(tmp_path: Path) -> None:
    pd.DataFrame({"task": ["t"], "metric": ["m"], "value": [1.0], "flops": [1e12]}).to_csv(
        tmp_path / "f.csv", index=False
    )
    console = Console(quiet=True)
    assert collect([str(tmp_path / "f.csv")], console).empty
    assert len(collect([str(tmp_path / "f.csv")], Console(quiet=True), scale_column="flops")) == 1


def test_final_rows_take_the_largest_step_per_run() -> None:
    rows = run_rows("a", 1000) + run_rows("b", 1000, steps=(0, 100), seed=1)
    rows.append(schema_row(run_id="a", step=300, metric="exact_match", value=0.9))  # a partial later eval
    df = normalise(pd.DataFrame(rows))
    final = final_rows(df)
    got = {(r.run_id, r.metric): (r.step, r.value) for r in final.itertuples()}
    assert got[("a", "exact_match")] == (300, 0.9)
    assert got[("a", "token_accuracy")] == (200, 0.2)
    assert got[("b", "exact_match")] == (100, 0.1)
    obs = observations(df, "step", Console(quiet=True))
    assert (obs["x"] > 0).all() and len(obs) == len(df) - 4  # every step except step 0


def test_aggregate_mean_std_seeds_and_bootstrap_ci() -> None:
    values = [0.1, 0.2, 0.3, 0.6]
    rows = [schema_row(run_id=f"r{i}", seed=i, value=v) for i, v in enumerate(values)]
    rows.append(schema_row(run_id="big", n_params=10**6, value=0.5))
    df = normalise(pd.DataFrame(rows))
    df["stderr"] = np.where(df["run_id"].astype(str) == "big", 0.05, np.nan)
    obs = observations(df, "n_params", Console(quiet=True))
    points = aggregate(obs, "n_params", n_boot=2000, seed=0).set_index("x")
    small = points.loc[98304]
    assert small["mean"] == pytest.approx(0.3)
    assert small["std"] == pytest.approx(np.std(values, ddof=1))
    assert small["n_seeds"] == 4
    assert small["ci_low"] < 0.3 < small["ci_high"]
    assert 0.1 <= small["ci_low"] <= 0.2 and 0.4 <= small["ci_high"] <= 0.6
    big = points.loc[10**6]  # one seed: mean +- 1.96 stderr
    assert (big["ci_low"], big["ci_high"]) == pytest.approx((0.5 - 0.098, 0.5 + 0.098))
    again = aggregate(obs, "n_params", n_boot=2000, seed=0).set_index("x")
    pd.testing.assert_frame_equal(points, again)


class FakeFile:
    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def download(self, root: str, replace: bool = False) -> None:
        Path(root, self.name).write_text(self.text)


class FakeRun:
    def __init__(
        self, name: str, config: dict, history: list[dict], files: list[FakeFile] = (), state="finished"
    ):
        self.name, self.id, self.group, self.state = name, name, config.get("sweep"), state
        self.config, self._history, self._files = config, history, list(files)

    def scan_history(self):
        return iter(self._history)

    def files(self, names=None, **_):
        return [f for f in self._files if names is None or f.name in names]


class FakeApi:
    calls: typing.ClassVar[list] = []

    def __init__(self, runs: list[FakeRun]) -> None:
        self._runs = runs

    def runs(self, path: str, filters=None, **_):
        FakeApi.calls.append((path, filters))
        return [r for r in self._runs if not filters or r.group == filters.get("group")]


def test_wandb_runs_from_history_and_attached_results(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"task": "addition", "sweep": "demo", "seed": 1, "width": 32, "depth": 2, "n_params": 24576}
    history = [
        {
            "trainer/global_step": 0,
            "test/exact_match/all": 0.0,
            "test/token_accuracy/place0": 0.2,
            "train/loss": 3.0,
        },
        {"trainer/global_step": 50, "test/exact_match/all": 0.4, "ood/loss/all": 1.5, "_runtime": 12},
    ]
    attached = FakeFile("results.jsonl", json.dumps(schema_row(run_id="jsonl-run", sweep="demo")) + "\n")
    runs = [
        FakeRun("hist-run", {**config, "run_id": "hist-run"}, history),
        FakeRun("jsonl-run", config, [], files=[attached], state="crashed"),
        FakeRun("other", {**config, "sweep": "elsewhere"}, history),
    ]
    fake = types.ModuleType("wandb")
    fake.Api = lambda: FakeApi(runs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    console = Console(quiet=True)
    result = collect_runs(["wandb:me/proj/demo"], console)
    assert [(r.run_id, r.status, r.folder) for r in result.left_out] == [
        ("jsonl-run", "failed", "wandb:me/proj/demo")
    ]
    df = collect(["wandb:me/proj/demo"], Console(quiet=True), include_incomplete=True)
    assert FakeApi.calls[-1] == ("me/proj", {"group": "demo"})
    hist = df.loc[df["run_id"].astype(str) == "hist-run"]
    got = {(r.split, r.metric, r.subtask, r.step): r.value for r in hist.itertuples()}
    assert got == {
        ("test", "exact_match", "all", 0): 0.0,
        ("test", "token_accuracy", "place0", 0): 0.2,
        ("test", "exact_match", "all", 50): 0.4,
        ("ood", "loss", "all", 50): 1.5,
    }
    assert set(hist["task"].astype(str)) == {"addition"} and set(hist["width"]) == {32}
    jsonl = df.loc[df["run_id"].astype(str) == "jsonl-run"]
    assert len(jsonl) == 1 and jsonl["status"].astype(str).iloc[0] == "failed"
    assert "other" not in set(df["run_id"].astype(str))


def test_wandb_failure_is_a_warning_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("wandb")

    def broken_api():
        raise ConnectionError("no network")

    fake.Api = broken_api  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    console = Console(quiet=True)
    df = collect(["wandb:me/proj"], console)
    assert df.empty
    assert console.warnings == [
        "wandb:me/proj: skipped, cannot list wandb runs (ConnectionError: no network)"
    ]


CSV_HEADER = "task,metric,value,n_params,seed\n"


def test_ragged_csv_lines_are_skipped_one_by_one_and_the_good_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(
        CSV_HEADER
        + "t,exact_match,0.1,1000,0,EXTRA\n"  # line 2: a longer first row must not become the index
        + "t,exact_match,0.2,2000,0\n"  # line 3: good
        + '"t\nwrapped",exact_match,0.3,3000,0\n'  # lines 4-5: one quoted record over two lines, good
        + "\n"  # line 6: blank
        + "t,exact_match,0.4,4000,0,x,y\n"  # line 7: two extra fields
        + "t,exact_match\n"  # line 8: too short, no value
        + "t,exact_match,0.5,5000,1\n"  # line 9: good
    )
    console = Console(quiet=True)
    df = collect([str(path)], console)
    got = sorted(zip(df["n_params"].tolist(), df["value"].tolist(), strict=True))
    assert got == [(2000, 0.2), (3000, 0.3), (5000, 0.5)]
    assert set(df["task"].astype(str)) == {"t", "t\nwrapped"}
    assert console.warnings == [
        f"{path}:2: skipped malformed line (expected 5 fields, saw 6)",
        f"{path}:7: skipped malformed line (expected 5 fields, saw 7)",
        f"{path}: skipped 1 malformed line(s): 8",
    ]


def test_many_ragged_csv_lines_are_counted_after_the_first_few(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    good = [f"t,exact_match,0.5,{1000 * (i + 1)},0\n" for i in range(3)]
    path.write_text(CSV_HEADER + "".join(good) + "t,exact_match,0.5,9,0,extra\n" * 8)
    console = Console(quiet=True)
    df = collect([str(path)], console)
    assert sorted(df["n_params"].tolist()) == [1000, 2000, 3000]
    assert console.warnings[:5] == [
        f"{path}:{line}: skipped malformed line (expected 5 fields, saw 6)" for line in range(5, 10)
    ]
    assert console.warnings[5:] == [f"{path}: 3 more malformed lines skipped"]


def test_non_numeric_scale_values_are_skipped_with_file_line_and_column(tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"  # read by the fast parser: the line numbers are found afterwards
    clean.write_text(
        CSV_HEADER
        + "t,exact_match,0.1,1000,0\n"  # line 2
        + "\n"  # line 3: blank, so line = row + 2 would be wrong below
        + "t,exact_match,0.2,abc,0\n"  # line 4
        + "t,exact_match,0.3,,0\n"  # line 5: empty, kept as missing
        + "t,exact_match,0.4,4e3,0\n"  # line 6
    )
    ragged = tmp_path / "ragged.csv"  # read line by line: the lines are known from the start
    ragged.write_text(CSV_HEADER + "t,m,0.1,1000,0,x\n" + "t,m,0.2,1e4,0\n" + "t,m,0.3,ten,0\n")
    frame = pd.DataFrame({"task": ["t"] * 3, "metric": ["m"] * 3, "value": [0.1, 0.2, 0.3]})
    frame.assign(flops=["1e12", "lots", None]).to_parquet(tmp_path / "flops.parquet")
    console = Console(quiet=True)
    df = collect([str(clean), str(ragged)], console)
    got = dict(zip(df["value"].tolist(), df["n_params"].tolist(), strict=True))
    assert sorted(got) == [0.1, 0.2, 0.3, 0.4]  # lines 4 of both files are gone
    assert (got[0.1], got[0.2], got[0.4]) == (1000, 10000, 4000) and pd.isna(got[0.3])
    assert console.warnings == [
        f"{clean}: skipped 1 line(s) whose n_params is not a number: 4",
        f"{ragged}:2: skipped malformed line (expected 5 fields, saw 6)",
        f"{ragged}: skipped 1 line(s) whose n_params is not a number: 4",
    ]
    console = Console(quiet=True)
    df = collect([str(tmp_path / "flops.parquet")], console, scale_column="flops")
    assert df["value"].tolist() == [0.1, 0.3] and df["flops"].iloc[0] == 1e12 and pd.isna(df["flops"].iloc[1])
    assert console.warnings == [
        f"{tmp_path / 'flops.parquet'}: skipped 1 row(s) whose flops is not a number: 2"
    ]


def test_wandb_attached_results_report_their_skipped_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps(schema_row(run_id="r", value=0.7)) + "\n" + "not json\n"
    runs = [FakeRun("r", {"sweep": "demo"}, [], files=[FakeFile("results.jsonl", text)])]
    fake = types.ModuleType("wandb")
    fake.Api = lambda: FakeApi(runs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    console = Console(quiet=True)
    df = collect(["wandb:me/proj/demo"], console)
    assert df["value"].tolist() == [0.7] and df["status"].astype(str).tolist() == ["completed"]
    assert len(console.warnings) == 1
    assert console.warnings[0].startswith(
        "wandb:me/proj/demo: run r, results.jsonl:2: skipped malformed line ("
    )


def test_wandb_attached_results_are_the_source_and_history_only_a_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run with an attached results.jsonl is read from it alone (every contract column, exactly as
    training wrote it); its logged history is ignored. A run without one falls back to the logger's keys."""
    history = [{"trainer/global_step": 10, "test/exact_match/all": 0.9, "test/brier/all": 0.2}]
    rows = [schema_row(run_id="both", step=100, value=0.25), schema_row(run_id="both", step=200, value=0.5)]
    attached = FakeFile(RESULTS_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    config = {"task": "addition", "sweep": "demo", "seed": 0, "width": 64, "depth": 2}
    runs = [
        FakeRun("both", {**config, "run_id": "both"}, history, files=[attached]),
        FakeRun("logged", {**config, "run_id": "logged", "tokens_per_step": 8}, history),
    ]
    fake = types.ModuleType("wandb")
    fake.Api = lambda: FakeApi(runs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    console = Console(quiet=True)
    df = collect(["wandb:me/proj/demo"], console)
    assert console.warnings == []
    both = df.loc[df["run_id"].astype(str) == "both"]
    assert both["step"].tolist() == [100, 200] and both["value"].tolist() == [0.25, 0.5]
    assert both["answer_len"].tolist() == [4, 4] and both["n_params"].tolist() == [98304, 98304]
    logged = df.loc[df["run_id"].astype(str) == "logged"].sort_values("metric")
    assert logged["metric"].astype(str).tolist() == ["brier", "exact_match"]
    assert logged["value"].tolist() == [0.2, 0.9] and logged["tokens"].tolist() == [80, 80]
    assert logged["answer_len"].isna().all() and set(logged["schema_version"]) == {SCHEMA_VERSION}


# ---- what counts: finished runs, the newest generation, no duplicates -------------------------------------


def write_run(sweep: Path, run_id: str, status: str | None, rows: list[dict], **info: object) -> Path:
    """A run folder by hand: results.jsonl and (unless status is None) run.json."""
    folder = sweep / run_id
    write_jsonl(folder / RESULTS_FILE, rows)
    if status is not None:
        (folder / "run.json").write_text(json.dumps({"run_id": run_id, "status": status, **info}))
    return folder


def test_only_completed_runs_count_and_every_other_is_listed(tmp_path: Path) -> None:
    import fcntl

    sweep = tmp_path / "sweep"
    for i, status in enumerate(("completed", "failed", "interrupted", "pending", "running", "running")):
        write_run(sweep, f"r{i}", status, run_rows(f"r{i}", 1000 * (i + 1), seed=i))
    write_run(sweep, "r6", None, run_rows("r6", 7000, seed=6))  # no run.json: status unknown, kept
    (sweep / "r4" / ".lock").touch()  # r4's lock is free: its process is gone, so it is interrupted
    (sweep / "r5" / ".lock").touch()
    with open(sweep / "r5" / ".lock", "a") as held:  # r5 still trains: its lock is held
        fcntl.flock(held, fcntl.LOCK_EX)
        console = Console(quiet=True)
        result = collect_runs([str(sweep)], console)
    assert sorted(result.table["run_id"].astype(str).unique()) == ["r0", "r6"]
    got = {(r.run_id, r.status, r.folder) for r in result.left_out}
    assert got == {
        ("r1", "failed", str(sweep / "r1")),
        ("r2", "interrupted", str(sweep / "r2")),
        ("r3", "pending", str(sweep / "r3")),
        ("r4", "interrupted", str(sweep / "r4")),
        ("r5", "running", str(sweep / "r5")),
    }
    assert {r.why for r in result.left_out} == {"not completed"}
    assert console.warnings == [
        "5 run(s) left out (1 failed, 2 interrupted, 1 pending, 1 running), each listed in the console and "
        "the report; --include-incomplete analyses runs that did not complete"
    ]
    everything = collect_runs([str(sweep)], Console(quiet=True), include_incomplete=True)
    assert everything.left_out == [] and everything.table["run_id"].nunique() == 7


def test_a_sweep_where_every_run_failed_says_so(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for i in range(3):
        write_run(sweep, f"r{i}", "failed", run_rows(f"r{i}", 1000 * (i + 1), steps=(0,), seed=i))
    console = Console(quiet=True)
    result = collect_runs([str(sweep)], console)
    assert result.table.empty and len(result.left_out) == 3
    assert console.warnings[-1] == "no run is left to analyse: all 3 run(s) were left out"
    console = Console(quiet=True)
    result = collect_runs([str(sweep)], console, include_incomplete=True)
    assert len(result.table) == 6
    assert console.warnings[-1] == (
        "EVERY run analysed is incomplete (3 failed): the verdicts describe runs that did not finish"
    )


def test_runs_that_failed_before_writing_any_result_are_listed(tmp_path: Path) -> None:
    """Every run failed at step 0, before its first evaluation: no rows, and every run named."""
    sweep = tmp_path / "sweep"
    for i in range(3):
        (sweep / f"r{i}").mkdir(parents=True)
        (sweep / f"r{i}" / "run.json").write_text(json.dumps({"status": "failed", "reason": "CUDA OOM"}))
    (sweep / "r3").mkdir()
    (sweep / "r3" / RESULTS_FILE).write_text("{torn\n")  # wrote only a torn line
    (sweep / "r3" / "run.json").write_text(json.dumps({"status": "failed"}))
    console = Console(quiet=True)
    result = collect_runs([str(sweep)], console, include_incomplete=True)
    assert result.table.empty
    assert sorted((r.run_id, r.status, r.why) for r in result.left_out) == [
        ("r0", "failed", "no results written"),
        ("r1", "failed", "no results written"),
        ("r2", "failed", "no results written"),
        ("r3", "failed", "no valid results"),
    ]
    assert console.warnings[-1] == "no run is left to analyse: all 4 run(s) were left out"


def test_csv_status_column_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "task": ["t"] * 3,
            "metric": ["exact_match"] * 3,
            "value": [0.1, 0.2, 0.3],
            "n_params": [1e4, 1e5, 1e6],
            "seed": [0, 0, 0],
            "status": ["completed", "failed", None],
        }
    ).to_csv(path, index=False)
    result = collect_runs([str(path)], Console(quiet=True))
    assert sorted(result.table["value"].tolist()) == [0.1, 0.3]
    assert [(r.status, r.folder) for r in result.left_out] == [("failed", str(path))]


def test_exact_duplicate_rows_are_dropped_with_a_warning_naming_where(tmp_path: Path) -> None:
    """A CSV concatenated with itself: 3 seeds must stay 3 seeds, not 6."""
    path = tmp_path / "twice.csv"
    once = pd.DataFrame(
        {
            "task": ["t"] * 3,
            "metric": ["exact_match"] * 3,
            "value": [0.0, 0.0, 0.5],  # two seeds with the same value are not duplicates
            "n_params": [1000] * 3,
            "seed": [0, 1, 2],
        }
    )
    pd.concat([once, once, once]).to_csv(path, index=False)
    console = Console(quiet=True)
    df = collect([str(path)], console)
    assert sorted(df["seed"].tolist()) == [0, 1, 2] and sorted(df["value"].tolist()) == [0.0, 0.0, 0.5]
    assert console.warnings == [f"dropped 6 exact duplicate row(s) (the same measurement twice): 6 in {path}"]
    points = aggregate(observations(df, "n_params", Console(quiet=True)), "n_params")
    assert points["n_seeds"].tolist() == [3]


def test_the_same_run_folder_in_two_places_counts_once(tmp_path: Path) -> None:
    rows = run_rows("a", 1000)
    write_run(tmp_path / "one", "a", "completed", rows)
    write_run(tmp_path / "copy", "a", "completed", rows)
    console = Console(quiet=True)
    df = collect([str(tmp_path / "one"), str(tmp_path / "copy")], console)
    assert len(df) == 6
    assert console.warnings == [
        f"dropped 6 exact duplicate row(s) (the same measurement twice): 6 in {tmp_path / 'copy' / 'a'} "
        f"(repeating {tmp_path / 'one' / 'a'})"
    ]


def test_rows_without_run_ids_or_seeds_are_never_called_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "anonymous.csv"
    pd.DataFrame({"task": ["t"] * 2, "metric": ["m"] * 2, "value": [0.0, 0.0], "n_params": [10, 10]}).to_csv(
        path, index=False
    )
    console = Console(quiet=True)
    assert len(collect([str(path)], console)) == 2 and console.warnings == []


def test_conflicting_duplicates_are_an_error_that_names_them(tmp_path: Path) -> None:
    rows = run_rows("a", 1000)
    rows.append(schema_row(run_id="a", n_params=1000, step=200, metric="exact_match", value=0.9))
    write_run(tmp_path, "a", "completed", rows)
    with pytest.raises(DuplicateError) as info:
        collect([str(tmp_path)], Console(quiet=True))
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "1 measurement(s) recorded twice with different values: run_id a, task addition, split test, "
        f"subtask all, metric exact_match, step 200: 0.2 vs 0.9 ({tmp_path / 'a'})"
    )


def test_a_relaunched_generation_replaces_the_older_one(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    old, new = "addition-w8-d1-s0-aaaaaaaa", "addition-w8-d1-s0-bbbbbbbb"
    other = "addition-w8-d1-s1-cccccccc"  # another seed: not a generation of the same run
    write_run(
        sweep, old, "completed", run_rows(old, 1000, value=lambda s: 0.9), ended_at="2026-01-02T00:00:00"
    )
    write_run(
        sweep, new, "completed", run_rows(new, 1000, value=lambda s: 0.1), ended_at="2026-01-03T00:00:00"
    )
    write_run(sweep, other, "completed", run_rows(other, 1000, seed=1), started_at="2026-01-01T00:00:00")
    console = Console(quiet=True)
    result = collect_runs([str(sweep)], console)
    assert sorted(result.table["run_id"].astype(str).unique()) == [new, other]
    assert set(result.table["value"].loc[result.table["run_id"].astype(str) == new]) == {0.1}
    assert [(r.run_id, r.status, r.why) for r in result.left_out] == [
        (old, "completed", f"older generation of {new}")
    ]
    assert console.warnings[0] == (
        f"{old} and {new} are one task, shape and seed under different configs (relaunched after a config "
        f"change?): only the newest, {new}, counts (--keep-all-generations keeps all)"
    )
    console = Console(quiet=True)
    both = collect_runs([str(sweep)], console, keep_all_generations=True)
    assert both.table["run_id"].nunique() == 3 and both.left_out == []
    assert console.warnings == [
        f"{old} and {new} are one task, shape and seed under different configs; all count"
    ]


def test_generations_without_run_json_times_are_ordered_by_file_mtime(tmp_path: Path) -> None:
    import os

    sweep = tmp_path / "sweep"
    old, new = "addition-w8-d1-s0-aaaaaaaa", "addition-w8-d1-s0-bbbbbbbb"
    # the newer run sorts first by name: only the time can pick it
    write_run(sweep, new, "completed", run_rows(new, 1000))
    write_run(sweep, old, "completed", run_rows(old, 1000))
    os.utime(sweep / old / RESULTS_FILE, (1_000_000, 1_000_000))
    os.utime(sweep / new / RESULTS_FILE, (2_000_000, 2_000_000))
    result = collect_runs([str(sweep)], Console(quiet=True))
    assert set(result.table["run_id"].astype(str)) == {new}
    assert [r.run_id for r in result.left_out] == [old]


@pytest.mark.parametrize("varied", [False, True])
def test_a_study_that_varies_a_setting_at_one_shape_is_not_a_relaunch(tmp_path: Path, varied: bool) -> None:
    """The manifest tells the two apart: a relaunch plans the same overrides again (the config file changed);
    a study that varies the learning rate at one shape plans each run with its own overrides."""
    sweep = tmp_path / "sweep"
    a, b = "addition-w8-d1-s0-aaaaaaaa", "addition-w8-d1-s0-bbbbbbbb"
    base = ["model.width=8", "model.depth=1", "seed=0"]
    runs = [
        {"run_id": a, "overrides": [*base, "optim.lr=0.001"] if varied else base},
        {"run_id": b, "overrides": [*base, "optim.lr=0.003"] if varied else base},
    ]
    sweep.mkdir()
    (sweep / "manifest.json").write_text(json.dumps({"sweep": "s", "runs": runs}))
    write_run(sweep, a, "completed", run_rows(a, 1000), ended_at="2026-01-02T00:00:00")
    write_run(sweep, b, "completed", run_rows(b, 1000), ended_at="2026-01-03T00:00:00")
    console = Console(quiet=True)
    result = collect_runs([str(sweep)], console)
    if varied:
        assert result.table["run_id"].nunique() == 2 and result.left_out == [] and console.warnings == []
    else:
        assert set(result.table["run_id"].astype(str)) == {b}
        assert [r.why for r in result.left_out] == [f"older generation of {b}"]


def test_subtask_weights_from_run_json_become_the_subtask_weight_column(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    rows = [
        schema_row(run_id="p", n_params=1000, seed=0, subtask=sub, metric="exact_match", value=0.5)
        for sub in ("all", "task0", "task1", "pos0")
    ]
    write_run(sweep, "p", "completed", rows, subtask_weights={"task0": 0.75, "task1": 0.25})
    write_run(sweep, "q", "completed", run_rows("q", 2000, seed=1))  # a task without subtask weights
    table = collect([str(sweep)], Console(quiet=True))
    assert table["subtask_weight"].dtype == "float64"
    got = table[table["run_id"] == "p"].set_index("subtask")["subtask_weight"]
    assert got["task0"] == 0.75 and got["task1"] == 0.25
    assert np.isnan(got["all"]) and np.isnan(got["pos0"])
    assert table[table["run_id"] == "q"]["subtask_weight"].isna().all()
