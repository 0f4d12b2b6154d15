"""Packed seeds in Lightning: `PackedModule` trains N seeds of one config as one stacked model, and
`PackedRecorder` records each seed into its own run folder, exactly the files its unpacked run writes.

- Each seed's batch is the one its unpacked run draws at that step (`task.train_batch(batch, seed, step)`).
- The loss is the sum of the per-seed losses, so each seed's slice of the gradient is its unpacked gradient.
- Gradients are clipped per model, each by its own norm (`configure_gradient_clipping`).
- A non-finite loss fails that seed alone, at the step its unpacked run would have failed (the same checks,
  every `finite_check_every` steps and before checkpoints): its folder gets the unpacked run's failed status
  and reason; its loss and gradients are masked from then on while the others continue.
- Each seed's checkpoint is an unpacked run's checkpoint (its own weights and optimizer state, under the
  unpacked module's names), so any seed resumes packed or alone; `stack_checkpoints` packs them again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from emergence_lab.contract import Score
from emergence_lab.run.folder import CHECKPOINT_RUN_ID, RunFolder
from emergence_lab.run.module import EmergenceModule, StepTicker, score_model, with_schedule
from emergence_lab.run.optim import OptimConfig
from emergence_lab.run.packed_model import (
    PackedTransformer,
    build_packed_optimizer,
    split_optimizer_state,
    stack_optimizer_states,
)
from emergence_lab.run.recorder import (
    TrainingRecorder,
    evaluation_rows,
    logged_metrics,
    non_finite_loss,
    save_atomically,
)
from emergence_lab.tasks.base import Task, TaskBatch

PARAMS_PREFIX = "packed.params."


class PackedModule(pl.LightningModule):
    def __init__(
        self,
        packed: PackedTransformer,
        task: Task,
        optim: OptimConfig,
        seeds: list[int],
        max_steps: int,
        eval_chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        if len(seeds) != packed.n_models:
            raise ValueError(f"{len(seeds)} seeds for a pack of {packed.n_models} models")
        self.packed = packed
        self.task = task
        self.optim = optim
        self.seeds = list(seeds)
        self.max_steps = max_steps
        self.eval_chunk_size = eval_chunk_size
        seq_len = task.seq_len("train") - 1
        self.tokens_per_step = optim.batch_size * seq_len  # per seed, as an unpacked run counts
        self.flops_per_step = packed.cfg.flops_per_token(seq_len) * self.tokens_per_step
        self.alive = [True] * len(seeds)  # False once a seed's loss went non-finite
        self._eval_sets: dict[str, TaskBatch] = {}

    def train_dataloader(self) -> StepTicker:
        return StepTicker()

    def training_step(self, _: object, __: int) -> dict[str, torch.Tensor]:
        if self.trainer.world_size > 1:
            raise RuntimeError("packed seeds train in one process: trainer.pack needs a single device")
        batches = [
            self.task.train_batch(self.optim.batch_size, seed, self.global_step, self.device)
            for seed in self.seeds
        ]
        logits = self.packed(torch.stack([b.tokens[:, :-1] for b in batches]))
        losses = torch.stack(
            [
                F.cross_entropy(logits[i][:, b.answer_pos - 1].flatten(0, 1).float(), b.answers.flatten())
                for i, b in enumerate(batches)
            ]
        )
        alive = torch.tensor(self.alive, device=losses.device)
        # a failed seed's NaN must not reach the sum (and, through it, the others' progress bar or logs)
        loss = torch.where(alive, losses, torch.zeros_like(losses)).sum()
        return {"loss": loss, "losses": losses.detach()}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if not all(self.alive):
            self.packed.zero_grads_of(torch.tensor([not a for a in self.alive], device=self.device))
        if gradient_clip_val:
            if gradient_clip_algorithm not in (None, "norm"):
                raise ValueError("packed seeds clip by norm only")
            self.packed.clip_grad_norm_(float(gradient_clip_val))

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        optimizer = build_packed_optimizer(self.packed, self.optim, self.device.type)
        return with_schedule(optimizer, self.optim, self.max_steps)

    eval_set = EmergenceModule.eval_set  # the fixed evaluation sets, made once on the device

    def evaluate_seed(self, i: int) -> list[tuple[str, Score]]:
        """(split, score) of seed i, scored by a plain Transformer holding its weights (as unpacked)."""
        autocast = self.device.type == "cuda" and "bf16" in str(self.trainer.precision)
        return score_model(self.packed.model_of(i), self.task, self.eval_set, self.eval_chunk_size, autocast)

    # the RNG state travels with the checkpoint, as in EmergenceModule
    on_save_checkpoint = EmergenceModule.on_save_checkpoint
    on_load_checkpoint = EmergenceModule.on_load_checkpoint


# ---- checkpoints: one packed dict <-> one unpacked checkpoint per seed ----
def split_checkpoint(ckpt: dict[str, Any], unpacked_keys: list[str]) -> list[dict[str, Any]]:
    """The packed module's checkpoint as one unpacked checkpoint per seed. `unpacked_keys` are the state-dict
    keys of an unpacked EmergenceModule (`model.<name>`, and any alias of the same weights)."""
    stacked = {
        k.removeprefix(PARAMS_PREFIX).replace("__", "."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(PARAMS_PREFIX)
    }
    n = next(iter(stacked.values())).shape[0]
    optimizers = split_optimizer_state(ckpt["optimizer_states"][0], n)
    shared = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer_states")}
    out = []
    for i in range(n):
        state = {key: stacked[_param_name(key)][i].clone() for key in unpacked_keys}
        out.append({**shared, "state_dict": state, "optimizer_states": [optimizers[i]]})
    return out


def stack_checkpoints(ckpts: list[dict[str, Any]]) -> dict[str, Any]:
    """Unpacked checkpoints of the same step (one per seed, in the pack's order) as the packed module's."""
    first = ckpts[0]
    names = [k.removeprefix("model.") for k in first["state_dict"] if k.startswith("model.")]
    state = {
        PARAMS_PREFIX + name.replace(".", "__"): torch.stack(
            [c["state_dict"]["model." + name] for c in ckpts]
        )
        for name in names
    }
    optimizer = stack_optimizer_states([c["optimizer_states"][0] for c in ckpts])
    shared = {
        k: v for k, v in first.items() if k not in ("state_dict", "optimizer_states", CHECKPOINT_RUN_ID)
    }
    return {**shared, "state_dict": state, "optimizer_states": [optimizer]}


def _param_name(key: str) -> str:
    """`model.blocks.0.fc.weight` (or a compiled alias `_train_forward._orig_mod.blocks...`) -> the
    Transformer's parameter name `blocks.0.fc.weight`."""
    name = key.split(".", 1)[1]
    return name.removeprefix("_orig_mod.")


# ---- recording every seed into its own folder ----
@dataclass
class SeedRun:
    """One packed seed: its run folder, run id and the columns every results row carries."""

    seed: int
    run_id: str
    folder: RunFolder
    static: dict[str, Any]
    failed: str | None = None  # the reason, once its loss went non-finite
    extra: dict[str, Any] = field(default_factory=dict)


class PackedRecorder(TrainingRecorder):
    def __init__(
        self,
        runs: list[SeedRun],
        unpacked_keys: list[str],
        eval_every: int,
        ckpt_every: int,
        answer_lens: dict[str, int],
    ) -> None:
        super().__init__(eval_every, ckpt_every)
        self.runs = runs
        self.unpacked_keys = unpacked_keys
        self.answer_lens = answer_lens
        self.loggers: list[list[Any]] = [[] for _ in runs]  # each seed's own (run/loggers.py, concurrent)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        step = trainer.global_step
        if any(self.loggers) and step % trainer.log_every_n_steps == 0:
            losses = outputs["losses"].tolist()
            for run, loggers, loss in zip(self.runs, self.loggers, losses, strict=True):
                for logger in loggers if run.failed is None else []:
                    logger.log_metrics({"train/loss": loss}, step=step)
        super().on_train_batch_end(trainer, pl_module, outputs, *args)

    def check_finite(self, trainer: pl.Trainer, outputs: Any, step: int) -> None:
        losses = outputs["losses"]
        finite = torch.isfinite(losses).tolist()
        module = trainer.lightning_module
        assert isinstance(module, PackedModule)
        for i, run in enumerate(self.runs):
            if finite[i] or run.failed is not None:
                continue
            module.alive[i] = False
            try:
                raise non_finite_loss(float(losses[i].item()), step)
            except FloatingPointError as exc:  # raised, so error.log holds a traceback as unpacked
                run.failed = run.folder.fail(exc)
            run.folder.finish("failed", run.failed, step)
            print(f"[failed] {run.run_id} -> {run.folder.path} ({run.failed})", file=sys.stderr, flush=True)
        if not any(module.alive):
            trainer.should_stop = True

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, PackedModule)
        step = trainer.global_step
        self._last_eval_step = step
        for i, run in enumerate(self.runs):
            if run.failed is not None:
                continue
            scores = pl_module.evaluate_seed(i)
            tokens, flops = step * pl_module.tokens_per_step, float(step * pl_module.flops_per_step)
            rows = evaluation_rows(run.static, scores, step, tokens, flops, self.answer_lens)
            run.folder.results.append(rows)
            for logger in self.loggers[i]:
                logger.log_metrics(logged_metrics(scores), step=step)

    def _checkpoint(self, trainer: pl.Trainer) -> None:
        # Lightning's own dict (loops, schedulers, RNG state), as trainer.save_checkpoint would write it
        packed = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        for run, ckpt in zip(self.runs, split_checkpoint(packed, self.unpacked_keys), strict=True):
            if run.failed is not None:
                continue
            ckpt[CHECKPOINT_RUN_ID] = run.run_id
            run.folder.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            save_atomically(run.folder, lambda tmp, c=ckpt: torch.save(c, tmp))

    def write_step(self, step: int) -> None:
        for run in self.runs:
            if run.failed is None:
                run.folder.write_info(step=step)
