"""Packed seeds in a sweep: with `trainer.pack` other than 1, the seed axis of the grid becomes jobs of
several seeds each (`seeds=[0,1,2]`), which `run.pack_train.train_seeds` trains together.

`pack_argv` rewrites a command line before anything is planned or launched: the seed sweep (the study's
`hydra.sweeper.params.seed` or the command line's `seed=...`) is replaced by a sweep over `seeds` lists of
`trainer.pack` seeds. With `pack=auto` the lists are as long as the largest pack any config of the grid gets
(run/pack_rule.py); a job whose config gets a smaller pack trains its seeds in several packs, one after
another. Run ids, folders and the manifest are per seed, exactly as without packing.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from emergence_lab.launch.configs import CONF_DIR, register_user_studies


def _seed_values(master: DictConfig, overrides: list[str]) -> list[str]:
    """The values of the seed axis (the command line's win over the study's)."""
    params = master.hydra.sweeper.get("params") or {}
    in_params = "seed" in params
    lines = ([f"seed={params['seed']}"] if in_params else []) + [
        o for o in overrides if o.split("=", 1)[0] == "seed"
    ]
    values: list[str] = []
    for o in OverridesParser.create().parse_overrides(lines):
        if o.is_discrete_sweep():
            values = list(o.sweep_string_iterator())
        elif not o.is_sweep_override():
            values = [o.get_value_element_as_str()]
        else:
            raise ValueError(f"{o.input_line}: a sweep must list its values")
    return values


def pack_argv(argv: list[str]) -> list[str]:
    """`argv` with its seed sweep grouped into `seeds` jobs when `trainer.pack` is not 1; else unchanged."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return argv
    from hydra import compose, initialize_config_dir

    from emergence_lab.run.run_id import register_resolvers

    register_resolvers()
    register_user_studies()
    overrides = [a for a in argv if not a.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        master = compose("config", overrides=fixed, return_hydra_config=True)
        setting: Any = master.trainer.get("pack", 1)
        if setting == 1 or master.get("seeds") is not None:
            return argv
        seeds = _seed_values(master, overrides)
        if len(seeds) < 2:
            return argv
        size = len(seeds) if setting == "auto" else int(setting)
        if setting == "auto":
            size = _auto_size(master, [o for o in overrides if o.split("=", 1)[0] != "seed"], len(seeds))
    if size <= 1:
        return argv
    chunks = [seeds[i : i + size] for i in range(0, len(seeds), size)]
    kept = [a for a in argv if a.split("=", 1)[0] != "seed"]
    # `seed=` replaces the study's seed sweep; a job trains its `seeds` (its folder is its first seed's)
    return [*kept, f"seed={seeds[0]}", "seeds=" + ",".join("[" + ",".join(c) + "]" for c in chunks)]


def _auto_size(master: DictConfig, overrides: list[str], n_seeds: int) -> int:
    """The largest pack `auto` gives any config of the grid (its seed axis aside)."""
    from hydra.core.global_hydra import GlobalHydra

    from emergence_lab.launch.plan import expand
    from emergence_lab.run.pack_rule import pack_size
    from emergence_lab.run.spec import build_spec

    loader = GlobalHydra.instance().config_loader()
    params = master.hydra.sweeper.get("params") or {}
    without_seed = [f"{k}={v}" for k, v in params.items() if k != "seed"]
    best = 1
    seen: set[tuple[int, str]] = set()
    for job in expand_without(master, without_seed + overrides, expand):
        cfg = loader.load_sweep_config(master, job)
        spec = build_spec(cfg)
        device = "cpu" if str(cfg.trainer.accelerator) == "cpu" else "cuda"
        key = (spec.model.n_params, device)
        if key not in seen:
            seen.add(key)
            best = max(best, pack_size("auto", spec.model.n_params, device, n_seeds))
    return best


def expand_without(master: DictConfig, lines: list[str], expand: Any) -> list[list[str]]:
    """The jobs of `lines` alone (the study's params given as lines, so its seed axis can be left out)."""
    from copy import deepcopy

    from omegaconf import open_dict

    bare = deepcopy(master)
    with open_dict(bare):
        bare.hydra.sweeper.params = {}
    return expand(bare, lines)
