"""Shared test set-up: wandb off, and a helper that runs the real `emergence` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["WANDB_MODE"] = "disabled"

REPO = Path(__file__).resolve().parents[1]

# A model and task small enough that a whole CLI run takes a few seconds on one core.
TINY = [
    "task=addition",
    "task.digits=2",
    "task.ood_digits=3",
    "task.test_size=128",
    "model.width=16",
    "model.depth=1",
    "budget.steps=30",
    "trainer.eval_every=10",
    "trainer.ckpt_every=10",
    "trainer.progress_bar=false",
    "trainer.threads=1",
    "logger=none",
]


def run_cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "emergence_lab", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"emergence {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def cli():
    return run_cli
