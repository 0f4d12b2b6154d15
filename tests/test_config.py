"""Hydra compose of every option of every config group, and the run-id rule."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emergence_lab.launch.configs import CONF_DIR
from emergence_lab.model import TransformerConfig
from emergence_lab.run.budget import Budget
from emergence_lab.run.optim import OptimConfig
from emergence_lab.run.run_id import identity, register_resolvers, run_id
from emergence_lab.tasks import Task

register_resolvers()
GROUPS = ["model", "task", "optim", "budget", "trainer", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def compose_with(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group} is empty"
    assert {"addition", "modular", "recall", "parity", "composition"} <= set(options("task"))
    assert {"wandb", "csv", "none"} <= set(options("logger"))
    assert {"cpu", "gpu"} <= set(options("trainer"))
    assert {"steps", "tokens", "tokens_per_param"} <= set(options("budget"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_compose_and_build_every_option(group, option):
    cfg = compose_with(f"{group}={option}")
    task = instantiate(cfg.task)
    assert isinstance(task, Task)
    model = instantiate(cfg.model, vocab_size=task.vocab_size, max_seq_len=task.max_seq_len)
    assert isinstance(model, TransformerConfig)
    assert model.n_params > 0
    OptimConfig(**OmegaConf.to_container(cfg.optim, resolve=True))
    assert (
        Budget(**OmegaConf.to_container(cfg.budget, resolve=True)).max_train_steps(model.n_params, 100) >= 1
    )
    assert cfg.trainer.eval_every > 0 and cfg.trainer.ckpt_every > 0


def test_defaults_are_what_the_readme_says():
    cfg = compose_with()
    assert cfg.task._target_.endswith("Addition")
    assert (cfg.model.width, cfg.model.depth) == (32, 2)
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.logger._target_.endswith("WandbLogger")
    assert cfg.optim.lr_rule == "capped_inverse_width"


def test_gpu_trainer_inherits_and_overrides():
    cfg = compose_with("trainer=gpu")
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.eval_every == compose_with().trainer.eval_every


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "submitit_slurm"])
def test_launchers_compose(launcher):
    cfg = compose_with(f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.startswith("hydra")


def test_run_id_ignores_paths_logger_and_sweep_but_not_size():
    base = run_id(compose_with())
    assert base == run_id(compose_with())
    assert base.startswith("addition-w32-d2-s0-")
    assert base == run_id(compose_with("paths.root=/elsewhere", "logger=csv", "sweep=other"))
    assert base == run_id(compose_with("trainer.threads=7", "trainer.progress_bar=false"))
    assert base != run_id(compose_with("model.width=64"))
    assert base != run_id(compose_with("seed=1"))
    assert base != run_id(compose_with("task.digits=5"))


def test_a_key_added_at_its_neutral_value_keeps_the_old_run_id():
    text = compose_with("task=text")
    assert run_id(text) == run_id(compose_with("task=text", "task.copy_share=0.0"))
    assert run_id(text) != run_id(compose_with("task=text", "task.copy_share=0.25"))
    assert "copy_share" not in identity(text)["task"] and "seq_len" in identity(text)["task"]


def test_run_and_sweep_folders_use_the_run_id():
    cfg = compose_with(hydra=True)
    rid = run_id(cfg)
    assert cfg.hydra.run.dir == f"outputs/runs/{rid}"
    assert cfg.hydra.sweep.subdir == rid
    assert cfg.hydra.sweep.dir == "outputs/sweeps/adhoc"


def test_trainer_max_steps_replaces_the_budget_rule():
    from emergence_lab.run.spec import build_spec

    assert build_spec(compose_with()).max_steps == 2000
    assert build_spec(compose_with("trainer.max_steps=77")).max_steps == 77
    spec = build_spec(compose_with("budget=tokens", "budget.tokens=1e6"))
    assert spec.max_steps == -(-1_000_000 // spec.tokens_per_step)
    with pytest.raises(ValueError, match="max_steps"):
        build_spec(compose_with("trainer.max_steps=0"))
