"""Loggers and the progress bar, without training: wandb's mode, its flat config, closing its run after a
failure, and the callbacks `emergence train` hands the Trainer."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from omegaconf import OmegaConf

from emergence_lab.run import loggers as run_loggers

WANDB_SPEC = {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "p", "job_type": "train"}


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No WANDB_API_KEY and an empty home, so no ~/.netrc either."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


# ---- the mode ------------------------------------------------------------------------------------------
def test_unset_mode_is_offline(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert run_loggers.wandb_mode() == "offline"


def test_online_without_credentials_falls_back_to_offline(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    assert not run_loggers.wandb_logged_in()
    with caplog.at_level(logging.WARNING, logger="emergence_lab.run.loggers"):
        assert run_loggers.wandb_mode() == "offline"
    assert "no wandb credentials" in caplog.text


def test_online_with_credentials_stays_online(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert run_loggers.wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = no_credentials / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    netrc.chmod(0o600)
    assert run_loggers.wandb_logged_in()
    assert run_loggers.wandb_mode() == "online"


def test_disabled_is_disabled_and_builds_no_logger(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert run_loggers.wandb_mode() == "disabled"
    cfg = OmegaConf.create({"logger": WANDB_SPEC, "sweep": "s"})
    assert run_loggers.build_loggers(cfg, no_credentials, "r", "addition", {}, {}) == []


# ---- the flat config -----------------------------------------------------------------------------------
class FakeWandb:
    """Stands in for the `wandb` module: a run exists between init() and finish()."""

    def __init__(self) -> None:
        self.run: object | None = None
        self.finished = 0

    def init(self) -> None:
        self.run = object()

    def finish(self) -> None:
        self.run = None
        self.finished += 1


def _build(
    monkeypatch: pytest.MonkeyPatch, run_dir: Path, log_hyperparams: Any
) -> tuple[list[Any], dict[str, Any]]:
    made: dict[str, Any] = {}

    def fake_instantiate(spec: Any, **kwargs: Any) -> Any:
        made.update(kwargs)
        return SimpleNamespace(log_hyperparams=log_hyperparams)

    monkeypatch.setattr(run_loggers, "instantiate", fake_instantiate)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = OmegaConf.create({"logger": WANDB_SPEC, "sweep": "demo"})
    resolved = {"model": {"width": 24, "depth": 2}, "seed": 1, "hydra": {"run": {"dir": "x"}}}
    static = {"width": 24, "depth": 2, "n_params": 2 * (12 * 24 * 24 + 2 * 24) + 24, "task": "addition"}
    return run_loggers.build_loggers(cfg, run_dir, "run-1", "addition", static, resolved), made


def test_flat_config_has_size_keys_and_dotted_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict[str, Any] = {}
    loggers, kwargs = _build(monkeypatch, tmp_path, received.update)
    assert len(loggers) == 1
    assert kwargs["mode"] == "offline" and kwargs["group"] == "demo" and kwargs["tags"] == ["addition"]
    assert received["n_params"] == 13_944
    assert (received["width"], received["depth"], received["task"]) == (24, 2, "addition")
    assert (received["model.width"], received["model.depth"], received["seed"]) == (24, 2, 1)
    assert not any(key.startswith("hydra") for key in received)


def test_run_is_finished_when_log_hyperparams_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)

    def start_then_fail(params: dict[str, Any]) -> None:
        fake.init()  # WandbLogger.log_hyperparams starts the run (wandb.init) before it can fail
        raise RuntimeError("wandb said no")

    loggers: list[Any] = []
    with pytest.raises(RuntimeError, match="wandb said no"):
        loggers = _build(monkeypatch, tmp_path, start_then_fail)[0]
    assert loggers == [] and fake.run is not None  # what train.py holds when its `finally` runs
    run_loggers.finish_wandb()
    assert fake.run is None and fake.finished == 1
    run_loggers.finish_wandb()  # nothing left to close
    assert fake.finished == 1


def test_finish_without_wandb_imported_does_not_import_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    run_loggers.finish_wandb()
    assert "wandb" not in sys.modules


# ---- the progress bar ----------------------------------------------------------------------------------
@pytest.mark.parametrize("progress_bar", [True, False])
@pytest.mark.parametrize("has_logger", [True, False])
def test_rich_progress_bar_only_when_asked(progress_bar: bool, has_logger: bool, tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

    from emergence_lab.run.train import _callbacks

    recorder = pl.Callback()  # stands in for the RunRecorder
    callbacks = _callbacks(recorder, progress_bar, has_logger)  # type: ignore[arg-type]
    assert callbacks[0] is recorder
    assert any(isinstance(c, RichProgressBar) for c in callbacks) == progress_bar
    assert any(isinstance(c, LearningRateMonitor) for c in callbacks) == has_logger
    # the Trainer arguments train.py passes with them: the rich bar is the Trainer's bar, or there is none
    trainer = pl.Trainer(
        accelerator="cpu",
        callbacks=callbacks,
        enable_progress_bar=progress_bar,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    if progress_bar:
        assert isinstance(trainer.progress_bar_callback, RichProgressBar)
    else:
        assert trainer.progress_bar_callback is None
