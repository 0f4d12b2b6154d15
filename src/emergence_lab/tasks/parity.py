"""Multitask sparse parity (Michaud et al. 2023, "The Quantization Model of Neural Scaling").

Layout (m = n_tasks, n = n_bits; vocab 2, every token is a bit; T = m + n + 1; one answer at m + n):

    c_0 .. c_{m-1}  x_0 .. x_{n-1}  y

The control bits c are one-hot and pick subtask i; y is the parity of the data bits x in S_i, a fixed
random k-subset of {0..n-1}. The subsets are drawn once from `world_seed` (distinct when there are enough
k-subsets) and are shared by every run. Training draws subtask i with Zipf frequency proportional to
(i + 1)^-alpha, so common subtasks are learned first; the test split draws subtasks uniformly and is
stratified, so each subtask's accuracy is estimated from test_size / n_tasks examples.
`TaskBatch.subtask` holds the subtask index ("task0", "task1", ...). There is no OOD split.
"""

from __future__ import annotations

from math import comb

import torch

from emergence_lab.tasks.base import Task, TaskBatch, _cat, _index, make_generator


class Parity(Task):
    name = "parity"

    def __init__(
        self,
        n_tasks: int = 8,
        n_bits: int = 16,
        k: int = 3,
        alpha: float = 1.4,
        world_seed: int = 0,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be positive, got {n_tasks}")
        if not 1 <= k <= n_bits:
            raise ValueError(f"k must be in [1, n_bits={n_bits}], got {k}")
        if alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {alpha}")
        self.n_tasks = int(n_tasks)
        self.n_bits = int(n_bits)
        self.k = int(k)
        self.alpha = float(alpha)
        self.world_seed = int(world_seed)
        self.subsets = _subsets(self.n_tasks, self.n_bits, self.k, self.world_seed)
        # [n_tasks, n_bits] 0/1 membership of each subtask's subset
        self._mask = torch.zeros(self.n_tasks, self.n_bits, dtype=torch.int64)
        for i, s in enumerate(self.subsets):
            self._mask[i, list(s)] = 1
        self._weights = self.zipf_weights()
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def zipf_weights(self) -> torch.Tensor:
        """[n_tasks] training frequency of each subtask, summing to 1."""
        w = torch.arange(1, self.n_tasks + 1, dtype=torch.float64) ** -self.alpha
        return w / w.sum()

    @property
    def vocab_size(self) -> int:
        return 2

    @property
    def splits(self) -> tuple[str, ...]:
        return ("test",)

    def seq_len(self, split: str = "train") -> int:
        return self.n_tasks + self.n_bits + 1

    @property
    def subtask_names(self) -> tuple[str, ...]:
        return tuple(f"task{i}" for i in range(self.n_tasks))

    @property
    def subtask_weights(self) -> dict[str, float]:
        """The Zipf training frequency of each subtask (the test split draws them uniformly)."""
        return dict(zip(self.subtask_names, self._weights.tolist(), strict=True))

    def answer_names(self, split: str = "test") -> tuple[str, ...]:
        return ("parity",)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self._mask.to(device), self._weights.float().to(device))
        return self._on_device[key]

    def _draw(self, n: int, gen: torch.Generator, split: str, heldout: bool) -> TaskBatch:
        """Evaluation sets are stratified: exactly n // n_tasks examples of each subtask (the first
        n % n_tasks subtasks get one more), so no subtask's accuracy rests on a lucky small sample."""
        if not heldout:
            return super()._draw(n, gen, split, heldout)
        quota = torch.full((self.n_tasks,), n // self.n_tasks, device=gen.device)
        quota[: n % self.n_tasks] += 1
        pool: list[TaskBatch] = []
        for _ in range(10_000):
            batch = self.sample(int(n / self.test_permille * 1000 * 1.3) + 16 * self.n_tasks, gen, split)
            pool.append(_index(batch, self.is_heldout(batch).nonzero().squeeze(1)))
            have = torch.cat([b.subtask for b in pool])  # type: ignore[misc]
            if bool((torch.bincount(have, minlength=self.n_tasks) >= quota).all()):
                break
        else:
            raise RuntimeError(f"could not draw a stratified {split} set for task {self.name!r}")
        merged = _cat(pool)
        task = merged.subtask
        assert task is not None
        onehot = torch.nn.functional.one_hot(task, self.n_tasks)
        rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1) - 1  # index of each example within its subtask
        return _index(merged, (rank < quota[task]).nonzero().squeeze(1))

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        dev = generator.device
        mask, weights = self._tables(dev)
        if split == "train":
            task = torch.multinomial(weights, n, replacement=True, generator=generator)
        else:
            task = torch.randint(0, self.n_tasks, (n,), generator=generator, device=dev)
        x = torch.randint(0, 2, (n, self.n_bits), generator=generator, device=dev)
        y = (x * mask[task]).sum(dim=1) % 2
        control = (task[:, None] == torch.arange(self.n_tasks, device=dev)).long()  # one-hot, no host sync
        tokens = torch.cat([control, x, y[:, None]], dim=1)
        answer_pos = torch.tensor([self.n_tasks + self.n_bits], device=dev)
        return TaskBatch(tokens, answer_pos, task)

    def encode(self, text: str) -> list[int]:
        """`"10000000 0110..."` -> bits (control bits, then data bits); whitespace is ignored."""
        bad = sorted({c for c in text if c not in "01" and not c.isspace()})
        if bad:
            raise ValueError(f"parity prompts are bits 0 and 1; got {''.join(bad)!r}")
        return [int(c) for c in text if c in "01"]

    def decode(self, tokens: list[int]) -> str:
        return "".join(str(t) for t in tokens)


def _subsets(n_tasks: int, n_bits: int, k: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """n_tasks sorted k-subsets of range(n_bits), drawn from `seed`; distinct when C(n_bits, k) allows."""
    gen = make_generator(seed, "cpu")
    distinct = comb(n_bits, k) >= n_tasks
    out: list[tuple[int, ...]] = []
    while len(out) < n_tasks:
        s = tuple(sorted(torch.randperm(n_bits, generator=gen)[:k].tolist()))
        if not distinct or s not in out:
            out.append(s)
    return tuple(out)
