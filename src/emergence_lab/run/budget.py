"""Training budget rules: how many optimizer steps a run of a given size gets.

- `steps`: a fixed number of steps for every size;
- `tokens`: a fixed number of training tokens for every size;
- `tokens_per_param`: tokens proportional to non-embedding parameters (Chinchilla: about 20 tokens per
  parameter), clamped to [min_steps, max_steps] so tiny models still train and big ones stay affordable.

A "token" is one input position of one training sequence: tokens per step = batch_size * (seq_len - 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RULES = ("steps", "tokens", "tokens_per_param")


@dataclass
class Budget:
    rule: str = "steps"
    steps: int = 2000
    tokens: float = 0.0
    tokens_per_param: float = 20.0
    min_steps: int = 0
    max_steps: int = 10**9

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"budget.rule must be one of {RULES}, got {self.rule!r}")
        if self.rule == "steps" and self.steps < 1:
            raise ValueError(f"budget.steps must be >= 1, got {self.steps}")
        if self.rule == "tokens" and self.tokens <= 0:
            raise ValueError(f"budget.tokens must be > 0 for rule 'tokens', got {self.tokens}")
        if self.min_steps > self.max_steps:
            raise ValueError(f"budget.min_steps {self.min_steps} > budget.max_steps {self.max_steps}")

    def max_train_steps(self, n_params: int, tokens_per_step: int) -> int:
        if self.rule == "steps":
            steps = self.steps
        elif self.rule == "tokens":
            steps = math.ceil(self.tokens / tokens_per_step)
        else:
            steps = math.ceil(self.tokens_per_param * n_params / tokens_per_step)
        return int(min(max(steps, self.min_steps, 1), self.max_steps))
