"""The one adapter over Hydra's launchers: the only code that knows their names (basic, joblib, submitit
local, SLURM) and what each implies for a job: how many run at once, how many CPUs each was given, whether
a worker process must exit itself after a stop, and how a stop signal reaches the workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emergence_lab.run.memory import MemoryBudget, human_bytes, machine_memory
from emergence_lab.run.signals import stop_signals

# Set before any job starts, inherited by joblib and submitit worker processes: the process that runs Hydra
# (a joblib job running in it, with n_jobs=1, must not exit it) and the number of jobs in this launch (so a
# job knows how many run beside it).
LAUNCHING_PID_ENV = "EMERGENCE_LAUNCHING_PID"
LAUNCH_SIZE_ENV = "EMERGENCE_LAUNCH_SIZE"
# How long the launching process of a joblib sweep waits, after a stop signal, for its workers to checkpoint.
STOP_WAIT_S = 300.0


@dataclass(frozen=True)
class Launcher:
    """What the launch layer needs to know of a `hydra.launcher` config."""

    kind: str  # basic | joblib | submitit_local | slurm | other
    n_jobs: int = 1
    cpus_per_task: int | None = None
    array_parallelism: int | None = None
    mem_gb: float | None = None  # what a SLURM job asks for

    @classmethod
    def of(cls, launcher: Mapping[str, Any] | None) -> Launcher:
        launcher = launcher or {}
        target = str(launcher.get("_target_", ""))
        if "joblib" in target:
            kind = "joblib"
        elif target.endswith("LocalLauncher"):
            kind = "submitit_local"
        elif target.endswith("SlurmLauncher"):
            kind = "slurm"
        elif target.endswith("BasicLauncher") or not target:
            kind = "basic"
        else:
            kind = "other"
        cpus = launcher.get("cpus_per_task")
        parallel = launcher.get("array_parallelism")
        mem_gb = launcher.get("mem_gb")
        return cls(
            kind=kind,
            n_jobs=int(launcher.get("n_jobs") or 1),
            cpus_per_task=int(cpus) if cpus else None,
            array_parallelism=int(parallel) if parallel else None,
            mem_gb=float(mem_gb) if mem_gb else None,
        )

    def memory_budget(self, jobs_at_once: int) -> MemoryBudget | None:
        """Host memory one job may use: a SLURM job's `mem_gb` (None when it declares none), else this
        machine's RAM shared by the jobs that run at once."""
        if self.kind == "slurm":
            if not self.mem_gb:
                return None
            return MemoryBudget(
                int(self.mem_gb * 2**30), f"hydra.launcher.mem_gb={self.mem_gb:g}", local=False
            )
        total = machine_memory()
        jobs = max(1, jobs_at_once)
        source = f"this machine's {human_bytes(total)} of RAM / {jobs} job{'s' if jobs > 1 else ''} at once"
        return MemoryBudget(total // jobs, source, local=True)

    def jobs_at_once(self, launch_size: int | None, cores: int) -> int:
        """How many jobs of a launch run side by side on this machine: joblib runs n_jobs (negative: cores +
        1 + n_jobs, as joblib counts), submitit's local executor starts every job at once, the basic
        launcher one. A SLURM job is alone on the cores SLURM gave it."""
        if self.kind == "joblib":
            n = cores + 1 + self.n_jobs if self.n_jobs < 0 else self.n_jobs
        elif self.kind == "submitit_local":
            n = launch_size or cores
        else:
            n = 1
        if launch_size:
            n = min(n, launch_size)
        return max(1, n)

    def runs_at_once(self, launch_size: int, cores: int) -> tuple[int, str]:
        """How many runs of a launch train at the same time, and where, as the sweep reports it."""
        if self.kind == "slurm":
            return min(launch_size, self.array_parallelism or launch_size), "SLURM array jobs"
        return self.jobs_at_once(launch_size, cores), "on this machine"

    @property
    def worker_exits_itself(self) -> bool:
        """A joblib (loky) worker that was told to stop must exit on its own: loky would otherwise catch the
        exception, send it to a launching process that may already be gone, and start the next queued run."""
        return self.kind == "joblib"

    def is_worker(self) -> bool:
        """Whether this process runs jobs for a launching process (not the launching process itself)."""
        launching = os.environ.get(LAUNCHING_PID_ENV)
        return launching is not None and int(launching) != os.getpid()

    def pass_stop_signals(self) -> WorkerSignals | None:
        """Under joblib, pass stop signals from the launching process on to its workers (WorkerSignals)."""
        if self.kind != "joblib":
            return None
        return WorkerSignals().install()


@dataclass
class WorkerSignals:
    """`kill <pid>` of a joblib sweep reaches only the launching process, which trains nothing: pass SIGTERM
    / SIGUSR1 on to the workers (the processes it started), whose runs checkpoint and exit, and wait for
    them, since joblib kills every other worker as soon as one exits; then the sweep ends. A signal to the
    whole process group (Ctrl-C, kill -TERM -<pgid>, scancel) reaches the workers as well."""

    received: int | None = None  # the first stop signal received
    wait_s: float = STOP_WAIT_S
    _replaced: dict[int, Any] = field(default_factory=dict)

    def install(self) -> WorkerSignals:
        self._replaced = {sig: signal.signal(sig, self._forward) for sig in stop_signals()}
        return self

    def restore(self) -> None:
        for sig, handler in self._replaced.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._replaced = {}

    def _forward(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum
        pids = worker_processes(os.getpid())
        if not pids:  # no job runs in a worker (yet): the signal does what it would without this handler
            self.restore()
            os.kill(os.getpid(), signum)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + self.wait_s
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def worker_processes(pid: int) -> list[int]:
    """The processes `pid` started to run jobs: its children, less the resource trackers that joblib and
    multiprocessing keep beside their workers (a SIGUSR1 would kill them, and they hold no run)."""
    try:
        out = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid=,args="], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or int(parts[1]) != pid or parts[2].startswith("ps "):  # "ps": this listing
            continue
        if "resource_tracker" not in parts[2]:
            found.append(int(parts[0]))
    return found


def running(pid: int) -> bool:
    """Whether process `pid` runs: it exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


def jobs_at_once(launcher: Mapping[str, Any] | None, launch_size: int | None, cores: int) -> int:
    """`Launcher.jobs_at_once` of a `hydra.launcher` config."""
    return Launcher.of(launcher).jobs_at_once(launch_size, cores)
