"""Per-example evaluation metrics over the answer span, in plain torch and batched on the device.

Kinds (Schaeffer et al. 2023, "Are Emergent Abilities of Large Language Models a Mirage?"):
- `exact_match` is discontinuous: an answer scores 1 only if every token is right, so a model whose
  per-token accuracy p rises smoothly shows p^L, which looks like a sudden jump for long answers L.
- `token_accuracy`, `edit_distance`, `answer_logprob`, `brier` and `loss` are continuous: they give partial
  credit, so they reveal whether a jump under exact match was already under way.

`exact_match`, `token_accuracy` and `edit_distance` score the greedy decode; `answer_logprob`, `brier` and
`loss` score the teacher-forced distribution over the target answer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emergence_lab.contract import TRAINING_METRICS

# Names, kinds and directions are declared once, in the results contract.
METRICS: tuple[str, ...] = tuple(m.name for m in TRAINING_METRICS)
DISCONTINUOUS: frozenset[str] = frozenset(m.name for m in TRAINING_METRICS if m.kind == "discontinuous")
LOWER_IS_BETTER: frozenset[str] = frozenset(m.name for m in TRAINING_METRICS if not m.higher_is_better)


def exact_match(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, L] tokens -> [B] 1.0 where every answer token matches."""
    return (pred == target).all(dim=1).float()


def token_accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, L] tokens -> [B] fraction of answer positions that match."""
    return (pred == target).float().mean(dim=1)


def edit_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, L] tokens -> [B] Levenshtein distance between the token sequences, divided by the target length.

    The dynamic programme runs over positions (L^2 small steps) and over the whole batch at once.
    """
    b, n = pred.shape
    m = target.shape[1]
    prev = torch.arange(m + 1, device=pred.device, dtype=torch.float32).expand(b, m + 1).clone()
    for i in range(1, n + 1):
        cur = torch.empty_like(prev)
        cur[:, 0] = i
        subst = prev[:, :-1] + (pred[:, i - 1 : i] != target).float()  # [B, m]
        delete = prev[:, 1:] + 1
        best = torch.minimum(subst, delete)
        for j in range(1, m + 1):  # insertion depends on the cell to the left, so this part is sequential
            cur[:, j] = torch.minimum(best[:, j - 1], cur[:, j - 1] + 1)
        prev = cur
    return prev[:, m] / m


def answer_logprob(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, L, V] logits, [B, L] targets -> [B] sum over the answer of log p(target token)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(dim=1)


def brier(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, L, V], [B, L] -> [B] multi-class Brier score sum_v (p_v - 1[v = y])^2, averaged over tokens."""
    p = F.softmax(logits.float(), dim=-1)
    onehot = F.one_hot(target, p.shape[-1]).float()
    return ((p - onehot) ** 2).sum(dim=-1).mean(dim=1)


def token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, L, V], [B, L] -> [B] mean cross-entropy over the answer tokens."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return ce.mean(dim=1)


def all_metrics(pred: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric in METRICS, per example ([B] each), from the greedy decode and teacher-forced logits."""
    return {
        "exact_match": exact_match(pred, target),
        "token_accuracy": token_accuracy(pred, target),
        "edit_distance": edit_distance(pred, target),
        "answer_logprob": answer_logprob(logits, target),
        "brier": brier(logits, target),
        "loss": token_loss(logits, target),
    }
