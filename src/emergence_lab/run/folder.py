"""The run folder: `run.json` (status and provenance), `results.jsonl` (the contract with analysis),
`config.yaml`, `checkpoints/last.ckpt`, `error.log`, and the lock that says a live process holds the run.

`results.jsonl` holds one JSON object per measurement. Each evaluation's rows go to disk in a single
append-mode `write` followed by `fsync`, so a run killed at any moment leaves only whole lines behind.
`run.json` is replaced atomically (write a temporary file, then rename).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emergence_lab.contract import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ERROR_LOG,
    LOCK_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SCHEMA_VERSION,
    live_status,
)

PREVIOUS_CHECKPOINT_FILE = "prev.ckpt"
CHECKPOINT_RUN_ID = "emergence_run_id"  # a checkpoint's key naming the run that saved it


def one_line(exc: BaseException) -> str:
    """`Type: message`, on one line and at most 2000 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}".strip().rstrip(":")[:2000]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; the file must read like any other the user creates (others' analysis reads it)
        os.fchmod(fd, 0o666 & ~_umask())
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


class RunInfoError(ValueError):
    """A run.json that exists but is not a JSON object: the run's state is unknown, not "pending"."""


def load_run_info(run_dir: Path) -> dict[str, Any] | None:
    """run.json, or None when there is none; RunInfoError (naming the path) when it cannot be read."""
    path = Path(run_dir) / RUN_FILE
    try:
        info = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunInfoError(f"unreadable {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(info, dict):
        raise RunInfoError(f"unreadable {path}: a JSON {type(info).__name__}, not an object")
    return info


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    """run.json, or None when it is missing or unreadable."""
    try:
        return load_run_info(run_dir)
    except RunInfoError:
        return None


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / RUN_FILE, json.dumps(info, indent=2, sort_keys=True) + "\n")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely: unreadable, torn, or holding objects other than tensors
    and plain containers (a pickle that could run code is refused, never executed)."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors, numbers, strings and containers only."""
    import pickle

    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        text = str(exc).strip()
        if text.startswith("Weights only load failed"):  # torch's paragraph, which suggests the unsafe load
            why = "weights_only=True refused it: not only tensors and plain containers, or not a checkpoint"
        else:
            why = (text.splitlines()[0] if text else type(exc).__name__)[:300]
        raise CheckpointError(f"cannot load checkpoint {path} ({why}); delete it to restart") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("global_step"), int):
        raise CheckpointError(f"checkpoint {path} has no global_step; delete it to restart")
    return ckpt


class RunFolder:
    """One run's folder and its life cycle: lock it, `start` (run.json says "running" before anything can
    fail), find the step to resume from and drop rows measured after it, then `finish` with a status.

    run.json keeps the history of attempts: their count, the first start, the summed wall time and the steps
    each resume started from."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.results = ResultsWriter(self.path)
        self.info: dict[str, Any] = {}
        self._started = time.time()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_dir / CHECKPOINT_FILE

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """An exclusive advisory lock on the run folder (True when acquired); the kernel releases it if the
        process dies."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read_info(self) -> dict[str, Any] | None:
        return read_run_info(self.path)

    def status(self, info: dict[str, Any] | None = None) -> str:
        """completed / running / interrupted / failed, or pending without a run.json. run.json says
        "running" also for a run whose process was killed; the run's lock tells them apart."""
        info = self.read_info() if info is None else info
        return live_status(self.path, str((info or {}).get("status", "pending")))

    def start(self, run_id: str, sweep: str, previous: dict[str, Any]) -> dict[str, Any]:
        """Record a new attempt as "running", carrying over what earlier attempts recorded."""
        self._started = time.time()
        self.info = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "sweep": sweep,
            "status": "running",
            "reason": None,
            "attempts": int(previous.get("attempts", 0)) + 1,
            "started_at": previous.get("started_at") or now(),
            "wall_time_s": float(previous.get("wall_time_s", 0.0)),
            "host": os.uname().nodename,
            "pid": os.getpid(),
        }
        for key in ("resumed_from_steps", "step"):
            if key in previous:
                self.info[key] = previous[key]
        self.write_info()
        return self.info

    def write_info(self, **fields: Any) -> None:
        self.info.update(fields)
        write_run_info(self.path, self.info)

    def write_config(self, text: str) -> None:
        atomic_write_text(self.path / CONFIG_FILE, text)

    @property
    def previous_checkpoint_path(self) -> Path:
        """The checkpoint before last.ckpt: a corrupt last.ckpt then costs one interval, not the run."""
        return self.checkpoint_dir / PREVIOUS_CHECKPOINT_FILE

    def resume_from(self, set_aside: bool = True) -> tuple[Path, int] | None:
        """The checkpoint this attempt resumes from and its step, or None when there is none: last.ckpt, or
        the previous one when last.ckpt cannot be loaded (with `set_aside`, it is then renamed `*.bad`, kept
        for a look). CheckpointError when checkpoints exist and none can be loaded."""
        problems: list[str] = []
        for path in (self.checkpoint_path, self.previous_checkpoint_path):
            if not path.exists():
                continue
            try:
                step = int(load_checkpoint(path)["global_step"])
            except CheckpointError as exc:
                problems.append(str(exc).removesuffix("; delete it to restart"))
                continue
            # an unreadable last.ckpt is set aside: the next checkpoint would otherwise keep it as prev
            if problems and set_aside:
                bad = self.checkpoint_path.with_name(CHECKPOINT_FILE + ".bad")
                os.replace(self.checkpoint_path, bad)
                print(f"[checkpoint] {problems[0]}; resuming from {path.name}; the bad one is {bad.name}")
            return path, step
        if problems:
            raise CheckpointError(
                "; ".join(problems) + f"; delete {self.checkpoint_dir} to restart this run from step 0"
            )
        return None

    def checkpoint_run_id(self) -> str | None:
        """The run id recorded in the newest loadable checkpoint, if any."""
        for path in (self.checkpoint_path, self.previous_checkpoint_path):
            if path.exists():
                try:
                    rid = load_checkpoint(path).get(CHECKPOINT_RUN_ID)
                except CheckpointError:
                    continue
                return rid if isinstance(rid, str) else None
        return None

    def resume_step(self) -> int | None:
        """The step of the checkpoint this attempt resumes from, or None when there is none."""
        found = self.resume_from()
        return found[1] if found else None

    def truncate_after(self, step: int) -> int:
        """Drop rows measured after `step` (-1: every row), so a resumed run re-measures them without
        duplicates. Returns the number of rows dropped."""
        return self.results.keep_until(step)

    def record_resume(self, step: int) -> None:
        self.info["resumed_from_steps"] = [*self.info.get("resumed_from_steps", []), step]

    def fail(self, exc: BaseException) -> str:
        """The reason `exc` failed the run, in one line; the traceback of the exception being handled goes
        to error.log when the folder can still be written (a full disk or a read-only folder may be why the
        run failed)."""
        reason = one_line(exc)
        try:
            atomic_write_text(self.path / ERROR_LOG, traceback.format_exc())
        except OSError as log_error:
            reason += f" (error.log not written: {one_line(log_error)})"
        return reason

    def finish(self, status: str, reason: str | None, step: int | None = None) -> str | None:
        """Record the attempt's end in run.json; returns why run.json could not be written, if it could not
        (it then still says "running", which `status` reads as interrupted once the lock is released)."""
        if step is not None:
            self.info["step"] = step
        wall = round(float(self.info.get("wall_time_s", 0.0)) + time.time() - self._started, 3)
        try:
            self.write_info(status=status, reason=reason, ended_at=now(), wall_time_s=wall)
        except OSError as exc:
            return f"run.json not updated: {one_line(exc)}"
        return None
