"""What a config asks to train: the task, the model's shape, the optimizer and the step budget.

Built from the composed config alone, without a model, so the sweep planner (`--dry-run`, validation before
any job starts) and the training run agree on every number.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from emergence_lab.model import TransformerConfig
from emergence_lab.run.budget import Budget
from emergence_lab.run.optim import OptimConfig
from emergence_lab.tasks.base import Task


@dataclass
class RunSpec:
    task: Task
    model: TransformerConfig
    optim: OptimConfig
    budget: Budget
    max_steps: int

    @property
    def seq_len(self) -> int:
        """Input positions the model reads per training sequence (all but the last token)."""
        return self.task.seq_len("train") - 1

    @property
    def tokens_per_step(self) -> int:
        return self.optim.batch_size * self.seq_len

    @property
    def flops_per_step(self) -> int:
        return self.model.flops_per_token(self.seq_len) * self.tokens_per_step


def build_spec(cfg: DictConfig) -> RunSpec:
    """Instantiate the config's task, model shape, optimizer settings and budget; a set
    `trainer.max_steps` replaces the budget rule."""
    task: Task = instantiate(cfg.task)
    model: TransformerConfig = instantiate(
        cfg.model, vocab_size=task.vocab_size, max_seq_len=task.max_seq_len
    )
    optim = OptimConfig(**OmegaConf.to_container(cfg.optim, resolve=True))  # type: ignore[arg-type]
    budget = Budget(**OmegaConf.to_container(cfg.budget, resolve=True))  # type: ignore[arg-type]
    override = cfg.trainer.get("max_steps")
    if override is not None and int(override) < 1:
        raise ValueError(f"trainer.max_steps must be >= 1, got {override}")
    tokens_per_step = optim.batch_size * (task.seq_len("train") - 1)
    steps = int(override) if override is not None else budget.max_train_steps(model.n_params, tokens_per_step)
    return RunSpec(task, model, optim, budget, steps)
