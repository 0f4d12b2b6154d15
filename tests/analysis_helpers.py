"""Shared helpers of the analysis tests: synthetic curves with known answers, and small file writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from emergence_lab.contract import MANIFEST_FILE, SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"


def sizes(lo: float = 4.0, hi: float = 8.0, n: int = 13) -> np.ndarray:
    """log10 sizes, evenly spaced."""
    return np.linspace(lo, hi, n)


def curve_table(
    u: np.ndarray,
    values_fn,
    seeds: int = 3,
    noise: float = 0.02,
    seed: int = 0,
    task: str = "toy",
    metric: str = "exact_match",
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> pd.DataFrame:
    """Final-step rows of one curve: `values_fn(u)` plus Gaussian noise per seed."""
    rng = np.random.default_rng(seed)
    rows = []
    for ui in u:
        for s in range(seeds):
            value = float(values_fn(np.array([ui]))[0] + rng.normal(0.0, noise))
            if clip is not None:
                value = float(np.clip(value, *clip))
            n_params = round(10**ui)
            rows.append(
                {
                    "task": task,
                    "subtask": "all",
                    "split": "test",
                    "metric": metric,
                    "value": value,
                    "n_params": n_params,
                    "seed": s,
                    "run_id": f"{task}-{n_params}-s{s}",
                    "step": 1000,
                }
            )
    return pd.DataFrame(rows)


def sigmoid(floor: float, ceiling: float, u0: float, k: float):
    return lambda u: floor + (ceiling - floor) * expit(k * (u - u0))


def linear(a: float, b: float):
    return lambda u: a + b * u


def flat(level: float):
    return lambda u: np.full_like(u, level, dtype=float)


def power_law_tokens(length: int, alpha: float = 2.0, uc: float = 5.5):
    """Schaeffer et al.'s mirage: per-token cross-entropy falls as a power law of size,
    CE = 10^(-alpha (u - uc)); per-token accuracy is exp(-CE), exact match its L-th power.
    Returns (token_accuracy(u), exact_match(u))."""

    def token(u: np.ndarray) -> np.ndarray:
        return np.exp(-(10.0 ** (-alpha * (u - uc))))

    return token, (lambda u: token(u) ** length)


def write_jsonl(path: Path, rows: list[dict], extra_lines: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines)
    path.write_text(text)
    return path


def schema_row(**overrides) -> dict:
    row = {
        "schema_version": SCHEMA_VERSION,
        "run_id": "r1",
        "sweep": "s",
        "task": "addition",
        "subtask": "all",
        "split": "test",
        "metric": "exact_match",
        "value": 0.5,
        "step": 100,
        "tokens": 1000,
        "flops": 1e9,
        "seed": 0,
        "width": 64,
        "depth": 2,
        "n_heads": 4,
        "n_params": 98304,
        "n_params_total": 100000,
        "answer_len": 4,
        "n_examples": 1000,
    }
    row.update(overrides)
    return row


def png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def small_sweep(root: Path) -> Path:
    """A small synthetic sweep of run folders (one task, two splits, 10 sizes, 2 seeds, 3 evaluations)."""
    from emergence_lab.analysis.synthetic import synthetic_table, write_run_folders

    df = synthetic_table(
        widths=(16, 32, 64, 128, 256), depths=(1, 2), seeds=2, steps=(0, 500, 1000), splits=("test", "ood")
    )
    write_run_folders(df, root)
    return root


def two_depth_table(u0: float = 5.5, seeds: int = 3, noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Exact match of a width x depth sweep where only depth 2 learns the task: depth 1 stays at 0.05
    whatever its size, depth 2 rises as a sigmoid with midpoint 10^u0 parameters. The two depths'
    sizes interleave on the parameter axis (depth 2 has 2x the parameters of depth 1 at each width), as
    in a real sweep."""
    rng = np.random.default_rng(seed)
    rows = []
    for depth, rise in ((1, flat(0.05)), (2, sigmoid(0.05, 0.95, u0, 8.0))):
        for i, ui in enumerate(sizes(4.0, 7.0, 10) + np.log10(depth)):
            for s in range(seeds):
                n_params = round(10**ui)
                value = float(np.clip(rise(np.array([ui]))[0] + rng.normal(0.0, noise), 0.0, 1.0))
                rows.append(
                    {
                        "task": "toy",
                        "subtask": "all",
                        "split": "test",
                        "metric": "exact_match",
                        "value": value,
                        "n_params": n_params,
                        "width": 8 * (i + 1),
                        "depth": depth,
                        "seed": s,
                        "run_id": f"toy-w{8 * (i + 1)}-d{depth}-s{s}",
                        "step": 1000,
                    }
                )
    return pd.DataFrame(rows)


def write_manifest(sweep: Path, analysis: dict | None, name: str = "demo") -> Path:
    """A sweep folder's manifest as `emergence sweep` writes it (runs listed, study block)."""
    sweep.mkdir(parents=True, exist_ok=True)
    doc = {"sweep": name, "analysis": analysis or {}, "runs": [{"run_id": "r1", "width": 8, "depth": 1}]}
    path = sweep / MANIFEST_FILE
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
