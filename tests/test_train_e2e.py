"""The real `emergence train` command on a tiny model: files, rows, determinism, errors."""

import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from emergence_lab.metrics import METRICS
from emergence_lab.results import COLUMNS, SCHEMA_VERSION

pytestmark = pytest.mark.slow


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def values(run_dir: Path) -> dict[tuple, float]:
    return {(r["split"], r["subtask"], r["metric"], r["step"]): r["value"] for r in rows(run_dir)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("run") / "r"
    proc = run_cli("train", *TINY, f"hydra.run.dir={run_dir}")
    return run_dir, proc.stdout


def test_run_folder_has_everything(tiny_run):
    run_dir, stdout = tiny_run
    assert "[completed]" in stdout
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["reason"] is None
    assert info["step"] == info["max_steps"] == 30
    assert len(info["git_sha"]) == 40 and isinstance(info["git_dirty"], bool)
    assert info["versions"]["torch"] and info["versions"]["lightning"]
    assert info["wall_time_s"] > 0
    assert (run_dir / "config.yaml").read_text().count("width: 16") == 1
    assert (run_dir / "checkpoints" / "last.ckpt").stat().st_size > 0


def test_every_metric_at_every_eval_step(tiny_run):
    run_dir, _ = tiny_run
    data = rows(run_dir)
    assert all(set(r) == set(COLUMNS) for r in data)
    assert {r["schema_version"] for r in data} == {SCHEMA_VERSION}
    answer_len = {"test": 3, "ood": 4}  # 2-digit sums have 3 digits, 3-digit sums 4
    for split, length in answer_len.items():
        for step in (0, 10, 20, 30):
            at = [r for r in data if r["split"] == split and r["step"] == step]
            assert {r["metric"] for r in at if r["subtask"] == "all"} == set(METRICS)
            per_position = [r for r in at if r["subtask"] != "all"]
            assert len(per_position) == length and {r["metric"] for r in per_position} == {"token_accuracy"}
            assert {r["answer_len"] for r in at} == {length}
    first = data[0]
    assert (first["width"], first["depth"], first["n_heads"], first["seed"]) == (16, 1, 1, 0)
    assert first["n_params"] == 12 * 16 * 16 + 3 * 16
    tokens_per_step = 128 * (3 * 2 + 3 - 1)
    at30 = [r for r in data if r["step"] == 30]
    assert {r["tokens"] for r in at30} == {30 * tokens_per_step}
    flops_per_token = 6 * first["n_params"] + 12 * 1 * 8 * 16
    assert {r["flops"] for r in at30} == {float(30 * tokens_per_step * flops_per_token)}
    for r in data:
        if r["metric"] in ("exact_match", "token_accuracy", "edit_distance"):
            assert 0.0 <= r["value"] <= 1.0
        if r["metric"] == "answer_logprob":
            assert r["value"] <= 0.0


def test_training_improves_the_loss(tiny_run):
    v = values(tiny_run[0])
    assert v[("test", "all", "loss", 30)] < v[("test", "all", "loss", 0)] - 0.2


def test_same_seed_same_numbers_other_seed_differs(tiny_run, tmp_path):
    run_cli("train", *TINY, f"hydra.run.dir={tmp_path / 'again'}")
    run_cli("train", *TINY, "seed=1", f"hydra.run.dir={tmp_path / 'seed1'}")
    first, again, other = values(tiny_run[0]), values(tmp_path / "again"), values(tmp_path / "seed1")
    assert first == again
    assert first.keys() == other.keys()
    assert first != other


def test_rerun_of_a_completed_run_is_skipped(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "results.jsonl").read_bytes()
    proc = run_cli("train", *TINY, f"hydra.run.dir={run_dir}")
    assert "[skip]" in proc.stdout and "already completed" in proc.stdout
    assert (run_dir / "results.jsonl").read_bytes() == before


def test_csv_logger_records_training_curves(tmp_path):
    run_dir = tmp_path / "csv"
    run_cli(
        "train",
        *TINY,
        "logger=csv",
        "budget.steps=50",
        "trainer.log_every_n_steps=5",
        f"hydra.run.dir={run_dir}",
    )
    metrics = (run_dir / "csv" / "metrics.csv").read_text()
    header = metrics.splitlines()[0].split(",")
    for column in ("train/loss", "train/tokens", "train/flops", "test/exact_match/all"):
        assert column in header


def test_bad_config_is_one_line_error_before_any_job(tmp_path):
    proc = run_cli("train", *TINY, "model.width=56", f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "does not split into 3 heads" in proc.stderr
    assert not (tmp_path / "bad").exists()
    proc = run_cli("train", "task=nosuchtask", check=False)
    assert proc.returncode == 2 and "nosuchtask" in proc.stderr


def test_hydra_flags_work():
    proc = run_cli("train", "--cfg", "job", "model.width=48")
    assert "width: 48" in proc.stdout
    assert "trainer:" in proc.stdout
    proc = run_cli("train", "--help")
    assert "task: addition, composition, modular, parity, recall" in proc.stdout
