"""Byte-level language modelling on UTF-8 text, nanoGPT style.

Vocabulary: the 256 byte values, no special tokens. An example is a window of `seq_len + 1` consecutive
bytes; the model reads the first `seq_len` and predicts every next byte, so every position is an answer.

Corpus: `path` is a UTF-8 file or a folder of them (every non-hidden file below it, recursively, read in
sorted order of relative path; a file reached twice through a symlink is read once), each memory-mapped as
uint8, so a corpus larger than memory works. With `path: null` the corpus is the generated default
(tasks/corpus.py), held in memory. The corpus's sha256 (of the file; for a folder, of its `sha256sum`-style
listing `<hex>  <relative path>` per line) and size go into run.json; hashing and the UTF-8 check read each
file once and are cached by (absolute path, size, mtime) in `$XDG_CACHE_HOME/emergence_lab/corpus-hashes.json`
(default `~/.cache/...`) and in memory.

Split, deterministic and documented: each file is cut into contiguous blocks of
`max(8 * (seq_len + 1), ceil(total_bytes / 100))` bytes (a file smaller than that is one block, so a folder of
small files splits by file), and the blocks are numbered across files in order; block k is held out when
`floor((k + 1) * test_permille / 1000) > floor(k * test_permille / 1000)`, i.e. exactly every 10th block at
the default 100 permille, spread evenly through the corpus. A window never crosses a block (so never a split
boundary, and never a file boundary); training windows come only from training blocks and test windows
only from held-out blocks, so the model is never tested on bytes it trained on. A block shorter than a window
holds none.

Training batches are uniform random windows of the training blocks, drawn with a CPU generator seeded by
(seed, step) and then moved to the device: resume is exact, and CPU and CUDA runs see the same stream.
With `copy_share` > 0, each training window, with that probability, also gets a span of L bytes drawn
uniformly from the training alphabet written twice in a row over its text (L uniform in [4, seq_len // 2],
the start uniform where both copies fit): text with more to copy than the corpus has, the data lever
Olsson et al. point to. Test windows and the probe are never changed. The
test set is `test_size` non-overlapping windows of the held-out blocks (all of them if there are fewer),
evenly spaced, fixed for every run.

Metrics (each evaluation, teacher-forced, one forward pass per window), rows of split `test`:
- `loss` (nats per byte, mean over every position of every test window), `bits_per_byte` (= loss / ln 2),
  `token_accuracy` (greedy next-byte accuracy);
- `icl_score` (Olsson et al. 2022): the mean loss of the bytes at window positions from `floor(0.8 *
  seq_len)` on, minus that from `floor(0.08 * seq_len)` on, each over a band of `max(1, round(0.05 *
  seq_len))` positions (0-based positions of the predicted byte among the seq_len predictions; the byte at
  position p is predicted from p + 1 bytes of context). Olsson used single tokens (the 500th and the 50th)
  of a large test set; a band cuts the noise of a few hundred windows. Negative: later bytes are easier, so
  the model uses its context. The two band losses are also rows (subtasks `icl_late`, `icl_early`);
- `induction_score`: `probe_size` sequences of h = seq_len // 2 bytes drawn uniformly (with replacement)
  from the alphabet of bytes that occur in the training text, each repeated once (2h bytes); the score is the
  greedy accuracy, over the alphabet only, on the second copy except its first byte (nothing before it
  predicts it). A model that copies scores near 1; chance is 1 / |alphabet|, written as the row with
  subtask `chance`. Bytes repeated inside the first half make a few predictions ambiguous even for a copier;
- subtask `unigram`, metric `bits_per_byte`: the test bytes' cross-entropy under the training text's byte
  frequencies (add-one smoothed), the baseline a model must beat to use any context at all.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emergence_lab.contract import Score
from emergence_lab.tasks.base import Task, TaskBatch, _mix, make_generator
from emergence_lab.tasks.corpus import DEFAULT_BYTES, DEFAULT_SEED, generate_corpus

ICL_LATE, ICL_EARLY, ICL_BAND = 0.8, 0.08, 0.05
_TARGET_BLOCKS = 100
_MIN_TEST_WINDOWS = 4
_HASH_CHUNK = 1 << 22

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Block:
    file: int
    start: int
    stop: int


class Text(Task):
    name = "text"

    def __init__(
        self,
        path: str | None = None,
        seq_len: int = 256,
        corpus_seed: int = DEFAULT_SEED,
        corpus_bytes: int = DEFAULT_BYTES,
        probe_size: int = 256,
        test_seed: int = 1234,
        test_size: int = 256,
        test_permille: int = 100,
        copy_share: float = 0.0,
    ) -> None:
        super().__init__(test_seed, test_size, test_permille)
        if seq_len < 4:
            raise ValueError(f"text seq_len must be at least 4, got {seq_len}")
        if probe_size < 1:
            raise ValueError(f"probe_size must be positive, got {probe_size}")
        self.context = int(seq_len)
        self.window = self.context + 1
        self.probe_size = int(probe_size)
        if not 0.0 <= copy_share <= 1.0:
            raise ValueError(f"copy_share must be in [0, 1], got {copy_share}")
        self.copy_share = float(copy_share)
        if path is None:
            self.source = f"generated(seed={int(corpus_seed)}, bytes={int(corpus_bytes)})"
            self.files: list[Path] = []
            self._digest, sizes = _generated_info(int(corpus_seed), int(corpus_bytes))
            self._sizes = list(sizes)
            self._corpus_args = (int(corpus_seed), int(corpus_bytes))
        else:
            root = Path(path).expanduser().resolve()
            self.source = str(root)
            self.files = _list_files(root)
            infos = [_file_info(f) for f in self.files]  # raises on a non-UTF-8 file
            self._sizes = [size for _, size in infos]
            if len(self.files) == 1 and root.is_file():
                self._digest = infos[0][0]
            else:
                listing = "".join(
                    f"{h}  {f.relative_to(root)}\n" for f, (h, _) in zip(self.files, infos, strict=True)
                )
                self._digest = hashlib.sha256(listing.encode()).hexdigest()
        self.total_bytes = sum(self._sizes)
        self.block_bytes = max(8 * self.window, math.ceil(self.total_bytes / _TARGET_BLOCKS))
        self.train_blocks, self.test_blocks = self._split()
        n_test_windows = sum((b.stop - b.start) // self.window for b in self.test_blocks)
        if not self.train_blocks or n_test_windows < _MIN_TEST_WINDOWS:
            raise ValueError(
                f"text corpus {self.source} is too short: {self.total_bytes} bytes give "
                f"{len(self.train_blocks)} training blocks and {n_test_windows} test windows of "
                f"{self.window} bytes (need >= 1 and >= {_MIN_TEST_WINDOWS}); "
                "use more text or a smaller seq_len"
            )
        self._arrays_cache: list[np.ndarray] | None = None
        self._train_counts: np.ndarray | None = None
        self._probe: dict[str, torch.Tensor] = {}
        n = np.array([b.stop - b.start - self.window + 1 for b in self.train_blocks], dtype=np.int64)
        self._train_cum = torch.from_numpy(np.cumsum(n))

    # ---- the Task interface ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return 256

    @property
    def splits(self) -> tuple[str, ...]:
        return ("test",)

    def seq_len(self, split: str = "train") -> int:
        return self.window

    def answer_names(self, split: str = "test") -> tuple[str, ...]:
        return tuple(f"pos{i}" for i in range(self.context))

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        """`n` uniform random windows of the training blocks (split "train") or of the held-out ones."""
        blocks = self.train_blocks if split == "train" else self.test_blocks
        if split == "train":
            cum = self._train_cum
        else:
            cum = torch.from_numpy(np.cumsum([b.stop - b.start - self.window + 1 for b in blocks]))
        u = torch.randint(0, int(cum[-1]), (n,), generator=generator, device=generator.device).cpu()
        which = torch.searchsorted(cum, u, right=True)
        before = torch.cat([torch.zeros(1, dtype=torch.int64), cum])[which]
        starts = [
            (blocks[k].file, blocks[k].start + off)
            for k, off in zip(which.tolist(), (u - before).tolist(), strict=True)
        ]
        return self._windows(starts).to(generator.device)

    def train_batch(self, n: int, seed: int, step: int, device: torch.device | str) -> TaskBatch:
        gen = make_generator(_mix(seed, step), "cpu")
        batch = self.sample(n, gen, "train")
        if self.copy_share > 0:
            batch = TaskBatch(self.insert_copies(batch.tokens, gen), batch.answer_pos)
        return batch.to(device)

    def insert_copies(self, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each window, with probability `copy_share`, gets a span of L random alphabet bytes written twice
        in a row over its text, L uniform in [4, seq_len // 2], at a uniform start where both copies fit."""
        tokens = tokens.clone()
        chosen = torch.rand(len(tokens), generator=generator) < self.copy_share
        alphabet = self.alphabet
        for row in chosen.nonzero().flatten().tolist():
            length = int(torch.randint(4, self.context // 2 + 1, (), generator=generator))
            start = int(torch.randint(0, self.window - 2 * length + 1, (), generator=generator))
            span = alphabet[torch.randint(0, alphabet.numel(), (length,), generator=generator)]
            tokens[row, start : start + length] = span
            tokens[row, start + length : start + 2 * length] = span
        return tokens

    def eval_batch(self, split: str, device: torch.device | str) -> TaskBatch:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; it has {self.splits}")
        starts = [
            (b.file, s)
            for b in self.test_blocks
            for s in range(b.start, b.stop - self.window + 1, self.window)
        ]
        if len(starts) > self.test_size:
            keep = np.linspace(0, len(starts) - 1, self.test_size).round().astype(int)
            starts = [starts[i] for i in keep]
        return self._windows(starts).to(device)

    def is_heldout(self, batch: TaskBatch) -> torch.Tensor:
        raise NotImplementedError("text splits by corpus block, not by example: use train_batch / eval_batch")

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")

    def provenance(self) -> dict[str, Any]:
        return {
            "corpus": {
                "source": self.source,
                "sha256": self._digest,
                "bytes": self.total_bytes,
                "files": max(1, len(self.files)),
                "train_bytes": sum(b.stop - b.start for b in self.train_blocks),
                "test_bytes": sum(b.stop - b.start for b in self.test_blocks),
                "block_bytes": self.block_bytes,
            }
        }

    # ---- evaluation --------------------------------------------------------------------------------
    @property
    def alphabet(self) -> torch.Tensor:
        """The byte values that occur in the training text, sorted."""
        return torch.from_numpy(np.flatnonzero(self.train_counts)).long()

    @property
    def train_counts(self) -> np.ndarray:
        if self._train_counts is None:
            counts = np.zeros(256, dtype=np.int64)
            for b in self.train_blocks:
                counts += np.bincount(self._arrays[b.file][b.start : b.stop], minlength=256)
            self._train_counts = counts
        return self._train_counts

    def induction_batch(self, device: torch.device | str) -> torch.Tensor:
        """[probe_size, 2h] random sequences over the training alphabet, each made of one half twice."""
        key = str(device)
        if key not in self._probe:
            gen = make_generator(_mix(self.test_seed, 1000), "cpu")
            alphabet = self.alphabet
            half = alphabet[
                torch.randint(0, alphabet.numel(), (self.probe_size, self.context // 2), generator=gen)
            ]
            self._probe[key] = torch.cat([half, half], dim=1).to(device)
        return self._probe[key]

    def icl_bands(self) -> tuple[slice, slice]:
        """The (late, early) window positions whose losses `icl_score` compares."""
        band = max(1, round(ICL_BAND * self.context))
        late, early = int(ICL_LATE * self.context), int(ICL_EARLY * self.context)
        return slice(late, min(late + band, self.context)), slice(early, early + band)

    @torch.no_grad()
    def evaluate_split(
        self, model: Model, split: str, batch: TaskBatch, chunk_size: int = 1024
    ) -> list[Score] | None:
        loss_sum = torch.zeros(self.context, dtype=torch.float64)
        hits = 0.0
        for start in range(0, len(batch), chunk_size):
            tokens = batch.tokens[start : start + chunk_size]
            logits = model(tokens[:, :-1]).float()
            target = tokens[:, 1:]
            ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # [B, T]
            loss_sum += ce.sum(dim=0).double().cpu()
            hits += (logits.argmax(dim=-1) == target).float().sum().item()
        n = len(batch)
        per_pos = loss_sum / n
        loss = per_pos.mean().item()
        late, early = self.icl_bands()
        probes = self.probe_size
        induction = self.induction_score(model, batch.tokens.device, chunk_size)
        return [
            Score("all", "loss", loss, n),
            Score("all", "bits_per_byte", loss / math.log(2), n),
            Score("all", "token_accuracy", hits / (n * self.context), n),
            Score("all", "icl_score", (per_pos[late].mean() - per_pos[early].mean()).item(), n),
            Score("icl_early", "loss", per_pos[early].mean().item(), n),
            Score("icl_late", "loss", per_pos[late].mean().item(), n),
            Score("all", "induction_score", induction, probes),
            Score("chance", "induction_score", 1.0 / self.alphabet.numel(), probes),
            Score("unigram", "bits_per_byte", self._unigram_bits(batch.tokens[:, 1:]), n),
        ]

    @torch.no_grad()
    def induction_score(self, model: Model, device: torch.device | str, chunk_size: int = 1024) -> float:
        seqs = self.induction_batch(device)
        h = seqs.shape[1] // 2
        alphabet = self.alphabet.to(device)
        hits = 0.0
        for start in range(0, seqs.shape[0], chunk_size):
            part = seqs[start : start + chunk_size]
            logits = model(part[:, :-1]).float()[:, h:, :]  # rows h..2h-2 predict bytes h+1..2h-1
            pred = alphabet[logits[..., alphabet].argmax(dim=-1)]
            hits += (pred == part[:, h + 1 :]).float().sum().item()
        return hits / (seqs.shape[0] * (h - 1))

    def _unigram_bits(self, targets: torch.Tensor) -> float:
        p = (self.train_counts + 1) / (self.train_counts.sum() + 256)
        counts = np.bincount(targets.flatten().cpu().numpy(), minlength=256)
        return float(-(counts * np.log2(p)).sum() / counts.sum())

    # ---- corpus ------------------------------------------------------------------------------------
    @property
    def _arrays(self) -> list[np.ndarray]:
        if self._arrays_cache is None:
            if self.files:
                self._arrays_cache = [np.memmap(f, dtype=np.uint8, mode="r") for f in self.files]
            else:
                self._arrays_cache = [_generated_array(*self._corpus_args)]
        return self._arrays_cache

    def _split(self) -> tuple[list[_Block], list[_Block]]:
        train: list[_Block] = []
        test: list[_Block] = []
        k = 0
        p = self.test_permille
        for i, size in enumerate(self._sizes):
            for start in range(0, size, self.block_bytes):
                block = _Block(i, start, min(size, start + self.block_bytes))
                heldout = (k + 1) * p // 1000 > k * p // 1000
                if block.stop - block.start >= self.window:
                    (test if heldout else train).append(block)
                k += 1
        return train, test

    def _windows(self, starts: list[tuple[int, int]]) -> TaskBatch:
        arrays = self._arrays
        rows = np.stack([np.asarray(arrays[f][s : s + self.window]) for f, s in starts]) if starts else None
        if rows is None:
            raise ValueError("no windows to draw")
        tokens = torch.from_numpy(rows.astype(np.int64))
        return TaskBatch(tokens, torch.arange(1, self.window))


# ---- reading and hashing files ---------------------------------------------------------------------
def _list_files(root: Path) -> list[Path]:
    if not root.exists():
        raise ValueError(f"text corpus {root} does not exist")
    if root.is_file():
        files = [root]
    else:
        files = sorted(
            (
                p
                for p in root.rglob("*")
                if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts)
            ),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        # a file reached twice (a symlink to another file of the folder) is read once, else its text could
        # sit on both sides of the split
        seen: set[Path] = set()
        files = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]  # type: ignore[func-returns-value]
        if not files:
            raise ValueError(f"text corpus folder {root} holds no files")
    if all(f.stat().st_size == 0 for f in files):
        raise ValueError(f"text corpus {root} is empty")
    return files


_HASHES: dict[str, tuple[str, int]] = {}


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emergence_lab" / "corpus-hashes.json"


def _file_info(path: Path) -> tuple[str, int]:
    """(sha256, size) of a UTF-8 file; a file that is not UTF-8 is a ValueError. Cached by path, size and
    mtime, in memory and in a small JSON file, so a large corpus is read in full once."""
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if key in _HASHES:
        return _HASHES[key]
    cache = _cache_file()
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError):
        stored = {}
    if isinstance(stored.get(key), str):
        _HASHES[key] = (stored[key], st.st_size)
        return _HASHES[key]
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"text corpus file {path} is not UTF-8 (byte {offset + exc.start})"
                ) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(
                f"text corpus file {path} is not UTF-8 (truncated character at its end)"
            ) from None
    _HASHES[key] = (digest.hexdigest(), st.st_size)
    stored[key] = digest.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored, indent=0, sort_keys=True))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return _HASHES[key]


@lru_cache(maxsize=4)
def _generated_array(seed: int, n_bytes: int) -> np.ndarray:
    return np.frombuffer(generate_corpus(seed, n_bytes), dtype=np.uint8)


@lru_cache(maxsize=4)
def _generated_info(seed: int, n_bytes: int) -> tuple[str, tuple[int, ...]]:
    data = _generated_array(seed, n_bytes)
    return hashlib.sha256(data.tobytes()).hexdigest(), (int(data.size),)
