"""The study's `analysis` block: what a sweep's author wants `emergence analyze` to draw.

A sweep folder's manifest (the contract's MANIFEST_FILE, written by `emergence sweep`, read here as plain
JSON) may carry

    "analysis": {"x": "n_params", "by": "depth", "metrics": [...], "heatmap_metric": "exact_match",
                 "primary_metric": "exact_match",
                 "figures": ["scale", "phase", "training", "artefact", "positions"]}

Its values are the defaults of `--x`, `--by`, `--metrics`, `--phase-metric`, `--primary-metric` and
`--figures`; an option given on the command line wins. The primary metric's curves (subtask `all`) are
tested on their own, outside the false-discovery control over the other curves. The manifests looked at
are those at the top of every input folder, and, for a folder of sweeps, at the top of each of its
subfolders. Several blocks that disagree: the first is used, with one warning. Cheap: nothing but the
manifests is read. No heavy imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emergence_lab.analysis.console import Console
from emergence_lab.analysis.options import BY_CHOICES, FIGURE_KINDS, X_CHOICES
from emergence_lab.contract import MANIFEST_FILE

# block key -> the command-line option it is the default of
OPTION_OF: dict[str, str] = {
    "x": "--x",
    "by": "--by",
    "metrics": "--metrics",
    "heatmap_metric": "--phase-metric",
    "primary_metric": "--primary-metric",
    "figures": "--figures",
}
LIST_KEYS = frozenset({"metrics", "figures"})


def find_manifests(inputs: list[str]) -> list[Path]:
    """The manifest files of the input folders (or of their subfolders, for a folder of sweeps)."""
    found: list[Path] = []
    for spec in inputs:
        if spec.startswith("wandb:"):
            continue
        path = Path(spec)
        if path.is_file() and path.name == MANIFEST_FILE:
            found.append(path)
        elif path.is_dir():
            if (path / MANIFEST_FILE).is_file():
                found.append(path / MANIFEST_FILE)
                continue
            try:
                children = sorted(c for c in path.iterdir() if not c.name.startswith("."))
            except OSError:
                continue
            found.extend(c / MANIFEST_FILE for c in children if (c / MANIFEST_FILE).is_file())
    return list(dict.fromkeys(found))


def _read_block(path: Path, console: Console) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        console.warn(f"{path}: cannot read the sweep manifest ({type(exc).__name__}: {exc})")
        return None
    block = doc.get("analysis") if isinstance(doc, dict) else None
    if not isinstance(block, dict) or not block:
        return None
    unknown = sorted(k for k in block if k not in OPTION_OF)
    if unknown:
        console.warn(f"{path}: unknown key(s) in the analysis block ignored: {', '.join(unknown)}")
    return {k: block[k] for k in OPTION_OF if k in block and block[k] is not None}


def read_study(inputs: list[str], console: Console) -> tuple[dict[str, Any], Path | None]:
    """The first analysis block of the inputs' sweeps and the manifest it came from ({} and None if
    there is none). Blocks that disagree with it are reported in one warning."""
    blocks = [(path, block) for path in find_manifests(inputs) if (block := _read_block(path, console))]
    if not blocks:
        return {}, None
    source, first = blocks[0]
    others = [(p, b) for p, b in blocks[1:] if b != first]
    if others:
        keys = sorted({k for _, b in others for k in set(b) | set(first) if b.get(k) != first.get(k)})
        names = ", ".join(str(p) for p, _ in others)
        console.warn(f"the sweeps' analysis blocks differ ({', '.join(keys)}): using {source}, not {names}")
    return first, source


def check_block(block: dict[str, Any], source: Path | str | None, hint: bool = True) -> str | None:
    """The first invalid value of a block, as one line naming the manifest and (with `hint`) the option
    that overrides it; None if every value is usable."""
    for key, value in block.items():
        where = f"{source}: analysis.{key}"
        fix = f" (fix the study, or give {OPTION_OF[key]})" if hint else ""
        if key in LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return f"{where} must be a list of names{fix}"
            if key == "figures":
                bad = [v for v in value if v not in FIGURE_KINDS]
                if bad:
                    return (
                        f"{where}: unknown figure kind {bad[0]!r}, choose from {', '.join(FIGURE_KINDS)}{fix}"
                    )
        elif not isinstance(value, str):
            return f"{where} must be a name{fix}"
        elif key == "x" and value not in X_CHOICES:
            return f"{where}: unknown scale axis {value!r}, choose from {', '.join(X_CHOICES)}{fix}"
        elif key == "by" and value not in BY_CHOICES:
            return f"{where}: {value!r} is not one of {', '.join(BY_CHOICES)}{fix}"
    return None
