"""A plain (non-editable) install works from any folder: conf/ and the studies ship inside the package, the
analysis package lives under `emergence_lab`, and the build records its version and commit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from this checkout and installed (without dependencies) into a folder."""
    root = tmp_path_factory.mktemp("plain-install")
    wheels, target = root / "wheels", root / "site"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("emergence_lab-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    return target


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_plain_install_runs_from_another_folder(installed: Path, tmp_path: Path) -> None:
    where = _run(
        installed, tmp_path, "-c", "import emergence_lab, emergence_lab.analysis as a; print(a.__file__)"
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed / "emergence_lab" / "analysis"))

    job = _run(installed, tmp_path, "-m", "emergence_lab", "train", "--cfg", "job", "model.width=24")
    assert job.returncode == 0, job.stderr
    assert "width: 24" in job.stdout and "_target_: emergence_lab.tasks.addition.Addition" in job.stdout

    plan = _run(installed, tmp_path, "-m", "emergence_lab", "sweep", "smoke", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "TOTAL 4 runs" in plan.stdout
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.jsonl"))


@pytest.mark.slow
def test_a_plain_install_records_its_version_and_commit(installed: Path, tmp_path: Path) -> None:
    got = _run(
        installed, tmp_path, "-c", "import emergence_lab._version as v; print(v.__version__, v.__commit__)"
    )
    assert got.returncode == 0, got.stderr
    version, commit = got.stdout.split()
    head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the build saw its commit
        assert commit.lstrip("g").startswith(head.stdout.strip())
    assert version and version != "0.0.0"
    state = _run(
        installed, tmp_path, "-c", "from emergence_lab.run.provenance import git_state; print(git_state())"
    )
    assert state.returncode == 0, state.stderr
    assert f"'git_sha': '{commit.removeprefix('g')}'" in state.stdout


@pytest.mark.slow
def test_no_top_level_analysis_package_is_installed(installed: Path, tmp_path: Path) -> None:
    assert not (installed / "analysis").exists()
    got = _run(installed, tmp_path, "-c", "import analysis")
    assert got.returncode != 0
