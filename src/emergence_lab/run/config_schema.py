"""Config schemas: the type, the range or the choice set of every key, checked before anything starts.

Hydra structured configs do the typing: `register_schemas` stores one dataclass per config file in Hydra's
ConfigStore (at its root, so `--help` lists only real options), and each conf/<group>/<option>.yaml names
its schema first in its defaults list (`- /schema_<name>@_here_`), so `model.width=abc` or `16.5` is refused
by Hydra itself while composing. `check_config` adds what types cannot say: every field's range or choice set
(the `check` in its metadata; a test fails when a field has none), keys that no schema knows (`+model.foo=1`)
and the relations between fields. Every refusal is one line that names the key and what it must be, e.g.
`optim.lr=-0.01: must be > 0 and finite` (`explain` turns Hydra's own errors into such lines).

Run ids do not move: the schemas declare exactly the keys of their YAML files and no default of their own,
so composing with them adds no key to the resolved config (the one exception is the top-level `analysis`,
null unless a study sets it, which run ids ignore), and real-valued keys stay untyped (see `Real`).
"""

from __future__ import annotations

# Every schema field is declared through a helper (ranged, one_of, rule) that returns dataclasses.field with
# the field's check in its metadata: not the mutable-default call RUF009 guards against.
# ruff: noqa: RUF009
import math
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

if TYPE_CHECKING:
    pass

SEED_MAX = 2**32 - 1  # numpy's legacy seeding and Lightning's seed_everything take seeds below 2**32
GENERATOR_SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed: a signed 64-bit integer
ADDITION_MAX_DIGITS = 17  # tasks.addition.MAX_DIGITS (a test keeps the two equal)
MODULAR_OPS = ("add", "sub", "mul", "div")  # tasks.modular.OPS
LR_RULES = ("capped_inverse_width", "inverse_width", "constant")  # optim.LR_RULES
BUDGET_RULES = ("steps", "tokens", "tokens_per_param")  # budget.RULES
COMPILE_SETTINGS = ("auto", "on", "off", True, False)  # model.compile_decision takes these
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_find_unused_parameters_true",
    "fsdp",
    "single_device",
)
# Lightning's precisions; the bare numbers also as integers (`trainer.precision=32` parses as one)
PRECISIONS = (
    *("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16"),
    *(64, 32, 16),
)
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


class ConfigError(ValueError):
    """A refused config value; its message is the one line the CLI prints."""


# ---- what a field may hold -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """lo <= value <= hi (strict where `*_open`); floats must also be finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self, integer: bool) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        if self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {lo}"
        elif self.hi is not None:
            text = f"{'<' if self.hi_open else '<='} {hi}"
        else:
            text = "any number"
        return f"an integer {text}" if integer else f"{text} and finite"


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def ok(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def describe(self, integer: bool) -> str:
        if set(self.values) == {True, False}:
            return "true or false"
        return "one of " + ", ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class Rule:
    """A check that is neither a range nor a fixed choice set (a name, a device list)."""

    text: str
    test: Callable[[Any], bool]

    def ok(self, value: Any) -> bool:
        return self.test(value)

    def describe(self, integer: bool) -> str:
        return self.text


Check = Range | Choice | Rule


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else repr(x)


def ranged(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    nullable: bool = False,
) -> Any:
    """A number in a range; `nullable`: also null (for an untyped `Real` key; `int | None` says it itself)."""
    return field(default=MISSING, metadata={"check": Range(lo, hi, lo_open, hi_open), "nullable": nullable})


def one_of(*values: Any) -> Any:
    return field(default=MISSING, metadata={"check": Choice(tuple(values))})


def flag() -> Any:
    return one_of(True, False)


def rule(text: str, test: Callable[[Any], bool]) -> Any:
    return field(default=MISSING, metadata={"check": Rule(text, test)})


def is_name(value: Any) -> bool:
    """Letters, digits and `_.-`, not starting with a dot: a folder name that stays where it is put."""
    return isinstance(value, str) and bool(NAME_RE.fullmatch(value)) and not value.startswith(".")


def _is_int(value: Any, lo: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def _devices_ok(value: Any) -> bool:
    if value == "auto" or _is_int(value, 1) or (value == -1 and not isinstance(value, bool)):
        return True
    if isinstance(value, (list, ListConfig)):
        return len(value) > 0 and all(_is_int(v, 0) for v in value)
    return False


def _compile_ok(value: Any) -> bool:
    # YAML reads a bare on/off as true/false; the command line passes `trainer.compile=on` as a string
    return any(value == v and type(value) is type(v) for v in COMPILE_SETTINGS)


def _logger_ok(value: Any) -> bool:
    return value is None or (isinstance(value, (dict, DictConfig)) and (not value or "_target_" in value))


# A real-valued key is not typed `float`: that would store `optim.weight_decay=0` as 0.0 and so change the run
# id such a command had before the schemas. Its range check refuses anything but an int or a finite float.
Real = Any


# ---- the schemas -------------------------------------------------------------------------------------------
@dataclass
class TransformerSchema:
    _target_: str = one_of("emergence_lab.model.TransformerConfig")
    width: int = ranged(1)
    depth: int = ranged(1)
    head_dim: int = ranged(1)
    mlp_ratio: int = ranged(1)
    positions: str = one_of("rotary", "learned")
    dropout: Real = ranged(0.0, 1.0, hi_open=True)
    bias: bool = flag()
    init: str = one_of("fan_in", "gpt2")
    init_scale: Real = ranged(0.0, lo_open=True)


@dataclass
class AdamWSchema:
    batch_size: int = ranged(1)
    lr: Real = ranged(0.0, lo_open=True)
    lr_rule: str = one_of(*LR_RULES)
    base_width: int = ranged(1)
    weight_decay: Real = ranged(0.0)
    beta1: Real = ranged(0.0, 1.0, hi_open=True)
    beta2: Real = ranged(0.0, 1.0, hi_open=True)
    warmup_steps: int = ranged(0)
    min_lr_ratio: Real = ranged(0.0, 1.0)


@dataclass
class StepsBudgetSchema:
    rule: str = one_of("steps")
    steps: int = ranged(1)


@dataclass
class TokensBudgetSchema:
    rule: str = one_of("tokens")
    tokens: Real = ranged(0.0, lo_open=True)


@dataclass
class TokensPerParamBudgetSchema:
    rule: str = one_of("tokens_per_param")
    tokens_per_param: Real = ranged(0.0, lo_open=True)
    min_steps: int = ranged(1)
    max_steps: int = ranged(1)


@dataclass
class TrainerSchema:
    accelerator: str = one_of(*ACCELERATORS)
    devices: Any = rule("an integer >= 1, -1 (every device), auto, or a list of device indices", _devices_ok)
    strategy: str = one_of(*STRATEGIES)
    precision: Any = one_of(*PRECISIONS)  # Any: `32` stays the integer it was before the schema
    compile: Any = rule("auto, on (or true) or off (or false)", _compile_ok)  # Any: `true` stays a bool
    pack: Any = rule(
        "auto or an integer >= 1 (seeds trained together)", lambda v: v == "auto" or _is_int(v, 1)
    )
    max_steps: int | None = ranged(1)
    threads: Any = rule("auto or an integer >= 1", lambda v: v == "auto" or _is_int(v, 1))
    deterministic: bool = flag()
    grad_clip: Real = ranged(0.0, nullable=True)  # null: no clipping
    eval_every: int = ranged(1)
    ckpt_every: int = ranged(1)
    eval_chunk_size: int = ranged(1)
    log_every_n_steps: int = ranged(1)
    progress_bar: bool = flag()


@dataclass
class HeldOutSchema:
    """The held-out test set every task but modular draws (tasks/base.py: seed, size, share of buckets)."""

    test_seed: int = ranged(0, GENERATOR_SEED_MAX)
    test_size: int = ranged(1)
    test_permille: int = ranged(1, 999)


@dataclass
class AdditionSchema(HeldOutSchema):
    _target_: str = one_of("emergence_lab.tasks.addition.Addition")
    digits: int = ranged(1, ADDITION_MAX_DIGITS)
    reverse_answer: bool = flag()
    ood_digits: int | None = ranged(2, ADDITION_MAX_DIGITS)


@dataclass
class CompositionSchema(HeldOutSchema):
    _target_: str = one_of("emergence_lab.tasks.composition.Composition")
    steps: int = ranged(1)
    n_maps: int = ranged(1)
    n_values: int = ranged(2)
    show_steps: bool = flag()
    world_seed: int = ranged(0, GENERATOR_SEED_MAX)
    ood_steps: int | None = ranged(2)
    step_splits: bool = flag()
    min_steps: int | None = ranged(1)


@dataclass
class ModularSchema:
    _target_: str = one_of("emergence_lab.tasks.modular.Modular")
    p: int = ranged(2)
    op: str = one_of(*MODULAR_OPS)
    train_fraction: Real = ranged(0.0, 1.0, lo_open=True, hi_open=True)
    split_seed: int = ranged(0, GENERATOR_SEED_MAX)
    test_seed: int = ranged(0, GENERATOR_SEED_MAX)
    test_size: int | None = ranged(1)


@dataclass
class ParitySchema(HeldOutSchema):
    _target_: str = one_of("emergence_lab.tasks.parity.Parity")
    n_tasks: int = ranged(1)
    n_bits: int = ranged(1)
    k: int = ranged(1)
    alpha: Real = ranged(0.0)
    world_seed: int = ranged(0, GENERATOR_SEED_MAX)


@dataclass
class RecallSchema(HeldOutSchema):
    _target_: str = one_of("emergence_lab.tasks.recall.Recall")
    n_pairs: int = ranged(1)
    n_queries: int = ranged(1)
    n_keys: int = ranged(1)
    n_values: int = ranged(1)
    ood_pairs: int | None = ranged(1)


@dataclass
class TextSchema(HeldOutSchema):
    _target_: str = one_of("emergence_lab.tasks.text.Text")
    path: str | None = rule("a UTF-8 file or folder of them, or null", lambda v: v is None or str(v) != "")
    seq_len: int = ranged(4)
    corpus_seed: int = ranged(0, GENERATOR_SEED_MAX)
    corpus_bytes: int = ranged(1)
    probe_size: int = ranged(1)
    copy_share: Real = ranged(0.0, 1.0)


@dataclass
class EstimateSchema:
    startup_s: Real = ranged(0.0)
    step_overhead_s: Real = ranged(0.0)
    flops_per_s: Real = ranged(0.0, lo_open=True)


@dataclass
class PathsSchema:
    root: str = rule("a non-empty path", lambda v: isinstance(v, str) and v.strip() != "")
    # Hydra's output folder (`${hydra:runtime.output_dir}`), unset while planning; Any keeps a read of it
    # outside a job as lenient as before the schema
    output_dir: Any = rule("a path", lambda v: v is None or isinstance(v, str))


def _group(text: str) -> Any:
    """A config group's node: the schema its option names (see SCHEMAS) checks its fields."""
    return field(default=MISSING, metadata={"check": Rule(text, lambda v: isinstance(v, (dict, DictConfig)))})


@dataclass
class ConfigSchema:
    """The top level of conf/config.yaml; each group below is checked by the schema of its option."""

    seed: int = ranged(0, SEED_MAX)
    seeds: Any = rule(
        "null or a non-empty list of distinct seeds >= 0",
        lambda v: (
            v is None
            or (
                isinstance(v, (list, ListConfig))
                and 0 < len(v) == len(set(v))
                and all(_is_int(x, 0) for x in v)
            )
        ),
    )
    sweep: str = rule("letters, digits and _.- only, not starting with a dot", is_name)
    run_id_ignore: list[str] = rule(
        "a list of dotted keys of this config", lambda v: isinstance(v, (list, ListConfig))
    )
    estimate: EstimateSchema = field(default=MISSING, metadata={"check": Rule("the estimate block", bool)})
    paths: PathsSchema = field(default=MISSING, metadata={"check": Rule("the paths block", bool)})
    model: Any = _group("a model config (conf/model)")
    task: Any = _group("a task config (conf/task)")
    optim: Any = _group("an optimizer config (conf/optim)")
    budget: Any = _group("a budget config (conf/budget)")
    trainer: Any = _group("a trainer config (conf/trainer)")
    logger: Any = field(
        default=MISSING,
        metadata={"check": Rule("a Lightning logger config with a _target_, or empty", _logger_ok)},
    )
    # null unless a study sets it; run ids ignore it, and sweep._check_analysis_block checks its contents
    analysis: dict[str, Any] | None = field(
        default=None,
        metadata={
            "check": Rule(
                "a mapping (see analysis/study.py)", lambda v: v is None or isinstance(v, (dict, DictConfig))
            )
        },
    )


# ConfigStore name -> (group, schema). Each conf/<group>/<option>.yaml names its schema in its defaults list.
SCHEMAS: dict[str, tuple[str | None, type]] = {
    "schema_config": (None, ConfigSchema),
    "schema_transformer": ("model", TransformerSchema),
    "schema_adamw": ("optim", AdamWSchema),
    "schema_steps": ("budget", StepsBudgetSchema),
    "schema_tokens": ("budget", TokensBudgetSchema),
    "schema_tokens_per_param": ("budget", TokensPerParamBudgetSchema),
    "schema_trainer": ("trainer", TrainerSchema),
    "schema_addition": ("task", AdditionSchema),
    "schema_composition": ("task", CompositionSchema),
    "schema_modular": ("task", ModularSchema),
    "schema_parity": ("task", ParitySchema),
    "schema_recall": ("task", RecallSchema),
    "schema_text": ("task", TextSchema),
}
# Groups whose every option must carry a schema (the logger's keys are Lightning's, checked by Lightning).
CHECKED_GROUPS = ("model", "task", "optim", "budget", "trainer")


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore; call before composing (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, (_, schema) in SCHEMAS.items():
        store.store(name=name, node=schema)


def all_schemas() -> list[type]:
    """Every schema, nested ones included."""
    out: list[type] = []
    todo = [schema for _, schema in SCHEMAS.values()]
    while todo:
        schema = todo.pop()
        if schema in out:
            continue
        out.append(schema)
        todo += [t for t in get_type_hints(schema).values() if is_dataclass(t)]
    return out


def field_check(schema: type, name: str) -> Check | None:
    for f in fields(schema):
        if f.name == name:
            return f.metadata.get("check")
    return None


_UNIONS = (Union, types.UnionType)


def _is_integer_field(schema: type, name: str) -> bool:
    hint = get_type_hints(schema).get(name)
    if get_origin(hint) in _UNIONS:
        hint = next((a for a in get_args(hint) if a is not type(None)), hint)
    return hint is int


def _is_optional(schema: type, name: str) -> bool:
    hint = get_type_hints(schema).get(name)
    if any(f.name == name and f.metadata.get("nullable") for f in fields(schema)):
        return True
    return get_origin(hint) in _UNIONS and type(None) in get_args(hint)


def must_be(schema: type, name: str) -> str:
    """What a field must hold, in words: `must be an integer >= 1`."""
    check = field_check(schema, name)
    text = check.describe(_is_integer_field(schema, name)) if check else "valid"
    if _is_optional(schema, name):
        text += " (or null)"
    return f"must be {text}"


# ---- checking a composed config ---------------------------------------------------------------------------
def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (one line naming the key) for the first value out of its range, or a broken
    relation between values."""
    for group in CHECKED_GROUPS:
        if OmegaConf.get_type(cfg[group]) not in {s for _, s in SCHEMAS.values()}:
            raise ConfigError(
                f"{group}: this option has no schema; name one in its defaults (`- /schema_<name>@_here_`)"
            )
    _check_node(cfg, ConfigSchema, "")  # groups are checked by their own schemas, nested
    budget = cfg.budget
    if "min_steps" in budget and budget.min_steps > budget.max_steps:
        raise ConfigError(
            f"budget.min_steps={budget.min_steps}: must be <= budget.max_steps ({budget.max_steps})"
        )
    for dotted in cfg.run_id_ignore:
        if OmegaConf.select(cfg, str(dotted), default=_ABSENT, throw_on_resolution_failure=False) is _ABSENT:
            raise ConfigError(f"run_id_ignore: {dotted!r} is not a key of this config")
    check_sweep_dir(cfg)


_ABSENT = object()


def _check_node(node: DictConfig, schema: type, prefix: str) -> None:
    names = [f.name for f in fields(schema)]
    for key in node:
        if key not in names and not (prefix == "" and key == "hydra"):  # `+key=...` adds what no schema knows
            raise ConfigError(f"{prefix}{key}: {_unknown(prefix, names)}")
    for f in fields(schema):
        if f.name not in node:  # a MISSING value reads as absent; every YAML file sets all of its keys
            continue
        try:
            value = OmegaConf.select(node, f.name, throw_on_missing=False)
        except InterpolationResolutionError:  # `${hydra:...}` while planning: Hydra fills it in the job
            continue
        if value is None and (_is_optional(schema, f.name) or f.default is None):
            continue
        if isinstance(value, DictConfig) and is_dataclass(OmegaConf.get_type(value)):
            _check_node(value, OmegaConf.get_type(value), f"{prefix}{f.name}.")  # type: ignore[arg-type]
            continue
        check = f.metadata.get("check")
        if check is not None and not check.ok(value):
            raise ConfigError(f"{prefix}{f.name}={_show(value)}: {must_be(schema, f.name)}")


def _unknown(prefix: str, names: list[str]) -> str:
    where = prefix.rstrip(".") or "the config"
    return f"not a key of {where}; its keys are {', '.join(n for n in names if n != '_target_')}"


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return str(value)


def check_sweep_dir(cfg: DictConfig) -> None:
    """The sweep's folder, `<paths.root>/sweeps/<sweep>`, must stay inside `<paths.root>/sweeps`."""
    root = (Path(str(cfg.paths.root)) / "sweeps").resolve()
    target = (root / str(cfg.sweep)).resolve()
    if target == root or root not in target.parents:
        raise ConfigError(f"sweep={cfg.sweep}: must name a folder inside {root}")


def check_grid(params: Any, task_overrides: list[str], jobs: list[list[str]]) -> None:
    """A sweep that expands to no job is refused, naming the sweep value that is empty (the study's
    `hydra.sweeper.params`, then the command line's overrides)."""
    if jobs:
        return
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(task_overrides)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(lines):
        if o.is_sweep_override() and not list(o.sweep_iterator()):
            raise ConfigError(f"{o.input_line}: expands to no value, so the sweep has no run")
    raise ConfigError("the sweep expands to no run")


def explain(exc: BaseException) -> str:
    """One line for an error raised while composing or checking a config: for a value that has the wrong
    type, `<key>=<value>: must be <what the schema allows>`; else the first line of the innermost cause."""
    from omegaconf.errors import OmegaConfBaseException

    chain: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in chain:
        chain.append(node)
        node = node.__cause__ or node.__context__
    for err in chain:
        if isinstance(err, ConfigError):
            return str(err)
    missing = re.search(
        r"Could not find '([^']+)/([^'/]+)'\n\nAvailable options in '[^']+':\n((?:\t.*\n?)*)", str(exc)
    )
    if missing:  # `task=nosuchtask`: name the choices instead of Hydra's search path
        group, option, choices = missing.group(1), missing.group(2), missing.group(3).split()
        return f"{group}={option}: no such option; choose from {', '.join(choices)}"
    for err in chain:
        if isinstance(err, OmegaConfBaseException) and getattr(err, "full_key", None):
            key = str(err.full_key)
            schema = getattr(err, "object_type", None)
            name = key.rsplit(".", 1)[-1]
            value = _override_value(chain, key)
            if is_dataclass(schema) and field_check(schema, name) is not None:  # type: ignore[arg-type]
                return f"{key}={value}: {must_be(schema, name)}"  # type: ignore[arg-type]
            if str(err).startswith("Key ") and is_dataclass(schema):  # Key 'x' not in 'Schema'
                prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
                return f"{key}: {_unknown(prefix, [f.name for f in fields(schema)])}"  # type: ignore[arg-type]
            first = str(err).strip().splitlines()
            return f"{key}: {first[0] if first else type(err).__name__}"
    text = str(chain[-1] if len(chain) > 1 and not str(exc).strip() else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _override_value(chain: list[BaseException], key: str) -> str:
    """The value as typed on the command line, from Hydra's 'Error merging override <key>=<value>'."""
    for err in chain:
        match = re.search(
            r"override ([^=\s]+)=(.*)$", str(err).strip().splitlines()[0] if str(err).strip() else ""
        )
        if match and match.group(1).lstrip("+~") == key:
            return match.group(2)
    return "?"
