"""k-step composition of fixed random maps.

Layout (k = steps, V = n_values, M = n_maps; vocab V + M: values are 0..V-1, map ids are V..V+M-1):

    m_1 .. m_k  x  y_1 .. y_k          (show_steps, the default; T = 2k + 1)
    m_1 .. m_k  x  y_k                 (show_steps=False; T = k + 2)

Each map id names one of M fixed random permutations f of {0..V-1}, drawn once from `world_seed`
(pairwise distinct) and shared by every run; y_i = f_{m_i}(y_{i-1}) with y_0 = x. Answers start at position
k + 1. With the intermediate steps shown, the task is a chain of single lookups; without them the model has
to compose internally. Map ids repeat freely within a prompt. The OOD split, present when `ood_steps` is
set, chains `ood_steps` (> steps) maps. Note that the input space is small (M^k * V prompts, 640 with the
defaults), so the evaluation set repeats its about test_permille / 1000 of those prompts.

Per-step evaluation (`step_splits`, Okawa et al. 2023) adds an identity map (id V + M, vocab V + M + 1) and
the splits `step1..stepk` and `train`. Split `step<i>` is a one-step prompt of slot i: slot i holds a random
map and every other slot the identity, so its answer is f_{m_i}(x) in the composed layout. Split `train` is
the training distribution. Both are drawn from the training region: only full k-step compositions are held
out, so the test split stays the held-out composed task. `min_steps` (needs `step_splits`) makes training mix
compositions of min_steps..k real maps (a uniform count, in random slots, identity elsewhere): with
min_steps = 1 the model sees every map alone in every slot, the steps it has to compose.
"""

from __future__ import annotations

from math import factorial

import torch

from emergence_lab.tasks.base import Task, TaskBatch, make_generator


class Composition(Task):
    name = "composition"

    def __init__(
        self,
        steps: int = 3,
        n_maps: int = 4,
        n_values: int = 10,
        show_steps: bool = True,
        world_seed: int = 0,
        ood_steps: int | None = None,
        step_splits: bool = False,
        min_steps: int | None = None,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        if steps < 1 or n_maps < 1:
            raise ValueError(f"steps and n_maps must be positive, got {steps}, {n_maps}")
        if n_values < 2:
            raise ValueError(f"n_values must be at least 2, got {n_values}")
        if n_values <= 12 and factorial(n_values) < n_maps:
            raise ValueError(f"there are fewer than n_maps={n_maps} permutations of {n_values} values")
        if ood_steps is not None and ood_steps <= steps:
            raise ValueError(f"ood_steps must exceed steps={steps}, got {ood_steps}")
        if min_steps is not None and not (step_splits and 1 <= min_steps <= steps):
            raise ValueError(
                f"min_steps needs step_splits=true and must be in [1, steps={steps}], got {min_steps}"
            )
        self.steps = int(steps)
        self.n_maps = int(n_maps)
        self.n_values = int(n_values)
        self.show_steps = bool(show_steps)
        self.world_seed = int(world_seed)
        self.ood_steps = None if ood_steps is None else int(ood_steps)
        self.step_splits = bool(step_splits)
        self.min_steps = None if min_steps is None else int(min_steps)
        self.maps = _permutations(self.n_maps, self.n_values, self.world_seed)  # [n_maps, n_values]
        if self.step_splits:  # the identity map is map id n_maps (token V + M)
            self.maps = torch.cat([self.maps, torch.arange(self.n_values)[None]])
        self._on_device: dict[str, torch.Tensor] = {}

    @property
    def vocab_size(self) -> int:
        return self.n_values + self.n_maps + int(self.step_splits)

    @property
    def splits(self) -> tuple[str, ...]:
        base = ("test",) if self.ood_steps is None else ("test", "ood")
        if not self.step_splits:
            return base
        return (*base, *(f"step{i}" for i in range(1, self.steps + 1)), "train")

    def draws_heldout(self, split: str) -> bool:
        return split in ("test", "ood")

    def is_heldout(self, batch: TaskBatch) -> torch.Tensor:
        """Only full compositions (no identity slot) can be held out."""
        held = super().is_heldout(batch)
        if not self.step_splits:
            return held
        k = int(batch.answer_pos[0]) - 1
        return held & (batch.tokens[:, :k] != self.n_values + self.n_maps).all(dim=1)

    def steps_of(self, split: str) -> int:
        return self.ood_steps if split == "ood" and self.ood_steps is not None else self.steps

    def seq_len(self, split: str = "train") -> int:
        k = self.steps_of(split)
        return 2 * k + 1 if self.show_steps else k + 2

    def answer_names(self, split: str = "test") -> tuple[str, ...]:
        if not self.show_steps:
            return ("composed",)
        return (*(f"step{i}" for i in range(1, self.steps_of(split))), "composed")

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        k = self.steps_of(split)
        dev = generator.device
        key = str(dev)
        if key not in self._on_device:
            self._on_device[key] = self.maps.to(dev)
        maps = self._on_device[key]
        ids = torch.randint(0, self.n_maps, (n, k), generator=generator, device=dev)
        y = torch.randint(0, self.n_values, (n,), generator=generator, device=dev)
        ids = self._with_identities(ids, generator, split)
        x = y
        chain = []
        for i in range(k):
            y = maps[ids[:, i], y]
            chain.append(y)
        answers = torch.stack(chain, dim=1) if self.show_steps else y[:, None]
        tokens = torch.cat([ids + self.n_values, x[:, None], answers], dim=1)
        answer_pos = torch.arange(k + 1, k + 1 + answers.shape[1], device=dev)
        return TaskBatch(tokens, answer_pos)

    def _with_identities(self, ids: torch.Tensor, generator: torch.Generator, split: str) -> torch.Tensor:
        """[n, k] map ids with the identity in the slots a split leaves empty (see the module docstring)."""
        identity = self.n_maps
        if split.startswith("step"):
            slot = int(split[4:]) - 1
            keep = torch.zeros_like(ids, dtype=torch.bool)
            keep[:, slot] = True
            return torch.where(keep, ids, identity)
        if split != "train" or self.min_steps is None:
            return ids
        n, k = ids.shape
        n_real = torch.randint(self.min_steps, k + 1, (n, 1), generator=generator, device=ids.device)
        scores = torch.rand((n, k), generator=generator, device=ids.device)
        rank = scores.argsort(dim=1).argsort(dim=1)  # a random order of the slots
        return torch.where(rank < n_real, ids, identity)

    def encode(self, text: str) -> list[int]:
        """`"f0 f3 f1 7"` -> tokens: map ids `f<i>` and values `<v>`, separated by spaces (`id`: the
        identity map, where `step_splits` is on)."""
        out = []
        for word in text.split():
            if word == "id" and self.step_splits:
                out.append(self.n_values + self.n_maps)
            elif word.startswith("f") and word[1:].isdigit() and int(word[1:]) < self.n_maps:
                out.append(self.n_values + int(word[1:]))
            elif word.isdigit() and int(word) < self.n_values:
                out.append(int(word))
            else:
                raise ValueError(
                    f"composition prompts are map ids f0..f{self.n_maps - 1} and values "
                    f"0..{self.n_values - 1}; got {word!r}"
                )
        return out

    def decode(self, tokens: list[int]) -> str:
        return " ".join(self._word(t) for t in tokens)

    def _word(self, token: int) -> str:
        if token < self.n_values:
            return str(token)
        return "id" if token == self.n_values + self.n_maps else f"f{token - self.n_values}"


def _permutations(n_maps: int, n_values: int, seed: int) -> torch.Tensor:
    """[n_maps, n_values] pairwise-distinct random permutations drawn from `seed`."""
    gen = make_generator(seed, "cpu")
    out: list[torch.Tensor] = []
    while len(out) < n_maps:
        f = torch.randperm(n_values, generator=gen)
        if not any(torch.equal(f, g) for g in out):
            out.append(f)
    return torch.stack(out)
