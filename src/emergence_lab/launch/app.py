"""`emergence train`: the Hydra application. It resolves what Hydra and the launcher decide (the run folder,
the job's CPU threads and GPU, whether this process is a launcher's worker) and trains through
`run.train.train`; the command's exit code comes from the run folders it planned."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from emergence_lab.launch.configs import CONF_DIR, register_user_studies
from emergence_lab.launch.launchers import LAUNCH_SIZE_ENV, LAUNCHING_PID_ENV, Launcher
from emergence_lab.launch.packing import pack_argv
from emergence_lab.launch.plan import (
    HYDRA_FLAGS_WITHOUT_RUN,
    launch_overrides,
    one_line,
    plan_from_cli,
    save_plan,
)
from emergence_lab.launch.resources import job_threads, pin_device
from emergence_lab.launch.runs import exit_code, launched_states
from emergence_lab.run.folder import RunFolder
from emergence_lab.run.pack_train import train_seeds
from emergence_lab.run.run_id import register_resolvers
from emergence_lab.run.train import quiet_lightning_logs, secondary_rank

# At import, not only in run_cli: joblib and submitit workers unpickle the task function (importing this
# module) and then resolve `${run_id:}` in their own process.
register_resolvers()


class RunStopped(SystemExit):
    """Raised after a run stopped on a signal and saved its checkpoint: it ends the whole sweep (no further
    job starts; under joblib it reaches the parent process), and the process exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class FolderRefused(SystemExit):
    """The run folder holds another run (its run.json names another run id): exit 2, nothing touched."""

    def __init__(self) -> None:
        super().__init__(2)


def run_job(cfg: DictConfig) -> str:
    """One Hydra job, in whichever process its launcher runs it: train `cfg` into Hydra's output folder;
    returns the run's final status."""
    hc = HydraConfig.get()
    launcher = Launcher.of(hc.launcher)
    job_num = hc.job.num if hc.mode == RunMode.MULTIRUN else 0
    launch_size = int(os.environ.get(LAUNCH_SIZE_ENV, "0")) or None
    try:
        threads = job_threads(cfg.trainer.threads, hc.launcher, launch_size)
        devices = pin_device(cfg.trainer, job_num)
        outcome = train_seeds(cfg, Path(hc.runtime.output_dir), threads=threads, devices=devices)
    except (SystemExit, KeyboardInterrupt):  # stopped before the run's signal handler was in place
        _leave_if_worker(launcher, 1)
        raise
    if outcome.status == "refused" and hc.mode != RunMode.MULTIRUN:
        raise FolderRefused()  # a sweep goes on; its planned run stays pending, so it exits 1
    if outcome.signum is not None:
        if outcome.preempt_handler is not None:
            # submitit's own preemption handling: dump the job for a requeue, requeue it, exit the process
            print(f"[requeue] {Path(hc.runtime.output_dir).name}: handing over to submitit", flush=True)
            outcome.preempt_handler(outcome.signum, None)
        _leave_if_worker(launcher, 128 + outcome.signum)
        raise RunStopped(outcome.signum)
    return outcome.status


def _leave_if_worker(launcher: Launcher, code: int) -> None:
    """A worker process whose launcher needs it (joblib) exits here, ending its part of the sweep."""
    if not (launcher.worker_exits_itself and launcher.is_worker()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# `python <this file> train ...` runs the CLI; Lightning's DDP launcher re-executes it for ranks 1..n-1
ENTRY_SCRIPT = str(Path(__file__).resolve().parents[1] / "__main__.py")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> str:
    # Hydra has parsed sys.argv; Lightning's DDP launcher re-executes it (adding hydra.run.dir so every rank
    # trains in this run folder): make it a command that runs (`__main__.__spec__`'s module when the process
    # was started with -m, else this script), then this job.
    sys.argv = [ENTRY_SCRIPT, "train", *sys.argv[1:]]
    return run_job(cfg)


def run_cli(argv: list[str]) -> int:
    """Run the Hydra app with `argv` as its command line. Exit code: 0 when every run of this command is
    completed, 1 when one failed or is unfinished, 128 + N when signal N stopped it (rerun to resume)."""
    register_resolvers()
    try:
        register_user_studies()
    except ValueError as exc:
        print(f"emergence train: {exc}", file=sys.stderr)
        return 2
    if any(a.split("=")[0] in HYDRA_FLAGS_WITHOUT_RUN for a in argv):  # prints, trains nothing
        error, _ = _hydra(argv)
        if error is not None:
            raise SystemExit(error)
        return 0
    try:
        argv = pack_argv(argv)  # trainer.pack: the seed sweep becomes jobs of several seeds
        master, runs = plan_from_cli(argv)
    except Exception as exc:
        print(f"emergence train: {one_line(exc)}", file=sys.stderr)
        return 2
    quiet_lightning_logs()
    os.environ[LAUNCHING_PID_ENV] = str(os.getpid())
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if not multirun:
        problem = _unwritable(Path(str(master.hydra.run.dir)))
        if problem:
            print(f"emergence train: {problem}", file=sys.stderr)
            return 1
        error, signum = _hydra(argv)
        if error == 2:
            return 2
        if secondary_rank():  # a DDP rank: the run folder is rank 0's to judge
            return 0 if error is None and signum is None else 1
        # a run another live process holds is that process's to finish: not a failure of this command
        status = RunFolder(Path(str(master.hydra.run.dir))).status()
        return exit_code([status], signum, done=("completed", "running"))
    sweep_dir = Path(str(master.hydra.sweep.dir))
    save_plan(sweep_dir, launch_overrides(argv), runs)
    workers = Launcher.of(master.hydra.launcher).pass_stop_signals()
    try:
        error, signum = _hydra(argv)
    finally:
        if workers is not None:
            workers.restore()
    signum = signum or (workers.received if workers is not None else None)
    if error is not None and signum is None:
        raise SystemExit(error)
    states = launched_states(sweep_dir, {r.run_id for r in runs})
    return exit_code([s["status"] for s in states], signum)


def _unwritable(run_dir: Path) -> str | None:
    """Why files cannot be created in `run_dir` (read-only file system, no permission), or None; checked
    before Hydra writes its own files there and fails with a traceback."""
    import tempfile

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        return f"cannot write the run folder {run_dir}: {exc.strerror or exc}"
    return None


def _hydra(argv: list[str]) -> tuple[int | str | None, int | None]:
    """Run Hydra on `argv`: (the code of a SystemExit it ended with, the signal that stopped a run)."""
    saved = sys.argv
    sys.argv = ["emergence train", *argv]
    try:
        _hydra_main()
    except RunStopped as stop:
        return None, stop.signum
    except SystemExit as exc:  # how Hydra reports a launcher error, e.g. joblib workers that stopped
        return exc.code, None
    finally:
        sys.argv = saved
    return None, None
