"""Optimizer settings and the per-width learning-rate rule."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay.

    `lr_rule="inverse_width"` scales the learning rate of the hidden matrices by `base_width / width`
    (the muP rule for Adam), so one tuned `lr` stays stable across a width sweep; embeddings, gains and
    biases keep `lr`. `lr_rule="constant"` uses `lr` everywhere.
    """

    batch_size: int = 128
    lr: float = 5e-3
    lr_rule: str = "inverse_width"
    base_width: int = 32
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.lr_rule not in {"constant", "inverse_width"}:
            raise ValueError(f"optim.lr_rule must be 'constant' or 'inverse_width', got {self.lr_rule!r}")

    def hidden_lr(self, width: int) -> float:
        return self.lr * (self.base_width / width if self.lr_rule == "inverse_width" else 1.0)
