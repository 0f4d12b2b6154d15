"""Sweeps end to end through the real `emergence` command: the 2x2 `smoke` study with the basic, joblib and
submitit_local launchers; kill -9 and rerun; SIGUSR1 of a single run; submitit preemption and requeue; a
failing run; `--dry-run` against the real runs.

Every sweep here is compared with one uninterrupted basic-launcher sweep of the same study (`reference`):
the same run ids, the same rows, and on CPU with one thread per job the same values, bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from emergence_lab.cli import main as emergence_main
from emergence_lab.launch.plan import plan_from_cli
from emergence_lab.launch.resources import cpu_cores
from emergence_lab.launch.status import status_cli

from sweep_helpers import (
    EVAL_STEPS,
    MAX_STEPS,
    N_RUNS,
    ONE_THREAD,
    STUDY,
    assert_complete_sweep,
    assert_same_results,
    emergence,
    group_alive,
    mid_run,
    poll,
    read_json,
    results,
    rows,
    run_infos,
    start,
)

pytestmark = pytest.mark.slow


def sweep_dir(root: Path) -> Path:
    return root / "sweeps" / STUDY


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The smoke study, uninterrupted, basic launcher (serial), one thread per job."""
    root = tmp_path_factory.mktemp("reference")
    proc = emergence(["sweep", STUDY, *ONE_THREAD, f"paths.root={root}"])
    assert proc.returncode == 0
    return sweep_dir(root)


def test_basic_launcher_runs_the_2x2_study(reference: Path, capsys):
    infos = assert_complete_sweep(reference)
    assert sorted((i["width"], i["depth"]) for i in infos.values()) == [(8, 1), (8, 2), (16, 1), (16, 2)]
    for name, info in infos.items():
        assert info["attempts"] == 1 and "resumed_from_steps" not in info
        assert info["threads"] == 1
        for row in rows(reference / name):
            assert row["tokens"] == row["step"] * info["tokens_per_step"]
            assert row["flops"] == row["step"] * info["flops_per_step"]
            assert row["sweep"] == STUDY and row["n_params"] == info["n_params"]
    manifest = read_json(reference / "manifest.json")
    assert manifest is not None and manifest["analysis"]["heatmap_metric"] == "exact_match"
    assert status_cli([str(reference)]) == 0
    assert f"completed: {N_RUNS}" in capsys.readouterr().out


def test_dry_run_agrees_with_the_real_runs(reference: Path, capsys):
    """The --dry-run table and totals against n_params, steps, tokens and FLOPs measured by the runs."""
    root = reference.parents[1]
    assert emergence_main(["sweep", STUDY, *ONE_THREAD, f"paths.root={root}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    _, planned = plan_from_cli(["-m", f"experiment={STUDY}", *ONE_THREAD, f"paths.root={root}"])
    infos = run_infos(reference)
    assert {p.run_id for p in planned} == set(infos)
    for p in planned:
        info = infos[p.run_id]
        last = next(r for r in rows(reference / p.run_id) if r["step"] == MAX_STEPS)
        assert (p.width, p.depth, p.seed) == (info["width"], info["depth"], info["seed"])
        assert p.n_params == info["n_params"] == last["n_params"]
        assert p.n_params_total == info["n_params_total"]
        assert p.max_steps == info["max_steps"] == info["step"]
        assert p.tokens == last["tokens"]
        assert p.flops == last["flops"]
        assert f"│ {p.run_id} " in out and f" {p.n_params:,} " in out and f" {p.flops:.3g} " in out
    n_params = sum(p.n_params for p in planned)
    flops = sum(float(rows(reference / n)[-1]["flops"]) for n in infos)
    assert out.strip().splitlines()[-1].startswith(f"TOTAL {N_RUNS} runs, {n_params:,} params")
    assert f"{flops:.3g} FLOPs" in out.strip().splitlines()[-1]


def test_joblib_launcher_runs_the_2x2_study_in_parallel_and_stops_on_sigterm(reference: Path, tmp_path: Path):
    """Two jobs at a time. `kill <pid>` of the launching process mid-sweep: the workers' runs checkpoint
    and stop, no worker lives on to start another run, and the same command then finishes the sweep."""
    folder = sweep_dir(tmp_path)
    command = ["sweep", STUDY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"paths.root={tmp_path}"]
    proc = start(command, tmp_path / "first.log")
    try:
        poll(lambda: mid_run(folder, before_step=40), 180, "a run past its first checkpoint", proc)
        proc.send_signal(signal.SIGTERM)  # the launching process only, which trains nothing itself
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        poll(lambda: not group_alive(proc.pid), 60, "every worker of the sweep to exit")
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "first.log").read_text()
    assert "Joblib.Parallel(n_jobs=2" in log and "[stopped] by SIGTERM; rerun the same command" in log
    stopped = {n: i for n, i in run_infos(folder).items() if i["status"] != "completed"}
    assert any("stopped by SIGTERM" in (i.get("reason") or "") for i in stopped.values())
    for name, info in stopped.items():  # checkpointed on the signal, or killed before it could train
        assert info["status"] == "interrupted" or "step" not in info, (name, info)

    proc2 = emergence(command)
    assert proc2.returncode == 0
    infos = assert_complete_sweep(folder)
    for name, info in stopped.items():
        at = re.search(r"stopped by SIGTERM at step (\d+)", info.get("reason") or "")
        if at:
            assert infos[name]["resumed_from_steps"] == [int(at.group(1))]
    threads = {i["threads"] for i in infos.values()}
    assert threads == {max(1, cpu_cores() // 2)}  # trainer.threads=auto: 2 jobs x threads <= cores
    assert_same_results(results(folder), results(reference), exact=threads == {1})


def test_submitit_local_runs_the_2x2_study_and_requeues_a_preempted_run(reference: Path, tmp_path: Path):
    """submitit's local executor, the twin of SLURM: every run its own job. One run gets submitit's
    preemption signal (USR2) mid-run: it checkpoints, submitit requeues the job, the run resumes."""
    folder = sweep_dir(tmp_path)
    proc = start(
        ["sweep", STUDY, "hydra/launcher=submitit_local", f"paths.root={tmp_path}"], tmp_path / "log"
    )
    try:
        victim = poll(lambda: mid_run(folder, before_step=40), 180, "a run past its first checkpoint", proc)
        pid = read_json(victim / "run.json")["pid"]  # type: ignore[index]
        os.kill(pid, signal.SIGUSR2)
        assert proc.wait(timeout=240) == 0, (tmp_path / "log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    infos = assert_complete_sweep(folder)
    resumed = {n: i["resumed_from_steps"] for n, i in infos.items() if "resumed_from_steps" in i}
    assert list(resumed) == [victim.name]
    assert 0 < resumed[victim.name][0] < MAX_STEPS
    assert infos[victim.name]["attempts"] == 2
    job_logs = "".join(p.read_text() for p in (folder / ".submitit").rglob("*.out"))
    assert f"stopped by SIGUSR2 at step {resumed[victim.name][0]}; checkpoint saved" in job_logs
    assert "Requeued job" in job_logs  # by submitit, then the same job ran again and resumed
    threads = {i["threads"] for i in infos.values()}
    assert threads == {max(1, cpu_cores() // N_RUNS)}  # every local job starts at once
    assert_same_results(results(folder), results(reference), exact=threads == {1})


def test_kill_minus_9_and_rerun_finishes_the_sweep_exactly_once(reference: Path, tmp_path: Path, capsys):
    folder = sweep_dir(tmp_path)
    command = ["sweep", STUDY, *ONE_THREAD, f"paths.root={tmp_path}"]
    proc = start(command, tmp_path / "first.log")
    try:
        victim = poll(
            lambda: mid_run(folder, before_step=40, need_completed=1),
            180,
            "one run completed and another past its first checkpoint",
            proc,
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = run_infos(folder)
    done_before = {n for n, i in before.items() if i["status"] == "completed"}
    assert done_before and victim.name not in done_before
    killed_step = read_json(victim / "run.json")  # still "running": nobody was left to update it
    assert killed_step is not None and killed_step["status"] == "running"
    assert status_cli([str(folder)]) == 0
    assert "interrupted: 1" in capsys.readouterr().out

    proc2 = emergence(command)
    assert proc2.returncode == 0
    for name in done_before:
        assert f"[skip] {name}: already completed" in proc2.stdout
    assert f"[resume] {victim.name} from step" in proc2.stdout

    infos = assert_complete_sweep(folder)
    for name, info in infos.items():
        if name == victim.name:
            assert info["attempts"] == 2
            (step,) = info["resumed_from_steps"]
            assert step > 0 and step % 20 == 0  # from its last periodic checkpoint, not from zero
        else:
            assert info["attempts"] == 1 and "resumed_from_steps" not in info
    got = results(folder)  # fails on any duplicated row
    assert len(got) == len(results(reference))
    assert_same_results(got, results(reference), exact=True)


def test_sigusr1_checkpoints_a_single_run_and_the_rerun_resumes_it(reference: Path, tmp_path: Path, capsys):
    """SLURM's preemption warning (`--signal=USR1@...`); SIGTERM takes the same path (joblib test above)."""
    command = [
        "train",
        f"experiment={STUDY}",
        "model.width=16",
        "model.depth=2",
        *ONE_THREAD,
        f"paths.root={tmp_path}",
    ]
    runs = tmp_path / "runs"
    proc = start(command, tmp_path / "first.log")
    try:
        run_dir = poll(lambda: runs.exists() and mid_run(runs, before_step=40), 120, "a checkpoint", proc)
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=60) == 128 + signal.SIGUSR1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert run_dir.name in run_infos(reference)  # the same config: the same run id, single run or sweep
    info = read_json(run_dir / "run.json")
    assert info is not None and info["status"] == "interrupted"
    assert "SIGUSR1" in info["reason"] and "checkpoint saved" in info["reason"]
    stopped_at = info["step"]
    assert 20 <= stopped_at < MAX_STEPS
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert "rerun the same command to resume" in (tmp_path / "first.log").read_text()

    capsys.readouterr()
    assert emergence_main(command) == 0  # the rerun, in this process to save a start-up
    assert f"[resume] {run_dir.name} from step {stopped_at} " in capsys.readouterr().out
    info = read_json(run_dir / "run.json")
    assert info is not None and info["status"] == "completed" and info["resumed_from_steps"] == [stopped_at]
    expected = {k: v for k, v in results(reference).items() if k[0] == run_dir.name}
    assert_same_results(results(runs), expected, exact=True)
    assert sorted({k[4] for k in expected}) == list(EVAL_STEPS)

    # Killed after its final checkpoint but before run.json said "completed": the rerun resumes at the last
    # step and adds no row.
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert emergence_main(command) == 0
    info = read_json(run_dir / "run.json")
    assert info is not None and info["status"] == "completed"
    assert info["resumed_from_steps"] == [stopped_at, MAX_STEPS]
    assert_same_results(results(runs), expected, exact=True)

    # Killed after evaluating but before its first checkpoint: the rerun starts from zero and drops the rows
    # of the lost attempt instead of writing them twice.
    shutil.rmtree(run_dir / "checkpoints")  # last.ckpt and the prev.ckpt kept before it
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert emergence_main(command) == 0
    info = read_json(run_dir / "run.json")
    assert info is not None and info["status"] == "completed" and info["attempts"] == 4
    assert info["resumed_from_steps"] == [stopped_at, MAX_STEPS]  # the last try did not resume
    assert_same_results(results(runs), expected, exact=True)


def test_a_failing_run_is_marked_failed_with_its_reason_and_the_sweep_goes_on(tmp_path: Path, capsys):
    # lr 1e30 diverges at once: the run fails on its non-finite loss; the next run still trains.
    # In this process, through the CLI's entry point: it saves a start-up.
    command = ["sweep", STUDY, "model.width=8", "model.depth=1", "optim.lr=1e30,5e-3", *ONE_THREAD]
    assert emergence_main([*command, f"paths.root={tmp_path}"]) == 1  # the exit code reports the failure
    out = capsys.readouterr().out
    assert "1 completed, 1 failed" in out
    folder = sweep_dir(tmp_path)
    infos = run_infos(folder)
    (failed,) = [n for n, i in infos.items() if i["status"] == "failed"]
    (completed,) = [n for n, i in infos.items() if i["status"] == "completed"]
    reason = infos[failed]["reason"]
    assert reason.startswith("FloatingPointError: non-finite training loss")
    assert f"failed {failed}: {reason}" in out
    assert "FloatingPointError" in (folder / failed / "error.log").read_text()
    assert infos[completed]["step"] == MAX_STEPS

    assert status_cli([str(folder)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if failed in line)
    assert "failed" in line and "FloatingPointError: non-finite training loss" in out
    assert "failed: 1" in out and "completed: 1" in out
