"""n-digit addition: `a + b = c`, with c optionally written least-significant digit first.

Layout (n = digits, vocab 12: digits 0-9, PLUS=10, EQUALS=11; T = 3n + 3):

    a_{n-1} .. a_0  PLUS  b_{n-1} .. b_0  EQUALS  c_0 .. c_n        (reverse_answer, the default)
    a_{n-1} .. a_0  PLUS  b_{n-1} .. b_0  EQUALS  c_n .. c_0        (reverse_answer=False)

Operands are zero-padded and written most-significant digit first; the n + 1 answer digits (c_n is the
carry out, possibly 0) sit at positions 2n+2 .. 3n+2. Reversed answers let a left-to-right model emit the
carry chain in the order it is computed, which is what makes small models learn the task at all.
The OOD split, present when `ood_digits` is set, uses `ood_digits`-digit operands.
"""

from __future__ import annotations

import torch

from emergence_lab.tasks.base import Task, TaskBatch

PLUS, EQUALS = 10, 11
MAX_DIGITS = 17  # operands below 10^17 keep a + b inside int64 for anyone checking answers with integers


class Addition(Task):
    name = "addition"

    def __init__(
        self,
        digits: int = 3,
        reverse_answer: bool = True,
        ood_digits: int | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        if not 1 <= digits <= MAX_DIGITS:
            raise ValueError(f"addition digits must be in [1, {MAX_DIGITS}], got {digits}")
        self.digits = int(digits)
        self.reverse_answer = bool(reverse_answer)
        self.ood_digits = None if ood_digits is None else int(ood_digits)
        if self.ood_digits is not None and not self.digits < self.ood_digits <= MAX_DIGITS:
            raise ValueError(f"ood_digits must be in ({digits}, {MAX_DIGITS}], got {ood_digits}")

    @property
    def vocab_size(self) -> int:
        return 12

    @property
    def splits(self) -> tuple[str, ...]:
        return ("test",) if self.ood_digits is None else ("test", "ood")

    def _digits_of(self, split: str) -> int:
        return self.ood_digits if split == "ood" and self.ood_digits is not None else self.digits

    def seq_len(self, split: str = "train") -> int:
        return 3 * self._digits_of(split) + 3

    def answer_names(self, split: str = "test") -> tuple[str, ...]:
        """`place{i}` is the digit of 10^i; `place{n}` is the carry out."""
        places = [f"place{i}" for i in range(self._digits_of(split) + 1)]
        return tuple(places if self.reverse_answer else places[::-1])

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        d = self._digits_of(split)
        dev = generator.device
        a = torch.randint(0, 10, (n, d), generator=generator, device=dev)
        b = torch.randint(0, 10, (n, d), generator=generator, device=dev)
        # digit-wise sum from the least-significant end, carrying as we go
        out = torch.empty(n, d + 1, dtype=torch.int64, device=dev)  # least-significant first
        carry = torch.zeros(n, dtype=torch.int64, device=dev)
        for i in range(d):
            s = a[:, d - 1 - i] + b[:, d - 1 - i] + carry
            out[:, i] = s % 10
            carry = s // 10
        out[:, d] = carry
        answer = out if self.reverse_answer else out.flip(1)
        plus = torch.full((n, 1), PLUS, dtype=torch.int64, device=dev)
        eq = torch.full((n, 1), EQUALS, dtype=torch.int64, device=dev)
        tokens = torch.cat([a, plus, b, eq, answer], dim=1)
        answer_pos = torch.arange(2 * d + 2, 3 * d + 3, device=dev)
        return TaskBatch(tokens, answer_pos)

    def encode(self, text: str) -> list[int]:
        """`"123+456="` -> tokens: digits, `+` and `=` (operands zero-padded as in training)."""
        table = {**{str(d): d for d in range(10)}, "+": PLUS, "=": EQUALS}
        bad = sorted({c for c in text if c not in table and not c.isspace()})
        if bad:
            raise ValueError(f"addition prompts use digits, '+' and '=' only; got {''.join(bad)!r}")
        return [table[c] for c in text if c in table]

    def decode(self, tokens: list[int]) -> str:
        return "".join("+" if t == PLUS else "=" if t == EQUALS else str(t) for t in tokens)
