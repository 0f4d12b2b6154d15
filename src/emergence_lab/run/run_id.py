"""Stable run ids: a readable prefix plus a hash of the resolved config.

The id ignores everything that does not change what is trained: Hydra's own settings, paths, the logger, the
sweep's name, the study's `analysis` block (what to plot), the dry-run `estimate` rule, packing (`seeds`,
`trainer.pack`), the keys listed in `run_id_ignore` (thread counts, the progress bar) and keys added later
at the value that reproduces the runs made before them (`NEUTRAL_ADDITIONS`). The same config
therefore lands in the same folder every time, which is what lets a rerun of a sweep skip finished runs and
resume interrupted ones. The id doubles as the run's folder name inside a sweep.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from emergence_lab.run.config_schema import register_schemas

# `seeds` and `trainer.pack` say which seeds one process trains together: a packed seed is the same run as
# the unpacked one (the same weights, batches and schedule; numbers agree to rounding), so the same folder.
ALWAYS_IGNORED = (
    "hydra",
    "paths",
    "logger",
    "sweep",
    "estimate",
    "analysis",
    "run_id_ignore",
    "seeds",
    "trainer.pack",
)
# Keys added after runs existed, at the value that trains what those runs trained: left out of the id at
# that value, so no existing run folder is orphaned; any other value is part of the id.
NEUTRAL_ADDITIONS = {("task", "copy_share"): 0.0}


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved part of the config that defines the run."""
    ignore = set(ALWAYS_IGNORED) | set(cfg.get("run_id_ignore") or [])
    out: dict[str, Any] = {}
    for key in cfg:
        if key in ignore:
            continue
        value = cfg[key]
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
            _drop_dotted(value, key, ignore)
        out[str(key)] = value
    for (group, key), neutral in NEUTRAL_ADDITIONS.items():
        node = out.get(group)
        if isinstance(node, dict) and key in node and node[key] == neutral:
            del node[key]
    trainer = out.get("trainer")
    if isinstance(trainer, dict) and "compile" in trainer:
        trainer["compile"] = compile_in_id(trainer["compile"], trainer.get("accelerator"))
    return out


def compile_in_id(setting: Any, accelerator: Any) -> Any:
    """`trainer.compile` as the boolean it was before `auto` existed, so no run id moved: on -> true,
    off -> false, and auto -> what the trainer configs said before (true on a GPU, false elsewhere).
    Compiling changes a run's numbers only by float rounding; run.json records what was done."""
    if setting in ("on", "off"):
        return setting == "on"
    if setting == "auto":
        return accelerator in ("gpu", "cuda")
    return setting


def _drop_dotted(node: dict[str, Any], prefix: str, ignore: set[str]) -> None:
    for dotted in ignore:
        head, _, tail = dotted.partition(".")
        if head == prefix and tail and tail in node:
            del node[tail]


def run_id(cfg: DictConfig) -> str:
    """`<task>-w<width>-d<depth>-s<seed>-<hash8>`, e.g. `addition-w32-d2-s0-1a2b3c4d`."""
    ident = identity(cfg)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
    task = str(cfg.task.get("_target_", "task")).rsplit(".", 1)[-1].lower()
    return f"{task}-w{cfg.model.width}-d{cfg.model.depth}-s{cfg.seed}-{digest}"


def _resolver(*, _root_: DictConfig) -> str:
    """The folder of a job: its run's, or for a job of several `seeds` its first seed's run (the others'
    folders are its siblings, see run/pack_train.py)."""
    seeds = _root_.get("seeds")
    if seeds:
        first = copy.deepcopy(_root_)
        with open_dict(first):
            first.seed = int(seeds[0])
        return run_id(first)
    return run_id(_root_)


def _gpu_count() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def register_resolvers() -> None:
    """Make `${run_id:}` (Hydra's run and sweep folder names use it) and `${gpu_count:}` (the visible GPUs,
    at least 1; `hydra/launcher=joblib_gpu` runs that many jobs at once) available to configs."""
    register_schemas()  # conf/ files name these schemas in their defaults lists
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _resolver, use_cache=False)
    if not OmegaConf.has_resolver("gpu_count"):
        OmegaConf.register_new_resolver("gpu_count", _gpu_count)
