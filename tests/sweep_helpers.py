"""Helpers of the sweep tests: run the real `emergence` command, poll run folders, read results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The console script of this environment (what users type); `python -m emergence_lab` where it is missing.
_SCRIPT = Path(sys.executable).parent / "emergence"
EMERGENCE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "emergence_lab"]

# The test grid is the `smoke` study (2 widths x 2 depths, 80 steps, evaluation and checkpoint every 20).
# One thread per job everywhere, so results are bitwise identical whichever launcher ran them.
STUDY = "smoke"
N_RUNS = 4
MAX_STEPS = 80
EVAL_STEPS = (0, 20, 40, 60, 80)
ONE_THREAD = ["trainer.threads=1"]

Key = tuple[str, str, str, str, int]  # run_id, split, subtask, metric, step


def cli_env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    env.pop("SLURM_JOB_ID", None)  # the tests never run under SLURM, even when the suite does
    env.pop("EMERGENCE_LAUNCH_SIZE", None)  # left by sweeps run inside the test process
    env.pop("EMERGENCE_LAUNCHING_PID", None)
    return env


def emergence(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run `emergence <args>` to the end; its output is printed when a test fails."""
    proc = subprocess.run(
        [*EMERGENCE, *args], env=cli_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    print(f"$ emergence {' '.join(args)}\n-> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `emergence <args>` in its own process group (so a test can kill the whole sweep)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*EMERGENCE, *args], env=cli_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def group_alive(pgid: int) -> bool:
    """Whether a process of the process group `pgid` still runs (zombies waiting to be reaped do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, ...
            return True
    return False


def poll(
    condition: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
):
    """Wait until `condition()` is truthy and return it; fail after `timeout` s, or if `proc` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = condition()
            if value:
                return value
            pytest.fail(f"process ended (exit code {proc.returncode}) before: {what}")
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for: {what}")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def last_step(run_dir: Path) -> int:
    """The step of the last whole results row (-1 before the first evaluation)."""
    try:
        lines = (run_dir / "results.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            continue
    return -1


def mid_run(folder: Path, before_step: int, need_completed: int = 0) -> Path | None:
    """A run folder under `folder` that is running, has a checkpoint and has not evaluated past
    `before_step` yet, once at least `need_completed` runs there are completed."""
    infos = {d: read_json(d / "run.json") for d in folder.iterdir() if d.is_dir()} if folder.exists() else {}
    if sum(1 for i in infos.values() if i and i.get("status") == "completed") < need_completed:
        return None
    for run_dir, info in infos.items():
        if (
            info
            and info.get("status") == "running"
            and (run_dir / "checkpoints" / "last.ckpt").exists()
            and 0 < last_step(run_dir) < before_step
        ):
            return run_dir
    return None


def run_dirs(folder: Path) -> dict[str, Path]:
    return {d.name: d for d in folder.iterdir() if (d / "run.json").exists()}


def run_infos(folder: Path) -> dict[str, dict[str, Any]]:
    return {name: read_json(d / "run.json") or {} for name, d in run_dirs(folder).items()}


def results(folder: Path) -> dict[Key, float]:
    """Every results row of every run under `folder`, keyed by (run_id, split, subtask, metric, step);
    fails on a duplicate key (a row written twice)."""
    out: dict[Key, float] = {}
    for d in sorted(run_dirs(folder).values()):
        for line in (d / "results.jsonl").read_text().splitlines():
            row = json.loads(line)
            key = (row["run_id"], row["split"], row["subtask"], row["metric"], int(row["step"]))
            assert key not in out, f"duplicate results row {key} in {d}"
            out[key] = row["value"]
    return out


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def assert_same_results(got: dict[Key, float], expected: dict[Key, float], exact: bool = True) -> None:
    assert got.keys() == expected.keys()
    if exact:
        different = {k: (got[k], expected[k]) for k in got if got[k] != expected[k]}
        assert not different, f"{len(different)} values differ, e.g. {next(iter(different.items()))}"
    else:  # different thread counts may reorder float sums; a 1-in-1024 example flip is allowed
        for k in got:
            assert got[k] == pytest.approx(expected[k], rel=1e-3, abs=2e-3), k


def assert_complete_sweep(folder: Path, n_runs: int = N_RUNS) -> dict[str, dict[str, Any]]:
    """Every run completed, at MAX_STEPS, with one row set per evaluation step and nothing else."""
    infos = run_infos(folder)
    assert len(infos) == n_runs, sorted(infos)
    for name, info in infos.items():
        assert info["status"] == "completed", (name, info)
        assert info["run_id"] == name
        assert info["step"] == info["max_steps"] == MAX_STEPS
        steps = sorted({r["step"] for r in rows(folder / name)})
        assert steps == list(EVAL_STEPS), (name, steps)
        assert (folder / name / "checkpoints" / "last.ckpt").exists()
    manifest = read_json(folder / "manifest.json")
    assert manifest is not None
    assert sorted(r["run_id"] for r in manifest["runs"]) == sorted(infos)
    return infos
