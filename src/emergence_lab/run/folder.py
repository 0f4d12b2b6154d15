"""The run folder's files: `results.jsonl` (the contract with analysis), `run.json` and provenance.

`results.jsonl` holds one JSON object per measurement. Each evaluation's rows go to disk in a single
append-mode `write` followed by `fsync`, so a run killed at any moment leaves only whole lines behind.
`run.json` is replaced atomically (write a temporary file, then rename).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from emergence_lab.contract import COLUMNS, RESULTS_FILE, RUN_FILE, SCHEMA_VERSION

__all__ = ["COLUMNS", "RESULTS_FILE", "RUN_FILE", "SCHEMA_VERSION"]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsWriter:
    """Appends measurement rows to `<run_dir>/results.jsonl`."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RESULTS_FILE

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        data = "".join(json.dumps(row, allow_nan=True) + "\n" for row in rows).encode()
        if not data:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every whole, parseable row (a torn last line from a crash is skipped)."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def keep_until(self, step: int) -> int:
        """Drop rows measured after `step` (and torn lines); used when resuming from a checkpoint at `step`,
        so the resumed run re-measures those steps without duplicating rows. Returns rows dropped."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines()
        kept = [json.dumps(r) for r in self.read() if r.get("step", 0) <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        return len(lines) - len(kept)


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / RUN_FILE, json.dumps(info, indent=2, sort_keys=True) + "\n")


def git_state(start: Path | None = None) -> dict[str, Any]:
    """The commit the code came from and whether tracked files had uncommitted changes."""
    cwd = Path(start or Path(__file__).parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return {"git_sha": sha, "git_dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):  # not a git checkout (a plain install): the build's commit
        return {"git_sha": _built_commit(), "git_dirty": None}


def _built_commit() -> str:
    try:
        from emergence_lab._version import __commit__
    except ImportError:
        return "unknown"
    return str(__commit__ or "unknown")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "lightning", "hydra-core", "omegaconf", "wandb", "numpy", "emergence-lab"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
