"""The default text corpus: short stories generated from a seed by a small probabilistic grammar.

Why generated: `task=text` must run offline on a fresh machine, and no text written by anyone else may be
copied into the repository. Why this grammar: the corpus should reward in-context learning. Every document
invents its own cast: two to four characters and one or two places with made-up names (random syllables, so a
name cannot be memorised from the training set), a few objects, and a secret word of 5-9 random letters and
digits. The sentences then keep returning to that cast and that word, so once a name or the word has appeared,
its remaining characters are predictable only by copying them from earlier in the context, the job of an
induction head. Longer spans repeat too: one sentence in five is echoed right after itself ("Again: ..."), and
half the documents come back to a refrain sentence. Everything else (the templates, verbs, adjectives,
punctuation) is a fixed, learnable grammar. The text is ASCII (so UTF-8), documents end with a blank line, and
a typical sentence is 25-50 bytes, so a name recurs within a 64-128 byte window.

Every draw goes through `random.Random(seed).random()`, the one method (with seeding) whose stream Python
guarantees across versions (`choice` and `randrange` are not guaranteed); `tests/test_text.py` pins the
sha256 of the default corpus anyway.

`python -m emergence_lab.tasks.corpus OUT [--seed S] [--bytes N]` writes it to a file and prints
`entropy_bound`: the bits per byte the generator drew, an upper bound on the text's entropy rate.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

DEFAULT_SEED = 0
DEFAULT_BYTES = 1_000_000

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ei")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "th")
_OBJECTS = (
    "lamp",
    "key",
    "boat",
    "letter",
    "map",
    "coin",
    "basket",
    "drum",
    "ring",
    "kettle",
    "rope",
    "bell",
)
_ADJECTIVES = ("old", "small", "red", "quiet", "broken", "bright", "heavy", "strange", "green", "warm")
_PLACE_NOUNS = ("mill", "harbour", "tower", "garden", "market", "bridge", "forest", "chapel", "well", "farm")
_MOVES = ("walked", "ran", "rode", "sailed", "climbed", "returned")
_FEELINGS = ("happy", "tired", "worried", "angry", "calm", "hungry", "proud")
_CODE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_TIMES = ("In the morning", "At noon", "That evening", "Later", "At dawn", "After the rain")


class _Draw:
    """choice / below / sample / chance built on `random()` alone. `bits` adds up the information of every
    draw so far (log2 n for a uniform choice among n, -log2 p for an outcome of probability p)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.bits = 0.0

    def chance(self, p: float) -> bool:
        hit = self._rng.random() < p
        self.bits -= math.log2(p if hit else 1.0 - p)
        return hit

    def below(self, n: int) -> int:
        self.bits += math.log2(n)
        return min(int(self._rng.random() * n), n - 1)

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.below(len(seq))]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        pool = list(seq)
        return [pool.pop(self.below(len(pool))) for _ in range(k)]


def _name(rng: _Draw) -> str:
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2 + rng.below(2))]
    return ("".join(syllables) + rng.choice(_CODAS)).capitalize()


def _code(rng: _Draw) -> str:
    return "".join(rng.choice(_CODE_CHARS) for _ in range(5 + rng.below(5)))


def _document(rng: _Draw) -> str:
    secret = _code(rng)
    cast = list(dict.fromkeys(_name(rng) for _ in range(2 + rng.below(3))))
    places = [f"the {rng.choice(_PLACE_NOUNS)} of {_name(rng)}" for _ in range(1 + rng.below(2))]
    things = rng.sample(_OBJECTS, 2 + rng.below(2))

    def who() -> str:
        return rng.choice(cast)

    def other(a: str) -> str:
        rest = [c for c in cast if c != a]
        return rng.choice(rest) if rest else a

    def s_move() -> str:
        return f"{who()} {rng.choice(_MOVES)} to {rng.choice(places)}."

    def s_meet() -> str:
        a = who()
        return f"{a} met {other(a)} at {rng.choice(places)}."

    def s_give() -> str:
        a = who()
        return f"{a} gave {other(a)} the {rng.choice(things)}."

    def s_find() -> str:
        return f"{rng.choice(_TIMES)}, {who()} found a {rng.choice(_ADJECTIVES)} {rng.choice(things)}."

    def s_say() -> str:
        a = who()
        return f'"Where is the {rng.choice(things)}?" asked {a}. "{other(a)} has it," said {other(a)}.'

    def s_feel() -> str:
        return f"{who()} was {rng.choice(_FEELINGS)}."

    def s_see() -> str:
        a = who()
        return f"{a} saw {other(a)} near {rng.choice(places)} with the {rng.choice(things)}."

    def s_sign() -> str:
        return f'The sign at {rng.choice(places)} said "{secret}".'

    def s_word() -> str:
        a = who()
        return f"{a} whispered the word {secret} to {other(a)}."

    templates: tuple[Callable[[], str], ...] = (
        s_move,
        s_meet,
        s_give,
        s_find,
        s_say,
        s_feel,
        s_see,
        s_sign,
        s_word,
    )
    refrain = s_see() if rng.chance(0.5) else None
    title = f"{cast[0]} and the {things[0]}"
    sentences = []
    for _ in range(5 + rng.below(8)):
        if refrain is not None and rng.chance(0.25):
            sentences.append(refrain)
        else:
            sentences.append(rng.choice(templates)())
        if rng.chance(0.2):  # an echo: the same span twice in a row, as the induction probe has it
            sentences.append("Again: " + sentences[-1])
    # a few sentences to a line, as in a paragraph
    lines, line = [], []
    for s in sentences:
        line.append(s)
        if rng.chance(0.35):
            lines.append(" ".join(line))
            line = []
    if line:
        lines.append(" ".join(line))
    return title + "\n\n" + "\n".join(lines) + "\n\n"


def generate_corpus(seed: int = DEFAULT_SEED, n_bytes: int = DEFAULT_BYTES) -> bytes:
    """Whole documents until the text holds at least `n_bytes` bytes (ASCII, so UTF-8)."""
    return _generate(seed, n_bytes)[0]


def entropy_bound(seed: int = DEFAULT_SEED, n_bytes: int = DEFAULT_BYTES) -> float:
    """Bits per byte that the generator drew to write the corpus: an upper bound on the text's entropy rate
    (the text is a function of the draws), so the loss of a model that knew the grammar and read whole
    documents. A model reading windows of `seq_len` bytes cannot reach it where a name or word was drawn
    before its window began."""
    text, bits = _generate(seed, n_bytes)
    return bits / len(text)


def _generate(seed: int, n_bytes: int) -> tuple[bytes, float]:
    if n_bytes < 1:
        raise ValueError(f"corpus_bytes must be positive, got {n_bytes}")
    rng = _Draw(int(seed))
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        doc = _document(rng)
        parts.append(doc)
        size += len(doc)
    return "".join(parts).encode("ascii"), rng.bits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emergence_lab.tasks.corpus", description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--bytes", type=int, default=DEFAULT_BYTES)
    args = parser.parse_args(argv)
    text, bits = _generate(args.seed, args.bytes)
    with open(args.out, "wb") as fh:
        fh.write(text)
    print(f"{len(text)} bytes, drawn with {bits / len(text):.4f} bits per byte (entropy_bound)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
