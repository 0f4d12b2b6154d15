"""The one LightningModule: any width, any depth, any task.

Training data is generated on the device inside `training_step` from (seed, global step), so the data
loader only ticks. Evaluation is `evaluate()`, called by the RunRecorder callback on its schedule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.throughput import get_available_flops
from torch import nn

from emergence_lab.contract import Score
from emergence_lab.evaluation import evaluate
from emergence_lab.model import Transformer, compile_decision, compile_or_eager
from emergence_lab.run.optim import OptimConfig, build_optimizer
from emergence_lab.tasks.base import Task, TaskBatch


class StepTicker:
    """An endless iterable for Lightning's fit loop; the real batch is generated in `training_step`."""

    def __iter__(self) -> Iterator[int]:
        while True:
            yield 0


class EmergenceModule(pl.LightningModule):
    def __init__(
        self,
        model: Transformer,
        task: Task,
        optim: OptimConfig,
        seed: int,
        max_steps: int,
        compile: bool | str = "off",
        eval_chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.optim = optim
        self.seed = seed
        self.max_steps = max_steps
        self.eval_chunk_size = eval_chunk_size
        self.seq_len = task.seq_len("train") - 1  # the model reads all but the last token
        self.tokens_per_step = optim.batch_size * self.seq_len
        self.flops_per_step = model.cfg.flops_per_token(self.seq_len) * self.tokens_per_step
        self.compile_setting = compile  # on / off / auto: decided at fit start, on the device
        # for run.json: `compile_decision` (the reason line) and `compile_mode` ("compiled (inductor)" or
        # "eager: <why>"), filled by on_fit_start and handed to `on_compile_decided` (the run folder's writer)
        self.compile_record: dict[str, str] = {}
        self.on_compile_decided: Callable[..., None] | None = None  # called with the record's keys
        self._set_train_forward(model)
        self._eval_sets: dict[str, TaskBatch] = {}
        self._clock: tuple[float, int] | None = None  # (time, step) where the throughput window began
        self._peak_flops: float | None = None

    # ---- training ----------------------------------------------------------------------------------
    def _set_train_forward(self, forward: torch.nn.Module) -> None:
        # object.__setattr__, not nn.Module's: a compiled (or plain) module assigned as an attribute would be
        # registered as a submodule, and state_dict() would hold a second copy of every weight
        object.__setattr__(self, "_train_forward", forward)

    def on_fit_start(self) -> None:
        """Compile the training forward or not (`compile_decision`), checked on a real training batch; a
        compiler that fails leaves the eager model, with the reason (`compile_or_eager`)."""
        cfg = self.model.cfg
        on, why = compile_decision(
            self.compile_setting, cfg.width, cfg.depth, self.max_steps, self.device.type
        )
        forward, mode = self.model, "eager: not compiled (see compile_decision)"
        if on:
            example = self.task.train_batch(self.optim.batch_size, self.seed, 0, self.device).tokens[:, :-1]
            # under the training step's autocast (bf16-mixed), so the checked graph is the one training runs
            step_context = (
                self._trainer.precision_plugin.train_step_context() if self._trainer else nullcontext()
            )
            with step_context:
                forward, mode = compile_or_eager(self.model, example)
        self._set_train_forward(forward)
        self.compile_record = {"compile_decision": why, "compile_mode": mode}
        if self.on_compile_decided is not None:
            self.on_compile_decided(**self.compile_record)

    def train_dataloader(self) -> StepTicker:
        return StepTicker()

    def training_step(self, _: object, __: int) -> torch.Tensor:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        batch = self.task.train_batch(
            self.optim.batch_size, self.seed, self.global_step * world + rank, self.device
        )
        logits = self._train_forward(batch.tokens[:, :-1])
        answer_logits = logits[:, batch.answer_pos - 1]
        loss = F.cross_entropy(answer_logits.flatten(0, 1).float(), batch.answers.flatten())
        done = self.global_step + 1
        if done % self.trainer.log_every_n_steps == 0:  # self.log costs ~0.3 ms a call: only when it is kept
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/tokens", float(done * self.tokens_per_step * world))
            self.log("train/flops", float(done * self.flops_per_step * world))
        self._log_throughput(done, world)
        return loss

    def _log_throughput(self, done: int, world: int) -> None:
        """Tokens/s (and MFU on a GPU) over the steps since the last log, evaluation time excluded."""
        now = time.perf_counter()
        if self._clock is None:
            self._clock = (now, done)
            return
        start, first = self._clock
        if done % self.trainer.log_every_n_steps or done == first:
            return
        tokens_per_s = (done - first) * self.tokens_per_step * world / (now - start)
        self.log("train/tokens_per_s", tokens_per_s, prog_bar=True)
        if self.device.type == "cuda":
            if self._peak_flops is None:
                precision = torch.bfloat16 if "bf16" in str(self.trainer.precision) else torch.float32
                self._peak_flops = get_available_flops(self.device, precision) or 0.0
            if self._peak_flops:
                achieved = tokens_per_s / world * self.flops_per_step / self.tokens_per_step
                self.log("train/mfu", achieved / self._peak_flops)
        self._clock = (now, done)

    def restart_clock(self) -> None:
        """Called after an evaluation, so tokens/s measures training alone."""
        self._clock = None

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        optimizer = build_optimizer(self.model, self.optim, self.device.type)
        return with_schedule(optimizer, self.optim, self.max_steps)

    # ---- evaluation --------------------------------------------------------------------------------
    def eval_set(self, split: str) -> TaskBatch:
        if split not in self._eval_sets:
            self._eval_sets[split] = self.task.eval_batch(split, self.device)
        return self._eval_sets[split]

    def evaluate(self) -> list[tuple[str, Score]]:
        """(split, score) for every split of the task, at the current weights."""
        return score_model(self.model, self.task, self.eval_set, self.eval_chunk_size, self._autocast())

    def _autocast(self) -> bool:
        return self.device.type == "cuda" and "bf16" in str(self.trainer.precision)

    # ---- checkpoints carry the RNG state, so dropout continues identically after a resume ------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["rng_cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # checkpoints written before the training forward was kept out of the module tree hold its copy too
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("_train_forward.")]:
            del state[key]
        if "rng_cpu" in checkpoint:
            torch.set_rng_state(checkpoint["rng_cpu"])
        if "rng_cuda" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng_cuda"])


def with_schedule(optimizer: torch.optim.Optimizer, o: OptimConfig, max_steps: int) -> dict[str, Any]:
    """What `configure_optimizers` returns: the optimizer and its per-step `lr_schedule`."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(o, max_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lr_schedule(o: OptimConfig, max_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of a step: linear warmup, then cosine decay to `min_lr_ratio`."""
    warmup, total, floor = o.warmup_steps, max(max_steps, 1), o.min_lr_ratio

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return schedule


def score_model(
    model: nn.Module,
    task: Task,
    eval_set: Callable[[str], TaskBatch],
    chunk_size: int,
    autocast: bool,
) -> list[tuple[str, Score]]:
    """(split, score) for every split of `task`, scoring `model` in eval mode on `eval_set(split)`."""
    was_training = model.training
    model.eval()
    device_type = next(model.parameters()).device.type
    try:
        out = []
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            for split in task.splits:
                # a task may score a split itself (text: loss per byte, ICL and induction scores)
                scores = task.evaluate_split(model, split, eval_set(split), chunk_size) or evaluate(
                    model, eval_set(split), task.answer_names(split), task.subtask_names, chunk_size
                )
                out += [(split, score) for score in scores]
        return out
    finally:
        model.train(was_training)
