"""The run layer in-process: `run.train.train(cfg, run_dir, ...)` trains a tiny model without Hydra's app or
a subprocess, and the exit code of `emergence train` / `sweep` comes from the run folders on disk."""

from __future__ import annotations

import fcntl
import json
import signal
from pathlib import Path

from conftest import TINY
from hydra import compose, initialize_config_dir

from emergence_lab.cli import main as emergence_main
from emergence_lab.launch.configs import CONF_DIR
from emergence_lab.launch.plan import plan_from_cli
from emergence_lab.launch.runs import exit_code, launched_states, write_manifest
from emergence_lab.run.folder import RunFolder
from emergence_lab.run.train import train

STEPS = 20  # TINY evaluates and checkpoints every 10 steps


def tiny_cfg(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, f"trainer.max_steps={STEPS}", *overrides])


def read_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_train_in_process_writes_the_run_folder_and_same_seed_same_numbers(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    first = train(cfg, tmp_path / "a", threads=1, devices=1)
    assert (first.status, first.signum) == ("completed", None)
    info = read_info(tmp_path / "a")
    assert info["status"] == "completed" and info["reason"] is None and info["attempts"] == 1
    assert info["step"] == info["max_steps"] == STEPS and info["threads"] == 1
    rows = RunFolder(tmp_path / "a").results.read()
    assert sorted({r["step"] for r in rows}) == [0, 10, 20]
    assert {r["run_id"] for r in rows} == {info["run_id"]}
    assert all(r["tokens"] == r["step"] * info["tokens_per_step"] for r in rows)
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").exists()
    assert f"output_dir: {tmp_path / 'a'}" in (tmp_path / "a" / "config.yaml").read_text()

    second = train(cfg, tmp_path / "b", threads=1, devices=1)
    assert second.status == "completed"
    assert (tmp_path / "b" / "results.jsonl").read_text() == (tmp_path / "a" / "results.jsonl").read_text()

    again = train(cfg, tmp_path / "a", threads=1, devices=1)  # a completed run is skipped, not retrained
    assert again.status == "completed" and read_info(tmp_path / "a")["attempts"] == 1


# ---- the exit code comes from the run folders ----------------------------------------------------------
def _mark(run_dir: Path, status: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_dir.name, "status": status}))


def _two_planned_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    master, runs = plan_from_cli(["-m", "experiment=smoke", "model.width=8", f"paths.root={tmp_path}"])
    assert len(runs) == 2
    sweep_dir = Path(master.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True)
    write_manifest(sweep_dir, "smoke", runs)
    return sweep_dir, [r.run_id for r in runs]


def test_exit_code_is_read_from_the_planned_run_folders(tmp_path: Path) -> None:
    sweep_dir, (a, b) = _two_planned_runs(tmp_path)
    _mark(sweep_dir / "not-planned", "failed")  # another launch's run: not this command's

    def code(signum: int | None = None) -> int:
        return exit_code([s["status"] for s in launched_states(sweep_dir, {a, b})], signum)

    _mark(sweep_dir / a, "completed")
    assert code() == 1  # b never started: pending
    _mark(sweep_dir / b, "failed")
    assert code() == 1
    assert code(signal.SIGTERM) == 128 + signal.SIGTERM
    _mark(sweep_dir / b, "completed")
    assert code() == 0
    assert code(signal.SIGUSR1) == 0  # a signal after the last run finished stops nothing
    _mark(sweep_dir / b, "running")  # run.json says running, but no live process holds its lock
    assert {s["run_id"]: s["status"] for s in launched_states(sweep_dir, {a, b})} == {
        a: "completed",
        b: "interrupted",
    }
    assert code() == 1


def test_sweep_command_exit_code_counts_a_run_held_elsewhere_as_unfinished(tmp_path: Path) -> None:
    """Nothing trains: one run is completed, the other is held by a live process (this test); the command
    skips both, and its code, read from disk, says the sweep is unfinished."""
    sweep_dir, (a, b) = _two_planned_runs(tmp_path)
    _mark(sweep_dir / a, "completed")
    _mark(sweep_dir / b, "running")
    with open(sweep_dir / b / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert emergence_main(["sweep", "smoke", "model.width=8", f"paths.root={tmp_path}"]) == 1
    assert (
        read_info(sweep_dir / a)["status"] == "completed" and not (sweep_dir / a / "results.jsonl").exists()
    )


def test_train_command_exit_code_comes_from_its_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    _, (planned,) = plan_from_cli([*TINY, f"hydra.run.dir={run_dir}"])
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"run_id": planned.run_id, "status": "completed"}))
    assert emergence_main(["train", *TINY, f"hydra.run.dir={run_dir}"]) == 0
    assert not (run_dir / "results.jsonl").exists()  # skipped, not trained


def test_run_folder_keeps_attempts_and_drops_rows_after_the_resume_step(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "r")
    with folder.lock() as acquired:
        assert acquired
        with RunFolder(folder.path).lock() as second:
            assert not second  # another holder of the same folder is refused
        assert folder.status(folder.start("r", "s", {})) == "running"  # held: live
        folder.results.append([{"step": s, "value": 1.0} for s in (0, 10, 20)])
        folder.finish("interrupted", "stopped", step=20)
    assert folder.resume_step() is None  # no checkpoint was written
    info = folder.read_info()
    assert info is not None and info["status"] == "interrupted" and info["step"] == 20
    again = RunFolder(folder.path)
    assert again.start("r", "s", info)["attempts"] == 2 and again.info["started_at"] == info["started_at"]
    assert again.truncate_after(10) == 1
    assert [r["step"] for r in again.results.read()] == [0, 10]
    assert RunFolder(tmp_path / "never").status() == "pending"
