"""`trainer.compile` (auto / on / off): refused in one line when it is anything else, decided at fit start,
recorded in run.json, falling back to eager where compiling fails, and never a second copy of the weights in
state_dict. Run ids hash it as the bool it was before `auto` (test_golden.py checks the shipped studies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY
from hydra import compose, initialize_config_dir
from torch import nn

from emergence_lab.launch.configs import CONF_DIR
from emergence_lab.launch.plan import plan_from_cli, validate_overrides
from emergence_lab.model import Transformer, TransformerConfig
from emergence_lab.run.module import EmergenceModule
from emergence_lab.run.optim import OptimConfig
from emergence_lab.run.run_id import compile_in_id, register_resolvers
from emergence_lab.run.train import train
from emergence_lab.tasks import Addition

register_resolvers()  # the conf/ files name the schemas, which live in Hydra's ConfigStore

STEPS = 20  # TINY evaluates and checkpoints every 10 steps


def tiny_cfg(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, f"trainer.max_steps={STEPS}", *overrides])


def completed(run_dir: Path, *overrides: str) -> bool:
    return train(tiny_cfg(*overrides), run_dir, threads=1, devices=1).status == "completed"


def read_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def measurements(run_dir: Path) -> list[tuple]:
    """(split, metric, subtask, step, value) of every results row: the numbers, without the run id."""
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return sorted((r["split"], r["metric"], r["subtask"], r["step"], r["value"]) for r in rows)


# ---- the setting ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["sometimes", "1", "maybe", "'[on]'"])
def test_a_bad_compile_setting_is_one_line_before_anything_runs(value: str) -> None:
    line = validate_overrides([f"trainer.compile={value}"])
    assert line is not None and "\n" not in line
    assert line.startswith("trainer.compile=")
    assert line.endswith(": must be auto, on (or true) or off (or false)")


@pytest.mark.parametrize("value", ["auto", "on", "off", "true", "false"])
def test_every_compile_setting_is_accepted(value: str) -> None:
    assert validate_overrides([f"trainer.compile={value}"]) is None


def test_the_trainer_configs_default_to_auto() -> None:
    for trainer in ("cpu", "gpu", "ddp"):
        assert tiny_cfg(f"trainer={trainer}").trainer.compile == "auto"


def test_run_ids_hash_compile_as_the_bool_it_was_before_auto() -> None:
    assert [compile_in_id(v, "cpu") for v in ("on", "off", True, False, "auto")] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert compile_in_id("auto", "gpu") is True and compile_in_id("auto", "cuda") is True

    def rid(*overrides: str) -> str:
        return plan_from_cli([*TINY, *overrides])[1][0].run_id

    # auto is what each trainer config said before: off on the CPU, on on a GPU
    assert rid() == rid("trainer.compile=false") == rid("trainer.compile=off") == rid("trainer.compile=auto")
    assert rid("trainer.compile=on") == rid("trainer.compile=true") != rid()
    assert rid("trainer=gpu") == rid("trainer=gpu", "trainer.compile=true")
    assert rid("trainer=gpu", "trainer.compile=off") != rid("trainer=gpu")


# ---- one copy of the weights ----------------------------------------------------------------------------
class _Wrapper(nn.Module):
    """Stands in for torch.compile's OptimizedModule: a module around the model, as `_orig_mod`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._orig_mod(tokens)


def _module(compile: str) -> EmergenceModule:
    task = Addition(digits=2)
    model = Transformer(TransformerConfig(width=16, depth=1, vocab_size=12, max_seq_len=task.max_seq_len))
    return EmergenceModule(model, task, OptimConfig(batch_size=4), seed=0, max_steps=10, compile=compile)


def test_the_training_forward_stays_out_of_the_state_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _Wrapper)
    module = _module("on")
    expected = {f"model.{k}" for k in module.model.state_dict()}
    assert set(module.state_dict()) == expected
    module.on_fit_start()
    assert isinstance(module._train_forward, _Wrapper)  # compiled (the stand-in) ...
    assert module.compile_record == {
        "compile_decision": "compile: on (set)",
        "compile_mode": "compiled (inductor)",
    }
    assert set(module.state_dict()) == expected  # ... and still one copy of every weight
    assert sum(1 for _ in module.parameters()) == sum(1 for _ in module.model.parameters())


def test_a_checkpoint_with_the_old_second_copy_loads() -> None:
    module = _module("off")
    state = {k: v.clone() for k, v in module.state_dict().items()}
    old = {**state, **{k.replace("model.", "_train_forward.", 1): v for k, v in state.items()}}
    checkpoint = {"state_dict": old}
    module.on_load_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(state)
    module.load_state_dict(checkpoint["state_dict"])  # strict: no unexpected key left


# ---- end to end: the decision in run.json ---------------------------------------------------------------
def test_auto_on_cpu_trains_eager_and_says_why_in_run_json(tmp_path: Path) -> None:
    assert completed(tmp_path)
    info = read_info(tmp_path)
    assert info["compile_decision"].startswith("compile: auto -> off (expected saving ")
    assert f"over {STEPS} steps" in info["compile_decision"]
    assert info["compile_mode"] == "eager: not compiled (see compile_decision)"


def test_a_failing_compiler_falls_back_to_eager_with_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        train(tiny_cfg("trainer.compile=off"), tmp_path / "off", threads=1, devices=1).status == "completed"
    )

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    assert completed(tmp_path / "on", "trainer.compile=on")
    info = read_info(tmp_path / "on")
    assert info["compile_decision"] == "compile: on (set)"
    assert info["compile_mode"] == "eager: torch.compile unavailable (RuntimeError: no C++ compiler here)"
    assert read_info(tmp_path / "off")["compile_decision"] == "compile: off (set)"
    assert measurements(tmp_path / "on") == measurements(tmp_path / "off")


@pytest.mark.slow
def test_a_compiled_run_on_cpu_matches_eager(tmp_path: Path) -> None:
    """The one real compile (10-20 s of inductor on CPU): evaluations of the compiled run's weights match."""
    assert (
        train(tiny_cfg("trainer.compile=off"), tmp_path / "off", threads=1, devices=1).status == "completed"
    )
    assert completed(tmp_path / "on", "trainer.compile=on")
    info = read_info(tmp_path / "on")
    if info["compile_mode"] != "compiled (inductor)":
        pytest.skip(f"no working compiler on this machine: {info['compile_mode']}")
    on, off = measurements(tmp_path / "on"), measurements(tmp_path / "off")
    assert [r[:4] for r in on] == [r[:4] for r in off]
    losses = [(a[4], b[4]) for a, b in zip(on, off, strict=True) if a[1] == "loss"]
    assert losses and all(a == pytest.approx(b, rel=1e-3, abs=1e-4) for a, b in losses)


# ---- emergence bench train --compile ---------------------------------------------------------------------
def test_bench_compile_is_a_flag_and_takes_no_value(capsys: pytest.CaptureFixture[str]) -> None:
    from emergence_lab.bench import bench_cli

    assert bench_cli(["train", "--compile=yes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["emergence bench train: error: argument --compile: ignored explicit argument 'yes'"]


@pytest.mark.slow
def test_bench_compile_times_the_compiled_step_beside_eager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emergence_lab.bench import bench_cli

    monkeypatch.setattr(torch, "compile", _Wrapper)  # the columns and their arithmetic, not inductor
    out = tmp_path / "bench.json"
    args = [
        "--widths",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--batch",
        "4",
        "--digits",
        "2",
    ]
    assert bench_cli(["train", *args, "--compile", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["compile"] is True
    (row,) = report["sizes"]
    assert row["compile_mode"] == ["compiled (inductor)"]
    # rounded to 0.01 s: a fast stand-in compiler can take 0.00 s
    assert len(row["compile_s"]) == 2 and all(s >= 0 for s in row["compile_s"])
    rates = row["repeats_framework_compiled"]
    assert len(rates) == 2 and row["steps_per_s_framework_compiled"] == pytest.approx(
        sum(rates) / 2, rel=0.01
    )
    ratio = row["steps_per_s_framework_compiled"] / row["steps_per_s_framework"]
    assert row["compiled_over_eager"] == pytest.approx(ratio)
