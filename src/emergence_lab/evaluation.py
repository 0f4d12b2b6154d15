"""Scoring a model on a fixed evaluation set: greedy decoding, teacher-forced logits, every metric, and the
per-subtask and per-answer-position breakdowns. Plain torch; runs in batches on the model's device."""

from __future__ import annotations

from collections.abc import Callable

import torch

from emergence_lab.contract import Score
from emergence_lab.metrics import METRICS, all_metrics
from emergence_lab.tasks.base import TaskBatch

Model = Callable[[torch.Tensor], torch.Tensor]  # tokens [B, T] -> logits [B, T, V]


@torch.no_grad()
def greedy_answers(model: Model, tokens: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
    """Fill the answer positions one at a time with the model's argmax, feeding each prediction back in.

    Non-answer tokens after an answer (recall's next query) stay as given. Returns [B, L] predictions."""
    work = tokens.clone()
    for p in answer_pos.tolist():
        logits = model(work[:, :p])
        work[:, p] = logits[:, -1].argmax(dim=-1)
    return work[:, answer_pos]


@torch.no_grad()
def teacher_forced_logits(model: Model, batch: TaskBatch) -> torch.Tensor:
    """Logits that predict each answer token from the true prefix, [B, L, V]."""
    logits = model(batch.tokens[:, :-1])
    return logits[:, batch.answer_pos - 1].float()


@torch.no_grad()
def evaluate(
    model: Model,
    batch: TaskBatch,
    answer_names: tuple[str, ...],
    subtask_names: tuple[str, ...] = (),
    chunk_size: int = 1024,
) -> list[Score]:
    """Score `model` on `batch`. Returns one Score per subtask and metric:

    - subtask "all": every metric, averaged over the whole set;
    - one subtask per answer position (named by `answer_names`): token accuracy at that position;
    - one subtask per task-specific group (`subtask_names`, indexed by `batch.subtask`): every metric.
    """
    if len(answer_names) != batch.answer_pos.numel():
        raise ValueError(f"{len(answer_names)} answer names for {batch.answer_pos.numel()} answer positions")
    per_example: dict[str, list[torch.Tensor]] = {m: [] for m in METRICS}
    correct: list[torch.Tensor] = []
    for start in range(0, len(batch), chunk_size):
        part = batch.slice(start, start + chunk_size)
        target = part.answers
        pred = greedy_answers(model, part.tokens, part.answer_pos)
        scores = all_metrics(pred, teacher_forced_logits(model, part), target)
        for name in METRICS:
            per_example[name].append(scores[name])
        correct.append((pred == target).float())
    values = {m: torch.cat(v) for m, v in per_example.items()}

    n = len(batch)
    out = [Score("all", m, values[m].mean().item(), n) for m in METRICS]
    per_position = torch.cat(correct).mean(dim=0).tolist()
    out += [Score(name, "token_accuracy", p, n) for name, p in zip(answer_names, per_position, strict=True)]
    if subtask_names and batch.subtask is not None:
        k = len(subtask_names)
        counts = torch.bincount(batch.subtask, minlength=k)
        sizes = counts.tolist()
        for m in METRICS:
            sums = torch.zeros(k, device=values[m].device).index_add_(0, batch.subtask, values[m])
            for i, name in enumerate(subtask_names):
                if sizes[i] > 0:
                    out.append(Score(name, m, (sums[i] / counts[i]).item(), sizes[i]))
    return out
