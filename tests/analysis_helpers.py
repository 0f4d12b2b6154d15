"""Shared helpers of the analysis tests: synthetic curves with known answers, and small file writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

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
        "schema_version": 1,
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
    }
    row.update(overrides)
    return row


def png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def small_sweep(root: Path) -> Path:
    """A small synthetic sweep of run folders (one task, two splits, 10 sizes, 2 seeds, 3 evaluations)."""
    from analysis.synthetic import synthetic_table, write_run_folders

    df = synthetic_table(
        widths=(16, 32, 64, 128, 256), depths=(1, 2), seeds=2, steps=(0, 500, 1000), splits=("test", "ood")
    )
    write_run_folders(df, root)
    return root
