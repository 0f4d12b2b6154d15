"""Bad values are refused before anything starts: exit 2, one line naming the key and its range, no folder.

The schemas (config_schema.py) type every key through Hydra's structured configs and give each field a range
or a choice set; these tests walk every field, compose every option against its schema, and run each bad
value through the real CLI.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from emergence_lab.launch.configs import CONF_DIR
from emergence_lab.launch.launchers import Launcher
from emergence_lab.launch.plan import validate_overrides
from emergence_lab.run import config_schema as cs
from emergence_lab.run import memory as mem
from emergence_lab.run.run_id import register_resolvers

register_resolvers()


def compose_with(*overrides: str, hydra: bool = False) -> Any:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


# ---- every field has a range or a choice set, and the schemas match conf/ ----------------------------------
def test_every_field_of_every_schema_has_a_range_or_a_choice_set():
    schemas = cs.all_schemas()
    assert cs.ConfigSchema in schemas and cs.EstimateSchema in schemas and cs.PathsSchema in schemas
    for schema in schemas:
        for f in fields(schema):
            check = f.metadata.get("check")
            assert isinstance(check, (cs.Range, cs.Choice, cs.Rule)), (
                f"{schema.__name__}.{f.name} has no check"
            )
            assert cs.must_be(schema, f.name).startswith("must be ")


def test_help_lists_only_the_options_not_the_schemas():
    proc = run_cli("train", "--help")
    assert "task: addition, composition, modular, parity, recall, text\n" in proc.stdout
    assert "schema" not in proc.stdout.split("== Config ==")[0]


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in cs.CHECKED_GROUPS for o in options(g)])
def test_every_option_is_typed_by_a_schema_that_adds_no_key(group: str, option: str):
    cfg = compose_with(f"{group}={option}")
    node = cfg[group]
    schema = OmegaConf.get_type(node)
    assert schema in {s for _, s in cs.SCHEMAS.values()}, f"conf/{group}/{option}.yaml lists no schema"
    assert list(node.keys()) == [f.name for f in fields(schema)]  # type: ignore[arg-type]
    assert OmegaConf.missing_keys(node) == set()  # every schema field is set by the YAML file
    cs.check_config(cfg)  # the shipped values are in range


def test_the_top_level_adds_only_a_null_analysis_block():
    cfg = compose_with()
    assert OmegaConf.get_type(cfg) is cs.ConfigSchema
    assert not [key for key in cfg if OmegaConf.is_missing(cfg, key)]
    assert cfg.analysis is None  # run ids ignore it; a study sets it
    assert compose_with("experiment=smoke").analysis.x == "n_params"


def test_schema_constants_are_the_cores():
    from emergence_lab.run.budget import RULES
    from emergence_lab.run.optim import LR_RULES
    from emergence_lab.tasks.addition import MAX_DIGITS
    from emergence_lab.tasks.modular import OPS

    assert cs.ADDITION_MAX_DIGITS == MAX_DIGITS
    assert cs.MODULAR_OPS == OPS
    assert cs.LR_RULES == LR_RULES
    assert cs.BUDGET_RULES == RULES


# ---- each bad value: the one line --------------------------------------------------------------------------
REFUSED = [
    ("optim.lr=-0.01", "optim.lr=-0.01: must be > 0 and finite"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1: must be >= 0 and finite"),
    ("optim.warmup_steps=-50", "optim.warmup_steps=-50: must be an integer >= 0"),
    ("optim.lr=nan", "optim.lr=nan: must be > 0 and finite"),
    ("optim.lr=inf", "optim.lr=inf: must be > 0 and finite"),
    ("optim.batch_size=0", "optim.batch_size=0: must be an integer >= 1"),
    ("model.width=16.5", "model.width=16.5: must be an integer >= 1"),
    ("model.width=abc", "model.width=abc: must be an integer >= 1"),
    ("seed=-1", "seed=-1: must be an integer in [0, 4294967295]"),
    ("seed=4294967296", "seed=4294967296: must be an integer in [0, 4294967295]"),
    ("seed=abc", "seed=abc: must be an integer in [0, 4294967295]"),
    ("trainer.ckpt_every=0", "trainer.ckpt_every=0: must be an integer >= 1"),
    ("trainer.eval_every=0", "trainer.eval_every=0: must be an integer >= 1"),
    ("model.dropout=1.5", "model.dropout=1.5: must be in [0, 1) and finite"),
    ("optim.beta1=2", "optim.beta1=2: must be in [0, 1) and finite"),
    ("trainer.max_steps=0", "trainer.max_steps=0: must be an integer >= 1 (or null)"),
    ("trainer.threads=abc", "trainer.threads=abc: must be auto or an integer >= 1"),
    ("task.digits=40", "task.digits=40: must be an integer in [1, 17]"),
    ("model.positions=alibi", "model.positions=alibi: must be one of rotary, learned"),
    ("optim.lr=abc", "optim.lr=abc: must be > 0 and finite"),
    (
        "task=nosuchtask",
        "task=nosuchtask: no such option; choose from addition, composition, modular, parity, recall, text",
    ),
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1: must be >= 0 and finite (or null)"),
    ("sweep=../../x", "sweep=../../x: must be letters, digits and _.- only, not starting with a dot"),
    ("sweep=.hidden", "sweep=.hidden: must be letters, digits and _.- only, not starting with a dot"),
    ("sweep=a/b", "sweep=a/b: must be letters, digits and _.- only, not starting with a dot"),
    ("sweep=my sweep", "sweep=my sweep: must be letters, digits and _.- only, not starting with a dot"),
]


@pytest.mark.parametrize(("override", "line"), REFUSED)
def test_a_bad_value_is_refused_in_one_line_naming_the_key(override: str, line: str):
    assert validate_overrides([override]) == line


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["task=modular", "task.op=pow"], "task.op=pow: must be one of add, sub, mul, div"),
        (["task=modular", "task.train_fraction=1"], "task.train_fraction=1: must be in (0, 1) and finite"),
        (["task=recall", "task.ood_pairs=0"], "task.ood_pairs=0: must be an integer >= 1 (or null)"),
        (["task=text", "task.copy_share=1.5"], "task.copy_share=1.5: must be in [0, 1] and finite"),
        (
            ["budget=tokens_per_param", "budget.min_steps=30000"],
            "budget.min_steps=30000: must be <= budget.max_steps (20000)",
        ),
        (["budget=tokens", "budget.tokens=0"], "budget.tokens=0: must be > 0 and finite"),
        (["run_id_ignore=[trainer.nope]"], "run_id_ignore: 'trainer.nope' is not a key of this config"),
        (
            ["trainer.devices=0"],
            "trainer.devices=0: must be an integer >= 1, -1 (every device), auto, or a list of device"
            " indices",
        ),
        (
            ["trainer.precision=12"],
            "trainer.precision=12: must be one of " + ", ".join(map(str, cs.PRECISIONS)),
        ),
    ],
)
def test_ranges_of_other_groups_and_relations(overrides: list[str], line: str):
    assert validate_overrides(overrides) == line


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["task=modular", "task.test_size=null"],
        ["trainer.devices=auto", "trainer.threads=2", "trainer.max_steps=5"],
        ["trainer.devices=[0,1]", "trainer.grad_clip=null", "trainer.precision=32"],
        ["optim.warmup_steps=0", "optim.weight_decay=0", "model.dropout=0.5", "seed=4294967295"],
        ["sweep=my_study-v1.2"],
    ],
)
def test_good_values_pass(overrides: list[str]):
    assert validate_overrides(overrides) is None


# ---- names ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("demo", True),
        ("a.b-c_1", True),
        ("..", False),
        (".x", False),
        ("a/b", False),
        ("", False),
        ("é", False),
    ],
)
def test_names_are_letters_digits_and_dot_dash_underscore(name: str, ok: bool):
    assert cs.is_name(name) is ok


def test_a_sweep_folder_that_resolves_outside_its_root_is_refused(tmp_path: Path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "sweeps" / "escape").symlink_to(tmp_path / "elsewhere")
    cfg = compose_with(f"paths.root={tmp_path}", "sweep=escape")
    with pytest.raises(cs.ConfigError, match=r"^sweep=escape: must name a folder inside .*sweeps$"):
        cs.check_config(cfg)
    cs.check_config(compose_with(f"paths.root={tmp_path}", "sweep=inside"))


# ---- empty grids -------------------------------------------------------------------------------------------
def test_an_empty_grid_is_refused():
    line = "model.width=range(8,8): expands to no value, so the sweep has no run"
    assert validate_overrides(["-m", "model.width=range(8,8)"]) == line
    assert validate_overrides(["-m", "experiment=smoke", "hydra.sweeper.params.seed='range(0,0)'"]) == (
        "seed=range(0,0): expands to no value, so the sweep has no run"
    )


# ---- memory ------------------------------------------------------------------------------------------------
def test_memory_estimate_counts_weights_gradients_adamw_and_activations():
    from emergence_lab.model import TransformerConfig

    model = TransformerConfig(width=64, depth=2, vocab_size=16, max_seq_len=12)
    n = model.n_params_total
    est = mem.estimate_memory(model, batch_size=128, seq_len=11, precision="32-true")
    assert (est.weights, est.gradients, est.optimizer) == (4 * n, 4 * n, 8 * n)
    per_token_layer = (15 * 64 + 4.75 * 256 + 5 * model.n_heads * 11) * 4 / 2
    assert est.activations == int(128 * 11 * (2 * per_token_layer + 16 * 12))
    assert est.total == 16 * n + est.activations
    mixed = mem.estimate_memory(model, 128, 11, "bf16-mixed")
    assert (mixed.weights, mixed.weight_dtype, mixed.activation_dtype) == (4 * n, "float32", "bfloat16")
    assert mixed.activations < est.activations
    half = mem.estimate_memory(model, 128, 11, "bf16-true")
    assert (half.weights, half.optimizer) == (2 * n, 4 * n)
    assert mem.estimate_memory(model, 1, 11, "32-true", eval_rows=4096).activations > est.activations


def test_memory_budget_of_each_launcher():
    slurm = {
        "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "mem_gb": 32,
    }
    assert Launcher.of(slurm).memory_budget(32) == mem.MemoryBudget(
        32 * 2**30, "hydra.launcher.mem_gb=32", False
    )
    assert Launcher.of({**slurm, "mem_gb": None}).memory_budget(1) is None
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4}
    budget = Launcher.of(joblib).memory_budget(4)
    assert budget is not None and budget.local
    assert budget.limit == mem.machine_memory() // 4 and budget.source.endswith("/ 4 jobs at once")


def test_a_gpu_run_is_planned_against_the_smallest_visible_gpu(monkeypatch):
    from emergence_lab.model import TransformerConfig

    est = mem.estimate_memory(TransformerConfig(width=512, depth=4), 128, 11, "bf16-mixed")
    local = mem.MemoryBudget(10 * est.total, "RAM", local=True)
    monkeypatch.setattr(
        mem, "visible_gpus", lambda: [("Big GPU", 2 * est.total), ("Small GPU", est.total - 1)]
    )
    with pytest.raises(
        cs.ConfigError, match=r"^model.width=512 trainer=gpu: needs ~.* of GPU memory .* of a Small GPU$"
    ):
        mem.check_plan_memory(["model.width=512", "trainer=gpu"], est, "gpu", local)
    mem.check_plan_memory(["model.width=512"], est, "cpu", local)  # a CPU run needs no GPU
    mem.check_plan_memory(["model.width=512"], est, "gpu", mem.MemoryBudget(est.total, "mem_gb", local=False))
    # a GPU run keeps only weights and optimizer state (a checkpoint) in host memory
    host = mem.MemoryBudget(est.host_state, "RAM", local=False)
    mem.check_plan_memory(["model.width=512"], est, "gpu", host)
    with pytest.raises(cs.ConfigError, match=r"a job has \(RAM\)$"):
        mem.check_plan_memory(["model.width=512"], est, "cpu", host)


def test_a_run_that_cannot_fit_is_refused_at_planning_with_the_estimate():
    line = validate_overrides(["model.width=100000"])
    assert line is not None and line.startswith("model.width=100000: needs ~3.6 TiB of memory (weights ")
    assert "AdamW" in line and "activations" in line and "a job has (this machine's" in line
    slurm = validate_overrides(["-m", "experiment=smoke", "hydra/launcher=slurm", "model.width=20000"])
    assert slurm is not None and slurm.endswith("a job has (hydra.launcher.mem_gb=32)")
    assert slurm.startswith("model.width=20000 model.depth=1 seed=0: needs ~")


def test_dry_run_shows_memory_per_run(capsys):
    from emergence_lab.cli import main

    assert main(["sweep", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "memory" in out and "MiB" in out


def test_a_starting_run_checks_the_real_device(monkeypatch):
    from emergence_lab.model import TransformerConfig

    est = mem.estimate_memory(TransformerConfig(width=64, depth=2), 128, 11, "32-true")
    monkeypatch.setattr(mem, "available_memory", lambda: est.total - 1)
    with pytest.raises(MemoryError, match=r"^run-x: needs ~.* of memory \(weights .*of RAM is available$"):
        mem.check_device_memory("run-x", est, "cpu", 1)
    monkeypatch.setattr(mem, "available_memory", lambda: est.total)
    mem.check_device_memory("run-x", est, "cpu", 1)


def test_human_bytes():
    assert [mem.human_bytes(n) for n in (512, 2048, 3 * 2**30, 5 * 2**40)] == [
        "512 B",
        "2.0 KiB",
        "3.0 GiB",
        "5.0 TiB",
    ]
    assert math.isclose(mem.precision_dtypes("16-mixed")[1][1], 2)


# ---- through the real CLI: exit 2, the one line on stderr, no folder ---------------------------------------
EMPTY = "expands to no value, so the sweep has no run"
# (command words, overrides, the line after "emergence <who>: "); `emergence sweep` without --dry-run runs
# the training app, which reports as `emergence train`
CLI_CASES = [
    *[(["train"], [override], "train", line) for override, line in REFUSED],
    (["train"], ["-m", "model.width=range(8,8)"], "train", f"model.width=range(8,8): {EMPTY}"),
    (["sweep", "smoke"], ["hydra.sweeper.params.seed='range(0,0)'"], "train", f"seed=range(0,0): {EMPTY}"),
    (["sweep", "smoke"], ["sweep=../../x"], "train", dict(REFUSED)["sweep=../../x"]),
    (["sweep", "smoke"], ["optim.lr=-0.01", "--dry-run"], "sweep", "optim.lr=-0.01: must be > 0 and finite"),
]


@pytest.mark.slow  # a subprocess per case; the same values are checked in-process above
@pytest.mark.parametrize(
    ("words", "overrides", "who", "line"), CLI_CASES, ids=[" ".join(c[0] + c[1]) for c in CLI_CASES]
)
def test_cli_refuses_with_exit_2_one_line_and_no_folder(
    tmp_path: Path, words: list[str], overrides: list[str], who: str, line: str
):
    root = tmp_path / "out"
    # were a value let through, the run would be one step long and land in tmp_path
    proc = run_cli(*words, "logger=none", "budget.steps=1", f"paths.root={root}", *overrides, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == f"emergence {who}: {line}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_refuses_a_run_that_cannot_fit(tmp_path: Path):
    root = tmp_path / "out"
    proc = run_cli("train", "model.width=100000", "logger=none", f"paths.root={root}", check=False)
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("emergence train: model.width=100000: needs ~")
        and proc.stderr.count("\n") == 1
    )
    assert not root.exists()


def test_the_schemas_keep_values_as_typed_so_run_ids_do_not_move():
    """A float-typed key would turn `optim.weight_decay=0` into 0.0 and change that command's run id."""
    cfg = compose_with(
        "optim.weight_decay=0", "budget=tokens", "budget.tokens=2000000", "trainer.precision=32"
    )
    assert type(cfg.optim.weight_decay) is int and type(cfg.budget.tokens) is int
    assert cfg.trainer.precision == 32
    assert type(compose_with().optim.lr) is float


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "model.foo=1",
            "model.foo: not a key of model; its keys are width, depth, head_dim, mlp_ratio, "
            "positions, dropout, bias, init, init_scale",
        ),
        (
            "+model.foo=1",
            "model.foo: not a key of model; its keys are width, depth, head_dim, mlp_ratio, "
            "positions, dropout, bias, init, init_scale",
        ),
        (
            "+seedz=3",
            "seedz: not a key of the config; its keys are seed, seeds, sweep, run_id_ignore, estimate, "
            "paths, model, task, optim, budget, trainer, logger, analysis",
        ),
        (
            "estimate.x=1",
            "estimate.x: not a key of estimate; its keys are startup_s, step_overhead_s, flops_per_s",
        ),
    ],
)
def test_an_unknown_key_is_refused_with_the_keys_there_are(override: str, line: str):
    assert validate_overrides([override]) == line


def test_a_group_option_without_a_schema_is_refused():
    cfg = compose_with()
    cfg.model = OmegaConf.create({"_target_": "emergence_lab.model.TransformerConfig", "width": 8})
    with pytest.raises(cs.ConfigError, match=r"^model: this option has no schema; name one in its defaults"):
        cs.check_config(cfg)
