"""The task interface: deterministic, seedable token problems generated on the model's device.

Every example of a split has the same layout, so a batch is one `[B, T]` token tensor plus the positions of
its answer tokens. A model reads `tokens[:, :-1]`; the prediction for the token at position `p` is the
logit row at `p - 1`. Answer positions need not be contiguous (associative recall interleaves queries and
answers), but they are the same for every example of a split.

Train and test never overlap: an example belongs to the held-out region when a hash of its *prompt* (all
tokens that are not answers) falls in the lowest `test_permille` of 1000 buckets. The training stream drops
those examples; the test set is drawn only from them. Tasks with a small, enumerable input space (modular
arithmetic) split the enumeration instead and override `is_heldout` and `_draw`.

Training batches are generated on the training device; evaluation sets are generated on the CPU and
moved, so they are the same examples wherever a run executes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emergence_lab.contract import SUBTASK_WEIGHTS_KEY, Score

_HASH_MOD = 2_147_483_647  # 2^31 - 1: every value stays below 2^31 and every product below 2^62
_HASH_MUL = 1_000_003
_MIX_MUL = 73_244_475  # 0x45D9F3B, an integer-hash multiplier with good avalanche


@dataclass
class TaskBatch:
    """One batch of examples of a single split."""

    tokens: torch.Tensor  # [B, T] int64
    answer_pos: torch.Tensor  # [L] int64, sorted, every entry >= 1
    subtask: torch.Tensor | None = None  # [B] int64 index into Task.subtask_names, or None

    @property
    def answers(self) -> torch.Tensor:
        """The target answer tokens, [B, L]."""
        return self.tokens[:, self.answer_pos]

    def to(self, device: torch.device | str) -> TaskBatch:
        sub = None if self.subtask is None else self.subtask.to(device)
        return TaskBatch(self.tokens.to(device), self.answer_pos.to(device), sub)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def slice(self, start: int, stop: int) -> TaskBatch:
        sub = None if self.subtask is None else self.subtask[start:stop]
        return TaskBatch(self.tokens[start:stop], self.answer_pos, sub)


def prompt_hash(tokens: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
    """A deterministic per-example hash in [0, 1000) of the non-answer tokens, computed on the device.

    On the CPU it is computed in numpy: the same int64 arithmetic (every product stays below 2^62), so the
    same values, at a fraction of torch's per-op overhead on these ~200-element columns (about 80 ops per
    training batch, a measurable share of a tiny model's step)."""
    if tokens.device.type == "cpu":
        return _prompt_hash_numpy(tokens, answer_pos)
    return _prompt_hash_torch(tokens, answer_pos)


def _prompt_hash_torch(tokens: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(tokens.shape[1], dtype=torch.bool, device=tokens.device)
    keep[answer_pos] = False
    h = torch.zeros(tokens.shape[0], dtype=torch.int64, device=tokens.device)
    for col in tokens[:, keep].unbind(dim=1):
        h = _avalanche((h * _HASH_MUL + col + 1) % _HASH_MOD)
    return h % 1000


def _prompt_hash_numpy(tokens: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
    keep = np.ones(tokens.shape[1], dtype=bool)
    keep[answer_pos.numpy()] = False
    h = np.zeros(tokens.shape[0], dtype=np.int64)
    for col in np.ascontiguousarray(tokens.numpy()[:, keep].T):
        h = _avalanche((h * _HASH_MUL + col + 1) % _HASH_MOD)
    return torch.from_numpy(h % 1000)


def _avalanche(h: Any) -> Any:  # a torch.Tensor or a numpy array of int64
    """Non-linear mixing of values in [0, 2^31). A purely linear hash (h * M + x mod P) makes the held-out
    region a lattice: neighbouring prompts (one token +1) would be held out together half the time."""
    for _ in range(2):
        h = h ^ (h >> 16)
        h = (h * _MIX_MUL) % _HASH_MOD
    return h ^ (h >> 16)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


class Task(ABC):
    """Base class of every task. Subclasses set the vocabulary and implement `sample`.

    Args:
        test_seed: seed of the fixed test (and OOD) sets; it is shared by every run, so all runs of a
            sweep are scored on the same examples.
        test_size: number of examples in each evaluation split.
        test_permille: share of the input space (in 1/1000) reserved for evaluation.
    """

    name: str = "task"

    def __init__(self, test_seed: int = 1234, test_size: int = 1024, test_permille: int = 100) -> None:
        if not 0 < test_permille < 1000:
            raise ValueError(f"test_permille must be in (0, 1000), got {test_permille}")
        if test_size < 1:
            raise ValueError(f"test_size must be positive, got {test_size}")
        self.test_seed = int(test_seed)
        self.test_size = int(test_size)
        self.test_permille = int(test_permille)

    # ---- what subclasses provide -------------------------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def splits(self) -> tuple[str, ...]:
        """Evaluation splits: always "test", plus "ood" where a harder variant makes sense."""

    @abstractmethod
    def seq_len(self, split: str = "train") -> int:
        """Length T of the token sequences of a split."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        """Draw `n` examples of a split (no train/test filtering) on the generator's device."""

    @property
    def subtask_names(self) -> tuple[str, ...]:
        """Names of the task-specific subtasks that `TaskBatch.subtask` indexes (empty if none)."""
        return ()

    @property
    def subtask_weights(self) -> dict[str, float] | None:
        """Each subtask's share of the training distribution (summing to 1), by subtask name; None for a
        task that does not draw its subtasks with known frequencies."""
        return None

    def answer_names(self, split: str = "test") -> tuple[str, ...]:
        """Names of the answer positions, used as per-position subtasks ("pos0", "pos1", ...)."""
        n = int(self.sample(1, make_generator(0, "cpu"), split).answer_pos.numel())
        return tuple(f"pos{i}" for i in range(n))

    def evaluate_split(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        split: str,
        batch: TaskBatch,
        chunk_size: int = 1024,
    ) -> list[Score] | None:
        """A task whose scores are not answer-span metrics (language modelling) scores a split itself and
        returns its Scores; None, the default, means the generic evaluation."""
        return None

    def provenance(self) -> dict[str, Any]:
        """What run.json records about the task's data beyond its config (a text corpus's hash, the
        subtasks' training frequencies as `subtask_weights`)."""
        weights = self.subtask_weights
        return {} if weights is None else {SUBTASK_WEIGHTS_KEY: weights}

    def encode(self, text: str) -> list[int]:
        """A prompt as tokens (`emergence generate`). Default: whitespace-separated token ids."""
        try:
            tokens = [int(t) for t in text.split()]
        except ValueError:
            raise ValueError(
                f"task {self.name!r} reads a prompt as token ids 0..{self.vocab_size - 1}"
            ) from None
        if any(not 0 <= t < self.vocab_size for t in tokens):
            raise ValueError(f"task {self.name!r} has token ids 0..{self.vocab_size - 1}; got {text!r}")
        return tokens

    def decode(self, tokens: list[int]) -> str:
        """Tokens as text. Default: token ids separated by spaces."""
        return " ".join(str(t) for t in tokens)

    def is_heldout(self, batch: TaskBatch) -> torch.Tensor:
        """[B] bool: which examples belong to the evaluation region."""
        return prompt_hash(batch.tokens, batch.answer_pos) < self.test_permille

    def draws_heldout(self, split: str) -> bool:
        """Whether a split's fixed set comes from the held-out region (the default) or, for a split that
        measures the training distribution itself, from the training region."""
        return True

    # ---- what everyone uses ------------------------------------------------------------------------
    @property
    def max_seq_len(self) -> int:
        return max(self.seq_len(s) for s in ("train", *self.splits))

    def train_batch(self, n: int, seed: int, step: int, device: torch.device | str) -> TaskBatch:
        """The training batch of a given step: a pure function of (seed, step) for a given device type, so
        a resumed run sees exactly the batches an uninterrupted one would have seen. It is generated on
        `device` (no host-to-device copy per step), so CPU and CUDA runs see different streams."""
        gen = make_generator(_mix(seed, step), device)
        return self._draw(n, gen, "train", heldout=False)

    def eval_batch(self, split: str, device: torch.device | str) -> TaskBatch:
        """The fixed evaluation set of a split, drawn from the held-out region with `test_seed` (from the
        training region where `draws_heldout(split)` is False).

        It is always generated on the CPU and then moved: CPU and CUDA generators give different streams,
        and every run of a sweep must be scored on the same examples wherever it ran."""
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; it has {self.splits}")
        gen = make_generator(_mix(self.test_seed, 1 + self.splits.index(split)), "cpu")
        return self._draw(self.test_size, gen, split, heldout=self.draws_heldout(split)).to(device)

    def _draw(self, n: int, gen: torch.Generator, split: str, heldout: bool) -> TaskBatch:
        """Rejection-sample `n` examples from one side of the train/held-out partition."""
        share = self.test_permille / 1000 if heldout else 1 - self.test_permille / 1000
        parts: list[TaskBatch] = []
        have = 0
        for _ in range(10_000):
            want = n - have
            batch = self.sample(int(want / share * 1.2) + 16, gen, split)
            keep = self.is_heldout(batch)
            if not heldout:
                keep = ~keep
            idx = keep.nonzero().squeeze(1)[:want]
            parts.append(_index(batch, idx))
            have += idx.numel()
            if have >= n:
                break
        else:
            raise RuntimeError(f"could not draw {n} {split} examples for task {self.name!r}")
        out = parts[0] if len(parts) == 1 else _cat(parts)
        return out


def _mix(a: int, b: int) -> int:
    return (int(a) * 1_000_003 + int(b) * 7_919 + 17) % (2**62)


def _index(batch: TaskBatch, idx: torch.Tensor) -> TaskBatch:
    sub = None if batch.subtask is None else batch.subtask[idx]
    return TaskBatch(batch.tokens[idx], batch.answer_pos, sub)


def _cat(parts: list[TaskBatch]) -> TaskBatch:
    sub = None if parts[0].subtask is None else torch.cat([p.subtask for p in parts])  # type: ignore[misc]
    return TaskBatch(torch.cat([p.tokens for p in parts]), parts[0].answer_pos, sub)
