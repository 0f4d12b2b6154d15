"""What a sweep folder holds: its manifest (every planned run), each run's state, and the exit code of the
command that launched them. Everything here is read from the folders on disk."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from emergence_lab.contract import MANIFEST_FILE
from emergence_lab.launch.launchers import LAUNCH_SIZE_ENV, Launcher
from emergence_lab.launch.plan import PlannedRun, expand, job_overrides, load_plan, plan
from emergence_lab.launch.resources import cpu_cores, job_threads
from emergence_lab.run.folder import RunFolder, RunInfoError, atomic_write_text, load_run_info
from emergence_lab.run.run_id import register_resolvers

STATUS_ORDER = ("completed", "failed", "unreadable", "interrupted", "running", "pending")


# ---- the manifest ---------------------------------------------------------------------------------------
def write_manifest(
    sweep_dir: Path, sweep: str, runs: list[PlannedRun], analysis: dict[str, Any] | None = None
) -> None:
    """Record every planned run; runs planned by earlier launches into the same folder are kept. `analysis`
    is the study's block saying what `emergence analyze` should draw (x axis, metrics, figures)."""
    path = sweep_dir / MANIFEST_FILE
    with open(sweep_dir / ".manifest.lock", "a") as lock:  # two launches into one folder: no lost update
        fcntl.flock(lock, fcntl.LOCK_EX)
        known: dict[str, Any] = {}
        if path.exists():
            old = json.loads(path.read_text())
            known = {r["run_id"]: r for r in old.get("runs", [])}
            if analysis is None:
                analysis = old.get("analysis")
        known.update({r.run_id: asdict(r) for r in runs})
        doc = {
            "sweep": sweep,
            "analysis": analysis or {},
            "runs": sorted(known.values(), key=lambda r: r["run_id"]),
        }
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def read_manifest_doc(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def read_manifest(sweep_dir: Path) -> list[dict[str, Any]]:
    return read_manifest_doc(sweep_dir).get("runs", [])


# ---- run states ---------------------------------------------------------------------------------------
def live_status(run_dir: Path, info: dict[str, Any]) -> str:
    """run.json says "running" also for a run whose process was killed; the run's lock tells them apart."""
    return RunFolder(run_dir).status(info)


def run_states(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every run of a sweep folder (planned or found), with its status from run.json:
    completed / running / interrupted / failed / pending (planned, never started), or unreadable (a
    run.json that cannot be parsed; its reason names the file)."""
    planned = read_manifest(sweep_dir)
    rows: dict[str, dict[str, Any]] = {r["run_id"]: {**r, "status": "pending"} for r in planned}
    for info_path in sorted(Path(sweep_dir).glob("*/run.json")):
        try:
            info = load_run_info(info_path.parent) or {}
        except RunInfoError as exc:  # shown with its path: "pending" would hide a run that did start
            rid = info_path.parent.name
            rows[rid] = {**rows.get(rid, {"run_id": rid}), "status": "unreadable", "reason": str(exc)}
            continue
        rid = info.get("run_id", info_path.parent.name)
        rows[rid] = {**rows.get(rid, {"run_id": rid}), **info, "status": live_status(info_path.parent, info)}
    return sorted(rows.values(), key=lambda r: r["run_id"])


def launched_states(sweep_dir: Path, run_ids: set[str]) -> list[dict[str, Any]]:
    """The states of the runs one launch planned (all of the folder's runs when `run_ids` is empty)."""
    states = run_states(sweep_dir)
    if not run_ids:
        return states
    found = {s["run_id"]: s for s in states}
    return [found.get(rid, {"run_id": rid, "status": "pending"}) for rid in sorted(run_ids)]


def exit_code(statuses: list[str], signum: int | None, done: tuple[str, ...] = ("completed",)) -> int:
    """The exit code of a command from the states of the runs it planned: 0 when every one is done, 128 + N
    when signal N stopped the command (a rerun resumes), else 1 (a run failed or is unfinished)."""
    if statuses and all(s in done for s in statuses):
        return 0
    if signum is not None:
        name = signal.Signals(signum).name
        print(f"[stopped] by {name}; rerun the same command to resume", file=sys.stderr, flush=True)
        return 128 + signum
    return 1


# ---- the Hydra callback of a multirun ------------------------------------------------------------------
class SweepCallback(Callback):
    """Writes the manifest before any job starts and reports the sweep's outcome when it ends."""

    def __init__(self) -> None:
        self.launched: set[str] = set()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        register_resolvers()
        task_overrides = list(config.hydra.overrides.task)
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = load_plan(sweep_dir, task_overrides)
        if runs is None or job_overrides(runs) != expand(config, task_overrides):
            runs = plan(GlobalHydra.instance().config_loader(), config, task_overrides)
        self.launched = {r.run_id for r in runs}
        sweep_dir.mkdir(parents=True, exist_ok=True)
        analysis = config.get("analysis")
        analysis = OmegaConf.to_container(analysis, resolve=True) if analysis is not None else None
        write_manifest(sweep_dir, str(config.sweep), runs, analysis)  # type: ignore[arg-type]
        n_jobs = len(job_overrides(runs))  # the seeds of a packed job train in one process
        os.environ[LAUNCH_SIZE_ENV] = str(n_jobs)
        at_once, where = Launcher.of(config.hydra.launcher).runs_at_once(n_jobs, cpu_cores())
        threads = job_threads(config.trainer.threads, config.hydra.launcher, n_jobs)
        packed = f" in {n_jobs} packed jobs" if n_jobs < len(runs) else ""
        print(f"[sweep] {len(runs)} runs{packed} planned in {sweep_dir}", flush=True)
        print(f"[sweep] up to {at_once} at once ({where}), {threads} CPU threads each", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        mine = launched_states(Path(config.hydra.sweep.dir), self.launched)
        counts = Counter(s["status"] for s in mine)
        ranked = sorted(
            counts, key=lambda k: STATUS_ORDER.index(k) if k in STATUS_ORDER else len(STATUS_ORDER)
        )
        summary = ", ".join(f"{counts[k]} {k}" for k in ranked)
        print(f"[sweep] {config.hydra.sweep.dir}: {summary}", flush=True)
        for s in mine:
            if s["status"] == "failed":
                print(f"[sweep]   failed {s['run_id']}: {s.get('reason')}", flush=True)
        if len(mine) - counts["completed"]:
            print("[sweep] rerun the same command to resume unfinished runs", flush=True)
