"""The task suite: determinism, train/test separation, layouts, and answers checked in plain Python."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from emergence_lab.tasks import TASKS, Addition, Composition, Modular, Parity, Recall, Task, TaskBatch, Text
from emergence_lab.tasks.base import _mix, prompt_hash

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
CONFIGS = sorted(CONF.glob("*.yaml"))


def _load(path: Path) -> DictConfig:
    """A task file without its defaults list (its schema, see config_schema.py)."""
    cfg = OmegaConf.load(path)
    cfg.pop("defaults", None)  # type: ignore[union-attr]
    return cfg  # type: ignore[return-value]


def _from_config(name: str) -> Task:
    return instantiate(_load(CONF / f"{name}.yaml"))


# every config, plus variants that flip the layout switches
VARIANTS: dict[str, object] = {
    **{p.stem: (lambda n=p.stem: _from_config(n)) for p in CONFIGS},
    "addition_msd_first": lambda: Addition(digits=2, reverse_answer=False, ood_digits=3),
    "modular_sub": lambda: Modular(p=11, op="sub", train_fraction=0.3),
    "modular_mul": lambda: Modular(p=13, op="mul", train_fraction=0.6, test_size=20),
    "modular_div": lambda: Modular(p=23, op="div", train_fraction=0.4),
    "composition_final_only": lambda: Composition(steps=2, show_steps=False, ood_steps=4),
    "composition_step_splits": lambda: Composition(
        steps=3, n_maps=4, n_values=10, show_steps=False, step_splits=True, min_steps=1
    ),
}

# small input spaces, where a broken partition would show up as shared prompts
SMALL: dict[str, object] = {
    "addition": lambda: Addition(digits=2, ood_digits=3),
    "modular": lambda: Modular(p=17, op="div", train_fraction=0.5),
    "recall": lambda: Recall(n_pairs=2, n_queries=1, n_keys=4, n_values=3, ood_pairs=1),
    "parity": lambda: Parity(n_tasks=4, n_bits=6, k=2),
    "composition": lambda: Composition(steps=3, n_maps=4, n_values=10, ood_steps=4),
}


def _make(name: str) -> Task:
    return VARIANTS[name]()  # type: ignore[operator]


def _train_sample(task: Task, n_steps: int = 6, n: int = 500, seed: int = 0) -> list[TaskBatch]:
    return [task.train_batch(n, seed=seed, step=s, device="cpu") for s in range(n_steps)]


def _prompts(batch: TaskBatch) -> set[tuple[int, ...]]:
    ans = set(batch.answer_pos.tolist())
    keep = [i for i in range(batch.tokens.shape[1]) if i not in ans]
    return {tuple(row) for row in batch.tokens[:, keep].tolist()}


# ---- independent answer checkers: plain Python ints and lists, no torch code path of the tasks ----------


def _check_addition(task: Addition, batch: TaskBatch, split: str) -> None:
    d = task.ood_digits if split == "ood" else task.digits
    assert d is not None
    assert batch.answer_pos.tolist() == list(range(2 * d + 2, 3 * d + 3))
    for row in batch.tokens.tolist():
        assert row[d] == 10 and row[2 * d + 1] == 11
        a = int("".join(map(str, row[:d])))
        b = int("".join(map(str, row[d + 1 : 2 * d + 1])))
        c = f"{a + b:0{d + 1}d}"
        want = [int(ch) for ch in (c[::-1] if task.reverse_answer else c)]
        assert row[2 * d + 2 :] == want, (row, a, b)


def _check_modular(task: Modular, batch: TaskBatch, split: str) -> None:
    p = task.p
    assert batch.answer_pos.tolist() == [4]
    for a, op, b, eq, c in batch.tokens.tolist():
        assert (op, eq) == (p, p + 1) and 0 <= a < p and 0 <= b < p
        if task.op == "add":
            want = (a + b) % p
        elif task.op == "sub":
            want = (a - b) % p
        elif task.op == "mul":
            want = (a * b) % p
        else:
            assert b != 0
            want = a * pow(b, -1, p) % p
        assert c == want, (a, b, c)


def _check_recall(task: Recall, batch: TaskBatch, split: str) -> None:
    n_pairs = task.n_pairs + (task.ood_pairs or 0) if split == "ood" else task.n_pairs
    q = task.n_queries
    assert batch.answer_pos.tolist() == [2 * n_pairs + 2 * j + 1 for j in range(q)]
    for row in batch.tokens.tolist():
        keys, values = row[0 : 2 * n_pairs : 2], row[1 : 2 * n_pairs : 2]
        assert len(set(keys)) == n_pairs and all(0 <= k < task.n_keys for k in keys)
        assert all(task.n_keys <= v < task.n_keys + task.n_values for v in values)
        table = dict(zip(keys, values, strict=True))
        queries, answers = row[2 * n_pairs :: 2], row[2 * n_pairs + 1 :: 2]
        assert len(queries) == q and len(set(queries)) == q
        for key, value in zip(queries, answers, strict=True):
            assert table[key] == value


def _check_parity(task: Parity, batch: TaskBatch, split: str) -> None:
    m, n = task.n_tasks, task.n_bits
    assert batch.answer_pos.tolist() == [m + n]
    assert batch.subtask is not None
    for row, sub in zip(batch.tokens.tolist(), batch.subtask.tolist(), strict=True):
        control, x, y = row[:m], row[m : m + n], row[m + n]
        assert control == [int(i == sub) for i in range(m)]
        assert all(bit in (0, 1) for bit in x)
        assert y == sum(x[j] for j in task.subsets[sub]) % 2


def _check_composition(task: Composition, batch: TaskBatch, split: str) -> None:
    k = task.ood_steps if split == "ood" else task.steps
    assert k is not None
    v = task.n_values
    maps = task.maps.tolist()
    for row in batch.tokens.tolist():
        ids, x = row[:k], row[k]
        assert all(v <= i < v + task.n_maps + task.step_splits for i in ids) and 0 <= x < v
        chain, y = [], x
        for i in ids:
            y = maps[i - v][y]
            chain.append(y)
        assert row[k + 1 :] == (chain if task.show_steps else [y]), row


def _check_text(task: Task, batch: TaskBatch, split: str) -> None:
    """Every window is consecutive corpus bytes from its own side of the split (more in test_text.py)."""
    assert isinstance(task, Text)
    corpus = b"".join(bytes(a) for a in task._arrays)
    blocks = task.train_blocks if split == "train" else task.test_blocks
    assert torch.equal(batch.answer_pos, torch.arange(1, task.seq_len(split)))
    for row in batch.tokens.tolist()[:50]:
        at = corpus.find(bytes(row))
        assert at >= 0 and any(b.start <= at and at + len(row) <= b.stop for b in blocks)


CHECKERS = {
    Text: _check_text,
    Addition: _check_addition,
    Modular: _check_modular,
    Recall: _check_recall,
    Parity: _check_parity,
    Composition: _check_composition,
}


# ---- every task -------------------------------------------------------------------------------------


def test_registry_and_configs_cover_every_task() -> None:
    assert {p.stem for p in CONFIGS} == set(TASKS)
    for name, cls in TASKS.items():
        assert cls.name == name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_instantiates(path: Path) -> None:
    cfg = _load(path)
    task = instantiate(cfg)
    assert isinstance(task, TASKS[path.stem])
    assert cfg._target_ == f"emergence_lab.tasks.{path.stem}.{type(task).__name__}"
    assert "test_seed" in cfg and "test_size" in cfg


@pytest.mark.parametrize("name", VARIANTS)
def test_determinism(name: str) -> None:
    task = _make(name)
    a = task.train_batch(64, seed=3, step=5, device="cpu")
    b = _make(name).train_batch(64, seed=3, step=5, device="cpu")
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.answer_pos, b.answer_pos)
    for other in (
        task.train_batch(64, seed=3, step=6, device="cpu"),
        task.train_batch(64, seed=4, step=5, device="cpu"),
    ):
        assert not torch.equal(a.tokens, other.tokens)
    for split in task.splits:
        first, again = task.eval_batch(split, "cpu"), _make(name).eval_batch(split, "cpu")
        assert torch.equal(first.tokens, again.tokens)
        assert len(first) == _eval_size(task, split)


@pytest.mark.parametrize("name", VARIANTS)
def test_layout_and_answers(name: str) -> None:
    task = _make(name)
    check = CHECKERS[type(task)]
    batches = [("train", task.train_batch(300, seed=0, step=0, device="cpu"))]
    batches += [(split, task.eval_batch(split, "cpu")) for split in task.splits]
    for split, batch in batches:
        t, pos = task.seq_len(split), batch.answer_pos
        assert batch.tokens.dtype == torch.int64 and batch.tokens.shape[1] == t <= task.max_seq_len
        assert int(batch.tokens.min()) >= 0 and int(batch.tokens.max()) < task.vocab_size
        assert pos.dtype == torch.int64 and pos.ndim == 1 and int(pos.min()) >= 1 and int(pos.max()) < t
        assert torch.equal(pos, pos.sort().values) and pos.unique().numel() == pos.numel()
        assert len(task.answer_names(split)) == pos.numel()
        assert torch.equal(batch.answers, batch.tokens[:, pos])
        if batch.subtask is not None:
            assert batch.subtask.shape == (len(batch),)
            assert int(batch.subtask.max()) < len(task.subtask_names)
        check(task, batch, split)


@pytest.mark.parametrize("name", SMALL)
def test_train_and_test_are_disjoint(name: str) -> None:
    task = SMALL[name]()  # type: ignore[operator]
    train = _train_sample(task)
    seen: set[tuple[int, ...]] = set().union(*(_prompts(b) for b in train))
    assert all(not task.is_heldout(b).any() for b in train)
    for split in task.splits:
        test = task.eval_batch(split, "cpu")
        if split == "train":  # modular: a fixed sample of the training pairs, scored beside the test split
            assert not task.is_heldout(test).any()
            continue
        assert task.is_heldout(test).all()
        assert not seen & _prompts(test)
    assert len(seen) > 100  # the sample really explored the space


def test_prompt_hash_is_not_a_lattice() -> None:
    """Neighbouring prompts (one token +1) must not be held out together more often than by chance."""
    a, b = torch.arange(200).repeat_interleave(200), torch.arange(200).repeat(200)
    tokens = torch.stack([a, b, torch.zeros_like(a)], dim=1)
    held = (prompt_hash(tokens, torch.tensor([2])) < 100).view(200, 200).float()
    assert 0.08 < float(held.mean()) < 0.12
    both = float((held[1:] * held[:-1]).sum() / held[:-1].sum())
    assert 0.07 < both < 0.13
    # answers do not enter the hash
    changed = tokens.clone()
    changed[:, 2] = 7
    assert torch.equal(prompt_hash(tokens, torch.tensor([2])), prompt_hash(changed, torch.tensor([2])))


def test_prompt_hash_is_the_same_in_numpy_on_cpu_as_in_torch_on_a_device() -> None:
    """The CPU path (numpy) and the device path (torch ops, run here on CPU tensors) give equal hashes, so
    training streams and held-out sets do not depend on which path drew them."""
    from emergence_lab.tasks.base import _prompt_hash_numpy, _prompt_hash_torch

    gen = torch.Generator().manual_seed(0)
    for vocab, width in ((12, 14), (97, 4), (2**20, 9)):
        tokens = torch.randint(0, vocab, (500, width), generator=gen)
        answer_pos = torch.tensor([width - 2, width - 1])
        want = _prompt_hash_torch(tokens, answer_pos)
        assert torch.equal(_prompt_hash_numpy(tokens, answer_pos), want)
        assert torch.equal(prompt_hash(tokens, answer_pos), want)
        assert int(want.min()) >= 0 and int(want.max()) < 1000


# ---- OOD shapes -------------------------------------------------------------------------------------


def test_ood_splits_are_longer_as_documented() -> None:
    add = Addition(digits=3, ood_digits=5)
    assert (add.seq_len("test"), add.seq_len("ood"), add.max_seq_len) == (12, 18, 18)
    assert add.eval_batch("ood", "cpu").answer_pos.tolist() == list(range(12, 18))
    assert add.answer_names("ood") == tuple(f"place{i}" for i in range(6))
    assert Addition(digits=3).splits == ("test",)

    rec = Recall(n_pairs=8, n_queries=4, n_keys=24, ood_pairs=8)
    assert (rec.seq_len("test"), rec.seq_len("ood")) == (24, 40)
    assert rec.eval_batch("ood", "cpu").answer_pos.tolist() == [33, 35, 37, 39]

    comp = Composition(steps=3, ood_steps=5)
    assert (comp.seq_len("test"), comp.seq_len("ood")) == (7, 11)
    assert comp.answer_names("test") == ("step1", "step2", "composed")
    assert comp.answer_names("ood") == ("step1", "step2", "step3", "step4", "composed")
    assert comp.eval_batch("ood", "cpu").answer_pos.tolist() == [6, 7, 8, 9, 10]
    final_only = Composition(steps=3, show_steps=False, ood_steps=5)
    assert (final_only.seq_len("test"), final_only.seq_len("ood")) == (5, 7)
    assert final_only.answer_names("ood") == ("composed",)

    assert Modular().splits == ("test", "train") and Parity().splits == ("test",)
    with pytest.raises(ValueError):
        Addition(digits=4, ood_digits=4)
    with pytest.raises(ValueError):
        Recall(n_pairs=8, n_keys=12, ood_pairs=8)
    with pytest.raises(ValueError):
        comp.eval_batch("nope", "cpu")


# ---- task-specific ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "op", "frac"), [(97, "add", 0.5), (31, "div", 0.3), (13, "mul", 0.8)])
def test_modular_split_is_exactly_the_train_fraction(p: int, op: str, frac: float) -> None:
    task = Modular(p=p, op=op, train_fraction=frac)
    b_values = range(1, p) if op == "div" else range(p)
    every = {(a, b) for a in range(p) for b in b_values}
    nb = len(b_values)
    train = {(i // nb, i % nb + b_values[0]) for i in task.train_pairs.tolist()}
    test_batch = task.eval_batch("test", "cpu")
    test = {(a, b) for a, _, b, _, _ in test_batch.tokens.tolist()}
    assert len(train) == round(frac * len(every)) and train <= every
    assert test == every - train and len(test_batch) == len(test)  # the whole complement, each pair once
    assert task.test_permille == round(1000 * len(test) / len(every))
    drawn = {(a, b) for batch in _train_sample(task, 5, 4000) for a, _, b, _, _ in batch.tokens.tolist()}
    assert drawn <= train and len(drawn) > 0.9 * len(train)  # 20000 draws cover ~98% of 4704 pairs
    # is_heldout agrees with the split on raw samples
    raw = task.sample(3000, torch.Generator().manual_seed(0))
    flags = task.is_heldout(raw).tolist()
    assert all(f == ((a, b) in test) for (a, _, b, _, _), f in zip(raw.tokens.tolist(), flags, strict=True))
    # the split depends on split_seed only
    assert Modular(p=p, op=op, train_fraction=frac, test_seed=9).train_pairs.equal(task.train_pairs)
    assert not Modular(p=p, op=op, train_fraction=frac, split_seed=1).train_pairs.equal(task.train_pairs)


def test_modular_train_split_samples_training_pairs() -> None:
    """The `train` split is a fixed subset of the training pairs, each once; adding it left the test set as
    it was (its generator is indexed by the split's position, and `test` stays first)."""
    task = Modular(p=31, op="add", train_fraction=0.3)  # 288 train pairs, 673 test pairs
    train_pairs = {(int(i) // 31, int(i) % 31) for i in task.train_pairs}
    batch = task.eval_batch("train", "cpu")
    pairs = [(a, b) for a, _, b, _, _ in batch.tokens.tolist()]
    assert len(pairs) == len(set(pairs)) == len(train_pairs) == 288  # fewer than test_size: all of them
    assert set(pairs) == train_pairs
    assert [c for *_, c in batch.tokens.tolist()] == [(a + b) % 31 for a, b in pairs]
    test = {(a, b) for a, _, b, _, _ in task.eval_batch("test", "cpu").tokens.tolist()}
    assert len(test) == 673 and not test & train_pairs

    small = Modular(p=31, op="add", train_fraction=0.3, test_size=50)
    sample = [(a, b) for a, _, b, _, _ in small.eval_batch("train", "cpu").tokens.tolist()]
    assert len(set(sample)) == 50 and set(sample) <= train_pairs
    gen = torch.Generator().manual_seed(_mix(small.test_seed, 1))  # the test split's seed, as before
    want = small.test_pairs[torch.randperm(small.test_pairs.numel(), generator=gen)[:50]]
    got = small.eval_batch("test", "cpu")
    assert torch.equal(got.tokens[:, 0] * 31 + got.tokens[:, 2], want)


def _eval_size(task: Task, split: str) -> int:
    if split == "train" and isinstance(task, Modular):
        return min(task.test_size, task.train_pairs.numel())
    return task.test_size


def test_modular_test_subset_has_no_repeats() -> None:
    task = Modular(p=13, op="mul", train_fraction=0.6, test_size=20)
    pairs = [(a, b) for a, _, b, _, _ in task.eval_batch("test", "cpu").tokens.tolist()]
    assert len(pairs) == len(set(pairs)) == 20
    with pytest.raises(ValueError):
        Modular(p=12, op="div")
    with pytest.raises(TypeError):
        Modular(test_permille=100)  # type: ignore[call-arg]


def test_parity_subtask_frequencies() -> None:
    task = _from_config("parity")
    assert isinstance(task, Parity)
    assert task.subtask_names == tuple(f"task{i}" for i in range(task.n_tasks))
    weights = [(i + 1) ** -task.alpha for i in range(task.n_tasks)]
    expected = [w / sum(weights) for w in weights]
    subs = torch.cat([b.subtask for b in _train_sample(task, 10, 2000)]).tolist()  # type: ignore[misc]
    counts = Counter(subs)
    n = len(subs)
    chi2 = sum((counts[i] - n * e) ** 2 / (n * e) for i, e in enumerate(expected))
    assert chi2 < 30, (chi2, counts)  # 7 degrees of freedom: p < 1e-4 at 30
    assert task.subtask_weights == pytest.approx(dict(zip(task.subtask_names, expected, strict=True)))
    assert task.provenance() == {"subtask_weights": task.subtask_weights}
    assert Addition().subtask_weights is None and Addition().provenance() == {}
    test = task.eval_batch("test", "cpu")
    assert test.subtask is not None
    per_task = task.test_size // task.n_tasks
    assert Counter(test.subtask.tolist()) == dict.fromkeys(range(task.n_tasks), per_task)


def test_parity_world_is_fixed_by_world_seed() -> None:
    task = Parity(n_tasks=8, n_bits=16, k=3)
    assert task.subsets == Parity(n_tasks=8, n_bits=16, k=3, test_seed=5).subsets
    assert task.subsets != Parity(n_tasks=8, n_bits=16, k=3, world_seed=1).subsets
    assert len(set(task.subsets)) == 8
    assert all(len(s) == 3 == len(set(s)) and all(0 <= j < 16 for j in s) for s in task.subsets)
    # the stratified test set still has a remainder spread over the first subtasks
    odd = Parity(n_tasks=3, n_bits=8, k=2, test_size=100).eval_batch("test", "cpu")
    assert odd.subtask is not None and Counter(odd.subtask.tolist()) == {0: 34, 1: 33, 2: 33}


def test_composition_world_is_fixed_by_world_seed() -> None:
    task = Composition(n_maps=4, n_values=10)
    maps = task.maps.tolist()
    assert all(sorted(f) == list(range(10)) for f in maps) and len({tuple(f) for f in maps}) == 4
    assert torch.equal(task.maps, Composition(n_maps=4, n_values=10, test_seed=3).maps)
    assert not torch.equal(task.maps, Composition(n_maps=4, n_values=10, world_seed=1).maps)


# ---- composition with per-step splits (the composition_steps study) -------------------------------------


def _step_task(**kw: object) -> Composition:
    args: dict[str, object] = dict(steps=3, n_maps=4, n_values=10, show_steps=False, step_splits=True)
    return Composition(**{**args, **kw})  # type: ignore[arg-type]


def test_composition_default_layout_and_stream_are_unchanged() -> None:
    """Without step_splits the task is what it was: same vocabulary, splits and examples (values recorded
    from the version before the option existed)."""
    task = Composition(steps=3, show_steps=False, ood_steps=5)
    assert (task.vocab_size, task.splits) == (14, ("test", "ood"))
    batch = task.train_batch(4, seed=0, step=0, device="cpu")
    assert batch.tokens.tolist() == [
        [13, 11, 13, 3, 5],
        [12, 12, 11, 8, 2],
        [10, 11, 12, 7, 1],
        [13, 10, 13, 3, 4],
    ]
    test = task.eval_batch("test", "cpu")
    assert test.tokens[:3].tolist() == [[11, 10, 10, 1, 7], [11, 12, 11, 6, 6], [12, 10, 10, 5, 1]]
    assert int(test.tokens.sum()) == 44628


def test_composition_step_splits_are_one_map_in_their_slot() -> None:
    task = _step_task()
    identity = 10 + 4
    assert task.vocab_size == 15
    assert task.splits == ("test", "step1", "step2", "step3", "train")
    assert task.decode([10, identity, 13, 7]) == "f0 id f3 7" and task.encode("f0 id f3 7") == [10, 14, 13, 7]
    maps = task.maps.tolist()
    for i in (1, 2, 3):
        batch = task.eval_batch(f"step{i}", "cpu")
        assert batch.answer_pos.tolist() == [4]
        for row in batch.tokens.tolist():
            ids, x, y = row[:3], row[3], row[4]
            assert [j for j, m in enumerate(ids, 1) if m != identity] == [i]
            assert y == maps[ids[i - 1] - 10][x]
        # every map of the slot is scored
        assert set(batch.tokens[:, i - 1].tolist()) == {10, 11, 12, 13}
    test = task.eval_batch("test", "cpu")
    assert not (test.tokens[:, :3] == identity).any()


def test_composition_min_steps_mixes_lengths_in_random_slots() -> None:
    task = _step_task(min_steps=1)
    tokens = torch.cat([task.train_batch(1000, seed=0, step=s, device="cpu").tokens for s in range(4)])
    real = tokens[:, :3] != 14
    counts = Counter(real.sum(dim=1).tolist())
    assert set(counts) == {1, 2, 3}
    # a uniform number of real maps, 1..3 (the held-out share removes ~10% of the full ones)
    assert all(
        abs(counts[n] / len(tokens) - share) < 0.03 for n, share in ((1, 0.345), (2, 0.345), (3, 0.31))
    )
    # every slot holds a real map about equally often among the one-map prompts
    one = real[real.sum(dim=1) == 1].float().mean(dim=0)
    assert torch.allclose(one, torch.full((3,), 1 / 3), atol=0.04)
    assert (
        not _step_task(min_steps=3).train_batch(500, seed=0, step=0, device="cpu").tokens[:, :3].eq(14).any()
    )
    # the train split is the training distribution: it has the shorter compositions too
    assert (task.eval_batch("train", "cpu").tokens[:, :3] == 14).any()


def test_composition_only_full_compositions_are_held_out() -> None:
    task = _step_task(min_steps=1)
    test = task.eval_batch("test", "cpu")
    assert task.is_heldout(test).all()
    seen: set[tuple[int, ...]] = set()
    for split in ("step1", "step2", "step3", "train"):
        batch = task.eval_batch(split, "cpu")
        assert not task.is_heldout(batch).any()
        seen |= _prompts(batch)
    for s in range(6):
        batch = task.train_batch(500, seed=0, step=s, device="cpu")
        assert not task.is_heldout(batch).any()
        seen |= _prompts(batch)
    assert not seen & _prompts(test)


def test_composition_min_steps_needs_step_splits_and_a_range() -> None:
    with pytest.raises(ValueError, match="min_steps"):
        Composition(steps=3, min_steps=1)
    for bad in (0, 4):
        with pytest.raises(ValueError, match="min_steps"):
            _step_task(min_steps=bad)
