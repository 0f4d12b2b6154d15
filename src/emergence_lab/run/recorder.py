"""The callback that turns training into a run folder: evaluations into `results.jsonl`, checkpoints, and a
clean stop on SIGTERM / SIGUSR1 (SLURM preemption), or on submitit's preemption signal inside a submitit job.

Order matters for resuming: at a step that is both an evaluation and a checkpoint step, the rows are written
before the checkpoint, so a checkpoint at step S always has every row up to S on disk.

Signals only set a flag: the step in progress finishes, the checkpoint is written, training stops. Inside a
submitit job (`hydra/launcher=submitit_*`), submitit's own handler for its preemption signal (USR2 unless
SUBMITIT_PREEMPT_SIGNAL says otherwise) is kept as `preempt_handler`: the launch layer calls it once the
checkpoint and run.json are on disk, so submitit then requeues the job, which resumes from that checkpoint.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from emergence_lab.contract import CHECKPOINT_FILE, Score
from emergence_lab.run.folder import CHECKPOINT_RUN_ID, RunFolder
from emergence_lab.run.module import EmergenceModule
from emergence_lab.run.signals import stop_signals, submitit_signal


class TrainingRecorder(pl.Callback):
    """The schedule and the stop signals every recorder shares. What is recorded is left to four hooks:
    `check_finite`, `_evaluate`, `_checkpoint` and `write_step`. `RunRecorder` records one run into its
    folder; `run.packed.PackedRecorder` records packed seeds, each into its own folder."""

    def __init__(self, eval_every: int, ckpt_every: int) -> None:
        self.eval_every = eval_every
        self.ckpt_every = ckpt_every
        self.stop_signal: int | None = None  # the first stop signal received
        self.signals_received: list[int] = []
        # checking the loss syncs the device, so it happens every few steps and before every checkpoint
        self.finite_check_every = 10
        self._last_eval_step = -1
        self._previous_handlers: dict[int, Any] = {}
        self._saved_submitit_handler: Any = None

    # ---- what is recorded ----------------------------------------------------------------------------
    def check_finite(self, trainer: pl.Trainer, outputs: Any, step: int) -> None:
        """Called every `finite_check_every` steps and before every checkpoint."""
        raise NotImplementedError

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def _checkpoint(self, trainer: pl.Trainer) -> None:
        raise NotImplementedError

    def write_step(self, step: int) -> None:
        raise NotImplementedError

    # ---- hooks -------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning installs its own SIGTERM handler when fit starts; ours replaces it for the run's length.
        for sig in stop_signals():
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        if trainer.global_step == 0:
            self._evaluate(trainer, pl_module)
        else:
            # resumed: every row up to the checkpoint's step is on disk, those of this step included
            self._last_eval_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *_: Any
    ) -> None:
        step = trainer.global_step
        last = step >= trainer.max_steps
        stopping = self.stop_signal is not None
        if trainer.world_size > 1:  # every rank checkpoints and stops together, whichever got the signal
            stopping = bool(trainer.strategy.reduce_boolean_decision(stopping, all=False))
        checkpoint = stopping or step % self.ckpt_every == 0 or last
        if checkpoint or step % self.finite_check_every == 0:
            self.check_finite(trainer, outputs, step)
        if step % self.eval_every == 0 or last:
            self._evaluate(trainer, pl_module)
        if checkpoint:
            self._checkpoint(trainer)
            if trainer.global_rank == 0:  # `emergence status` shows a running run's step
                self.write_step(step)
        if stopping:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_eval_step != trainer.global_step and self.stop_signal is None:
            self._evaluate(trainer, pl_module)
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc: BaseException) -> None:
        self._restore_handlers()

    # ---- work --------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        self.signals_received.append(signum)

    @property
    def preempt_handler(self) -> Any:
        """submitit's handler, when its preemption signal stopped the run (else None): calling it with that
        signal checkpoints the submission, requeues the job and exits the process."""
        preempt = submitit_signal()
        handler = self._saved_submitit_handler
        if preempt is None or preempt not in self.signals_received or not callable(handler):
            return None
        return handler

    def _restore_handlers(self) -> None:
        preempt = submitit_signal()
        if preempt in self._previous_handlers:
            self._saved_submitit_handler = self._previous_handlers[preempt]
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers.clear()


class RunRecorder(TrainingRecorder):
    """Records one run into its folder."""

    def __init__(
        self,
        folder: RunFolder,
        static: dict[str, Any],
        eval_every: int,
        ckpt_every: int,
        answer_lens: dict[str, int],
    ) -> None:
        super().__init__(eval_every, ckpt_every)
        self.folder = folder
        self.writer = folder.results
        self.ckpt_dir = folder.checkpoint_dir
        self.static = static
        self.answer_lens = answer_lens

    @property
    def ckpt_path(self) -> Path:
        return self.folder.checkpoint_path

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_RUN_ID] = str(self.static["run_id"])

    def check_finite(self, trainer: pl.Trainer, outputs: Any, step: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise non_finite_loss(loss.item(), step)

    def write_step(self, step: int) -> None:
        self.folder.write_info(step=step)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, EmergenceModule)
        step = trainer.global_step
        scores = pl_module.evaluate()
        pl_module.restart_clock()
        self._last_eval_step = step
        if trainer.global_rank != 0:
            return
        world = trainer.world_size
        tokens = step * pl_module.tokens_per_step * world
        flops = float(step * pl_module.flops_per_step * world)
        self.writer.append(evaluation_rows(self.static, scores, step, tokens, flops, self.answer_lens))
        for logger in trainer.loggers:
            logger.log_metrics(logged_metrics(scores), step=step)

    def _checkpoint(self, trainer: pl.Trainer) -> None:
        rank0 = trainer.global_rank == 0
        save_atomically(self.folder, lambda tmp: trainer.save_checkpoint(tmp, weights_only=False), rank0)
        trainer.strategy.barrier()


def logged_metrics(scores: list[tuple[str, Score]]) -> dict[str, float]:
    """An evaluation as logger keys `<split>/<metric>/<subtask>` (what analysis/wandb_io.py reads back)."""
    return {f"{split}/{s.metric}/{s.subtask}": s.value for split, s in scores}


def non_finite_loss(value: float, step: int) -> FloatingPointError:
    """What fails a run whose training loss is NaN or infinite (its reason in run.json)."""
    return FloatingPointError(f"non-finite training loss ({value}) at step {step}")


def evaluation_rows(
    static: dict[str, Any],
    scores: list[tuple[str, Score]],
    step: int,
    tokens: int,
    flops: float,
    answer_lens: dict[str, int],
) -> list[dict[str, Any]]:
    """The results.jsonl rows of one evaluation (the contract with analysis)."""
    return [
        {
            **static,
            "subtask": score.subtask,
            "split": split,
            "metric": score.metric,
            "value": score.value,
            "step": step,
            "tokens": tokens,
            "flops": flops,
            "answer_len": answer_lens[split],
            "n_examples": score.n_examples,
        }
        for split, score in scores
    ]


def save_atomically(folder: RunFolder, save: Callable[[Path], None], rank0: bool = True) -> None:
    """`save(tmp)` a checkpoint to a temporary file, then rename it to last.ckpt, so a kill mid-save never
    leaves a torn checkpoint; the previous last.ckpt is kept as prev.ckpt (a resume falls back to it if
    last.ckpt cannot be read). Only rank 0 renames."""
    tmp = folder.checkpoint_dir / f".{CHECKPOINT_FILE}.tmp"
    try:
        save(tmp)
        if rank0:
            if folder.checkpoint_path.exists():
                os.replace(folder.checkpoint_path, folder.previous_checkpoint_path)
            os.replace(tmp, folder.checkpoint_path)
    except BaseException:  # a full disk: no torn temporary file is left behind
        if rank0:
            tmp.unlink(missing_ok=True)
        raise
