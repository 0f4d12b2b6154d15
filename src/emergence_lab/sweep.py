"""Sweeps: plan a grid with Hydra's own sweep expansion, validate it, price it, and keep its manifest.

Nothing here schedules jobs: Hydra's launchers (basic, joblib, submitit) do. This module only
- expands `hydra.sweeper.params` plus command-line sweeps exactly as Hydra's BasicSweeper does,
- checks every planned run's config before any job starts (and that no two jobs share a run folder),
- writes `<sweep_dir>/manifest.json` and reports the sweep's outcome (a Hydra callback),
- works out how many CPU threads each job may use, given how many jobs its launcher runs at once,
- prints the `--dry-run` cost table.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from emergence_lab.config_schema import (  # [config_schema]
    MemoryBudget,
    check_grid,
    human_bytes,
    plan_memory_budget,
)
from emergence_lab.results import atomic_write_text, read_run_info
from emergence_lab.run_id import register_resolvers, run_id

MANIFEST = "manifest.json"
# Set by the sweep callback before any job starts, inherited by joblib and submitit worker processes: the
# number of jobs in this launch, so a job knows how many run beside it (see jobs_at_once).
LAUNCH_SIZE_ENV = "EMERGENCE_LAUNCH_SIZE"
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
# Outcome of the last multirun in this process, over the runs it launched (read by the CLI for its exit code).
SWEEP_SUMMARY: dict[str, int] = {}
# The stop signal the launching process received during a joblib launch (and passed on to the workers).
STOP_SIGNAL: list[int] = []


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
    mem_bytes: int = 0  # [config_schema] estimated memory of the run on its device (config_schema.py)


# The plan of the command line validated last, keyed by its overrides: the sweep callback reuses it instead
# of composing every job's config once more.
_PLAN_CACHE: dict[tuple[str, ...], list[PlannedRun]] = {}


# ---- planning ---------------------------------------------------------------------------------------
def expand(master: DictConfig, task_overrides: list[str]) -> list[list[str]]:
    """The override list of every job, as Hydra's BasicSweeper would expand it."""
    params = master.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(task_overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in batches[0]] if batches else [[]]


def describe(cfg: DictConfig, overrides: list[str], mem_budget: MemoryBudget | None = None) -> PlannedRun:
    """Size, budget and cost of one run, from its composed config; raises ValueError on a bad config, or on
    a run that needs more memory than `mem_budget` (what one job of its launch may use)."""
    from emergence_lab.config_schema import check_config, check_plan_memory, run_memory  # [config_schema]
    from emergence_lab.spec import build_spec

    check_config(cfg)  # [config_schema] ranges, relations and names, one line naming the key
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
    mem = run_memory(spec, t)  # [config_schema]
    check_plan_memory(overrides, mem, str(t.accelerator), mem_budget)  # [config_schema]
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
        mem_bytes=mem.total,  # [config_schema]
    )


def plan(config_loader: Any, master: DictConfig, task_overrides: list[str]) -> list[PlannedRun]:
    runs = []
    jobs = expand(master, task_overrides)
    check_grid(master.hydra.sweeper.get("params"), task_overrides, jobs)  # [config_schema] no empty sweep
    launcher = master.hydra.launcher  # [config_schema] memory one job may use, with this many at once:
    budget = plan_memory_budget(launcher, jobs_at_once(launcher, len(jobs), cpu_cores()))  # [config_schema]
    for job in jobs:
        cfg = config_loader.load_sweep_config(master, job)
        runs.append(describe(cfg, job, budget))
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

    from emergence_lab.train import CONF_DIR

    register_resolvers()
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
            return master, [describe(master, overrides, plan_memory_budget(master.hydra.launcher, 1))]
        runs = plan(GlobalHydra.instance().config_loader(), master, overrides)
        _PLAN_CACHE.clear()
        _PLAN_CACHE[tuple(o.input_line for o in parsed if not o.is_hydra_override())] = runs
        return master, runs


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
        return _one_line(exc)
    return None


def _one_line(exc: BaseException) -> str:
    from emergence_lab.config_schema import explain  # [config_schema]

    return explain(exc)  # [config_schema] `<key>=<value>: must be ...` for a mistyped value


# ---- threads: jobs x threads <= cores --------------------------------------------------------------------
def cpu_cores() -> int:
    """The cores this process may use: CPU affinity and cgroup quotas counted, as joblib counts them."""
    try:
        from joblib import cpu_count

        return max(1, int(cpu_count()))
    except ImportError:  # pragma: no cover - joblib comes with hydra-joblib-launcher
        return max(1, len(os.sched_getaffinity(0)))


def jobs_at_once(launcher: Any, launch_size: int | None, cores: int) -> int:
    """How many jobs of a launch run side by side on this machine: joblib runs n_jobs (negative: cores + 1 +
    n_jobs, as joblib counts), submitit's local executor starts every job at once, the basic launcher one.
    A SLURM job is alone on the cores SLURM gave it."""
    target = str(launcher.get("_target_", "")) if launcher else ""
    if "joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        n = cores + 1 + n_jobs if n_jobs < 0 else n_jobs
    elif target.endswith("LocalLauncher"):
        n = launch_size or cores
    else:
        n = 1
    if launch_size:
        n = min(n, launch_size)
    return max(1, n)


def threads_per_job(launcher: Any, launch_size: int | None, cores: int | None = None) -> int:
    """CPU threads for one job with `trainer.threads=auto`: submitit's cpus_per_task when set (the cores
    SLURM gave the job), else this machine's cores shared evenly by the jobs running at once."""
    cpus = launcher.get("cpus_per_task") if launcher else None
    if cpus:
        return int(cpus)
    cores = cores or cpu_cores()
    return max(1, cores // jobs_at_once(launcher, launch_size, cores))


# ---- the manifest and the outcome of a sweep ----------------------------------------------------------
def write_manifest(
    sweep_dir: Path, sweep: str, runs: list[PlannedRun], analysis: dict[str, Any] | None = None
) -> None:
    """Record every planned run; runs planned by earlier launches into the same folder are kept. `analysis`
    is the study's block saying what `emergence analyze` should draw (x axis, metrics, figures)."""
    path = sweep_dir / MANIFEST
    with open(sweep_dir / ".manifest.lock", "a") as lock:  # two launches into one folder: no lost update
        fcntl.flock(lock, fcntl.LOCK_EX)
        known: dict[str, Any] = {}
        if path.exists():
            old = json.loads(path.read_text())
            known = {r["run_id"]: r for r in old.get("runs", [])}
            if analysis is None:
                analysis = old.get("analysis")
        known.update({r.run_id: asdict(r) for r in runs})
        doc = {
            "sweep": sweep,
            "analysis": analysis or {},
            "runs": sorted(known.values(), key=lambda r: r["run_id"]),
        }
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def read_manifest_doc(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def read_manifest(sweep_dir: Path) -> list[dict[str, Any]]:
    return read_manifest_doc(sweep_dir).get("runs", [])


def run_states(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every run of a sweep folder (planned or found), with its status from run.json:
    completed / running / interrupted / failed / pending (planned, never started)."""
    from emergence_lab.status import live_status

    planned = read_manifest(sweep_dir)
    rows: dict[str, dict[str, Any]] = {r["run_id"]: {**r, "status": "pending"} for r in planned}
    for info_path in sorted(Path(sweep_dir).glob("*/run.json")):
        info = read_run_info(info_path.parent) or {}
        rid = info.get("run_id", info_path.parent.name)
        rows[rid] = {**rows.get(rid, {"run_id": rid}), **info, "status": live_status(info_path.parent, info)}
    return sorted(rows.values(), key=lambda r: r["run_id"])


class SweepCallback(Callback):
    """Writes the manifest before any job starts and reports the sweep's outcome when it ends."""

    def __init__(self) -> None:
        self.launched: set[str] = set()
        self.replaced_handlers: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        register_resolvers()
        SWEEP_SUMMARY.clear()
        task_overrides = list(config.hydra.overrides.task)
        runs = _PLAN_CACHE.get(tuple(task_overrides))
        if runs is None or [r.overrides for r in runs] != expand(config, task_overrides):
            runs = plan(GlobalHydra.instance().config_loader(), config, task_overrides)
        self.launched = {r.run_id for r in runs}
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        analysis = config.get("analysis")
        analysis = OmegaConf.to_container(analysis, resolve=True) if analysis is not None else None
        write_manifest(sweep_dir, str(config.sweep), runs, analysis)  # type: ignore[arg-type]
        os.environ[LAUNCH_SIZE_ENV] = str(len(runs))
        launcher = config.hydra.launcher
        if "joblib" in str(launcher.get("_target_", "")):
            self.replaced_handlers = _pass_stop_signals_to_joblib_workers()
        at_once = jobs_at_once(launcher, len(runs), cpu_cores())
        threads = config.trainer.threads
        if threads == "auto":
            threads = threads_per_job(launcher, len(runs))
        print(f"[sweep] {len(runs)} runs planned in {sweep_dir}", flush=True)
        if str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
            at_once = min(len(runs), int(launcher.get("array_parallelism") or len(runs)))
            where = "SLURM array jobs"
        else:
            where = "on this machine"
        print(f"[sweep] up to {at_once} at once ({where}), {threads} CPU threads each", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for sig, handler in self.replaced_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.replaced_handlers = {}
        states = run_states(Path(config.hydra.sweep.dir))
        mine = [s for s in states if s["run_id"] in self.launched] if self.launched else states
        counts = Counter(s["status"] for s in mine)
        SWEEP_SUMMARY.update(counts, unfinished=len(mine) - counts["completed"])
        order = ("completed", "failed", "interrupted", "running", "pending")
        ranked = sorted(counts, key=lambda k: order.index(k) if k in order else len(order))
        summary = ", ".join(f"{counts[k]} {k}" for k in ranked)
        print(f"[sweep] {config.hydra.sweep.dir}: {summary}", flush=True)
        for s in mine:
            if s["status"] == "failed":
                print(f"[sweep]   failed {s['run_id']}: {s.get('reason')}", flush=True)
        if SWEEP_SUMMARY["unfinished"]:
            print("[sweep] rerun the same command to resume unfinished runs", flush=True)


# ---- signals that stop a run (recorder.py) or a joblib sweep -------------------------------------------
def stop_signals() -> tuple[int, ...]:
    """SIGTERM and SIGUSR1 always; inside a submitit job also submitit's preemption/timeout signal."""
    signals = [signal.SIGTERM, signal.SIGUSR1]
    preempt = submitit_signal()
    if preempt is not None and preempt not in signals:
        signals.append(preempt)
    return tuple(signals)


def submitit_signal() -> int | None:
    """The signal submitit uses for preemption and timeouts, when this process is a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name, None)


# How long the launching process of a joblib sweep waits, after a stop signal, for its workers to checkpoint.
STOP_WAIT_S = 300.0


def _pass_stop_signals_to_joblib_workers() -> dict[int, Any]:
    """`kill <pid>` of a joblib sweep reaches only the launching process, which trains nothing: pass
    SIGTERM / SIGUSR1 on to the workers, whose runs checkpoint and exit, and wait for them, since joblib
    kills every other worker as soon as one exits; then the sweep ends (train.run_cli). A signal to the
    whole process group (Ctrl-C, kill -TERM -<pgid>, scancel) reaches the workers as well. Returns the
    handlers it replaced."""

    def forward(signum: int, _frame: object) -> None:
        if not STOP_SIGNAL:
            STOP_SIGNAL.append(signum)
        from joblib.externals.loky import reusable_executor

        executor = reusable_executor._executor  # the executor joblib's loky backend reuses
        pids = list(getattr(executor, "_processes", {}) or {})
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + STOP_WAIT_S
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    return {sig: signal.signal(sig, forward) for sig in stop_signals()}


def _running(pid: int) -> bool:
    """Whether process `pid` runs: it exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


# ---- `emergence sweep` ------------------------------------------------------------------------------
def studies() -> list[str]:
    from emergence_lab.train import CONF_DIR

    return sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def sweep_cli(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(f"usage: emergence sweep <study> [overrides...] [--dry-run]\nstudies: {', '.join(studies())}")
        return 2
    study, rest = argv[0], argv[1:]
    if study not in studies():
        choices = ", ".join(studies())
        print(f"emergence sweep: unknown study {study!r}; choose from {choices}", file=sys.stderr)
        return 2
    dry_run = "--dry-run" in rest
    rest = [a for a in rest if a != "--dry-run"]
    # --cfg / --info / --help print instead of running, and Hydra takes them only without --multirun
    info_only = any(a.split("=")[0] in HYDRA_FLAGS_WITHOUT_RUN for a in rest)
    hydra_argv = [*([] if info_only else ["-m"]), f"experiment={study}", *rest]
    if not dry_run:
        from emergence_lab.train import run_cli

        return run_cli(hydra_argv)
    try:
        master, runs = plan_from_cli(hydra_argv)
    except Exception as exc:
        print(f"emergence sweep: {_one_line(exc)}", file=sys.stderr)
        return 2
    print_plan(runs, f"{study}: {len(runs)} runs -> {master.hydra.sweep.dir}")
    return 0


def print_plan(runs: list[PlannedRun], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_footer=True)
    total_time = sum(r.est_seconds for r in runs)
    columns = [
        ("run", "run_id", "TOTAL"),
        ("width", "width", ""),
        ("depth", "depth", ""),
        ("seed", "seed", ""),
        ("n_params", "n_params", f"{sum(r.n_params for r in runs):,}"),
        ("steps", "max_steps", f"{sum(r.max_steps for r in runs):,}"),
        ("tokens", "tokens", f"{sum(r.tokens for r in runs):.3g}"),
        ("FLOPs", "flops", f"{sum(r.flops for r in runs):.3g}"),
        ("est. time", "est_seconds", _duration(total_time)),
        ("memory", "mem_bytes", "max " + human_bytes(max((r.mem_bytes for r in runs), default=0))),
    ]
    for header, _, footer in columns:
        table.add_column(header, footer=footer, justify="left" if header == "run" else "right")
    for r in runs:
        table.add_row(
            r.run_id,
            str(r.width),
            str(r.depth),
            str(r.seed),
            f"{r.n_params:,}",
            f"{r.max_steps:,}",
            f"{r.tokens:.3g}",
            f"{r.flops:.3g}",
            _duration(r.est_seconds),
            human_bytes(r.mem_bytes),  # [config_schema]
        )
    Console(width=160).print(table)
    n_params, tokens, flops = (sum(getattr(r, k) for r in runs) for k in ("n_params", "tokens", "flops"))
    print(
        f"TOTAL {len(runs)} runs, {n_params:,} params, {tokens:.3g} tokens, {flops:.3g} FLOPs, "
        f"est. {_duration(total_time)} serial"
    )


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
