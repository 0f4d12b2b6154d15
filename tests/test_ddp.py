"""Multi-device training under Hydra: `trainer=ddp` on CPU with 2 processes (gloo), through the real CLI.

Lightning's DDP launcher re-executes the command line for rank 1; the CLI makes that a command that runs,
pinned to rank 0's run folder. Rank 0 alone writes the folder; `tokens` counts both ranks."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import TINY

from sweep_helpers import emergence, poll, read_json, rows, start

pytestmark = [pytest.mark.faults, pytest.mark.slow]

STEPS = 400
DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "trainer.compile=false",
    *TINY,
    "trainer.threads=1",
    f"trainer.max_steps={STEPS}",
    "trainer.eval_every=100",
    "trainer.ckpt_every=20",
]


def _key(row: dict) -> tuple:
    return (row["split"], row["subtask"], row["metric"], row["step"])


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    proc = emergence(["train", *DDP, f"hydra.run.dir={run_dir}"], timeout=400)
    assert proc.returncode == 0
    assert proc.stdout.count("[completed]") == 1  # rank 1 reports nothing of the run's
    return run_dir


def test_ddp_on_two_cpu_processes_completes_and_rank_0_alone_writes_the_folder(ddp_run: Path) -> None:
    info = read_json(ddp_run / "run.json")
    assert info is not None and info["status"] == "completed" and info["step"] == STEPS
    assert info["devices"] == 2 and info["attempts"] == 1
    got = rows(ddp_run)
    counts = Counter(_key(r) for r in got)
    assert max(counts.values()) == 1  # no row written twice
    assert sorted({r["step"] for r in got}) == [0, 100, 200, 300, 400]
    assert all(r["tokens"] == r["step"] * info["tokens_per_step"] * 2 for r in got)  # both ranks' tokens
    assert torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS
    # rank 1 wrote nothing but its Hydra log: no second results file, config or checkpoint
    assert not list(ddp_run.rglob("*.tmp"))
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == ["last.ckpt", "prev.ckpt"]


def test_ddp_kill_and_rerun_resumes_to_the_same_numbers(ddp_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = ["train", *DDP, f"hydra.run.dir={run_dir}"]
    proc = start(command, tmp_path / "first.log")
    try:
        poll(
            lambda: (
                (i := read_json(run_dir / "run.json")) and i["status"] == "running" and i.get("step", 0) >= 40
            ),
            300,
            "a checkpoint at step 40 or later",
            proc,
        )
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed = read_json(run_dir / "run.json")
    assert killed is not None and killed["status"] == "running" and 40 <= killed["step"] < STEPS
    again = emergence(command, timeout=400)
    assert again.returncode == 0
    info = read_json(run_dir / "run.json")
    assert info is not None and info["status"] == "completed" and info["attempts"] == 2
    (resumed,) = info["resumed_from_steps"]
    assert resumed >= killed["step"] and f"from step {resumed}" in again.stdout
    got = rows(run_dir)
    assert max(Counter(_key(r) for r in got).values()) == 1
    want = {_key(r): r["value"] for r in rows(ddp_run)}
    assert {_key(r): r["value"] for r in got} == want
