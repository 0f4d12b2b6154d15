"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology").

Layout (N = n_pairs, Q = n_queries; vocab n_keys + n_values: keys are 0..n_keys-1, values are
n_keys..n_keys+n_values-1; T = 2N + 2Q):

    k_1 v_1  k_2 v_2  ..  k_N v_N    q_1 a_1  q_2 a_2  ..  q_Q a_Q

The N keys are distinct; values are drawn independently (repeats allowed). The Q queries are distinct keys
of the context in random order, each followed by its value a_j, so the answers sit at the interleaved
positions 2N + 2j + 1 (j = 0..Q-1). Solving it takes an induction-style lookup: find the earlier
occurrence of the current key and copy the token after it. The OOD split, present when `ood_pairs` is
set, has N + ood_pairs pairs (a longer context) and the same Q queries.
"""

from __future__ import annotations

import torch

from emergence_lab.tasks.base import Task, TaskBatch


class Recall(Task):
    name = "recall"

    def __init__(
        self,
        n_pairs: int = 8,
        n_queries: int = 4,
        n_keys: int = 24,
        n_values: int = 24,
        ood_pairs: int | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        if n_pairs < 1 or n_values < 1:
            raise ValueError(f"n_pairs and n_values must be positive, got {n_pairs}, {n_values}")
        if not 1 <= n_queries <= n_pairs:
            raise ValueError(f"n_queries must be in [1, n_pairs={n_pairs}], got {n_queries}")
        if ood_pairs is not None and ood_pairs < 1:
            raise ValueError(f"ood_pairs must be positive (or None for no OOD split), got {ood_pairs}")
        longest = n_pairs + (ood_pairs or 0)
        if n_keys < longest:
            raise ValueError(f"n_keys={n_keys} cannot give {longest} distinct keys per example")
        self.n_pairs = int(n_pairs)
        self.n_queries = int(n_queries)
        self.n_keys = int(n_keys)
        self.n_values = int(n_values)
        self.ood_pairs = None if ood_pairs is None else int(ood_pairs)

    @property
    def vocab_size(self) -> int:
        return self.n_keys + self.n_values

    @property
    def splits(self) -> tuple[str, ...]:
        return ("test",) if self.ood_pairs is None else ("test", "ood")

    def pairs_of(self, split: str) -> int:
        extra = self.ood_pairs if split == "ood" and self.ood_pairs is not None else 0
        return self.n_pairs + extra

    def seq_len(self, split: str = "train") -> int:
        return 2 * self.pairs_of(split) + 2 * self.n_queries

    def answer_names(self, split: str = "test") -> tuple[str, ...]:
        return tuple(f"query{j}" for j in range(self.n_queries))

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        pairs = self.pairs_of(split)
        dev = generator.device
        # distinct keys: the first `pairs` entries of a random permutation of the key vocabulary
        keys = torch.rand(n, self.n_keys, generator=generator, device=dev).argsort(dim=1)[:, :pairs]
        values = self.n_keys + torch.randint(0, self.n_values, (n, pairs), generator=generator, device=dev)
        which = torch.rand(n, pairs, generator=generator, device=dev).argsort(dim=1)[:, : self.n_queries]
        context = torch.stack([keys, values], dim=2).flatten(1)
        queries = torch.stack([keys.gather(1, which), values.gather(1, which)], dim=2).flatten(1)
        tokens = torch.cat([context, queries], dim=1)
        answer_pos = 2 * pairs + 1 + 2 * torch.arange(self.n_queries, device=dev)
        return TaskBatch(tokens, answer_pos)

    def encode(self, text: str) -> list[int]:
        """`"k3 v1 k7 v0 k3"` -> tokens: keys `k<i>` and values `v<j>`, separated by spaces."""
        out = []
        for word in text.split():
            n = int(word[1:]) if word[1:].isdigit() else -1
            if word[:1] == "k" and 0 <= n < self.n_keys:
                out.append(n)
            elif word[:1] == "v" and 0 <= n < self.n_values:
                out.append(self.n_keys + n)
            else:
                raise ValueError(
                    f"recall prompts are keys k0..k{self.n_keys - 1} and values v0..v{self.n_values - 1}; "
                    f"got {word!r}"
                )
        return out

    def decode(self, tokens: list[int]) -> str:
        return " ".join(f"v{t - self.n_keys}" if t >= self.n_keys else f"k{t}" for t in tokens)
