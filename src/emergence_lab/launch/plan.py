"""Plan a sweep: expand a grid as Hydra's basic sweeper does, validate every run, and price it.

Nothing here launches anything: Hydra's launchers (basic, joblib, submitit) do. This module only
- expands `hydra.sweeper.params` plus command-line sweeps into the jobs Hydra launches, in its order,
- checks every planned run's config before any job starts (and that no two jobs share a run folder),
- prices each run (parameters, steps, tokens, FLOPs, estimated time) for `--dry-run`,
- hands the plan of a launch to the sweep callback (runs.py), so it is not composed twice.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from emergence_lab.launch.configs import CONF_DIR, register_user_studies
from emergence_lab.launch.launchers import Launcher
from emergence_lab.launch.resources import cpu_cores
from emergence_lab.run.config_schema import check_config, check_grid, explain
from emergence_lab.run.folder import atomic_write_text
from emergence_lab.run.memory import MemoryBudget, check_plan_memory, run_memory
from emergence_lab.run.run_id import register_resolvers, run_id

HYDRA_FLAGS_WITHOUT_RUN = {
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
}
# The plan of a launch, written by the launching command before Hydra starts, read by the sweep callback.
PLAN_FILE = ".plan.json"


@dataclass
class PlannedRun:
    run_id: str
    overrides: list[str]
    task: str
    width: int
    depth: int
    seed: int
    n_params: int
    n_params_total: int
    max_steps: int
    tokens: int
    flops: float
    est_seconds: float
    mem_bytes: int = 0  # estimated memory of the run on its device (run/memory.py)
    pack: int = 1  # seeds trained together with this one (trainer.pack), itself included


# ---- planning ---------------------------------------------------------------------------------------
def expand(master: DictConfig, task_overrides: list[str]) -> list[list[str]]:
    """The override list of every job, in the order Hydra's basic sweeper launches them: the study's
    `hydra.sweeper.params`, then the command line; a later value of a key replaces an earlier one in its
    place; the jobs are the product of every key's values, the last key varying fastest."""
    params = master.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(task_overrides)
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            kind = override.value_type.name if override.value_type else "?"
            raise ValueError(f"{override.input_line}: a sweep must list its values (not {kind})")
    return [list(job) for job in itertools.product(*choices.values())]


def describe(cfg: DictConfig, overrides: list[str], mem_budget: MemoryBudget | None = None) -> PlannedRun:
    """Size, budget and cost of one run, from its composed config; raises ValueError on a bad config, or on
    a run that needs more memory than `mem_budget` (what one job of its launch may use)."""
    from emergence_lab.run.spec import build_spec

    check_config(cfg)  # ranges, relations and names: one line naming the key
    try:
        spec = build_spec(cfg)
    except Exception as exc:  # instantiate wraps constructor errors; surface the root cause in one line
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        raise ValueError(f"{' '.join(overrides) or '(defaults)'}: {root}") from None
    task, model, seq = spec.task, spec.model, spec.seq_len
    tokens_per_step, steps = spec.tokens_per_step, spec.max_steps
    flops = float(steps * spec.flops_per_step)
    t, e = cfg.trainer, cfg.estimate
    n_evals = steps // int(t.eval_every) + 2
    answer_len = max(len(task.answer_names(s)) for s in task.splits)
    eval_passes = n_evals * len(task.splits) * (answer_len + 1)  # greedy decode + teacher forcing
    eval_flops = eval_passes * task.test_size * seq * 2 * model.n_params_total
    est = (
        steps * float(e.step_overhead_s)
        + eval_passes * float(e.step_overhead_s)
        + (flops + eval_flops) / float(e.flops_per_s)
        + float(e.startup_s)
    )
    mem = run_memory(spec, t)
    check_plan_memory(overrides, mem, str(t.accelerator), mem_budget)
    return PlannedRun(
        run_id=run_id(cfg),
        overrides=overrides,
        task=task.name,
        width=model.width,
        depth=model.depth,
        seed=int(cfg.seed),
        n_params=model.n_params,
        n_params_total=model.n_params_total,
        max_steps=steps,
        tokens=steps * tokens_per_step,
        flops=flops,
        est_seconds=round(est, 1),
        mem_bytes=mem.total,
    )


def describe_job(
    cfg: DictConfig, overrides: list[str], mem_budget: MemoryBudget | None = None
) -> list[PlannedRun]:
    """The runs of one job: one, or one per seed of its `seeds`, each priced as part of its pack. A pack of
    N pays the start-up once and trains at the measured per-model gain (run/pack_rule.py); it holds N
    models in memory, so each of its runs shows, and is checked against the budget with, the pack's memory."""
    from emergence_lab.run.pack_rule import pack_gain, pack_size
    from emergence_lab.run.pack_train import job_seeds, seed_config
    from emergence_lab.run.spec import build_spec

    if cfg.get("seeds") is None:
        return [describe(cfg, overrides, mem_budget)]
    seeds = job_seeds(cfg)
    runs = [describe(seed_config(cfg, s), overrides) for s in seeds]
    device = "cpu" if str(cfg.trainer.accelerator) == "cpu" else "cuda"
    size = pack_size(cfg.trainer.get("pack", 1), runs[0].n_params, device, len(seeds))
    startup = float(cfg.estimate.startup_s)
    one = run_memory(build_spec(seed_config(cfg, seeds[0])), cfg.trainer)  # the seeds share one shape
    for start in range(0, len(runs), size):
        group = runs[start : start + size]
        mem = one.packed(len(group))
        check_plan_memory(overrides, mem, str(cfg.trainer.accelerator), mem_budget)
        gain = pack_gain(len(group), group[0].n_params, device)
        for r in group:
            r.pack = len(group)
            r.mem_bytes = mem.total
            r.est_seconds = round((r.est_seconds - startup) / gain + startup / len(group), 1)
    return runs


def job_overrides(runs: list[PlannedRun]) -> list[list[str]]:
    """The override list of every job of a plan, in order (the seeds of a packed job share one)."""
    jobs: list[list[str]] = []
    for r in runs:
        if not jobs or jobs[-1] != r.overrides:
            jobs.append(r.overrides)
    return jobs


def plan(config_loader: Any, master: DictConfig, task_overrides: list[str]) -> list[PlannedRun]:
    runs = []
    jobs = expand(master, task_overrides)
    check_grid(master.hydra.sweeper.get("params"), task_overrides, jobs)
    launcher = Launcher.of(master.hydra.launcher)
    budget = launcher.memory_budget(launcher.jobs_at_once(len(jobs), cpu_cores()))
    for job in jobs:
        cfg = config_loader.load_sweep_config(master, job)
        runs += describe_job(cfg, job, budget)
    _check_distinct(runs)
    return runs


def _check_distinct(runs: list[PlannedRun]) -> None:
    """Two jobs with the same resolved config would share one run folder: refuse the sweep."""
    seen: dict[str, PlannedRun] = {}
    for r in runs:
        if r.run_id in seen:
            a, b = " ".join(seen[r.run_id].overrides), " ".join(r.overrides)
            raise ValueError(f"jobs [{a}] and [{b}] are the same run {r.run_id}: remove the duplicate value")
        seen[r.run_id] = r


def plan_from_cli(argv: list[str]) -> tuple[DictConfig, list[PlannedRun]]:
    """Compose the config of a command line (without running anything) and plan its jobs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    register_user_studies()
    overrides = [a for a in argv if not a.startswith("-")]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    if not multirun and len(fixed) != len(overrides):
        raise ValueError("sweep values (a,b or range()) need -m / --multirun")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        master = compose("config", overrides=fixed, return_hydra_config=True)
        _check_analysis_block(master)
        if not multirun:
            budget = Launcher.of(master.hydra.launcher).memory_budget(1)
            return master, describe_job(master, overrides, budget)
        return master, plan(GlobalHydra.instance().config_loader(), master, overrides)


def _check_analysis_block(cfg: DictConfig) -> None:
    """A study's `analysis:` block is read only after the sweep; a typo in it fails here, before any job."""
    from emergence_lab.analysis.study import OPTION_OF, check_block

    block = cfg.get("analysis")
    if block is None:
        return
    block = OmegaConf.to_container(block, resolve=True)
    if not isinstance(block, dict):
        raise ValueError("analysis: must be a mapping of " + ", ".join(OPTION_OF))
    unknown = sorted(str(k) for k in block if k not in OPTION_OF)
    if unknown:
        raise ValueError(f"analysis.{unknown[0]}: unknown key, choose from {', '.join(OPTION_OF)}")
    problem = check_block({k: v for k, v in block.items() if v is not None}, f"sweep {cfg.sweep}", hint=False)
    if problem:
        raise ValueError(problem)


def validate_overrides(argv: list[str]) -> str | None:
    """One line describing the first problem with a command line, or None. Nothing is trained."""
    if any(a.split("=")[0] in HYDRA_FLAGS_WITHOUT_RUN for a in argv):
        return None
    try:
        plan_from_cli(argv)
    except Exception as exc:
        return one_line(exc)
    return None


def one_line(exc: BaseException) -> str:
    """`<key>=<value>: must be ...` for a mistyped value (Hydra's error, rewritten), else the first line."""
    return explain(exc)


def save_plan(sweep_dir: Path, task_overrides: list[str], runs: list[PlannedRun]) -> None:
    doc = {"task_overrides": list(task_overrides), "runs": [asdict(r) for r in runs]}
    atomic_write_text(Path(sweep_dir) / PLAN_FILE, json.dumps(doc) + "\n")


def load_plan(sweep_dir: Path, task_overrides: list[str]) -> list[PlannedRun] | None:
    """The plan `save_plan` left for these overrides (consumed: the file is removed), or None."""
    path = Path(sweep_dir) / PLAN_FILE
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    path.unlink(missing_ok=True)
    if doc.get("task_overrides") != list(task_overrides):
        return None
    return [PlannedRun(**r) for r in doc["runs"]]


def launch_overrides(argv: list[str]) -> list[str]:
    """The overrides of a command line that Hydra reports as `hydra.overrides.task` (not `hydra.*`)."""
    overrides = [a for a in argv if not a.startswith("-")]
    return [
        o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_hydra_override()
    ]
