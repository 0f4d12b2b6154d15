"""`emergence train`: the Hydra application that trains one model into its run folder.

A run folder is the unit of truth: `config.yaml`, `run.json` (status and provenance), `results.jsonl` and
`checkpoints/last.ckpt`. Running the same config again finds the same folder (see run_id.py): a completed run
is skipped, an interrupted one resumes from its checkpoint, and a run still held by a live process is left
alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from emergence_lab.results import (
    SCHEMA_VERSION,
    atomic_write_text,
    git_state,
    package_versions,
    read_run_info,
    write_run_info,
)
from emergence_lab.run_id import register_resolvers, run_id

# torch and lightning are imported where a run trains, not here: the process that launches a joblib or
# submitit sweep (and `--dry-run`) trains nothing and is seconds faster to start without them.
if TYPE_CHECKING:
    import lightning.pytorch as pl

    from emergence_lab.recorder import RunRecorder


def _conf_dir() -> str:
    """conf/ ships inside the package in a plain install; an editable install reads the repository's."""
    here = Path(__file__).resolve().parent
    installed = here / "conf"
    return str(installed if (installed / "config.yaml").is_file() else here.parents[1] / "conf")


CONF_DIR = _conf_dir()
log = logging.getLogger(__name__)
# At import, not only in run_cli: joblib and submitit workers unpickle the task function (importing this
# module) and then resolve `${run_id:}` in their own process.
register_resolvers()

# Statuses of the runs this process trained in single-run mode; the CLI turns them into an exit code.
_OUTCOMES: list[str] = []
# The process that runs Hydra (set by run_cli); None in joblib and submitit worker processes.
_LAUNCHING_PID: int | None = None


# ---- the Hydra application --------------------------------------------------------------------------
class RunStopped(SystemExit):
    """Raised after a run stopped on a signal and saved its checkpoint: it ends the whole sweep (no further
    job starts; under joblib it reaches the parent process), and the process exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


@dataclass
class Outcome:
    status: str
    signum: int | None = None
    preempt_handler: Any = None  # submitit's requeue handler, when its preemption signal stopped the run


def train(cfg: DictConfig) -> str:
    """Train the run described by `cfg` into Hydra's output folder; returns the run's final status."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    _quiet_duplicate_lightning_logs()  # again here: joblib and submitit run jobs in fresh processes
    try:
        with _run_lock(run_dir) as acquired:
            if not acquired:
                print(f"[skip] {run_dir.name}: another live process holds this run", flush=True)
                return "running"
            info = read_run_info(run_dir)
            if info and info.get("status") == "completed":
                print(f"[skip] {run_dir.name}: already completed ({run_dir})", flush=True)
                return "completed"
            outcome = _train_locked(cfg, run_dir, info or {}, job_num=hc.job.num if multirun else 0)
    except (SystemExit, KeyboardInterrupt):  # stopped before our signal handler was in place
        _leave_if_joblib_worker(1)
        raise
    _OUTCOMES.append(outcome.status)
    if outcome.signum is not None:
        if outcome.preempt_handler is not None:
            # submitit's own preemption handling: dump the job for a requeue, requeue it, exit the process
            print(f"[requeue] {run_dir.name}: handing over to submitit", flush=True)
            outcome.preempt_handler(outcome.signum, None)
        _leave_if_joblib_worker(128 + outcome.signum)
        raise RunStopped(outcome.signum)
    return outcome.status


def _leave_if_joblib_worker(code: int) -> None:
    """A joblib (loky) worker that was told to stop exits here: loky would otherwise catch the exception,
    send it to a launching process that may already be gone, and start the next queued run."""
    if os.getpid() == _LAUNCHING_PID:
        return
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
    if "joblib" not in str(launcher.get("_target_", "")):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def _run_lock(run_dir: Path):  # type: ignore[no-untyped-def]
    """An exclusive advisory lock on the run folder; the kernel releases it if the process dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train_locked(cfg: DictConfig, run_dir: Path, previous: dict[str, Any], job_num: int) -> Outcome:
    started = time.time()
    rid = run_id(cfg)
    info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": rid,
        "sweep": str(cfg.sweep),
        "status": "running",
        "reason": None,
        "attempts": int(previous.get("attempts", 0)) + 1,
        "started_at": previous.get("started_at") or _now(),
        "wall_time_s": float(previous.get("wall_time_s", 0.0)),
        "host": os.uname().nodename,
        "pid": os.getpid(),
    }
    for key in ("resumed_from_steps", "step"):
        if key in previous:
            info[key] = previous[key]
    write_run_info(run_dir, info)  # "running" before anything that can fail, so a failure has a record
    outcome = Outcome("failed")
    reason: str | None = None
    loggers: list[Any] = []
    recorder: RunRecorder | None = None
    trainer: pl.Trainer | None = None
    try:
        import lightning.pytorch as pl
        import torch

        from emergence_lab.model import Transformer
        from emergence_lab.module import EmergenceModule
        from emergence_lab.recorder import RunRecorder
        from emergence_lab.spec import build_spec
        from emergence_lab.wandb_setup import build_loggers

        spec = build_spec(cfg)
        task, model_cfg, optim, max_steps = spec.task, spec.model, spec.optim, spec.max_steps
        t = cfg.trainer
        tokens_per_step = spec.tokens_per_step
        threads = _set_threads(t.threads)
        devices = _pin_device(t, job_num)

        pl.seed_everything(int(cfg.seed), workers=False, verbose=False)
        model = Transformer(model_cfg)
        module = EmergenceModule(
            model, task, optim, int(cfg.seed), max_steps, bool(t.compile), t.eval_chunk_size
        )
        static = {
            "schema_version": SCHEMA_VERSION,
            "run_id": rid,
            "sweep": str(cfg.sweep),
            "task": task.name,
            "seed": int(cfg.seed),
            "width": model_cfg.width,
            "depth": model_cfg.depth,
            "n_heads": model_cfg.n_heads,
            "n_params": model_cfg.n_params,
            "n_params_total": model_cfg.n_params_total,
        }
        answer_lens = {s: len(task.answer_names(s)) for s in task.splits}
        recorder = RunRecorder(run_dir, static, int(t.eval_every), int(t.ckpt_every), answer_lens)
        resume = recorder.ckpt_path if recorder.ckpt_path.exists() else None

        resolved = OmegaConf.to_container(cfg, resolve=True)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved))
        info.update(
            {
                **static,
                "max_steps": max_steps,
                "tokens_per_step": tokens_per_step,
                "flops_per_step": module.flops_per_step,
                "threads": threads,
                "devices": devices if isinstance(devices, int) else list(devices),
                "device": _device_name(str(t.accelerator), devices),
                "versions": package_versions(),
                **git_state(),
                **task.provenance(),  # a text corpus's sha256 and size
            }
        )
        if resume is not None:
            step = int(torch.load(resume, map_location="cpu", weights_only=False)["global_step"])
            dropped = recorder.writer.keep_until(step)
            info["resumed_from_steps"] = [*previous.get("resumed_from_steps", []), step]
            print(f"[resume] {rid} from step {step} ({dropped} later rows dropped)", flush=True)
        else:
            # an earlier attempt may have evaluated step 0 and died before its first checkpoint
            dropped = recorder.writer.keep_until(-1)
            if dropped:
                print(f"[restart] {rid}: no checkpoint; {dropped} rows of an earlier try dropped", flush=True)
        write_run_info(run_dir, info)

        loggers = build_loggers(cfg, run_dir, rid, task.name, static, resolved)
        trainer = pl.Trainer(
            accelerator=t.accelerator,
            devices=devices,
            strategy=t.strategy,
            precision=t.precision,
            max_steps=max_steps,
            logger=loggers or False,
            callbacks=_callbacks(recorder, bool(t.progress_bar), bool(loggers)),
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=bool(t.progress_bar),
            gradient_clip_val=t.grad_clip,
            log_every_n_steps=int(t.log_every_n_steps),
            limit_val_batches=0,
            num_sanity_val_steps=0,
            deterministic=t.deterministic,
            default_root_dir=str(run_dir),
            plugins=_cluster_plugins(),
        )
        trainer.fit(module, ckpt_path=str(resume) if resume else None)
        sig = recorder.stop_signal
        if sig is not None and trainer.global_step < max_steps:
            outcome = Outcome("interrupted", sig, recorder.preempt_handler)
            name = signal.Signals(sig).name
            reason = f"stopped by {name} at step {trainer.global_step}; checkpoint saved"
        else:  # a signal at the last step still stops the sweep, but this run is done
            outcome = Outcome("completed", sig)
    except Exception as exc:  # the run is marked failed with its reason; the sweep goes on
        reason = f"{type(exc).__name__}: {exc}".strip()[:2000]
        (run_dir / "error.log").write_text(traceback.format_exc())
        log.error("run %s failed: %s", rid, reason)
    except BaseException as exc:  # Ctrl-C, or a signal before our handler was in place: resumable, not failed
        outcome = Outcome("interrupted")
        reason = f"{type(exc).__name__} {exc}".strip() + "; resumes from the last periodic checkpoint"
        raise
    finally:
        from emergence_lab.wandb_setup import finish_wandb

        finish_wandb()  # also a run that started before build_loggers raised
        if trainer is not None:
            info["step"] = trainer.global_step
        info.update(
            status=outcome.status,
            reason=reason,
            ended_at=_now(),
            wall_time_s=round(info["wall_time_s"] + time.time() - started, 3),
        )
        write_run_info(run_dir, info)
        print(f"[{outcome.status}] {rid} -> {run_dir}" + (f" ({reason})" if reason else ""), flush=True)
    return outcome


def _callbacks(recorder: RunRecorder, progress_bar: bool, has_logger: bool) -> list[pl.Callback]:
    from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

    callbacks: list[pl.Callback] = [recorder]
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if progress_bar:
        callbacks.append(RichProgressBar(leave=True))
    return callbacks


def _cluster_plugins() -> list[Any]:
    """Under SLURM, the submitit launcher requeues preempted jobs; Lightning must not requeue them too."""
    if "SLURM_JOB_ID" not in os.environ:
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def _set_threads(threads: int | str) -> int:
    """`auto`: the cores a job may use without oversubscribing the machine (see sweep.threads_per_job)."""
    from emergence_lab.sweep import LAUNCH_SIZE_ENV, threads_per_job

    if threads == "auto":
        launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
        launch_size = int(os.environ.get(LAUNCH_SIZE_ENV, "0")) or None
        threads = threads_per_job(launcher, launch_size)
    import torch

    torch.set_num_threads(int(threads))
    return int(threads)


def _pin_device(t: DictConfig, job_num: int) -> Any:
    """Several GPUs visible, a one-device job: a free GPU, job k preferring GPU k mod n (gpu_pin)."""
    import torch

    if t.accelerator in ("gpu", "cuda") and t.devices == 1 and torch.cuda.device_count() > 1:
        from emergence_lab.gpu_pin import claim_gpu

        return [claim_gpu(torch.cuda.device_count(), job_num)]
    return t.devices


def _device_name(accelerator: str, devices: Any = None) -> str:
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.get_device_name(devices[0] if isinstance(devices, list) and devices else None)
    return f"cpu ({os.cpu_count()} cores)"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- the command line -------------------------------------------------------------------------------
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> str:
    return train(cfg)


def run_cli(argv: list[str]) -> int:
    """Run the Hydra app with `argv` as its command line. Exit code: 0 when every run of this command is
    completed, 1 when one failed or is unfinished, 128 + N when signal N stopped it (rerun to resume)."""
    from emergence_lab.sweep import STOP_SIGNAL, SWEEP_SUMMARY, validate_overrides

    register_resolvers()
    error = validate_overrides(argv)
    if error:
        print(f"emergence train: {error}", file=sys.stderr)
        return 2
    _quiet_duplicate_lightning_logs()
    global _LAUNCHING_PID
    _LAUNCHING_PID = os.getpid()
    SWEEP_SUMMARY.clear()
    STOP_SIGNAL.clear()
    _OUTCOMES.clear()
    saved = sys.argv
    sys.argv = ["emergence train", *argv]
    try:
        _hydra_main()
    except RunStopped as stop:
        return _stopped(stop.signum)
    except SystemExit:  # how Hydra reports a launcher error, e.g. joblib workers that stopped on a signal
        if STOP_SIGNAL:
            return _stopped(STOP_SIGNAL[0])
        raise
    finally:
        sys.argv = saved
    if SWEEP_SUMMARY:
        return 0 if SWEEP_SUMMARY.get("unfinished", 0) == 0 else 1
    return 0 if all(s in ("completed", "running") for s in _OUTCOMES) else 1


def _stopped(signum: int) -> int:
    name = signal.Signals(signum).name
    print(f"[stopped] by {name}; rerun the same command to resume", file=sys.stderr, flush=True)
    return 128 + signum


def _quiet_duplicate_lightning_logs() -> None:
    """Lightning attaches its own console handler and also propagates to the root logger that Hydra
    configures, so every INFO line printed twice; keep only Hydra's."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # lightning 2.6 on torch 2.13, harmless
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
    # "GPU available", "Trainer.fit stopped" and an advertisement, once per run of a sweep
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
