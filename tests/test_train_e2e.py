"""The real `emergence train` command on a tiny model: files, rows, determinism, errors."""

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY, run_cli

from emergence_lab.contract import COLUMNS, SCHEMA_VERSION
from emergence_lab.metrics import METRICS

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
    """25 steps with eval_every=10: evaluations at 0, 10, 20 and at the end, 25, each exactly once."""
    run_dir = tmp_path / "csv"
    run_cli(
        "train",
        *TINY,
        "logger=csv",
        "budget.steps=25",
        "trainer.log_every_n_steps=5",
        f"hydra.run.dir={run_dir}",
    )
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        logged = list(csv.DictReader(fh))
    for column in ("train/loss", "train/tokens", "train/flops", "train/tokens_per_s", "test/exact_match/all"):
        assert column in logged[0]
    tokens_per_s = [float(r["train/tokens_per_s"]) for r in logged if r["train/tokens_per_s"]]
    assert len(tokens_per_s) >= 3
    assert all(math.isfinite(v) and v > 0 for v in tokens_per_s)
    tokens = {int(r["step"]): float(r["train/tokens"]) for r in logged if r["train/tokens"]}
    assert tokens and all(v == (step + 1) * 128 * 8 for step, v in tokens.items())  # logged at step index
    assert all(math.isfinite(float(r["train/loss"])) for r in logged if r["train/loss"])
    eval_steps = [int(r["step"]) for r in logged if r["test/exact_match/all"]]
    assert eval_steps == [0, 10, 20, 25]

    data = rows(run_dir)
    assert sorted({r["step"] for r in data}) == [0, 10, 20, 25]
    keys = [(r["split"], r["subtask"], r["metric"], r["step"]) for r in data]
    assert len(keys) == len(set(keys))  # no evaluation written twice
    per_step = {step: sum(1 for k in keys if k[3] == step) for step in (0, 10, 20, 25)}
    assert len(set(per_step.values())) == 1 and per_step[25] > 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["step"] == info["max_steps"] == 25

    # the flat config every logger gets (wandb's too): sizes from train.py plus the dotted config
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert (hparams["width"], hparams["depth"], hparams["n_heads"]) == (16, 1, 1)
    assert hparams["n_params"] == 12 * 16 * 16 + 3 * 16
    assert (hparams["model.width"], hparams["model.depth"], hparams["task"]) == (16, 1, "addition")


def test_bad_config_is_one_line_error_before_any_job(tmp_path):
    bad = "model.positions=sinusoidal"
    proc = run_cli("train", *TINY, bad, f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr == "emergence train: model.positions=sinusoidal: must be one of rotary, learned\n"
    assert not (tmp_path / "bad").exists()
    proc = run_cli("train", "task=nosuchtask", check=False)
    assert proc.returncode == 2 and "nosuchtask" in proc.stderr


def test_hydra_flags_work():
    proc = run_cli("train", "--cfg", "job", "model.width=48")
    assert "width: 48" in proc.stdout
    assert "trainer:" in proc.stdout
    proc = run_cli("train", "--help")
    assert "task: addition, composition, modular, parity, recall" in proc.stdout
