"""Synthetic sweeps in the results schema, for the benchmark and for trying the pipeline without training.

Each answer position i is learned abruptly at its own scale (per-token accuracy = chance + (1 - chance)
* sigmoid(k (u_eff - u_i))), where u_eff = log10(n_params) shifted by training progress. Token accuracy is
the mean over positions, exact match their product: the mechanism behind a jump in exact match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from emergence_lab.contract import RESULTS_FILE, RUN_FILE, SCHEMA_VERSION


def synthetic_table(
    tasks: tuple[str, ...] = ("addition",),
    widths: tuple[int, ...] = (16, 32, 64, 128, 256),
    depths: tuple[int, ...] = (1, 2, 4),
    seeds: int = 3,
    steps: tuple[int, ...] = (0, 500, 1000, 2000),
    splits: tuple[str, ...] = ("test",),
    answer_len: int = 4,
    noise: float = 0.02,
    seed: int = 0,
) -> pd.DataFrame:
    """A tidy results table (every column training writes), vectorised: one row per measurement."""
    rng = np.random.default_rng(seed)
    w, d, s, t = np.meshgrid(
        np.array(widths), np.array(depths), np.arange(seeds), np.array(steps), indexing="ij"
    )
    w, d, s, t = (a.ravel() for a in (w, d, s, t))
    n_params = 12 * d * w.astype(np.int64) ** 2
    max_step = max(steps)
    progress = np.log10(np.maximum(t, 1) / max_step) * 0.7  # later steps act like a larger model
    frames = []
    for ti, task in enumerate(tasks):
        centre = 5.0 + 0.4 * ti  # each task turns on at its own scale
        for si, split in enumerate(splits):
            u_eff = np.log10(n_params) + progress - 0.5 * si  # OOD needs more scale
            pos_centres = centre + 0.15 * np.arange(answer_len)
            p = 0.1 + 0.9 * expit(6.0 * (u_eff[:, None] - pos_centres[None, :]))
            p = np.where(t[:, None] == 0, 0.1, p)
            p = np.clip(p + rng.normal(0, noise, p.shape), 0.0, 1.0)
            ta = p.mean(axis=1)
            em = np.clip(np.prod(p, axis=1) + rng.normal(0, noise / 2, len(ta)), 0.0, 1.0)
            metrics = {
                "exact_match": em,
                "token_accuracy": ta,
                "edit_distance": np.clip(1.0 - ta + rng.normal(0, noise / 2, len(ta)), 0, 1),
                "answer_logprob": np.log(np.maximum(p, 1e-4)).sum(axis=1),
                "brier": (1.0 - p).mean(axis=1) ** 2,
                "loss": 2.5 * (n_params / 1e4) ** -0.08 * (1 + 0.3 * (t == 0))
                + rng.normal(0, noise, len(ta)),
            }
            parts = [(m, "all", v) for m, v in metrics.items()]
            parts += [("token_accuracy", f"pos{i}", p[:, i]) for i in range(answer_len)]
            for metric, subtask, value in parts:
                frames.append(
                    pd.DataFrame(
                        {
                            "task": task,
                            "subtask": subtask,
                            "split": split,
                            "metric": metric,
                            "value": value,
                            "step": t,
                            "seed": s,
                            "width": w,
                            "depth": d,
                            "n_params": n_params,
                        }
                    )
                )
    df = pd.concat(frames, ignore_index=True)
    df["schema_version"] = SCHEMA_VERSION
    df["run_id"] = (
        df["task"]
        + "-w"
        + df["width"].astype(str)
        + "-d"
        + df["depth"].astype(str)
        + "-s"
        + df["seed"].astype(str)
    )
    df["sweep"] = "synthetic"
    df["tokens"] = df["step"].astype(np.int64) * 4096
    df["flops"] = 6.0 * df["n_params"] * df["tokens"]
    df["n_heads"] = np.maximum(df["width"] // 16, 1)
    df["n_params_total"] = df["n_params"] + 32 * df["width"]
    df["answer_len"] = answer_len
    return df


def write_run_folders(df: pd.DataFrame, root: Path) -> list[Path]:
    """One `<root>/<run_id>/results.jsonl` (+ run.json) per run, as training writes them."""
    columns = [c for c in df.columns]
    folders = []
    for run_id, rows in df.groupby("run_id", sort=True):
        folder = root / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        records = rows[columns].to_dict("records")
        (folder / RESULTS_FILE).write_text("".join(json.dumps(_plain(r)) + "\n" for r in records))
        (folder / RUN_FILE).write_text(
            json.dumps({"run_id": str(run_id), "status": "completed", "reason": None})
        )
        folders.append(folder)
    return folders


def _plain(record: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
