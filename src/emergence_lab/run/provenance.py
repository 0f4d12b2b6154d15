"""Where a run's code came from: the git commit (or the build's, in a plain install) and package versions."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def git_state(start: Path | None = None) -> dict[str, Any]:
    """The commit the code came from and whether tracked files had uncommitted changes: git's answer when
    this file is tracked by a checkout (an editable install), else the commit recorded when the package was
    built (a plain install, even one inside some other repository's virtualenv), else "unknown"."""
    cwd = Path(start or Path(__file__).parent)
    try:
        subprocess.run(
            ["git", "ls-files", "--error-unmatch", Path(__file__).name],
            cwd=Path(__file__).parent,
            capture_output=True,
            check=True,
            timeout=10,
        )
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return {"git_sha": sha, "git_dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):  # not a git checkout (a plain install): the build's commit
        return {"git_sha": _built_commit(), "git_dirty": None}


def _built_commit() -> str:
    try:
        from emergence_lab._version import __commit__
    except ImportError:
        return "unknown"
    return str(__commit__ or "unknown").removeprefix("g")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "lightning", "hydra-core", "omegaconf", "wandb", "numpy", "emergence-lab"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
