"""Train one model into its run folder: `train(cfg, run_dir, threads=..., devices=...)`.

A run folder is the unit of truth: `config.yaml`, `run.json` (status and provenance), `results.jsonl` and
`checkpoints/last.ckpt`. Training the same config into the same folder again skips a completed run, resumes
an interrupted one from its checkpoint, and leaves a run still held by a live process alone.

Nothing here reads Hydra's global state: the launch layer decides the folder, the CPU threads and the
devices, and what to do when a signal stopped the run (the returned Outcome says so).
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from emergence_lab.contract import SCHEMA_VERSION
from emergence_lab.run.folder import RunFolder, RunInfoError, load_run_info, one_line
from emergence_lab.run.provenance import git_state, package_versions
from emergence_lab.run.run_id import run_id

# torch and lightning are imported where a run trains, not here: the process that launches a joblib or
# submitit sweep (and `--dry-run`) trains nothing and is seconds faster to start without them.
if TYPE_CHECKING:
    import lightning.pytorch as pl

    from emergence_lab.run.module import EmergenceModule
    from emergence_lab.run.recorder import RunRecorder
    from emergence_lab.run.spec import RunSpec


Devices = int | str | list[int]


@dataclass
class Outcome:
    """How a call of `train` ended: the run's status, and the signal that stopped it, if one did."""

    status: str
    signum: int | None = None
    preempt_handler: Any = None  # submitit's requeue handler, when its preemption signal stopped the run


def train(cfg: DictConfig, run_dir: Path, *, threads: int, devices: Devices) -> Outcome:
    """Train the run described by `cfg` into `run_dir` with `threads` CPU threads on `devices` (Lightning's
    `devices`: a count, "auto" or a list of indices). A folder whose run.json names another run, or cannot
    be read, is refused (status "refused") and left untouched."""
    quiet_lightning_logs()  # again here: joblib and submitit run jobs in fresh processes
    folder = RunFolder(run_dir)
    cfg = _in_folder(cfg, folder.path)
    rid = run_id(cfg)
    if secondary_rank():
        return _train_secondary(cfg, rid, folder, threads, devices)
    try:
        with folder.lock() as acquired:
            if not acquired:
                print(f"[skip] {folder.name}: another live process holds this run", flush=True)
                return Outcome("running")
            previous = _previous_attempt(folder, rid)
            if isinstance(previous, Outcome):
                return previous
            return _train_locked(cfg, rid, folder, previous, threads, devices)
    except OSError as exc:  # the folder cannot be created, locked or written (read-only, full): nothing ran
        print(f"[failed] {folder.path}: {one_line(exc)}", file=sys.stderr, flush=True)
        return Outcome("failed")


def _previous_attempt(folder: RunFolder, rid: str) -> dict[str, Any] | Outcome:
    """What earlier attempts of run `rid` recorded in the folder, or how this call ends without training:
    skipped as completed, or refused (the folder is another run's, or its run.json is unreadable: skipping
    it as done, or resuming its checkpoint under this run id, would fake this run)."""
    try:
        previous = load_run_info(folder.path)
    except RunInfoError as exc:
        print(f"[refused] {exc}; repair or delete it", file=sys.stderr, flush=True)
        return Outcome("refused")
    # without run.json (deleted, or lost), the checkpoint still says whose run the folder holds
    holder = previous.get("run_id") if previous else folder.checkpoint_run_id()
    if holder not in (None, rid):
        print(
            f"[refused] {folder.path} holds run {holder}, not {rid}: point this config at its own folder",
            file=sys.stderr,
            flush=True,
        )
        return Outcome("refused")
    if previous and previous.get("status") == "completed":
        print(f"[skip] {folder.name}: already completed ({folder.path})", flush=True)
        return Outcome("completed")
    return previous or {}


def secondary_rank() -> bool:
    """True in a training process other than rank 0 of a multi-process run: a DDP rank that Lightning
    started (it sets LOCAL_RANK / NODE_RANK), or a task of a multi-task job (RANK, SLURM_PROCID)."""
    keys = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return any(os.environ.get(key, "0").strip() not in ("", "0") for key in keys)


def _train_secondary(cfg: DictConfig, rid: str, folder: RunFolder, threads: int, devices: Devices) -> Outcome:
    """A rank other than 0 trains alongside rank 0, which owns the folder: the lock, run.json, results,
    config.yaml and checkpoints. It resumes from the checkpoint rank 0 chose (rank 0 set a bad last.ckpt aside
    before it started this process) and writes nothing."""
    import lightning.pytorch as pl
    import torch

    from emergence_lab.run.spec import build_spec

    spec = build_spec(cfg)
    torch.set_num_threads(int(threads))
    pl.seed_everything(int(cfg.seed), workers=False, verbose=False)
    module, recorder, _ = _build(cfg, spec, folder, rid)
    found = folder.resume_from(set_aside=False)
    trainer = _trainer(cfg.trainer, spec.max_steps, devices, recorder, [], folder.path)
    trainer.fit(module, ckpt_path=str(found[0]) if found else None, weights_only=True)
    sig = recorder.stop_signal
    return Outcome("interrupted" if sig is not None else "completed", sig, recorder.preempt_handler)


def _in_folder(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """`paths.output_dir` is Hydra's output folder (`${hydra:runtime.output_dir}`), which is the run folder:
    set it, so resolving the config reads no Hydra state. `paths` is not part of the run id."""
    cfg = copy.deepcopy(cfg)
    if "paths" in cfg:
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
    return cfg


def _train_locked(
    cfg: DictConfig, rid: str, folder: RunFolder, previous: dict[str, Any], threads: int, devices: Devices
) -> Outcome:
    folder.start(
        rid, str(cfg.sweep), previous
    )  # "running" before anything that can fail: a failure has a record
    outcome = Outcome("failed")
    reason: str | None = None
    trainer: pl.Trainer | None = None
    try:
        import lightning.pytorch as pl
        import torch

        from emergence_lab.run.loggers import build_loggers
        from emergence_lab.run.memory import check_device_memory, run_memory
        from emergence_lab.run.spec import build_spec

        spec = build_spec(cfg)
        t = cfg.trainer
        check_device_memory(rid, run_memory(spec, t), str(t.accelerator), devices)
        torch.set_num_threads(int(threads))
        pl.seed_everything(int(cfg.seed), workers=False, verbose=False)
        module, recorder, static = _build(cfg, spec, folder, rid)
        module.on_compile_decided = folder.write_info  # at fit start, on the device (a bound method pickles)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        folder.write_config(OmegaConf.to_yaml(resolved))
        folder.info.update(
            run_info(spec, static, module.flops_per_step, str(t.accelerator), threads, devices)
        )
        resume = _prepare_resume(folder, rid)
        folder.write_info()

        loggers = build_loggers(cfg, folder.path, rid, spec.task.name, static, resolved)
        trainer = _trainer(t, spec.max_steps, devices, recorder, loggers, folder.path)
        # weights_only: the checkpoint was checked by load_checkpoint; Lightning loads it the same safe way
        trainer.fit(module, ckpt_path=str(resume) if resume else None, weights_only=True)
        sig = recorder.stop_signal
        if sig is not None and trainer.global_step < spec.max_steps:
            outcome = Outcome("interrupted", sig, recorder.preempt_handler)
            name = signal.Signals(sig).name
            reason = f"stopped by {name} at step {trainer.global_step}; checkpoint saved"
        else:  # a signal at the last step still stops the sweep, but this run is done
            outcome = Outcome("completed", sig)
    except Exception as exc:  # the run is marked failed with its reason; the sweep goes on
        reason = folder.fail(exc)
    except BaseException as exc:  # Ctrl-C, or a signal before our handler was in place: resumable, not failed
        outcome = Outcome("interrupted")
        reason = f"{type(exc).__name__} {exc}".strip() + "; resumes from the last periodic checkpoint"
        raise
    finally:
        from emergence_lab.run.loggers import finish_wandb

        finish_wandb()  # also a run that started before build_loggers raised
        unsaved = folder.finish(outcome.status, reason, trainer.global_step if trainer is not None else None)
        note = "; ".join(x for x in (reason, unsaved) if x)
        print(f"[{outcome.status}] {rid} -> {folder.path}" + (f" ({note})" if note else ""), flush=True)
    return outcome


def run_info(
    spec: RunSpec,
    static: dict[str, Any],
    flops_per_step: int,
    accelerator: str,
    threads: int,
    devices: Devices,
) -> dict[str, Any]:
    """What run.json records of a run besides its status: its columns, budget, machine and provenance."""
    return {
        **static,
        "max_steps": spec.max_steps,
        "tokens_per_step": spec.tokens_per_step,
        "flops_per_step": flops_per_step,
        "threads": int(threads),
        "devices": devices if isinstance(devices, (int, str)) else list(devices),
        "device": _device_name(accelerator, devices),
        "versions": package_versions(),
        **git_state(),
        **spec.task.provenance(),  # a text corpus's sha256 and size
    }


def _build(
    cfg: DictConfig, spec: RunSpec, folder: RunFolder, rid: str
) -> tuple[EmergenceModule, RunRecorder, dict[str, Any]]:
    """The LightningModule, the callback that records it, and the columns every results row carries."""
    from emergence_lab.model import Transformer
    from emergence_lab.run.module import EmergenceModule
    from emergence_lab.run.recorder import RunRecorder

    task, model_cfg, t = spec.task, spec.model, cfg.trainer
    model = Transformer(model_cfg)
    module = EmergenceModule(
        model, task, spec.optim, int(cfg.seed), spec.max_steps, t.compile, t.eval_chunk_size
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
    recorder = RunRecorder(folder, static, int(t.eval_every), int(t.ckpt_every), answer_lens)
    return module, recorder, static


def _prepare_resume(folder: RunFolder, rid: str) -> Path | None:
    """The checkpoint to resume from, if any; rows measured after it are dropped (they are measured again)."""
    found = folder.resume_from()
    if found is not None:
        path, step = found
        dropped = folder.truncate_after(step)
        folder.record_resume(step)
        print(f"[resume] {rid} from step {step} ({dropped} later rows dropped)", flush=True)
        return path
    # an earlier attempt may have evaluated step 0 and died before its first checkpoint
    dropped = folder.truncate_after(-1)
    if dropped:
        print(f"[restart] {rid}: no checkpoint; {dropped} rows of an earlier try dropped", flush=True)
    return None


def _trainer(
    t: DictConfig, max_steps: int, devices: Devices, recorder: RunRecorder, loggers: list[Any], run_dir: Path
) -> pl.Trainer:
    import lightning.pytorch as pl

    return pl.Trainer(
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


def _device_name(accelerator: str, devices: Any = None) -> str:
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.get_device_name(devices[0] if isinstance(devices, list) and devices else None)
    return f"cpu ({os.cpu_count()} cores)"


def quiet_lightning_logs() -> None:
    """Lightning attaches its own console handler and also propagates to the root logger that Hydra
    configures, so every INFO line printed twice; keep only Hydra's."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # lightning 2.6 on torch 2.13, harmless
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
    # "GPU available", "Trainer.fit stopped" and an advertisement, once per run of a sweep
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
