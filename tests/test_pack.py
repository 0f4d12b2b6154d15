"""Packed seeds (trainer.pack): the same numbers as unpacked runs of the same seeds, each seed in its own
folder; resume; one seed's NaN fails that seed alone. TINY has dropout 0, so packed and unpacked see the same
computation (dropout masks would differ)."""

from __future__ import annotations

import hashlib
import json
import math
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from hydra import compose, initialize_config_dir

from emergence_lab.launch.configs import CONF_DIR
from emergence_lab.model import TransformerConfig
from emergence_lab.run.folder import RunFolder, load_checkpoint
from emergence_lab.run.module import lr_schedule
from emergence_lab.run.optim import OptimConfig, build_optimizer
from emergence_lab.run.pack_rule import pack_size
from emergence_lab.run.pack_train import seed_config, train_seeds
from emergence_lab.run.packed import PackedModule, PackedRecorder
from emergence_lab.run.packed_model import PackedTransformer, build_packed_optimizer, build_seed_model
from emergence_lab.run.run_id import register_resolvers, run_id
from emergence_lab.run.train import train
from emergence_lab.tasks import Addition

register_resolvers()
STEPS = 20
SEEDS = [0, 1, 2]


def tiny_cfg(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, f"trainer.max_steps={STEPS}", *overrides])


def packed_cfg(*overrides: str):  # type: ignore[no-untyped-def]
    return tiny_cfg(f"seeds=[{','.join(map(str, SEEDS))}]", "trainer.pack=3", *overrides)


def folder_of(root: Path, cfg, seed: int) -> Path:  # type: ignore[no-untyped-def]
    return root / run_id(seed_config(cfg, seed))


def values(run_dir: Path) -> list[tuple]:
    rows = RunFolder(run_dir).results.read()
    return sorted((r["step"], r["split"], r["metric"], r["subtask"], r["value"]) for r in rows)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def assert_same_results(a: Path, b: Path, tol: float = 1e-5) -> None:
    va, vb = values(a), values(b)
    assert [v[:4] for v in va] == [v[:4] for v in vb] and va
    for x, y in zip(va, vb, strict=True):
        assert x[4] == pytest.approx(y[4], abs=tol), x
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=tol, rtol=0)


def info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


# ---- the step itself, against one model at a time --------------------------------------------------------
def test_packed_step_matches_unpacked_losses_and_weights_over_20_steps() -> None:
    torch.set_num_threads(1)
    task = Addition(digits=2)
    cfg = TransformerConfig(width=16, depth=2, vocab_size=task.vocab_size, max_seq_len=task.max_seq_len)
    optim = OptimConfig(batch_size=32, warmup_steps=5)
    models = [build_seed_model(cfg, s) for s in SEEDS]
    packed = PackedTransformer([build_seed_model(cfg, s) for s in SEEDS])
    opts = [build_optimizer(m, optim, "cpu") for m in models]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lr_schedule(optim, STEPS)) for o in opts]
    popt = build_packed_optimizer(packed, optim, "cpu")
    psched = torch.optim.lr_scheduler.LambdaLR(popt, lr_schedule(optim, STEPS))

    def loss_of(logits, b):  # type: ignore[no-untyped-def]
        return F.cross_entropy(logits[:, b.answer_pos - 1].flatten(0, 1), b.answers.flatten())

    for step in range(STEPS):
        batches = [task.train_batch(32, s, step, "cpu") for s in SEEDS]
        single = []
        for m, o, sch, b in zip(models, opts, scheds, batches, strict=True):
            loss = loss_of(m(b.tokens[:, :-1]), b)
            o.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05)  # small: clipping is active
            o.step()
            sch.step()
            single.append(loss.item())
        logits = packed(torch.stack([b.tokens[:, :-1] for b in batches]))
        losses = torch.stack([loss_of(logits[i], b) for i, b in enumerate(batches)])
        popt.zero_grad()
        losses.sum().backward()
        packed.clip_grad_norm_(0.05)
        popt.step()
        psched.step()
        assert losses.tolist() == pytest.approx(single, abs=1e-5)
    for i, m in enumerate(models):
        for name, p in m.named_parameters():
            torch.testing.assert_close(packed.stacked()[name][i], p, atol=1e-5, rtol=0)


# ---- whole runs ------------------------------------------------------------------------------------------
def test_packed_runs_write_each_seeds_folder_with_the_unpacked_numbers(tmp_path: Path) -> None:
    cfg = packed_cfg()
    out = train_seeds(cfg, folder_of(tmp_path / "packed", cfg, SEEDS[0]), threads=1, devices=1)
    assert out.status == "completed"
    for seed in SEEDS:
        scfg = seed_config(cfg, seed)
        assert train(scfg, tmp_path / "single" / str(seed), threads=1, devices=1).status == "completed"
        packed_dir = folder_of(tmp_path / "packed", cfg, seed)
        assert_same_results(packed_dir, tmp_path / "single" / str(seed))
        got, want = info(packed_dir), info(tmp_path / "single" / str(seed))
        assert got["pack"] == {"size": 3, "seeds": SEEDS}
        assert got["run_id"] == want["run_id"] == packed_dir.name
        assert (got["status"], got["step"], got["seed"]) == ("completed", STEPS, seed)
        assert {k for k in want if k not in ("pack",)} <= set(got)
        assert (packed_dir / "config.yaml").exists() and (packed_dir / ".lock").exists()
        # the checkpoint is an unpacked run's: the same keys and optimizer state layout
        a = load_checkpoint(packed_dir / "checkpoints" / "last.ckpt")
        b = load_checkpoint(tmp_path / "single" / str(seed) / "checkpoints" / "last.ckpt")
        assert a.keys() == b.keys() and a["state_dict"].keys() == b["state_dict"].keys()
        assert a["emergence_run_id"] == b["emergence_run_id"]
        sa, sb = a["optimizer_states"][0], b["optimizer_states"][0]
        assert sa["param_groups"] == sb["param_groups"]
        for idx in sb["state"]:
            for k in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(sa["state"][idx][k], sb["state"][idx][k], atol=1e-5, rtol=0)
    again = train_seeds(cfg, folder_of(tmp_path / "packed", cfg, SEEDS[0]), threads=1, devices=1)
    assert again.status == "completed"  # every seed done: skipped
    assert all(info(folder_of(tmp_path / "packed", cfg, s))["attempts"] == 1 for s in SEEDS)


def _stop_packed_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    original = PackedRecorder.on_train_batch_end

    def hook(self, trainer, *args):  # type: ignore[no-untyped-def]
        if trainer.global_step == step:
            self.stop_signal = signal.SIGUSR1
        original(self, trainer, *args)

    monkeypatch.setattr(PackedRecorder, "on_train_batch_end", hook)


def test_a_packed_job_resumes_to_the_numbers_of_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = packed_cfg()
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert train_seeds(cfg, folder_of(whole, cfg, 0), threads=1, devices=1).status == "completed"
    with monkeypatch.context() as m:
        _stop_packed_at(m, 10)
        stopped = train_seeds(cfg, folder_of(part, cfg, 0), threads=1, devices=1)
    assert (stopped.status, stopped.signum) == ("interrupted", signal.SIGUSR1)
    assert {info(folder_of(part, cfg, s))["status"] for s in SEEDS} == {"interrupted"}
    # seed 2 alone resumes unpacked from its packed checkpoint; seeds 0 and 1 resume packed
    assert train(seed_config(cfg, 2), folder_of(part, cfg, 2), threads=1, devices=1).status == "completed"
    assert train_seeds(cfg, folder_of(part, cfg, 0), threads=1, devices=1).status == "completed"
    for seed in SEEDS:
        assert_same_results(folder_of(part, cfg, seed), folder_of(whole, cfg, seed), tol=1e-6)
        assert info(folder_of(part, cfg, seed))["resumed_from_steps"] == [10]


def test_a_nan_in_one_seed_fails_that_seed_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = packed_cfg()
    original = PackedModule.training_step

    def poisoned(self, *args):  # type: ignore[no-untyped-def]
        if self.global_step == 5:
            with torch.no_grad():
                self.packed.params["norm__weight"][1].fill_(math.nan)
        return original(self, *args)

    monkeypatch.setattr(PackedModule, "training_step", poisoned)
    out = train_seeds(cfg, folder_of(tmp_path / "p", cfg, 0), threads=1, devices=1)
    assert out.status == "failed"
    bad = info(folder_of(tmp_path / "p", cfg, 1))
    # what the unpacked run writes: its finite check runs every 10 steps
    assert bad["status"] == "failed" and bad["step"] == 10
    assert bad["reason"] == "FloatingPointError: non-finite training loss (nan) at step 10"
    assert (folder_of(tmp_path / "p", cfg, 1) / "error.log").exists()
    assert sorted({v[0] for v in values(folder_of(tmp_path / "p", cfg, 1))}) == [0]
    assert not (folder_of(tmp_path / "p", cfg, 1) / "checkpoints" / "last.ckpt").exists()
    monkeypatch.undo()
    for seed in (0, 2):
        assert info(folder_of(tmp_path / "p", cfg, seed))["status"] == "completed"
        single = tmp_path / "single" / str(seed)
        assert train(seed_config(cfg, seed), single, threads=1, devices=1).status == "completed"
        assert_same_results(folder_of(tmp_path / "p", cfg, seed), single)


def test_each_packed_seed_logs_to_its_own_csv_file(tmp_path: Path) -> None:
    import pandas as pd

    cfg = packed_cfg("logger=csv", "trainer.log_every_n_steps=5")
    assert train_seeds(cfg, folder_of(tmp_path, cfg, 0), threads=1, devices=1).status == "completed"
    for seed in SEEDS:
        run_dir = folder_of(tmp_path, cfg, seed)
        logged = pd.read_csv(run_dir / "csv" / "metrics.csv")
        evals = logged.dropna(subset=["test/exact_match/all"])
        want = {
            r["step"]: r["value"]
            for r in RunFolder(run_dir).results.read()
            if (r["split"], r["metric"], r["subtask"]) == ("test", "exact_match", "all")
        }
        assert dict(zip(evals.step, evals["test/exact_match/all"], strict=True)) == pytest.approx(want)
        losses = logged.dropna(subset=["train/loss"])
        assert list(losses.step) == [5, 10, 15, 20] and (losses["train/loss"] > 0).all()
        assert json.loads((run_dir / "run.json").read_text())["seed"] == seed
    # the seeds' losses differ: each file holds its own seed's numbers, not one seed's three times
    first = [
        pd.read_csv(folder_of(tmp_path, cfg, s) / "csv" / "metrics.csv")["train/loss"].dropna().iloc[0]
        for s in SEEDS
    ]
    assert len(set(first)) == len(SEEDS)


def test_each_packed_seed_gets_its_own_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from lightning.pytorch.loggers import WandbLogger

    from emergence_lab.run import loggers as run_loggers

    finished: list[tuple[str, str]] = []
    real_finish = run_loggers.finish_loggers

    def finish(loggers: list, status: str) -> None:
        finished.extend((lg.experiment.id, status) for lg in loggers if isinstance(lg, WandbLogger))
        real_finish(loggers, status)

    monkeypatch.setattr(run_loggers, "finish_loggers", finish)
    cfg = packed_cfg("logger=wandb", "trainer.max_steps=5", "trainer.eval_every=5")
    assert train_seeds(cfg, folder_of(tmp_path, cfg, 0), threads=1, devices=1).status == "completed"
    assert len(finished) == len(SEEDS) and {st for _, st in finished} == {"success"}
    assert len({wid for wid, _ in finished}) == len(SEEDS)  # three runs closed, not one closed three times
    for seed in SEEDS:
        run_dir = folder_of(tmp_path, cfg, seed)
        files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        # one run per seed, in the seed's own folder, with the id an unpacked run of that seed would have
        wandb_id = hashlib.sha256(f"{cfg.sweep}/{run_dir.name}".encode()).hexdigest()[:16]
        assert [f.name for f in files] == [f"run-{wandb_id}.wandb"]
    import wandb

    assert wandb.run is None  # the seeds' runs are their own, never the process's global run


def test_packing_is_not_part_of_the_run_id() -> None:
    plain = tiny_cfg("seed=1")
    assert run_id(packed_cfg("seed=1")) == run_id(plain)
    assert run_id(tiny_cfg("seed=1", "trainer.pack=auto")) == run_id(plain)
    assert run_id(seed_config(packed_cfg(), 1)) == run_id(plain)


def test_pack_size_rule() -> None:
    assert pack_size(3, 10_000, "cpu", 5) == 3
    assert pack_size(8, 10_000, "cpu", 2) == 2  # never more than the job's seeds
    assert pack_size("auto", 6_224, "cpu", 8) == 8  # width 16, depth 2: gain 1.31
    assert pack_size("auto", 24_736, "cpu", 8) == 1  # width 32: gain 1.01
    assert pack_size("auto", 5_000_000, "cuda", 3) == 3
    assert pack_size("auto", 20_000_000, "cuda", 3) == 1


def test_pack_gain_prices_gpu_packs_from_the_h200_measurement() -> None:
    from emergence_lab.run.pack_rule import pack_gain

    assert pack_gain(1, 98_624, "cuda") == 1.0 and pack_gain(1, 6_224, "cpu") == 1.0
    assert pack_gain(8, 98_624, "cuda") == pytest.approx(6.4)  # width 64, measured
    assert pack_gain(32, 98_624, "cuda") == pytest.approx(6.4)  # held at 8 models' gain (19.8x measured)
    assert pack_gain(4, 98_624, "cuda") == pytest.approx(1 + 5.4 * 3 / 7)  # linear from 1 to 8 models
    assert pack_gain(8, 3_934_080, "cuda") == pytest.approx(6.5 + (4.7 - 6.5) * 0.5, rel=1e-3)  # halfway
    assert pack_gain(8, 20_000_000, "cuda") == 1.0  # not measured: priced unpacked
    assert pack_gain(2, 6_224, "cpu") == pytest.approx(1.31)  # the CPU's 8-model gain for any pack


def test_a_packed_job_is_checked_and_shown_with_the_memory_of_all_its_models() -> None:
    from emergence_lab.launch.plan import describe, describe_job
    from emergence_lab.run.config_schema import ConfigError
    from emergence_lab.run.memory import MemoryBudget

    one = describe(tiny_cfg("seed=1"), ["seed=1"])
    runs = describe_job(packed_cfg(), ["seeds=[..]"])
    assert [r.pack for r in runs] == [3, 3, 3]
    assert all(r.mem_bytes == 3 * one.mem_bytes for r in runs)
    room_for_two = MemoryBudget(limit=int(2.5 * one.mem_bytes), source="test", local=False)
    describe(tiny_cfg("seed=1"), ["seed=1"], room_for_two)  # one model fits
    with pytest.raises(ConfigError, match="needs ~"):
        describe_job(packed_cfg(), ["seeds=[..]"], room_for_two)
    describe_job(packed_cfg("trainer.pack=1"), ["seeds=[..]"], room_for_two)  # unpacked: fits


# ---- sweeps -----------------------------------------------------------------------------------------------
SMOKE = ["experiment=smoke", "model.width=8", "model.depth=1", "trainer.threads=1", "logger=none"]


def test_dry_run_counts_packed_jobs_and_prices_packing(tmp_path: Path, capsys) -> None:
    from emergence_lab.cli import main as emergence_main
    from emergence_lab.launch.packing import pack_argv
    from emergence_lab.launch.plan import job_overrides, plan_from_cli
    from emergence_lab.run.pack_rule import pack_gain

    root = f"paths.root={tmp_path}"
    argv = ["-m", *SMOKE, "seed=0,1,2", "trainer.pack=2", root]
    packed_argv = pack_argv(argv)
    assert packed_argv[-2:] == ["seed=0", "seeds=[0,1],[2]"]
    master, runs = plan_from_cli(packed_argv)
    _, plain = plan_from_cli(["-m", *SMOKE, "seed=0,1,2", root])
    assert [r.run_id for r in runs] == [r.run_id for r in plain]  # the same runs and folders
    assert [r.pack for r in runs] == [2, 2, 1] and len(job_overrides(runs)) == 2
    startup = float(master.estimate.startup_s)
    gain = pack_gain(2, runs[0].n_params, "cpu")
    assert gain > 1.3
    assert runs[0].est_seconds == pytest.approx(
        (plain[0].est_seconds - startup) / gain + startup / 2, abs=0.1
    )
    assert runs[2].est_seconds == plain[2].est_seconds
    assert [r.mem_bytes for r in runs] == [2 * plain[0].mem_bytes] * 2 + [plain[2].mem_bytes]
    assert (
        emergence_main(["sweep", "smoke", *SMOKE[1:], "seed=0,1,2", "trainer.pack=2", root, "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    assert "smoke: 3 runs in 2 packed jobs" in out and "TOTAL 3 runs in 2 packed jobs," in out
    # unpacked: unchanged
    assert pack_argv(["-m", *SMOKE, "seed=0,1,2", root]) == ["-m", *SMOKE, "seed=0,1,2", root]


@pytest.mark.slow
def test_a_packed_sweep_trains_every_seed_into_its_own_folder(tmp_path: Path) -> None:
    from emergence_lab.cli import main as emergence_main
    from emergence_lab.launch.runs import read_manifest

    steps = ["trainer.max_steps=20", "trainer.eval_every=10", "trainer.ckpt_every=10"]
    command = ["sweep", "smoke", *SMOKE[1:], *steps, "seed=0,1,2", "trainer.pack=3", f"paths.root={tmp_path}"]
    assert emergence_main(command) == 0
    sweep = tmp_path / "sweeps" / "smoke"
    manifest = read_manifest(sweep)
    assert len(manifest) == 3 and {r["pack"] for r in manifest} == {3}
    for r in manifest:
        got = info(sweep / r["run_id"])
        assert got["status"] == "completed" and got["pack"] == {"size": 3, "seeds": [0, 1, 2]}
        assert sorted({v[0] for v in values(sweep / r["run_id"])}) == [0, 10, 20]
    assert emergence_main(command) == 0  # a rerun skips every completed seed
    assert all(info(sweep / r["run_id"])["attempts"] == 1 for r in manifest)
