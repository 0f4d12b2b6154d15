"""The figures, per task, each as PNG, PDF and SVG under `<dir>/figures/`.

1. `scale_<task>`: every metric against scale (one panel per metric): seeds as points, the mean with its
   bootstrap CI band, the best fit, and the threshold with its CI band.
2. `phase_<task>`: width x depth heat map of one metric (final evaluation, mean over seeds).
3. `training_<task>`: every metric against training step, one line per model size.
4. `artefact_<task>`: exact match beside the continuous metric of the metric check, same x axis; the sizes
   where exact match sat at its floor are shaded, and token_accuracy^L is overlaid when L is known.
5. `positions_<task>`: token accuracy of every answer position against scale, one line per position.

On the step axis, panels that plot against scale show the largest model's curve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from analysis.console import Console
from analysis.curves import CurveResult
from analysis.parallel import Workers
from analysis.schema import CONTINUOUS, DISCONTINUOUS, TRAINING_METRICS, equals, higher_is_better
from analysis.style import (
    PALETTE,
    SEQUENTIAL,
    X_LABELS,
    log_ticks,
    log_x,
    new_figure,
    save,
    side_axes,
    style,
    suptitle,
)

CURVE_POINTS = 200
PARALLEL_MIN_FIGURES = 6
BAR_W = 1.0  # inches right of the panels for a colour bar and its label
KINDS: tuple[str, ...] = ("scale", "phase", "training", "artefact", "positions")


@dataclass
class FigureData:
    """What the figures need from an analysis (see `analysis.pipeline.Analysis`)."""

    table: pd.DataFrame
    x: str
    obs: pd.DataFrame
    points: pd.DataFrame
    thresholds: pd.DataFrame
    curves: list[CurveResult]
    metric_check: pd.DataFrame
    phase_metric: str | None = None
    nominal_sizes: bool | None = None  # lm-eval sizes read off model names (None: not lm-eval)

    @property
    def size_label(self) -> str:
        """lm-eval parameter counts are totals, and nominal when read off model names."""
        if self.nominal_sizes is None:
            return X_LABELS["n_params"]
        return "parameters (nominal, from model names)" if self.nominal_sizes else "parameters"

    @property
    def x_label(self) -> str:
        return self.size_label if self.x == "n_params" else X_LABELS.get(self.x, self.x)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "task"


def main_split(df: pd.DataFrame) -> str | None:
    splits = sorted(map(str, df["split"].dropna().unique()))
    return "test" if "test" in splits else (splits[0] if splits else None)


def metric_order(metrics: list[str]) -> list[str]:
    known = [m for m in TRAINING_METRICS if m in metrics]
    return known + sorted(m for m in metrics if m not in known)


def _select(df: pd.DataFrame, **equal: object) -> pd.DataFrame:
    mask = np.ones(len(df), bool)
    for col, value in equal.items():
        mask &= equals(df[col], value)
    return df.loc[mask]


def _largest_series(df: pd.DataFrame) -> pd.DataFrame:
    if "series" not in df.columns or df["series"].isna().all():
        return df
    return df.loc[df["series"] == df["series"].max()]


def _curve_index(curves: list[CurveResult]) -> dict[tuple[str, ...], CurveResult]:
    return {tuple(str(v) for v in c.key.values()): c for c in curves}


def _only(df: pd.DataFrame, task: str) -> pd.DataFrame:
    return df.loc[equals(df["task"], task)] if len(df) else df


def _task_data(data: FigureData, task: str, kind: str) -> FigureData:
    """The part of `data` one figure needs (small enough to send to a worker process). Only the phase
    diagram and the training figure read the raw table, and only its subtask `all`."""
    table = data.table.iloc[:0]
    if kind in ("phase", "training"):
        table = _only(data.table, task)
        table = table.loc[equals(table["subtask"], "all")]
    return FigureData(
        table,
        data.x,
        _only(data.obs, task),
        _only(data.points, task),
        _only(data.thresholds, task),
        [c for c in data.curves if str(c.key["task"]) == task],
        _only(data.metric_check, task),
        data.phase_metric,
        data.nominal_sizes if data.nominal_sizes is not None else _nominal(data.table),
    )


def _nominal(table: pd.DataFrame) -> bool | None:
    if "n_params_nominal" not in table.columns or table["n_params_nominal"].isna().all():
        return None
    return bool(table["n_params_nominal"].fillna(False).astype(bool).any())


def draw_all(
    data: FigureData, out_dir: Path, workers: Workers | None = None, console: Console | None = None
) -> list[Path]:
    """Draw every figure of every task; returns the written paths in a stable order. One figure is one
    work item, so two processes share fifteen figures evenly."""
    data = replace(data, nominal_sizes=_nominal(data.table))
    tasks = sorted(map(str, data.table["task"].dropna().unique()))
    items = [(_task_data(data, task, kind), task, kind) for task in tasks for kind in KINDS]
    work = partial(draw_figure, out_dir=out_dir)
    workers = workers or Workers(1)
    min_items = 2 if workers.started else PARALLEL_MIN_FIGURES  # running workers cost nothing to start
    nested = workers.map(work, items, min_items, console, "drawing figures")
    return [path for paths in nested for path in paths]


def draw_figure(item: tuple[FigureData, str, str], out_dir: Path) -> list[Path]:
    """Draw one kind of figure for one task and save it in every format ([] if it does not apply)."""
    data, task, kind = item
    curves = _curve_index(data.curves)
    points = _largest_series(data.points)
    obs = _largest_series(data.obs)
    thresholds = _largest_series(data.thresholds)
    with style():
        if kind == "scale":
            fig = _scale_figure(data, task, points, obs, thresholds, curves)
        elif kind == "phase":
            fig = _phase_figure(data, task)
        elif kind == "training":
            fig = _training_figure(data, task)
        elif kind == "artefact":
            fig = _artefact_figure(data, task, points, obs, thresholds, curves)
        else:
            fig = _positions_figure(data, task, points)
        if fig is None:
            return []
        if fig.get_layout_engine() is not None:
            # Run the layout once, then freeze it: with no layout engine, savefig draws each format once
            # instead of twice.
            fig.draw_without_rendering()
            fig.set_layout_engine(None)
        return save(fig, out_dir / "figures" / f"{kind}_{safe_name(task)}")


def _log_x(ax, label: str, values: pd.Series | np.ndarray) -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    log_x(ax, label, *((v.min(), v.max()) if v.size else (None, None)))


def _arrow(metric: str) -> str:
    return "↑" if higher_is_better(metric) else "↓"


def _panel(
    ax,
    data: FigureData,
    task: str,
    split: str,
    metric: str,
    points: pd.DataFrame,
    obs: pd.DataFrame,
    thresholds: pd.DataFrame,
    curves: dict[tuple[str, ...], CurveResult],
    color: str,
    label: str | None = None,
) -> str | None:
    """Seeds, mean +- CI, fit and threshold of one curve on `ax`; returns its classification."""
    pts = _select(points, task=task, split=split, subtask="all", metric=metric).sort_values("x")
    if pts.empty:
        return None
    seeds = _select(obs, task=task, split=split, subtask="all", metric=metric)
    ax.scatter(seeds["x"], seeds["value"], s=7, color=color, alpha=0.35, linewidths=0, zorder=2)
    ax.fill_between(pts["x"], pts["ci_low"], pts["ci_high"], color=color, alpha=0.2, linewidth=0, zorder=1)
    ax.plot(pts["x"], pts["mean"], "o-", color=color, markersize=3, zorder=3, label=label)
    row = _select(thresholds, task=task, split=split, subtask="all", metric=metric)
    if row.empty:
        return None
    row = row.iloc[0]
    key = [task, split, "all", metric] + ([str(row["series"])] if "series" in row.index else [])
    curve = curves.get(tuple(key))
    if curve is not None and curve.best:
        grid = np.linspace(np.log10(pts["x"].min()), np.log10(pts["x"].max()), CURVE_POINTS)
        ax.plot(10**grid, curve.predict(grid), "--", color="0.25", linewidth=1.0, zorder=4)
    if np.isfinite(row.get("threshold", np.nan)):
        ax.axvline(row["threshold"], color=color, linestyle=":", linewidth=1.2, zorder=4)
        if np.isfinite(row.get("threshold_low", np.nan)) and np.isfinite(row.get("threshold_high", np.nan)):
            ax.axvspan(row["threshold_low"], row["threshold_high"], color=color, alpha=0.12, linewidth=0)
    return str(row["classification"])


def _scale_figure(data, task, points, obs, thresholds, curves) -> Figure | None:
    task_pts = _select(points, task=task, subtask="all")
    metrics = metric_order(sorted(map(str, task_pts["metric"].unique())))
    if not metrics:
        return None
    splits = sorted(map(str, task_pts["split"].unique()), key=lambda s: (s != "test", s))
    fig, axes = new_figure(len(metrics), bottom=0.3 if len(splits) > 1 else 0.0, title_lines=2)
    for ax, metric in zip(axes, metrics, strict=True):
        labels = []
        for i, split in enumerate(splits):
            verdict = _panel(
                ax, data, task, split, metric, points, obs, thresholds, curves, PALETTE[i % 8], split
            )
            if verdict:
                labels.append(verdict if len(splits) == 1 else f"{split}: {verdict}")
        ax.set_title(f"{metric} {_arrow(metric)}\n{' · '.join(labels)}", fontsize=8.5)
        _log_x(ax, data.x_label, task_pts["x"])
    if len(splits) > 1:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=len(splits))
    suptitle(fig, f"{task}: metrics against scale")
    return fig


def _phase_metric(data: FigureData, df: pd.DataFrame) -> str | None:
    metrics = sorted(map(str, df["metric"].unique()))
    if data.phase_metric in metrics:
        return data.phase_metric
    return DISCONTINUOUS if DISCONTINUOUS in metrics else (metric_order(metrics) or [None])[0]


def _final(df: pd.DataFrame) -> pd.DataFrame:
    from analysis.aggregate import final_rows

    return final_rows(df)


def _phase_figure(data: FigureData, task: str) -> Figure | None:
    if not {"width", "depth"} <= set(data.table.columns):
        return None
    df = _select(data.table, task=task, subtask="all")
    split = main_split(df)
    df = _select(df, split=split).dropna(subset=["width", "depth"])
    metric = _phase_metric(data, df) if len(df) else None
    if metric is None:
        return None
    df = _final(_select(df, metric=metric))
    grid = df.groupby(["depth", "width"])["value"].mean().unstack("width").sort_index()
    if grid.empty:
        return None
    fig = Figure(figsize=(1.2 + 0.55 * grid.shape[1], 1.2 + 0.45 * grid.shape[0]), layout="constrained")
    fig.set_size_inches(max(fig.get_figwidth(), 3.6), max(fig.get_figheight(), 2.8))
    ax = fig.subplots()
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(
        values, origin="lower", aspect="auto", cmap=SEQUENTIAL, norm=Normalize(*_limits(values))
    )
    ax.set_xticks(range(grid.shape[1]), [str(int(w)) for w in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(int(d)) for d in grid.index])
    ax.set_xlabel(X_LABELS["width"])
    ax.set_ylabel(X_LABELS["depth"])
    ax.grid(False)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6.5,
                color="w" if v < 0.6 * np.nanmax(values) else "k",
            )
    fig.colorbar(image, ax=ax, label=f"{metric} {_arrow(metric)}")
    ax.set_title(f"{task}: {metric} ({split}, final step)")
    return fig


def _limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _training_figure(data: FigureData, task: str) -> Figure | None:
    if "step" not in data.table.columns or "n_params" not in data.table.columns:
        return None
    df = _select(data.table, task=task, subtask="all")
    df = _select(df, split=main_split(df)) if len(df) else df
    df = df.loc[(df["step"].astype("float64") > 0).to_numpy() & df["n_params"].notna().to_numpy()]
    if df["step"].nunique() < 2:
        return None
    # One group-by for every line of every panel: mean over seeds per (metric, size, step).
    means = (
        pd.DataFrame(
            {
                "metric": df["metric"].astype(str).to_numpy(),
                "size": df["n_params"].to_numpy(dtype="float64"),
                "step": df["step"].to_numpy(dtype="float64"),
                "value": df["value"].to_numpy(dtype="float64"),
            }
        )
        .groupby(["metric", "size", "step"], sort=True)["value"]
        .mean()
    )
    metrics = metric_order(sorted(means.index.get_level_values("metric").unique()))
    sizes = np.sort(means.index.get_level_values("size").unique().to_numpy())
    lo, hi = sizes.min(), sizes.max()
    norm = LogNorm(lo, hi) if hi > lo else LogNorm(lo / 2, lo * 2)
    cmap = _cmap()
    steps = means.index.get_level_values("step")
    fig, axes = new_figure(len(metrics), right=BAR_W)
    for ax, metric in zip(axes, metrics, strict=True):
        for size, line in means.loc[metric].groupby(level="size", sort=True):
            ax.plot(
                line.index.get_level_values("step"), line.to_numpy(), color=cmap(norm(size)), linewidth=1.1
            )
        ax.set_title(f"{metric} {_arrow(metric)}")
        _log_x(ax, X_LABELS["step"], steps)
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=side_axes(fig, BAR_W), label=data.size_label)
    log_ticks(bar.ax.yaxis, np.log10(norm.vmax / norm.vmin))
    suptitle(fig, f"{task}: metrics over training, one line per model size")
    return fig


def _cmap():
    from matplotlib import colormaps

    return colormaps[SEQUENTIAL]


def _artefact_figure(data, task, points, obs, thresholds, curves) -> Figure | None:
    mc = data.metric_check
    if mc.empty:
        return None
    rows = mc.loc[equals(mc["task"], task)]
    if rows.empty:
        return None
    row = rows.iloc[-1]  # on the step axis, the largest model's check
    split, cont = str(row["split"]), str(row["continuous_metric"])
    fig, axes = new_figure(2, sharex=True)
    for ax, metric, color in ((axes[0], DISCONTINUOUS, PALETTE[1]), (axes[1], cont, PALETTE[0])):
        verdict = _panel(ax, data, task, split, metric, points, obs, thresholds, curves, color)
        ax.set_title(f"{metric} {_arrow(metric)}" + (f" ({verdict})" if verdict else ""))
        start = row.get("em_rise_start", np.nan)
        if row["verdict"] != "no_jump" and np.isfinite(start):
            ax.axvspan(_select(points, task=task)["x"].min(), start, color="0.5", alpha=0.12, linewidth=0)
        _log_x(ax, data.x_label, _select(points, task=task)["x"])
    length = row.get("answer_len", np.nan)
    if np.isfinite(length) and CONTINUOUS[0] in set(map(str, _select(points, task=task)["metric"].unique())):
        ta = _select(points, task=task, split=split, subtask="all", metric=CONTINUOUS[0]).sort_values("x")
        axes[0].plot(
            ta["x"],
            ta["mean"] ** int(length),
            "-",
            color="0.4",
            linewidth=1.0,
            label=f"token_accuracy^{int(length)}",
        )
        axes[0].legend(loc="lower right")
    suptitle(fig, f"{task}: exact match vs {cont} — verdict: {row['verdict']}")
    return fig


def natural_key(text: str) -> tuple:
    """place2 < place10: digit runs compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def position_subtasks(points: pd.DataFrame) -> list[str]:
    """Answer-position subtasks ("pos0", "place1", "query0", "step1", ...): training reports only token
    accuracy for them, while "all" and task-specific subtasks carry every metric."""
    metrics = points.groupby(points["subtask"].astype(str), observed=True)["metric"].agg(
        lambda m: set(map(str, m))
    )
    return sorted((s for s, m in metrics.items() if s != "all" and m == {CONTINUOUS[0]}), key=natural_key)


def _positions_figure(data: FigureData, task: str, points: pd.DataFrame) -> Figure | None:
    task_pts = _select(points, task=task)
    if task_pts.empty:
        return None
    split = main_split(task_pts)
    task_pts = _select(task_pts, split=split)
    positions = position_subtasks(task_pts)
    if len(positions) < 2:
        return None
    pts = _select(task_pts, metric=CONTINUOUS[0])
    fig = Figure(figsize=(4.6, 3.0), layout="constrained")
    ax = fig.subplots()
    cmap = _cmap()
    for i, pos in enumerate(positions):
        line = _select(pts, subtask=pos).sort_values("x")
        ax.plot(
            line["x"],
            line["mean"],
            "o-",
            markersize=2.5,
            color=cmap(i / max(len(positions) - 1, 1)),
            label=pos,
        )
    overall = _select(pts, subtask="all").sort_values("x")
    if len(overall):
        ax.plot(overall["x"], overall["mean"], "--", color="k", linewidth=1.2, label="all")
    ax.set_ylabel(f"{CONTINUOUS[0]} {_arrow(CONTINUOUS[0])}")
    ax.set_title(f"{task}: token accuracy per position ({split})")
    fig.legend(ncols=2 if len(positions) > 8 else 1, loc="outside right upper", fontsize=6.5)
    _log_x(ax, data.x_label, pts["x"])
    return fig
