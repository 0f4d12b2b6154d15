"""Train the seeds of one job: `train_seeds(cfg, run_dir, threads=..., devices=...)`.

A job names its seeds in `seeds` (null: just `seed`). Each seed is its own run: its config is the job's with
`seed` set, its run id and folder those its unpacked run would have (a sibling of `run_dir`, which is the
first seed's). Completed seeds are skipped, seeds another live process holds are left alone, and the rest
are grouped by the step they resume from (each group resumes from its seeds' own checkpoints), in packs of
`trainer.pack` seeds (`auto`: run/pack_rule.py). A pack of one trains through the unpacked `train` path.
"""

from __future__ import annotations

import copy
import signal
import sys
import tempfile
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from emergence_lab.run.folder import RunFolder, load_checkpoint, one_line
from emergence_lab.run.run_id import run_id
from emergence_lab.run.train import (
    Devices,
    Outcome,
    _build,
    _in_folder,
    _prepare_resume,
    _previous_attempt,
    _train_locked,
    _trainer,
    quiet_lightning_logs,
    run_info,
    secondary_rank,
    train,
)

if TYPE_CHECKING:
    pass

STATUS_ORDER = ("failed", "refused", "interrupted", "running", "completed")
# the packed forward (vmap) is not compiled, whatever trainer.compile says; run.json says so
NOT_COMPILED = {
    "compile_decision": "compile: off (packed seeds: the packed forward is not compiled)",
    "compile_mode": "eager: packed",
}


def job_seeds(cfg: DictConfig) -> list[int]:
    seeds = cfg.get("seeds")
    return [int(s) for s in seeds] if seeds else [int(cfg.seed)]


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of one seed's run: the job's, with `seed` set and no `seeds`."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.seed = seed
        out.seeds = None
    return out


def train_seeds(cfg: DictConfig, run_dir: Path, *, threads: int, devices: Devices) -> Outcome:
    """Train every seed of the job; the Outcome of the job is its worst seed's (a signal stops the job)."""
    seeds = job_seeds(cfg)
    if cfg.get("seeds") is None or len(seeds) == 1 or secondary_rank():
        return train(seed_config(cfg, seeds[0]), run_dir, threads=threads, devices=devices)
    quiet_lightning_logs()
    parent = Path(run_dir).parent
    outcomes: list[Outcome] = []
    with ExitStack() as locks:
        pending: dict[int, list[tuple[int, DictConfig, str, RunFolder, dict[str, Any]]]] = defaultdict(list)
        for seed in seeds:
            scfg = seed_config(cfg, seed)
            rid = run_id(scfg)
            folder = RunFolder(parent / rid)
            scfg = _in_folder(scfg, folder.path)
            try:
                if not locks.enter_context(folder.lock()):
                    print(f"[skip] {folder.name}: another live process holds this run", flush=True)
                    outcomes.append(Outcome("running"))
                    continue
                previous = _previous_attempt(folder, rid)
                if isinstance(previous, Outcome):
                    outcomes.append(previous)
                    continue
                step = folder.resume_step() or 0
            except Exception as exc:  # unwritable folder, or checkpoints none of which loads
                print(f"[failed] {folder.path}: {one_line(exc)}", file=sys.stderr, flush=True)
                outcomes.append(_fail_unstarted(folder, rid, cfg, exc))
                continue
            pending[step].append((seed, scfg, rid, folder, previous))
        for step in sorted(pending):
            group = pending[step]
            size = _pack_size(group[0][1], len(group))
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                if len(chunk) == 1:
                    seed, scfg, rid, folder, previous = chunk[0]
                    outcome = _train_locked(scfg, rid, folder, previous, threads, devices)
                    results = [outcome]
                else:
                    results = _train_packed(chunk, threads, devices)
                outcomes += results
                stopped = [o for o in results if o.signum is not None]
                if stopped:  # a stop signal ends the job; the other seeds resume on a rerun
                    return stopped[0]
    return min(outcomes, key=lambda o: STATUS_ORDER.index(o.status)) if outcomes else Outcome("completed")


def _fail_unstarted(folder: RunFolder, rid: str, cfg: DictConfig, exc: Exception) -> Outcome:
    try:
        folder.start(rid, str(cfg.sweep), {})
        folder.finish("failed", one_line(exc))
    except OSError:
        pass
    return Outcome("failed")


def _pack_size(cfg: DictConfig, n_seeds: int) -> int:
    from emergence_lab.run.pack_rule import pack_size
    from emergence_lab.run.spec import build_spec

    spec = build_spec(cfg)
    device = "cpu" if str(cfg.trainer.accelerator) == "cpu" else "cuda"
    return pack_size(cfg.trainer.get("pack", 1), spec.model.n_params, device, n_seeds)


def _train_packed(
    chunk: list[tuple[int, DictConfig, str, RunFolder, dict[str, Any]]], threads: int, devices: Devices
) -> list[Outcome]:
    """Train the seeds of `chunk` (all resuming from the same step) packed in one model; one Outcome each."""
    import lightning.pytorch as pl
    import torch

    from emergence_lab.run.loggers import build_loggers, finish_loggers
    from emergence_lab.run.packed import PackedModule, PackedRecorder, SeedRun, stack_checkpoints
    from emergence_lab.run.packed_model import PackedTransformer
    from emergence_lab.run.spec import build_spec

    seeds = [c[0] for c in chunk]
    runs = [SeedRun(seed, rid, folder, {}) for seed, _, rid, folder, _ in chunk]
    for (_, scfg, rid, folder, previous), _run in zip(chunk, runs, strict=True):
        folder.start(rid, str(scfg.sweep), previous)
    status: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    trainer: pl.Trainer | None = None
    recorder: PackedRecorder | None = None
    signum = None
    try:
        cfg0 = chunk[0][1]
        spec = build_spec(cfg0)
        t = cfg0.trainer
        if (isinstance(devices, int) and devices != 1) or (isinstance(devices, list) and len(devices) != 1):
            raise ValueError(f"packed seeds train on one device, not devices={devices}: set trainer.pack=1")
        torch.set_num_threads(int(threads))
        models, unpacked_keys = [], []
        for (seed, scfg, rid, folder, _), run in zip(chunk, runs, strict=True):
            pl.seed_everything(seed, workers=False, verbose=False)  # the unpacked run's initial weights
            module, _, run.static = _build(scfg, spec, folder, rid)
            models.append(module.model)
            unpacked_keys = list(module.state_dict())
        packed = PackedTransformer(models)
        module = PackedModule(packed, spec.task, spec.optim, seeds, spec.max_steps, int(t.eval_chunk_size))
        resumes, resolved = [], []
        for (_, scfg, rid, folder, _), run in zip(chunk, runs, strict=True):
            resolved.append(OmegaConf.to_container(scfg, resolve=True))
            folder.write_config(OmegaConf.to_yaml(resolved[-1]))
            info = run_info(spec, run.static, module.flops_per_step, str(t.accelerator), threads, devices)
            folder.info.update({**info, "pack": {"size": len(seeds), "seeds": seeds}, **NOT_COMPILED})
            resumes.append(_prepare_resume(folder, rid))
            folder.write_info()
        answer_lens = {s: len(spec.task.answer_names(s)) for s in spec.task.splits}
        recorder = PackedRecorder(runs, unpacked_keys, int(t.eval_every), int(t.ckpt_every), answer_lens)
        for i, ((_, scfg, rid, folder, _), run) in enumerate(zip(chunk, runs, strict=True)):
            # each seed its own wandb run / CSV file, as unpacked; built one by one, so a failure closes
            # the ones before it (finally, below)
            recorder.loggers[i] = build_loggers(
                scfg, folder.path, rid, spec.task.name, run.static, resolved[i], concurrent=True
            )
        trainer = _trainer(t, spec.max_steps, devices, recorder, [], runs[0].folder.path)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory(dir=runs[0].folder.checkpoint_dir.parent) as tmp:
            ckpt_path = None
            if all(r is not None for r in resumes):
                ckpt_path = Path(tmp) / "packed.ckpt"
                torch.save(stack_checkpoints([load_checkpoint(r) for r in resumes]), ckpt_path)  # type: ignore[arg-type]
            elif any(r is not None for r in resumes):
                raise RuntimeError("a pack resumes from the same step in every seed")
            trainer.fit(module, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
        signum = recorder.stop_signal
        for i, run in enumerate(runs):
            if run.failed is not None:
                status[i], reasons[i] = "failed", run.failed
            elif signum is not None and trainer.global_step < spec.max_steps:
                name = signal.Signals(signum).name
                status[i] = "interrupted"
                reasons[i] = f"stopped by {name} at step {trainer.global_step}; checkpoint saved"
            else:
                status[i], reasons[i] = "completed", None
    except Exception as exc:  # every seed still running fails with the job's reason
        for i, run in enumerate(runs):
            if run.failed is None:
                status[i], reasons[i] = "failed", run.folder.fail(exc)
            else:
                status[i], reasons[i] = "failed", run.failed
    except BaseException as exc:  # Ctrl-C: resumable, not failed
        for i, run in enumerate(runs):
            status[i] = "failed" if run.failed else "interrupted"
            reasons[i] = (
                run.failed or f"{type(exc).__name__} {exc}".strip() + "; resumes from the last checkpoint"
            )
        raise
    finally:
        for i, loggers in enumerate(recorder.loggers if recorder is not None else []):
            finish_loggers(loggers, "success" if status.get(i) == "completed" else "failed")
        for i, run in enumerate(runs):
            if run.failed is not None and status.get(i) == "failed" and reasons.get(i) == run.failed:
                continue  # the recorder already wrote its end
            st = status.get(i, "failed")
            step = trainer.global_step if trainer is not None else None
            unsaved = run.folder.finish(st, reasons.get(i), step)
            note = "; ".join(x for x in (reasons.get(i), unsaved) if x)
            print(
                f"[{st}] {run.run_id} -> {run.folder.path} (packed)" + (f" ({note})" if note else ""),
                flush=True,
            )
    handler = recorder.preempt_handler if recorder is not None else None
    return [Outcome(status[i], None if status[i] == "failed" else signum, handler) for i in range(len(runs))]
