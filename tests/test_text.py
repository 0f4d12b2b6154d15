"""The text task: the default corpus, splits, batches, errors, provenance and its metrics."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from emergence_lab.contract import metric
from emergence_lab.model import Transformer, TransformerConfig
from emergence_lab.tasks.corpus import generate_corpus
from emergence_lab.tasks.text import Text

DEFAULT_SHA256 = "7c1054056160d51cedd3cbc2ddac4f07b77fed79d3f25fe71701fd95500d7364"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _unique(n: int) -> str:
    """Lines of 32 hex digits: any 20 consecutive bytes occur once, so a window's position is unambiguous."""
    return "".join(hashlib.md5(str(i).encode()).hexdigest() + "\n" for i in range(n))


def _lines(n: int, tag: str = "") -> str:
    return "".join(f"line {i} of the file {tag}: some words, and a few more.\n" for i in range(n))


# ---- the default corpus ---------------------------------------------------------------------------------
def test_default_corpus_is_pinned():
    data = generate_corpus()
    assert hashlib.sha256(data).hexdigest() == DEFAULT_SHA256
    assert len(data) == 1_000_428
    assert data.startswith(b'Loutitheik and the kettle\n\nThe sign at the well of Mougu said "1pjso2krv".')
    assert Text(seq_len=64).provenance()["corpus"]["sha256"] == DEFAULT_SHA256


def test_default_corpus_names_recur_within_a_document():
    docs = generate_corpus(seed=3, n_bytes=20_000).decode("ascii").split("\n\n")
    bodies = docs[1::2]
    assert len(bodies) > 20
    # every document's cast is named again and again: a capitalised word seen twice in one body
    for body in bodies:
        words = [w.strip('.,"?') for w in body.split()]
        names = {w for w in words if w[:1].isupper() and words.count(w) >= 2}
        assert names, body
    assert generate_corpus(seed=4, n_bytes=5000) != generate_corpus(seed=3, n_bytes=5000)


def test_entropy_bound_adds_up_the_information_of_every_draw():
    from emergence_lab.tasks.corpus import _Draw, entropy_bound

    rng = _Draw(0)
    rng.below(4)
    rng.below(1)  # a forced choice carries nothing
    hit = rng.chance(0.25)
    assert rng.bits == pytest.approx(2 + (2 if hit else math.log2(4 / 3)))
    # the default corpus: an independent count (monkeypatching every draw) gave 0.45225 bits per byte, far
    # below lzma's 1.28 on the same text, and the draws do not change the text
    assert entropy_bound() == pytest.approx(0.45225, abs=5e-5)
    assert hashlib.sha256(generate_corpus()).hexdigest() == DEFAULT_SHA256
    assert entropy_bound(3, 20_000) != entropy_bound(4, 20_000)


# ---- splits and batches ---------------------------------------------------------------------------------
def test_single_file_splits_into_blocks_every_tenth_held_out(tmp_path):
    path = _write(tmp_path / "a.txt", _lines(2000))
    task = Text(path=str(path), seq_len=32, test_size=64)
    size = path.stat().st_size
    assert task.block_bytes == math.ceil(size / 100)
    blocks = sorted(task.train_blocks + task.test_blocks, key=lambda b: b.start)
    assert blocks[0].start == 0 and blocks[-1].stop == size
    assert all(a.stop == b.start for a, b in itertools.pairwise(blocks))
    assert [i for i, b in enumerate(blocks) if b in task.test_blocks] == list(range(9, 100, 10))


def _covered(task: Text, batch_tokens: torch.Tensor, blocks: list, data: bytes) -> None:
    for row in batch_tokens.tolist():
        at = data.find(bytes(row))
        assert any(b.start <= at and at + len(row) <= b.stop for b in blocks)


def test_train_and_test_windows_never_share_bytes(tmp_path):
    path = _write(tmp_path / "a.txt", _unique(4000))
    data = path.read_bytes()
    task = Text(path=str(path), seq_len=48, test_size=100)
    test = task.eval_batch("test", "cpu")
    assert test.tokens.shape == (100, 49)
    _covered(task, test.tokens, task.test_blocks, data)
    starts = sorted(data.find(bytes(r)) for r in test.tokens.tolist())
    assert all(b - a >= 49 for a, b in itertools.pairwise(starts))  # non-overlapping
    for step in range(5):
        _covered(task, task.train_batch(64, seed=0, step=step, device="cpu").tokens, task.train_blocks, data)
    test_bytes = set().union(*(range(b.start, b.stop) for b in task.test_blocks))
    train_bytes = set().union(*(range(b.start, b.stop) for b in task.train_blocks))
    assert not test_bytes & train_bytes


def test_folder_of_small_files_splits_by_file_in_sorted_order(tmp_path):
    for i in range(200):  # each file smaller than a block (1% of the corpus): one block per file
        _write(tmp_path / "docs" / f"{i:03d}.txt", _lines(5, tag=f"<{i}>"))
    _write(tmp_path / "docs" / ".hidden", "\xff not read")
    task = Text(path=str(tmp_path / "docs"), seq_len=16, test_size=16)
    assert [f.name for f in task.files] == [f"{i:03d}.txt" for i in range(200)]
    assert [b.file for b in task.test_blocks] == list(range(9, 200, 10))
    assert all(b.start == 0 and b.stop == task._sizes[b.file] for b in task.test_blocks + task.train_blocks)
    listing = "".join(
        f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n"
        for f in sorted((tmp_path / "docs").glob("*.txt"))
    )
    assert task.provenance()["corpus"]["sha256"] == hashlib.sha256(listing.encode()).hexdigest()

    def tags(tokens: torch.Tensor) -> set[int]:
        return {int(t) for row in tokens.tolist() for t in re.findall(r"<(\d+)>", bytes(row).decode())}

    test_tags, train_tags = (
        tags(task.eval_batch("test", "cpu").tokens),
        tags(task.train_batch(200, 0, 0, "cpu").tokens),
    )
    assert test_tags and all(i % 10 == 9 for i in test_tags)
    assert len(train_tags) > 50 and not any(i % 10 == 9 for i in train_tags)


def test_batches_are_a_function_of_seed_and_step():
    task = Text(seq_len=64)
    a = task.train_batch(8, seed=0, step=7, device="cpu")
    again = Text(seq_len=64).train_batch(8, seed=0, step=7, device="cpu")
    assert torch.equal(a.tokens, again.tokens)
    assert not torch.equal(a.tokens, task.train_batch(8, seed=0, step=8, device="cpu").tokens)
    assert not torch.equal(a.tokens, task.train_batch(8, seed=1, step=7, device="cpu").tokens)
    assert torch.equal(a.answer_pos, torch.arange(1, 65))
    assert torch.equal(
        task.eval_batch("test", "cpu").tokens, Text(seq_len=64).eval_batch("test", "cpu").tokens
    )


def test_copy_share_writes_one_random_span_twice_into_the_chosen_windows():
    task = Text(seq_len=64, copy_share=1.0)
    alphabet = set(task.alphabet.tolist())
    assert 0 not in alphabet
    out = task.insert_copies(torch.zeros(200, 65, dtype=torch.long), torch.Generator().manual_seed(3))
    lengths = set()
    for row in out:
        where = row.nonzero().flatten()
        start, stop = int(where[0]), int(where[-1]) + 1
        span = stop - start
        assert span % 2 == 0 and 8 <= span <= 64  # two copies of 4..32 bytes, contiguous
        half = span // 2
        assert torch.equal(row[start : start + half], row[start + half : stop])
        assert set(row[start:stop].tolist()) <= alphabet
        lengths.add(half)
    assert min(lengths) <= 6 and max(lengths) >= 30  # lengths spread over [4, seq_len // 2]

    plain = Text(seq_len=64).train_batch(400, seed=0, step=5, device="cpu").tokens
    mixed = Text(seq_len=64, copy_share=0.25).train_batch(400, seed=0, step=5, device="cpu").tokens
    changed = (plain != mixed).any(dim=1).float().mean().item()
    assert 0.17 < changed < 0.33  # about a quarter of the windows; the rest are the same text windows
    again = Text(seq_len=64, copy_share=0.25).train_batch(400, seed=0, step=5, device="cpu").tokens
    assert torch.equal(mixed, again)
    assert torch.equal(Text(seq_len=64, copy_share=0.0).train_batch(400, 0, 5, "cpu").tokens, plain)
    with pytest.raises(ValueError, match=r"copy_share must be in \[0, 1\], got 1.5"):
        Text(seq_len=64, copy_share=1.5)


# ---- errors and provenance ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"ok text then \xff\xfe bad", "is not UTF-8 (byte 13)"),
        ("short text. " * 20, "is too short"),
    ],
)
def test_bad_corpus_is_a_one_line_value_error(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        Text(path=str(path), seq_len=64)
    assert "\n" not in str(err.value)


def test_hash_is_the_files_sha256_and_is_cached(tmp_path):
    path = _write(tmp_path / "book.txt", _lines(1000) + "caf\u00e9 \u2713\n")
    info = Text(path=str(path), seq_len=32).provenance()["corpus"]
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["bytes"] == path.stat().st_size and info["files"] == 1
    assert info["train_bytes"] + info["test_bytes"] == info["bytes"]
    cache = json.loads((tmp_path / "cache" / "emergence_lab" / "corpus-hashes.json").read_text())
    assert list(cache.values()) == [info["sha256"]]


# ---- metrics ----------------------------------------------------------------------------------------------
class _Uniform(torch.nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*tokens.shape, 256)


def _copier(tokens: torch.Tensor, strength: float = 10.0) -> torch.Tensor:
    """A hand-built induction head: after the bigram (a, b) seen earlier, predict what followed it then."""
    logits = torch.zeros(*tokens.shape, 256)
    for row, seq in enumerate(tokens.tolist()):
        for t in range(1, len(seq)):
            for j in range(t - 1, 0, -1):
                if seq[j] == seq[t] and seq[j - 1] == seq[t - 1]:
                    logits[row, t, seq[j + 1]] = strength
                    break
    return logits


def test_induction_probe_scores_a_copier_near_one_and_an_untrained_model_near_chance():
    task = Text(seq_len=64, probe_size=128)
    chance = 1 / task.alphabet.numel()
    assert task.alphabet.numel() == len(set(generate_corpus()))  # the training text uses every byte value
    assert task.induction_score(_copier, "cpu") > 0.95
    assert task.induction_score(_Uniform(), "cpu") <= chance * 1.01  # ties: the first alphabet byte
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=256, max_seq_len=65, width=32, depth=2)).eval()
    assert abs(task.induction_score(model, "cpu") - chance) < 3 * chance
    seqs = task.induction_batch("cpu")
    assert seqs.shape == (128, 64) and torch.equal(seqs[:, :32], seqs[:, 32:])
    assert set(seqs.unique().tolist()) <= set(task.alphabet.tolist())


def test_uniform_model_scores_log256_and_no_icl():
    task = Text(seq_len=50, test_size=20)
    rows = {
        (s.subtask, s.metric): s.value
        for s in task.evaluate_split(_Uniform(), "test", task.eval_batch("test", "cpu"))
    }
    assert rows["all", "loss"] == pytest.approx(math.log(256), abs=1e-5)
    assert rows["all", "bits_per_byte"] == pytest.approx(8.0, abs=1e-5)
    assert rows["all", "icl_score"] == pytest.approx(0.0, abs=1e-6)
    assert task.icl_bands() == (slice(40, 42), slice(4, 6))  # 80% and 8% of 50, bands of round(2.5) = 2
    assert rows["icl_early", "loss"] == pytest.approx(math.log(256), abs=1e-5)
    assert rows["chance", "induction_score"] == pytest.approx(1 / task.alphabet.numel())
    assert 3.5 < rows["unigram", "bits_per_byte"] < 5.0
    for _, name in rows:
        assert metric(name) is not None, name


def test_a_model_that_copies_from_context_has_negative_icl_score():
    # late in a window more bigrams have been seen before, so a (soft) copier is right more often there
    task = Text(seq_len=64, test_size=128)
    copier = functools.partial(_copier, strength=3.0)
    rows = {
        (s.subtask, s.metric): s.value
        for s in task.evaluate_split(copier, "test", task.eval_batch("test", "cpu"))
    }
    assert rows["all", "icl_score"] < -0.3
    assert rows["all", "token_accuracy"] > 0.05  # only where a bigram recurs; elsewhere it guesses byte 0
    assert metric("icl_score").higher_is_better is False and metric("induction_score").upper == 1.0


# ---- end to end -----------------------------------------------------------------------------------------
TEXT_TINY = [
    "task=text",
    "task.seq_len=32",
    "task.corpus_bytes=200000",
    "task.test_size=32",
    "task.probe_size=32",
    "model.width=32",
    "model.depth=2",
    "budget.steps=60",
    "trainer.eval_every=30",
    "trainer.ckpt_every=30",
    "trainer.progress_bar=false",
    "trainer.threads=1",
    "logger=none",
]


@pytest.mark.slow
def test_train_on_text_records_corpus_and_every_metric(tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train", *TEXT_TINY, f"hydra.run.dir={run_dir}")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["task"] == "text"
    assert info["corpus"]["sha256"] == hashlib.sha256(generate_corpus(0, 200_000)).hexdigest()
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {0, 30, 60}
    at = {(r["step"], r["subtask"], r["metric"]): r["value"] for r in rows}
    for name in ("loss", "bits_per_byte", "token_accuracy", "icl_score", "induction_score"):
        assert (60, "all", name) in at
    assert at[60, "all", "bits_per_byte"] < at[0, "all", "bits_per_byte"] - 2
    assert {r["answer_len"] for r in rows} == {32}


@pytest.mark.slow
def test_bad_corpus_path_is_exit_2_before_any_run(tmp_path):
    proc = run_cli(
        "train",
        *TEXT_TINY,
        f"task.path={tmp_path / 'nope.txt'}",
        f"hydra.run.dir={tmp_path / 'r'}",
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_text_run_resumed_from_its_middle_checkpoint_gives_the_uninterrupted_numbers(tmp_path):
    import shutil

    from hydra import compose, initialize_config_dir

    from emergence_lab.launch.configs import CONF_DIR
    from emergence_lab.run.run_id import register_resolvers
    from emergence_lab.run.train import train

    register_resolvers()  # and the config schemas
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(generate_corpus(seed=3, n_bytes=60_000))
    overrides = [
        "task=text",
        f"task.path={corpus}",
        "task.seq_len=32",
        "task.test_size=16",
        "task.probe_size=8",
        "model.width=16",
        "model.depth=1",
        "optim.batch_size=8",
        "trainer.max_steps=20",
        "trainer.eval_every=10",
        "trainer.ckpt_every=10",
        "trainer.progress_bar=false",
        "logger=none",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    whole = tmp_path / "whole"
    assert train(cfg, whole, threads=1, devices=1).status == "completed"
    # the same run killed after its step-10 checkpoint: that checkpoint is the newest, run.json says running
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.copy(cut / "checkpoints" / "prev.ckpt", cut / "checkpoints" / "last.ckpt")
    info = json.loads((cut / "run.json").read_text())
    (cut / "run.json").write_text(json.dumps({**info, "status": "running", "step": 10}))
    assert train(cfg, cut, threads=1, devices=1).status == "completed"
    assert json.loads((cut / "run.json").read_text())["resumed_from_steps"] == [10]
    assert (cut / "results.jsonl").read_text() == (whole / "results.jsonl").read_text()
