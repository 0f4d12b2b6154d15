"""Modular arithmetic `(a op b) mod p`, the grokking setting (Power et al. 2022).

Layout (vocab p + 2: residues 0..p-1, OP=p, EQUALS=p+1; T = 5; one answer token at position 4):

    a  OP  b  EQUALS  c        with c = (a op b) mod p

`op` is one of add, sub, mul, div; div means a * b^-1 mod p, needs a prime p, and excludes b = 0.
The input space is enumerable, so the split is by pair rather than by prompt hash: a fixed random
`train_fraction` of all pairs, chosen with `split_seed`, is the training data and the complement is the
test split. The test set is the whole complement (or, with `test_size`, a fixed random subset of it
without repetition). There is no OOD split. A `train` split scores a fixed random subset of the training
pairs (`test_size` of them, or all where there are fewer), so a run records training accuracy beside held-out
accuracy at every evaluation: grokking is the held-out curve rising long after the train curve saturated.
"""

from __future__ import annotations

import re

import torch

from emergence_lab.tasks.base import Task, TaskBatch, make_generator

OPS = ("add", "sub", "mul", "div")
SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


class Modular(Task):
    name = "modular"

    def __init__(
        self,
        p: int = 97,
        op: str = "add",
        train_fraction: float = 0.5,
        split_seed: int = 0,
        test_seed: int = 1234,
        test_size: int | None = None,
    ) -> None:
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        if p < 2:
            raise ValueError(f"p must be at least 2, got {p}")
        if op == "div" and not _is_prime(p):
            raise ValueError(f"op 'div' needs a prime p so that every b != 0 is invertible, got {p}")
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        self.p = int(p)
        self.op = op
        self.train_fraction = float(train_fraction)
        self.split_seed = int(split_seed)
        self._b0 = 1 if op == "div" else 0  # smallest allowed b
        n_pairs = self.p * (self.p - self._b0)
        n_train = round(self.train_fraction * n_pairs)
        if not 0 < n_train < n_pairs:
            raise ValueError(f"train_fraction {train_fraction} leaves no train or no test pairs (p={p})")
        n_test = n_pairs - n_train
        if test_size is not None and not 0 < test_size <= n_test:
            raise ValueError(f"test_size must be in [1, {n_test}] (the held-out pairs), got {test_size}")
        # test_permille only sizes the base class's rejection sampling, which this task bypasses; it is
        # kept equal to the held-out share so that it means the same thing as in every other task
        super().__init__(test_seed, n_test if test_size is None else test_size, _permille(n_test, n_pairs))

        # pair index i <-> (a, b) = (i // (p - b0), i % (p - b0) + b0)
        perm = torch.randperm(n_pairs, generator=make_generator(self.split_seed, "cpu"))
        self.train_pairs = perm[:n_train].sort().values
        self.test_pairs = perm[n_train:].sort().values
        self._heldout = torch.ones(n_pairs, dtype=torch.bool)
        self._heldout[self.train_pairs] = False
        self._on_device: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def vocab_size(self) -> int:
        return self.p + 2

    @property
    def splits(self) -> tuple[str, ...]:
        return ("test", "train")

    def seq_len(self, split: str = "train") -> int:
        return 5

    def answer_names(self, split: str = "test") -> tuple[str, ...]:
        return ("result",)

    def _tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = {
                "heldout": self._heldout.to(device),
                "train_pairs": self.train_pairs.to(device),
                "test_pairs": self.test_pairs.to(device),
                "inverse": _inverses(self.p).to(device) if self.op == "div" else torch.empty(0),
            }
        return self._on_device[key]

    def pair_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B] index of each example's (a, b) pair in the enumeration of all pairs."""
        return tokens[:, 0] * (self.p - self._b0) + tokens[:, 2] - self._b0

    def is_heldout(self, batch: TaskBatch) -> torch.Tensor:
        return self._tables(batch.tokens.device)["heldout"][self.pair_index(batch.tokens)]

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        n_pairs = self.p * (self.p - self._b0)
        return self._examples(torch.randint(0, n_pairs, (n,), generator=generator, device=generator.device))

    def _draw(self, n: int, gen: torch.Generator, split: str, heldout: bool) -> TaskBatch:
        """Index the pair lists directly: training draws train pairs with replacement, evaluation takes a
        random subset of its split's pairs without repetition (the `train` split: of the training pairs)."""
        tables = self._tables(gen.device)
        if heldout:  # an evaluation set
            pairs = tables["train_pairs" if split == "train" else "test_pairs"]
            pick = torch.randperm(pairs.numel(), generator=gen, device=gen.device)[:n]
        else:
            pairs = tables["train_pairs"]
            pick = torch.randint(0, pairs.numel(), (n,), generator=gen, device=gen.device)
        return self._examples(pairs[pick])

    def _examples(self, idx: torch.Tensor) -> TaskBatch:
        dev = idx.device
        a = idx // (self.p - self._b0)
        b = idx % (self.p - self._b0) + self._b0
        if self.op == "add":
            c = (a + b) % self.p
        elif self.op == "sub":
            c = (a - b) % self.p
        elif self.op == "mul":
            c = (a * b) % self.p
        else:
            c = (a * self._tables(dev)["inverse"][b]) % self.p
        op = torch.full_like(a, self.p)
        eq = torch.full_like(a, self.p + 1)
        tokens = torch.stack([a, op, b, eq, c], dim=1)
        return TaskBatch(tokens, torch.tensor([4], device=dev))

    def encode(self, text: str) -> list[int]:
        """`"12 + 5 ="` -> tokens: residues below p, the task's operator symbol and `=`."""
        out = []
        for word in re.findall(r"\d+|\S", text):
            if word.isdigit() and int(word) < self.p:
                out.append(int(word))
            elif word == SYMBOLS[self.op]:
                out.append(self.p)
            elif word == "=":
                out.append(self.p + 1)
            else:
                raise ValueError(
                    f"modular prompts use residues 0..{self.p - 1}, {SYMBOLS[self.op]!r} and '='; "
                    f"got {word!r}"
                )
        return out

    def decode(self, tokens: list[int]) -> str:
        names = {self.p: SYMBOLS[self.op], self.p + 1: "="}
        return " ".join(names.get(t, str(t)) for t in tokens)


def _permille(n_test: int, n_pairs: int) -> int:
    return min(999, max(1, round(1000 * n_test / n_pairs)))


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


def _inverses(p: int) -> torch.Tensor:
    """[p] table of b^(p-2) mod p (Fermat), computed by vectorised square-and-multiply; entry 0 is unused."""
    base = torch.arange(p, dtype=torch.int64)
    out = torch.ones(p, dtype=torch.int64)
    e = p - 2
    while e > 0:
        if e & 1:
            out = out * base % p
        base = base * base % p
        e >>= 1
    return out
