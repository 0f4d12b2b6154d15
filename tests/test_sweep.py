"""The sweep layer without training: studies, planning, run ids, thread budgets, launcher configs, the
manifest, `--dry-run` and `emergence status`."""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from emergence_lab.cli import main as emergence_main
from emergence_lab.launch.configs import CONF_DIR
from emergence_lab.launch.launchers import jobs_at_once
from emergence_lab.launch.plan import PlannedRun, plan_from_cli, validate_overrides
from emergence_lab.launch.resources import threads_per_job
from emergence_lab.launch.runs import read_manifest_doc, write_manifest
from emergence_lab.launch.status import status_cli
from emergence_lab.launch.sweep import studies
from emergence_lab.run.run_id import register_resolvers, run_id

register_resolvers()

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
SCALE_AXES = {"n_params", "flops", "tokens", "width", "depth", "step"}


def compose_cfg(*overrides: str, hydra: bool = False) -> Any:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def grid(study: str) -> dict[str, list[str]]:
    params = compose_cfg(f"experiment={study}", hydra=True).hydra.sweeper.params
    return {k: str(v).split(",") for k, v in params.items()}


# ---- studies --------------------------------------------------------------------------------------------
def test_the_required_studies_ship():
    assert {"demo", "addition_grid", "recall_grid", "smoke"} <= set(studies())


@pytest.mark.parametrize(
    ("study", "task", "rule"),
    [
        ("addition_grid", "addition", "tokens_per_param"),
        ("recall_grid", "recall", "tokens"),
        ("smoke", "addition", "steps"),
    ],
)
def test_study_plans_its_width_depth_seed_grid(study: str, task: str, rule: str):
    master, runs = plan_from_cli(["-m", f"experiment={study}"])
    g = grid(study)
    assert len(runs) == math.prod(len(v) for v in g.values())
    assert {r.width for r in runs} == {int(w) for w in g["model.width"]}
    assert {r.depth for r in runs} == {int(d) for d in g["model.depth"]}
    assert {r.seed for r in runs} == {int(s) for s in g["seed"]}
    assert len({r.run_id for r in runs}) == len(runs)
    assert {r.task for r in runs} == {task}
    assert master.budget.rule == rule
    assert master.sweep == study
    assert master.trainer.progress_bar is False
    assert master.trainer.eval_every > 0 and master.trainer.ckpt_every > 0

    b = master.budget
    tokens_per_step = runs[0].tokens // runs[0].max_steps
    for r in runs:
        assert r.tokens == r.max_steps * tokens_per_step
        if rule == "tokens_per_param":  # ~20 tokens per parameter, clamped to [min_steps, max_steps]
            want = math.ceil(b.tokens_per_param * r.n_params / tokens_per_step)
            assert r.max_steps == min(max(want, b.min_steps), b.max_steps)
        elif rule == "tokens":
            assert r.max_steps == math.ceil(b.tokens / tokens_per_step)
        else:
            assert r.max_steps == b.steps
    if rule == "tokens_per_param":  # the rule is not degenerate on this grid: floor and rule both occur
        assert len({r.max_steps for r in runs}) > 1


@pytest.mark.parametrize("study", ["demo", "addition_grid", "recall_grid", "smoke"])
def test_study_says_what_the_analysis_draws(study: str):
    analysis = compose_cfg(f"experiment={study}").analysis
    assert analysis.x in SCALE_AXES
    assert "exact_match" in analysis.metrics
    assert analysis.heatmap_metric in analysis.metrics
    assert set(analysis.figures) <= {"scale", "phase", "training", "artefact", "positions"}


# ---- run ids and validation -----------------------------------------------------------------------------
def test_run_id_ignores_what_does_not_change_training():
    base = run_id(compose_cfg("experiment=smoke"))
    for same in [
        "paths.root=/elsewhere",
        "logger=csv",
        "sweep=other",
        "trainer.threads=1",
        "trainer.progress_bar=true",
        "analysis.x=flops",
        "estimate.flops_per_s=1e15",
    ]:
        assert run_id(compose_cfg("experiment=smoke", same)) == base, same
    for other in ["model.width=24", "seed=3", "task.digits=3", "budget.steps=81", "trainer.eval_every=10"]:
        assert run_id(compose_cfg("experiment=smoke", other)) != base, other


def test_two_jobs_with_one_run_folder_are_refused():
    error = validate_overrides(["-m", "model.width=8,8", "model.depth=1"])
    assert error is not None and "same run" in error
    assert validate_overrides(["-m", "model.width=8,16", "model.depth=1"]) is None


def test_a_bad_analysis_block_is_refused_before_any_job():
    assert validate_overrides(["-m", "experiment=smoke"]) is None
    assert validate_overrides(["-m", "experiment=smoke", "analysis.by=none"]) is None
    error = validate_overrides(["-m", "experiment=smoke", "analysis.by=dept"])
    assert error == "sweep smoke: analysis.by: 'dept' is not one of auto, none, depth"
    error = validate_overrides(["-m", "experiment=smoke", "analysis.figures=[scale,heat]"])
    assert error is not None and "unknown figure kind 'heat'" in error
    error = validate_overrides(["-m", "experiment=smoke", "+analysis.colour=red"])
    assert error is not None and error.startswith("analysis.colour: unknown key")


def test_command_line_overrides_a_study_grid_like_hydra():
    _, runs = plan_from_cli(["-m", "experiment=smoke", "model.width=8", "seed=0,1"])
    assert sorted((r.width, r.depth, r.seed) for r in runs) == [(8, 1, 0), (8, 1, 1), (8, 2, 0), (8, 2, 1)]


# ---- threads: jobs x threads <= cores -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("launcher", "launch_size", "cores", "at_once", "threads"),
    [
        ({"_target_": BASIC}, 12, 16, 1, 16),
        ({"_target_": JOBLIB, "n_jobs": -1}, 12, 2, 2, 1),
        ({"_target_": JOBLIB, "n_jobs": -1}, 2, 16, 2, 8),  # fewer runs than cores: the rest go to threads
        ({"_target_": JOBLIB, "n_jobs": -2}, 40, 16, 15, 1),  # joblib: cores + 1 + n_jobs
        ({"_target_": JOBLIB, "n_jobs": 4}, 12, 16, 4, 4),
        ({"_target_": LOCAL, "cpus_per_task": None}, 4, 16, 4, 4),  # submitit local starts all at once
        ({"_target_": LOCAL, "cpus_per_task": None}, 4, 2, 4, 1),
        ({"_target_": SLURM, "cpus_per_task": 8}, 100, 64, 1, 8),
    ],
)
def test_threads_share_the_cores(launcher, launch_size, cores, at_once, threads):
    assert jobs_at_once(launcher, launch_size, cores) == at_once
    assert threads_per_job(launcher, launch_size, cores) == threads
    if at_once <= cores and "cpus_per_task" not in launcher:
        assert at_once * threads <= cores


def test_joblib_default_never_oversubscribes():
    for cores in (1, 2, 3, 8, 13, 64):
        for n_runs in (1, 2, 5, 100):
            launcher = {"_target_": JOBLIB, "n_jobs": -1}
            assert jobs_at_once(launcher, n_runs, cores) * threads_per_job(launcher, n_runs, cores) <= cores


# ---- launcher configs -------------------------------------------------------------------------------
def test_slurm_conf_reaches_the_sbatch_script(tmp_path, monkeypatch):
    """`hydra/launcher=slurm`: the settings in conf/hydra/launcher/slurm.yaml, through the real
    hydra-submitit launcher and submitit's sbatch writer (no cluster: a fake srun, submission stopped)."""
    import submitit
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{Path('/usr/bin')}:{Path('/bin')}")

    class Submitted(Exception):
        pass

    seen: dict[str, Any] = {}

    def fake_map_array(self, fn, *iterables):  # type: ignore[no-untyped-def]
        seen["executor"], seen["jobs"] = self, list(zip(*iterables, strict=True))
        raise Submitted

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    cfg = compose_cfg(
        "experiment=smoke",
        "hydra/launcher=slurm",
        f"paths.root={tmp_path}",
        "hydra.launcher.partition=gpu-x",
        hydra=True,
    )
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted):
        launcher.launch([["model.width=8"], ["model.width=16"]], initial_job_idx=0)

    executor = seen["executor"]._executor
    assert type(executor).__name__ == "SlurmExecutor"
    assert executor.max_num_timeout == 20  # requeues after the time limit
    assert executor.parameters["array_parallelism"] == 32
    sbatch = executor._make_submission_file_text("CMD", "uid")
    for line in [
        "#SBATCH --partition=gpu-x",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",  # submitit's preemption/timeout signal, which the run checkpoints on
        "#SBATCH --requeue",
        "#SBATCH --job-name=smoke",
    ]:
        assert line in sbatch.splitlines(), line
    assert f"--output={tmp_path}/sweeps/smoke/.submitit/" in sbatch
    assert [job[0] for job in seen["jobs"]] == [["model.width=8"], ["model.width=16"]]


@pytest.mark.parametrize(
    ("name", "target"), [("slurm", SLURM), ("joblib_gpu", JOBLIB), ("submitit_local", LOCAL)]
)
def test_launcher_confs_compose(name: str, target: str):
    launcher = compose_cfg(f"hydra/launcher={name}", hydra=True).hydra.launcher
    assert launcher._target_ == target
    if name == "joblib_gpu":
        assert launcher.n_jobs >= 1  # ${gpu_count:}: one job per visible GPU, at least one


def test_sweep_cfg_hydra_prints_the_launcher(capsys):
    assert emergence_main(["sweep", "smoke", "hydra/launcher=slurm", "--cfg", "hydra"]) == 0
    out = capsys.readouterr().out
    assert "SlurmLauncher" in out and "max_num_timeout: 20" in out and "array_parallelism: 32" in out


# ---- wandb: one run per job, grouped by sweep ------------------------------------------------------------
def test_wandb_run_per_job_grouped_by_sweep(tmp_path, monkeypatch):
    from emergence_lab.run import loggers

    made: list[dict[str, Any]] = []

    class FakeLogger:
        def log_hyperparams(self, params: dict[str, Any]) -> None:
            made[-1]["hparams"] = params

    def fake_instantiate(spec, **kwargs):  # type: ignore[no-untyped-def]
        made.append({**OmegaConf.to_container(spec), **kwargs})
        return FakeLogger()

    monkeypatch.setattr(loggers, "instantiate", fake_instantiate)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg("experiment=smoke", "logger=wandb")
    rid = run_id(cfg)
    static = {"run_id": rid, "task": "addition", "width": 16}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    loggers.build_loggers(cfg, tmp_path, rid, "addition", static, resolved)
    loggers.build_loggers(cfg, tmp_path, rid, "addition", static, resolved)  # the resumed job
    first, again = made
    assert first["group"] == "smoke" and first["job_type"] == "train" and first["tags"] == ["addition"]
    assert first["name"] == rid and first["mode"] == "offline" and first["save_dir"] == str(tmp_path)
    assert first["id"] == again["id"]  # a resumed run continues the same wandb run
    assert first["hparams"]["width"] == 16 and first["hparams"]["model.depth"] == cfg.model.depth

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.build_loggers(cfg, tmp_path, rid, "addition", static, resolved) == []


# ---- manifest ---------------------------------------------------------------------------------------
def _planned(rid: str) -> PlannedRun:
    return PlannedRun(rid, [f"x={rid}"], "addition", 8, 1, 0, 10, 12, 5, 50, 1e3, 1.0)


def test_manifest_keeps_every_planned_run_and_the_analysis_block(tmp_path):
    write_manifest(tmp_path, "s", [_planned("a"), _planned("b")], {"x": "n_params"})
    write_manifest(tmp_path, "s", [_planned("c")])  # a later launch into the same folder
    doc = read_manifest_doc(tmp_path)
    assert [r["run_id"] for r in doc["runs"]] == ["a", "b", "c"]
    assert doc["analysis"] == {"x": "n_params"} and doc["sweep"] == "s"


# ---- --dry-run ------------------------------------------------------------------------------------------
def _table_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and re.match(r"^[a-z]+-w\d+-d\d+-s\d+-[0-9a-f]{8}$", cells[0]):
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("study", sorted(studies()))
def test_every_shipped_study_plans_and_its_analysis_block_is_valid(study: str, tmp_path, capsys):
    from emergence_lab.analysis.study import check_block

    root = tmp_path / "out"
    assert emergence_main(["sweep", study, "--dry-run", f"paths.root={root}"]) == 0
    _, runs = plan_from_cli(["-m", f"experiment={study}", f"paths.root={root}"])
    assert len(_table_rows(capsys.readouterr().out)) == len(runs) > 0
    assert not root.exists()  # planned, nothing started
    block = OmegaConf.to_container(compose_cfg(f"experiment={study}").analysis)
    assert isinstance(block, dict) and check_block(block, f"experiments/{study}.yaml") is None


def test_dry_run_prints_the_grid_and_starts_nothing(tmp_path, capsys):
    root = tmp_path / "out"
    assert emergence_main(["sweep", "recall_grid", "--dry-run", f"paths.root={root}"]) == 0
    out = capsys.readouterr().out
    _, runs = plan_from_cli(["-m", "experiment=recall_grid", f"paths.root={root}"])
    table = _table_rows(out)
    assert set(table) == {r.run_id for r in runs}
    header = next(line for line in out.splitlines() if "n_params" in line)
    for column in ("run", "width", "depth", "seed", "n_params", "tokens", "FLOPs", "est. time"):
        assert column in header
    for r in runs:
        cells = table[r.run_id]
        assert cells[1:4] == [str(r.width), str(r.depth), str(r.seed)]
        assert cells[4] == f"{r.n_params:,}"
        assert float(cells[6]) == pytest.approx(r.tokens, rel=5e-3)
        assert float(cells[7]) == pytest.approx(r.flops, rel=5e-3)
        assert re.fullmatch(r"\d+m\d\ds|\d+h\d\dm", cells[8])
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"TOTAL {len(runs)} runs, {sum(r.n_params for r in runs):,} params")
    assert f"{sum(r.flops for r in runs):.3g} FLOPs" in last
    assert not root.exists()  # nothing launched, no folder made


def test_dry_run_estimate_follows_the_stated_rule():
    master, (r,) = plan_from_cli(["-m", "experiment=smoke", "model.width=8", "model.depth=1"])
    e = master.estimate
    train_only = r.max_steps * e.step_overhead_s + r.flops / e.flops_per_s + e.startup_s
    assert r.est_seconds >= round(train_only, 1)  # plus evaluation passes
    _, (slower,) = plan_from_cli(
        ["-m", "experiment=smoke", "model.width=8", "model.depth=1", "estimate.flops_per_s=1e9"]
    )
    assert slower.est_seconds > r.est_seconds


def test_sweep_cli_usage_errors(capsys):
    assert emergence_main(["sweep", "no_such_study"]) == 2
    assert "unknown study" in capsys.readouterr().err
    assert emergence_main(["sweep", "smoke", "--dry-run", "model.width=banana"]) == 2


# ---- emergence status -----------------------------------------------------------------------------------
def _fake_run(sweep_dir: Path, rid: str, **info: Any) -> Path:
    d = sweep_dir / rid
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run_id": rid, "max_steps": 80, "attempts": 1, **info}))
    (d / ".lock").touch()
    return d


def test_status_table_shows_every_state_and_failure_reasons(tmp_path, capsys):
    write_manifest(
        tmp_path, "s", [_planned(r) for r in ("r-done", "r-failed", "r-live", "r-killed", "r-todo")]
    )
    _fake_run(tmp_path, "r-done", status="completed", step=80, wall_time_s=3.0)
    _fake_run(
        tmp_path, "r-failed", status="failed", step=10, reason="FloatingPointError: non-finite loss at 10"
    )
    live = _fake_run(tmp_path, "r-live", status="running", step=40)
    _fake_run(tmp_path, "r-killed", status="running", step=20)  # run.json says running; nobody holds it
    with open(live / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live process holds this run
        assert status_cli([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    states = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0].startswith("r-"):
            states[cells[0]] = cells
    assert {k: v[1] for k, v in states.items()} == {
        "r-done": "completed",
        "r-failed": "failed",
        "r-live": "running",
        "r-killed": "interrupted",
        "r-todo": "pending",
    }
    assert "FloatingPointError: non-finite loss at 10" in states["r-failed"][5]
    assert "failed: 1  interrupted: 1  running: 1  pending: 1  completed: 1" in out


def test_status_usage_errors(tmp_path, capsys):
    assert status_cli([str(tmp_path / "missing")]) == 2
    assert status_cli([str(tmp_path)]) == 2  # an empty folder: no runs, no manifest
    assert status_cli([]) == 2


# ---- signals, SLURM and GPUs inside a job ------------------------------------------------------------------
def test_runs_stop_on_sigterm_sigusr1_and_submitits_preemption_signal(monkeypatch):
    from emergence_lab.run.signals import stop_signals

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert stop_signals() == (signal.SIGTERM, signal.SIGUSR1)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # inside a submitit job: USR2 unless said otherwise
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert stop_signals() == (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert stop_signals() == (signal.SIGTERM, signal.SIGUSR1)


def test_lightning_does_not_requeue_under_slurm(monkeypatch):
    from emergence_lab.run.train import _cluster_plugins

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert _cluster_plugins() == []
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    (env,) = _cluster_plugins()
    assert type(env).__name__ == "SLURMEnvironment" and env.auto_requeue is False


def test_parallel_jobs_are_pinned_to_one_gpu_each_by_job_number(monkeypatch, tmp_path):
    import torch

    from emergence_lab.launch import resources

    monkeypatch.setattr(resources, "lock_dir", lambda: tmp_path)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = OmegaConf.create({"accelerator": "gpu", "devices": 1})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    pinned = []
    for k in range(4):  # four worker processes, one job each, all running at once
        resources._last_gpu.clear()
        resources._held["fd"] = None  # keep the previous job's lock: it is another process's
        pinned.append(resources.pin_device(gpu, k))
    assert pinned == [[0], [1], [2], [3]]
    resources._last_gpu.clear()
    resources._held["fd"] = None
    assert resources.pin_device(gpu, 5) == [1]  # every GPU busy: k mod n, unlocked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resources.pin_device(gpu, 5) == 1
    assert resources.pin_device(OmegaConf.create({"accelerator": "cpu", "devices": 1}), 5) == 1


def test_a_job_takes_a_free_gpu_not_one_still_busy_and_a_worker_keeps_its_gpu(monkeypatch, tmp_path):
    from emergence_lab.launch import resources

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    resources._last_gpu.clear()
    resources._held["fd"] = None
    assert resources.claim_gpu(2, 0, tmp_path) == 0  # worker A: job 0 on GPU 0 (physical 3)
    worker_a = resources._held["fd"]
    resources._last_gpu.clear()
    resources._held["fd"] = None
    assert resources.claim_gpu(2, 1, tmp_path) == 1  # worker B: job 1 on GPU 1
    assert (
        resources.claim_gpu(2, 2, tmp_path) == 1
    )  # B finished first; job 2 prefers GPU 0, which A still uses
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-3.lock", "gpu-5.lock"]
    resources.release()
    os.close(worker_a)  # worker A exits
    resources._last_gpu[:] = [1]
    assert resources.claim_gpu(2, 4, tmp_path) == 1  # a worker keeps the GPU it had
    resources.release()
    resources._last_gpu.clear()


# ---- a user's own study folder -------------------------------------------------------------------------
def test_a_users_study_folder_is_on_the_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emergence_lab.launch.sweep import sweep_cli

    (tmp_path / "tiny_mod.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /task: modular\nsweep: tiny_mod\ntask:\n  p: 11\n"
        "hydra:\n  sweeper:\n    params:\n      model.width: 8,16\n      seed: 0,1,2\n"
    )
    monkeypatch.setenv("EMERGENCE_STUDY_PATH", str(tmp_path))
    assert "tiny_mod" in studies() and "demo" in studies()
    master, runs = plan_from_cli(["-m", "experiment=tiny_mod"])
    assert master.task.p == 11 and master.sweep == "tiny_mod"
    assert sorted((r.width, r.seed) for r in runs) == [(w, s) for w in (8, 16) for s in (0, 1, 2)]
    assert {r.task for r in runs} == {"modular"}
    assert sweep_cli(["tiny_mod", "--dry-run"]) == 0


def test_a_missing_or_clashing_study_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from emergence_lab.launch.sweep import sweep_cli

    monkeypatch.setenv("EMERGENCE_STUDY_PATH", str(tmp_path / "nowhere"))
    assert sweep_cli(["demo", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().endswith("no such folder: " + str(tmp_path / "nowhere"))
    (tmp_path / "demo.yaml").write_text("# @package _global_\nsweep: mine\n")
    monkeypatch.setenv("EMERGENCE_STUDY_PATH", str(tmp_path))
    assert sweep_cli(["demo", "--dry-run"]) == 2
    assert "study 'demo' is in both" in capsys.readouterr().err
