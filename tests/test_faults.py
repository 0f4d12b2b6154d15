"""Faults injected into runs: nothing lost, nothing faked, nothing executed. Each test failed on the code
before its fix. CI runs as root, so errors are injected (patched writers, /dev/full), never made by chmod."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
from pathlib import Path

import pytest
import torch
from conftest import TINY
from test_run import read_info, tiny_cfg

from emergence_lab.cli import main as emergence_main
from emergence_lab.launch.runs import exit_code, run_states, write_manifest
from emergence_lab.launch.status import status_cli
from emergence_lab.run.folder import RunFolder, atomic_write_text
from emergence_lab.run.recorder import RunRecorder
from emergence_lab.run.train import train

pytestmark = pytest.mark.faults


class _Touch:
    """A pickle that creates a file when it is loaded with weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_is_refused_and_never_executed(tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 10, "payload": _Touch(marker)}, run_dir / "checkpoints" / "last.ckpt")
    outcome = train(tiny_cfg(), run_dir, threads=1, devices=1)
    assert not marker.exists()
    assert outcome.status == "failed"
    info = read_info(run_dir)
    assert info["status"] == "failed" and "\n" not in info["reason"]
    assert f"cannot load checkpoint {run_dir / 'checkpoints' / 'last.ckpt'}" in info["reason"]
    assert not (run_dir / "results.jsonl").exists()


def _stop_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the next run stop at `step` as SIGUSR1 would: checkpoint, status "interrupted"."""
    original = RunRecorder.on_train_batch_end

    def hook(self, trainer, *args):  # type: ignore[no-untyped-def]
        if trainer.global_step == step:
            self.stop_signal = signal.SIGUSR1
        original(self, trainer, *args)

    monkeypatch.setattr(RunRecorder, "on_train_batch_end", hook)


def test_resume_loads_weights_only_and_gives_the_numbers_of_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert train(tiny_cfg(), whole, threads=1, devices=1).status == "completed"
    with monkeypatch.context() as m:
        _stop_at(m, 10)
        assert train(tiny_cfg(), part, threads=1, devices=1).status == "interrupted"
    assert read_info(part)["step"] == 10
    calls: list[object] = []
    original = torch.load

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert train(tiny_cfg(), part, threads=1, devices=1).status == "completed"
    assert len(calls) >= 2 and all(c is True for c in calls)  # ours and Lightning's
    assert read_info(part)["resumed_from_steps"] == [10]
    assert (part / "results.jsonl").read_text() == (whole / "results.jsonl").read_text()


# ---- a reused run folder with another config ------------------------------------------------------------
@pytest.mark.parametrize("status", ["completed", "interrupted"])
def test_a_folder_of_another_run_is_refused_untouched(tmp_path: Path, status: str, capsys) -> None:
    run_dir = tmp_path / "run"
    with pytest.MonkeyPatch.context() as m:
        if status == "interrupted":
            _stop_at(m, 10)
        assert train(tiny_cfg(), run_dir, threads=1, devices=1).status == status
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    old_id = read_info(run_dir)["run_id"]
    capsys.readouterr()
    outcome = train(tiny_cfg("model.width=32"), run_dir, threads=1, devices=1)
    assert outcome.status == "refused"
    new_id = read_info(run_dir)["run_id"]
    assert new_id == old_id
    err = capsys.readouterr().err
    assert f"holds run {old_id}, not addition-w32-" in err and len(err.strip().splitlines()) == 1
    after = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # no row of another run id, no new attempt, the checkpoint untouched


def test_the_train_command_exits_2_on_a_folder_of_another_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(
        json.dumps({"run_id": "addition-w16-d1-s0-00000000", "status": "completed"})
    )
    assert emergence_main(["train", *TINY, "model.width=32", f"hydra.run.dir={run_dir}"]) == 2
    assert not (run_dir / "results.jsonl").exists()


# ---- permissions ------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_written_atomically_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600


def test_run_files_are_readable_by_others_after_a_resume(tmp_path: Path, umask_022, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        _stop_at(m, 10)
        assert train(tiny_cfg(), run_dir, threads=1, devices=1).status == "interrupted"
    RunFolder(run_dir).results.append([{"step": 20, "value": 0.0}])  # a row the resume drops: rewritten
    assert train(tiny_cfg(), run_dir, threads=1, devices=1).status == "completed"
    write_manifest(tmp_path, "s", [])
    for name in ("run/run.json", "run/config.yaml", "run/results.jsonl", "manifest.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


# ---- a corrupt run.json ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"status": "comp', "[]", "\xff\xfe"])
def test_a_corrupt_run_json_shows_as_unreadable_with_its_path(tmp_path: Path, text: str, capsys) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_bytes(text.encode("latin-1"))
    write_manifest(tmp_path, "s", [])
    assert status_cli([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "unreadable: 1" in out and "pending: 0" in out
    (state,) = run_states(tmp_path)
    assert state["status"] == "unreadable" and str(tmp_path / "a" / "run.json") in state["reason"]
    assert exit_code([state["status"]], None) == 1


def test_training_into_a_folder_with_a_corrupt_run_json_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "run.json").write_text("{")
    assert train(tiny_cfg(), tmp_path, threads=1, devices=1).status == "refused"
    assert f"unreadable {tmp_path / 'run.json'}" in capsys.readouterr().err
    assert (tmp_path / "run.json").read_text() == "{"


# ---- the live step of a running run ---------------------------------------------------------------------
def test_status_shows_the_step_of_a_running_run(tmp_path: Path, monkeypatch, capsys) -> None:
    seen: list[tuple[int, dict]] = []
    original = RunRecorder._evaluate

    def spy(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        seen.append((trainer.global_step, read_info(self.folder.path)))
        original(self, trainer, pl_module)

    monkeypatch.setattr(RunRecorder, "_evaluate", spy)
    run_dir = tmp_path / "sweep" / "a"
    assert train(tiny_cfg(), run_dir, threads=1, devices=1).status == "completed"
    at_20 = dict(seen)[20]  # run.json as the run saw it mid-way: step 10 checkpointed, still running
    assert at_20["status"] == "running" and at_20["step"] == 10 and at_20["max_steps"] == 20
    (run_dir / "run.json").write_text(json.dumps(at_20))
    assert status_cli([str(tmp_path / "sweep")]) == 0
    assert "10/20" in capsys.readouterr().out


# ---- a full disk, a read-only folder ----------------------------------------------------------------------
def _no_traceback(capsys) -> str:  # type: ignore[no-untyped-def]
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return out.out + out.err


def test_a_full_disk_at_a_checkpoint_fails_the_run_in_one_line_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    def full(self, checkpoint, path, storage_options=None):  # type: ignore[no-untyped-def]
        Path(path).parent.mkdir(exist_ok=True)
        with open(path, "wb") as fh:  # half a checkpoint, then the disk is full
            fh.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    assert train(tiny_cfg(), tmp_path, threads=1, devices=1).status == "failed"
    info = read_info(tmp_path)
    assert info["status"] == "failed" and info["step"] == 10
    assert (
        info["reason"].startswith("OSError: [Errno 28] No space left on device")
        and "\n" not in info["reason"]
    )
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []
    assert "No space left on device" in (tmp_path / "error.log").read_text()
    out = _no_traceback(capsys)
    assert [line for line in out.splitlines() if "No space left" in line] == [
        f"[failed] {info['run_id']} -> {tmp_path} ({info['reason']})"
    ]


def test_a_folder_that_turns_read_only_mid_run_fails_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """From the step-10 evaluation on, every write in the run folder fails with EROFS: results, error.log,
    run.json. The run ends failed with one line; run.json keeps its last state (nothing can replace it)."""
    import emergence_lab.run.folder as folder_module

    read_only = False

    def guard(original):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            if read_only:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return original(*args, **kwargs)

        return call

    class Os:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(os, name)

        open = staticmethod(guard(os.open))

    monkeypatch.setattr(folder_module, "os", Os())
    monkeypatch.setattr(folder_module.tempfile, "mkstemp", guard(folder_module.tempfile.mkstemp))
    original = RunRecorder._evaluate

    def evaluate(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        nonlocal read_only
        read_only = read_only or trainer.global_step == 10
        original(self, trainer, pl_module)

    monkeypatch.setattr(RunRecorder, "_evaluate", evaluate)
    assert train(tiny_cfg(), tmp_path, threads=1, devices=1).status == "failed"
    info = read_info(tmp_path)
    assert info["status"] == "running" and info["reason"] is None  # its state before the folder turned
    assert not (tmp_path / "error.log").exists() and [p.name for p in tmp_path.rglob("*.tmp")] == []
    out = _no_traceback(capsys)
    (line,) = [line for line in out.splitlines() if "Read-only" in line]
    assert line.startswith(
        f"[failed] {info['run_id']} -> {tmp_path} (OSError: [Errno 30] Read-only file system"
    )
    assert "error.log not written" in line and "run.json not updated" in line


def test_the_train_command_refuses_an_unwritable_run_folder_in_one_line(capfd) -> None:
    run_dir = Path("/sys/emergence-lab-test")  # sysfs: mkdir fails even for root
    assert emergence_main(["train", *TINY, f"hydra.run.dir={run_dir}"]) == 1
    err = capfd.readouterr().err
    assert err.strip() == f"emergence train: cannot write the run folder {run_dir}: Operation not permitted"


# ---- a corrupt checkpoint ---------------------------------------------------------------------------------
def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert train(tiny_cfg("trainer.max_steps=30"), whole, threads=1, devices=1).status == "completed"
    with monkeypatch.context() as m:
        _stop_at(m, 20)
        assert train(tiny_cfg("trainer.max_steps=30"), part, threads=1, devices=1).status == "interrupted"
    ckpts = part / "checkpoints"
    assert torch.load(ckpts / "prev.ckpt", weights_only=True)["global_step"] == 10
    (ckpts / "last.ckpt").write_bytes((ckpts / "last.ckpt").read_bytes()[:1000])  # torn
    capsys.readouterr()
    assert train(tiny_cfg("trainer.max_steps=30"), part, threads=1, devices=1).status == "completed"
    out = capsys.readouterr().out
    assert f"[checkpoint] cannot load checkpoint {ckpts / 'last.ckpt'}" in out
    assert "[resume] addition-w16-d1-s0-" in out and " from step 10 (" in out
    assert read_info(part)["resumed_from_steps"] == [10]
    assert (ckpts / "last.ckpt.bad").exists()
    assert (part / "results.jsonl").read_text() == (whole / "results.jsonl").read_text()


def test_when_no_checkpoint_loads_the_reason_says_what_to_delete(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name in ("last.ckpt", "prev.ckpt"):
        (ckpts / name).write_bytes(b"not a checkpoint")
    assert train(tiny_cfg(), tmp_path, threads=1, devices=1).status == "failed"
    reason = read_info(tmp_path)["reason"]
    assert f"cannot load checkpoint {ckpts / 'last.ckpt'}" in reason
    assert f"cannot load checkpoint {ckpts / 'prev.ckpt'}" in reason
    assert reason.endswith(f"delete {ckpts} to restart this run from step 0")
    # a rerun says the same: nothing was renamed or half-repaired
    assert train(tiny_cfg(), tmp_path, threads=1, devices=1).status == "failed"
    assert read_info(tmp_path)["reason"] == reason


# ---- DDP: each rank its own batches, one device as before ----------------------------------------------
def test_ranks_draw_different_batches_and_one_device_draws_the_step_batch(monkeypatch) -> None:
    from types import SimpleNamespace

    from test_module import build

    module = build(width=16, depth=1, batch_size=4)
    drawn: dict[tuple[int, int], torch.Tensor] = {}
    original = module.task.train_batch

    for world, rank in ((1, 0), (2, 0), (2, 1)):
        module._trainer = SimpleNamespace(
            world_size=world, global_rank=rank, global_step=3, log_every_n_steps=10**9
        )

        def spy(n, seed, step, device, key=(world, rank)):  # type: ignore[no-untyped-def]
            batch = original(n, seed, step, device)
            drawn[key] = batch.tokens
            return batch

        monkeypatch.setattr(module.task, "train_batch", spy)
        module.training_step(0, 0)
    assert torch.equal(
        drawn[(1, 0)], original(4, 0, 3, "cpu").tokens
    )  # one device: the batch of (seed, step)
    assert not torch.equal(drawn[(2, 0)], drawn[(2, 1)])
    assert not torch.equal(drawn[(2, 1)], drawn[(1, 0)])


def test_a_folder_without_run_json_is_refused_when_its_checkpoint_is_another_runs(
    tmp_path: Path, capsys
) -> None:
    run_dir = tmp_path / "run"
    with pytest.MonkeyPatch.context() as m:
        _stop_at(m, 10)
        assert train(tiny_cfg(), run_dir, threads=1, devices=1).status == "interrupted"
    old_id = read_info(run_dir)["run_id"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["emergence_run_id"] == old_id
    (run_dir / "run.json").unlink()
    assert train(tiny_cfg("model.width=32"), run_dir, threads=1, devices=1).status == "refused"
    assert f"holds run {old_id}, not addition-w32-" in capsys.readouterr().err
    assert not (run_dir / "run.json").exists()
    assert train(tiny_cfg(), run_dir, threads=1, devices=1).status == "completed"  # its own config resumes
    assert read_info(run_dir)["resumed_from_steps"] == [10]
