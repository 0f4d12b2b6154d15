"""The results contract between training and analysis: files, columns, types and metrics. Stdlib only.

Training writes run folders in this shape; `emergence_lab.analysis` reads them (and CSV, wandb, lm-eval and
BIG-bench inputs) into one table of these columns. Both sides import this module and nothing of each other.
Documented in README.md ("The results table"); `tests/test_contract.py` keeps the writers honest.

Schema versions (analysis reads every version in READABLE_SCHEMA_VERSIONS):
- 1: the columns of RESULT_COLUMNS without `n_examples`.
- 2: adds `n_examples`, the number of evaluation examples behind `value` (the binomial standard error of a
  rate needs it). Version 1 files still load: their `n_examples` is missing, never guessed.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)

# ---- files ----------------------------------------------------------------------------------------------
RESULTS_FILE = "results.jsonl"  # one JSON object per measurement, appended whole lines at a time
RUN_FILE = "run.json"  # status and provenance of one run, replaced atomically
CONFIG_FILE = "config.yaml"  # the resolved config the run trained
MANIFEST_FILE = "manifest.json"  # every planned run of a sweep folder, and the study's analysis block
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.ckpt"
ERROR_LOG = "error.log"
LOCK_FILE = ".lock"

# run.json "subtask_weights": {subtask: share of the training distribution} for a task that draws its
# subtasks with known frequencies (parity's Zipf weights); analysis reads it into the `subtask_weight` column.
SUBTASK_WEIGHTS_KEY = "subtask_weights"

# run.json "status"
RUN_STATUSES: tuple[str, ...] = ("completed", "running", "interrupted", "failed", "pending")


def live_status(run_dir: Path, status: str) -> str:
    """run.json says "running" also for a run whose process was killed; the run's lock (flock on LOCK_FILE,
    held for as long as the run trains) tells them apart: a free lock means the run was interrupted."""
    if status != "running":
        return status
    lock = run_dir / LOCK_FILE
    if not lock.exists():
        return "interrupted"
    # append mode: write access without truncating; NFS emulates flock with locks that need it
    try:
        with open(lock, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process (BlockingIOError), or no locks here: trust run.json
                return "running"
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:  # a read-only folder: the lock cannot be tried, so trust run.json
        return "running"
    return "interrupted"


class Score(NamedTuple):
    """One measurement of an evaluation: a results row's subtask, metric, value and n_examples."""

    subtask: str
    metric: str
    value: float
    n_examples: int  # examples behind the value (its binomial standard error needs it)


# ---- columns --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "str" | "int" | "float" | "bool"
    doc: str


# Every row of results.jsonl, in this order.
RESULT_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "`<task>-w<width>-d<depth>-s<seed>-<hash8>`; the run's folder name"),
    Column("sweep", "str", "the study / sweep name (wandb group)"),
    Column("task", "str", "task name"),
    Column("subtask", "str", "`all`, a subtask, or `posK` (answer position K)"),
    Column("split", "str", "`test`, `ood`, ... (a task's evaluation splits)"),
    Column("metric", "str", "metric name (METRICS below, or declared by its source)"),
    Column("value", "float", "the measurement"),
    Column("step", "int", "optimizer steps taken"),
    Column("tokens", "int", "training tokens seen (all ranks)"),
    Column("flops", "float", "training FLOPs spent (6ND plus attention)"),
    Column("seed", "int", "the run's seed"),
    Column("width", "int", "d_model"),
    Column("depth", "int", "layers"),
    Column("n_heads", "int", "attention heads"),
    Column("n_params", "int", "non-embedding parameters"),
    Column("n_params_total", "int", "all parameters"),
    Column("answer_len", "int", "answer tokens L of the split (exact match ~ token_accuracy^L)"),
    Column("n_examples", "int", "evaluation examples behind `value` (schema 2; missing in version 1 files)"),
    Column("schema_version", "int", "SCHEMA_VERSION of the writer"),
)
# Added by importers of other sources (lm-eval, wandb, CSV), never written by training.
SOURCE_COLUMNS: tuple[Column, ...] = (
    Column("stderr", "float", "standard error of `value`, when the source gives one"),
    Column("model", "str", "model name (lm-eval)"),
    Column("n_params_nominal", "bool", "n_params parsed from a model name such as `pythia-160m`"),
    Column("higher_is_better", "bool", "metric direction, when the source states it"),
    Column("status", "str", "the run's status from run.json"),
    Column("source", "str", "the file or spec the row came from"),
    Column("subtask_weight", "float", "the subtask's training frequency (run.json `subtask_weights`)"),
)
COLUMNS: tuple[str, ...] = tuple(c.name for c in RESULT_COLUMNS)
COLUMN_TYPES: dict[str, str] = {c.name: c.type for c in (*RESULT_COLUMNS, *SOURCE_COLUMNS)}
# The tidy table's column order (analysis); unknown columns follow these.
TABLE_ORDER: tuple[str, ...] = (
    "schema_version",
    "run_id",
    "sweep",
    "task",
    "subtask",
    "split",
    "metric",
    "value",
    "stderr",
    "step",
    "tokens",
    "flops",
    "seed",
    "width",
    "depth",
    "n_heads",
    "n_params",
    "n_params_total",
    "n_params_nominal",
    "answer_len",
    "n_examples",
    "model",
    "higher_is_better",
    "status",
    "source",
    "subtask_weight",
)
# A CSV/Parquet input needs these plus its scale column; everything else is optional.
MIN_COLUMNS: tuple[str, ...] = ("task", "metric", "value")


def columns_of_type(kind: str) -> tuple[str, ...]:
    """The table's columns of one type ("str", "int", "float", "bool"), in table order."""
    return tuple(name for name in TABLE_ORDER if COLUMN_TYPES[name] == kind)


# ---- metrics --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """What a metric means: its direction, its bounds (None: unbounded on that side) and its chance level
    (None: depends on the task)."""

    name: str
    higher_is_better: bool
    lower: float | None
    upper: float | None
    chance: float | None = None
    kind: str = "continuous"  # "discontinuous": all-or-nothing per example (exact match)

    @property
    def range(self) -> float | None:
        """upper - lower for a bounded metric; None for an unbounded one (never the observed range)."""
        if self.lower is None or self.upper is None:
            return None
        return self.upper - self.lower


# What training measures at every evaluation (tasks/metrics.py computes them), in this order.
TRAINING_METRICS: tuple[Metric, ...] = (
    Metric("exact_match", True, 0.0, 1.0, kind="discontinuous"),
    Metric("token_accuracy", True, 0.0, 1.0),
    Metric("edit_distance", False, 0.0, 1.0),  # Levenshtein distance / answer length (greedy, same length)
    Metric("answer_logprob", True, None, 0.0),
    # multi-class Brier summed over the vocabulary, mean over answer tokens; treated as unit range so far
    Metric("brier", False, 0.0, 1.0),
    Metric("loss", False, 0.0, None),
)
# What the text task measures (tasks/text.py) besides `loss` (nats per byte) and `token_accuracy`.
TEXT_METRICS: tuple[Metric, ...] = (
    Metric("bits_per_byte", False, 0.0, None),  # loss / ln 2; 8 for a uniform guess over bytes
    # Olsson et al. 2022: loss at 80% of seq_len minus loss at 8%; 0 when the context does not help
    Metric("icl_score", False, None, None, chance=0.0),
    # copying accuracy on a repeated random sequence; chance 1/|alphabet| is its own row (subtask `chance`)
    Metric("induction_score", True, 0.0, 1.0),
)
# Metrics other sources bring (lm-evaluation-harness, BIG-bench); more can be declared with `declare`.
SOURCE_METRICS: tuple[Metric, ...] = (
    Metric("acc", True, 0.0, 1.0),
    Metric("acc_norm", True, 0.0, 1.0),
    Metric("mc1", True, 0.0, 1.0),
    Metric("mc2", True, 0.0, 1.0),
    Metric("f1", True, 0.0, 1.0),
    Metric("em", True, 0.0, 1.0, kind="discontinuous"),
    Metric("contains", True, 0.0, 1.0),
    Metric("pct_stereotype", False, 0.0, 1.0),
    Metric("perplexity", False, 1.0, None),
    Metric("ppl", False, 1.0, None),
    Metric("word_perplexity", False, 1.0, None),
    Metric("byte_perplexity", False, 1.0, None),
    Metric("bits_per_byte", False, 0.0, None),
    Metric("likelihood_difference", False, 0.0, None),
    Metric("ter", False, 0.0, None),
)
_REGISTRY: dict[str, Metric] = {m.name: m for m in (*TRAINING_METRICS, *TEXT_METRICS, *SOURCE_METRICS)}
TRAINING_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in TRAINING_METRICS)


def base_metric(name: str) -> str:
    """lm-eval v0.4 names carry a filter suffix ("exact_match,strict-match"); the metric is before it."""
    return name.split(",", 1)[0]


def metric(name: str) -> Metric | None:
    """The declared meaning of a metric (filter suffixes ignored), or None for an unknown one."""
    return _REGISTRY.get(base_metric(name))


def declare(spec: Metric) -> None:
    """A source that brings its own metric (a new task, a BIG-bench preferred score) declares it here; a
    declaration that contradicts an existing one is an error."""
    known = _REGISTRY.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"metric {spec.name!r} is already declared as {known}")
    _REGISTRY[spec.name] = spec
