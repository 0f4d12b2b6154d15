"""Experiment loggers: wandb (offline unless the user is logged in and asks for online), CSV, or none."""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """WANDB_MODE decides; online without credentials would block on the network, so it falls back."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "online" and not wandb_logged_in():
        log.warning("WANDB_MODE=online but no wandb credentials were found; logging offline instead")
        return "offline"
    return mode


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def build_loggers(
    cfg: DictConfig,
    run_dir: Path,
    run_id: str,
    task: str,
    static: dict[str, Any],
    resolved: Any,
    concurrent: bool = False,
) -> list[Any]:
    """Instantiate `cfg.logger` (one Lightning logger or none) and give it a flat config that dashboards
    can group by: width, depth, n_params, seed, task, sweep, plus every config value under its dotted key.

    `concurrent`: this process logs several runs at once (packed seeds), so a wandb logger gets a wandb run
    of its own (`reinit="create_new"`); Lightning's WandbLogger would otherwise reuse the process's one
    `wandb.run` for every seed. Close such loggers with `finish_loggers`."""
    spec = cfg.get("logger")
    if not spec or "_target_" not in spec:
        return []
    target = str(spec._target_)
    kwargs: dict[str, Any] = {}
    if target.endswith("WandbLogger"):
        mode = wandb_mode()
        if mode == "disabled":
            return []
        sweep = str(cfg.sweep)
        kwargs = {
            "mode": mode,
            "name": run_id,
            "id": hashlib.sha256(f"{sweep}/{run_id}".encode()).hexdigest()[:16],
            "group": sweep,
            "tags": [task],
            "save_dir": str(run_dir),
        }
        if concurrent:
            kwargs["experiment"] = _own_wandb_run(spec, kwargs)
    else:
        kwargs = {"save_dir": str(run_dir)}
    logger = instantiate(spec, **kwargs)
    hparams = {**flatten({k: v for k, v in resolved.items() if k != "hydra"}), **static}
    try:
        logger.log_hyperparams(hparams)
    except BaseException:
        if concurrent:
            finish_loggers([logger], "failed")
        raise
    return [logger]


def _own_wandb_run(spec: DictConfig, kwargs: dict[str, Any]) -> Any:
    import wandb

    return wandb.init(
        reinit="create_new",
        project=spec.get("project"),
        entity=spec.get("entity"),
        job_type=spec.get("job_type"),
        mode=kwargs["mode"],
        name=kwargs["name"],
        id=kwargs["id"],
        group=kwargs["group"],
        tags=kwargs["tags"],
        dir=kwargs["save_dir"],
        resume="allow",  # as Lightning's WandbLogger: a resumed run continues its wandb run
    )


def finish_loggers(loggers: list[Any], status: str) -> None:
    """Flush and close loggers built with `concurrent=True`: each wandb run of its own, each CSV file."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish(exit_code=0 if status == "success" else 1)
        else:
            logger.finalize(status)


def finish_wandb() -> None:
    """Close this process's wandb run, if one was started, also after a failure, so offline files are
    complete. It does not look at the loggers: `log_hyperparams` starts the run (`wandb.init`) inside
    `build_loggers`, and when anything after that raises, the caller never received the logger."""
    wandb = sys.modules.get("wandb")  # not imported: no run was started, and importing it costs seconds
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
