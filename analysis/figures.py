"""The figures, per task, each as PNG, PDF and SVG under `<dir>/figures/`.

1. `scale_<task>`: every metric against scale (one panel per metric, or those of the study's `metrics`):
   seeds as points, the mean with its bootstrap CI band, the best fit, and the threshold with its CI.
2. `phase_<task>`: width x depth heat map of one metric (final evaluation, mean over seeds).
3. `training_<task>`: every metric against training step, one line per model size.
4. `artefact_<task>`: exact match beside the continuous metric of the metric check, same x axis; the sizes
   where exact match sat at its floor are shaded, and token_accuracy^L is overlaid when L is known.
5. `positions_<task>`: token accuracy of every answer position against scale, one line per position.
6. `subtasks_<task>`: every subtask with a training frequency (`subtask_weight`) against scale, coloured by
   its frequency rank, with the mean (subtask `all`) and each subtask's threshold (Michaud et al. 2023).

The kinds, their drawing costs and captions are registered in `analysis.figure_kinds`; `DRAW` below binds
each to its one draw function. The scale and artefact figures draw a list of series through one path:
without grouping, the scale figure's series are the splits and the artefact figure's is the check's one
curve; with curves grouped by depth (`by = "depth"`), every depth is a series of its own, in one colour in
every figure, on the main split (with every split of every depth on one panel the bands would hide each
other; the tables keep every split). The positions figure then shows the deepest depth. The phase diagram
is the same either way.

On the step axis, panels that plot against scale show the largest model's curve (of each depth).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from emergence_lab.analysis.aggregate import curve_keys
from emergence_lab.analysis.console import Console
from emergence_lab.analysis.curves import CurveResult
from emergence_lab.analysis.figure_kinds import FIGURE_KINDS, figure_kind, safe_name
from emergence_lab.analysis.parallel import Workers
from emergence_lab.analysis.schema import (
    CONTINUOUS,
    DISCONTINUOUS,
    TRAINING_METRICS,
    equals,
    higher_is_better,
)
from emergence_lab.analysis.style import (
    PALETTE,
    SEQUENTIAL,
    X_LABELS,
    grid_width,
    legend_layout,
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
DEPTH_PALETTE = PALETTE[:7]  # Okabe-Ito without its yellow, which is too pale for thin lines on white
# The columns of the results table that the phase diagram and the training figure read.
TABLE_COLUMNS = (
    "run_id",
    "task",
    "subtask",
    "split",
    "metric",
    "value",
    "step",
    "width",
    "depth",
    "n_params",
)
VERDICT_ORDER = ("emergent", "smooth", "absent")
TITLE_CHARS = 38  # a panel title line of about this many characters fits over a panel
LEGEND_H = 0.3  # inches below the panels for a one-row legend


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
    by: str = "none"  # "depth": every depth is its own curve and series
    metrics: tuple[str, ...] | None = None  # the scale figure's panels (None: every metric)
    depths: tuple = field(default_factory=tuple)  # every depth of the analysis, for one colour each

    @property
    def by_depth(self) -> bool:
        return self.by == "depth"

    def depth_color(self, depth: object) -> str:
        """The same colour for a depth in every figure (grey for a missing depth)."""
        if pd.isna(depth) or depth not in self.depths:
            return "0.5"
        return DEPTH_PALETTE[self.depths.index(depth) % len(DEPTH_PALETTE)]

    @property
    def size_label(self) -> str:
        """lm-eval parameter counts are totals, and nominal when read off model names."""
        if self.nominal_sizes is None:
            return X_LABELS["n_params"]
        return "parameters (nominal, from model names)" if self.nominal_sizes else "parameters"

    @property
    def x_label(self) -> str:
        return self.size_label if self.x == "n_params" else X_LABELS.get(self.x, self.x)


def main_split(df: pd.DataFrame) -> str | None:
    splits = sorted(map(str, df["split"].dropna().unique()))
    return "test" if "test" in splits else (splits[0] if splits else None)


def metric_order(metrics: list[str]) -> list[str]:
    known = [m for m in TRAINING_METRICS if m in metrics]
    return known + sorted(m for m in metrics if m not in known)


def _select(df: pd.DataFrame, **equal: object) -> pd.DataFrame:
    """Rows where every column equals its value (a missing value selects the rows where it is missing)."""
    mask = np.ones(len(df), bool)
    for col, value in equal.items():
        mask &= df[col].isna().to_numpy() if _missing(value) else equals(df[col], value)
    return df.loc[mask]


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _largest_series(df: pd.DataFrame) -> pd.DataFrame:
    """On the step axis: the largest model's rows (of each depth, where curves are grouped by depth)."""
    if "series" not in df.columns or df["series"].isna().all():
        return df
    if "depth" in df.columns and df["depth"].notna().any():
        top = df.groupby(df["depth"].astype("float64").fillna(-1.0), sort=False)["series"].transform("max")
        return df.loc[(df["series"] == top).to_numpy()]
    return df.loc[df["series"] == df["series"].max()]


def _key_text(value: object) -> str:
    """One spelling of a curve-key value, whatever its dtype (2, 2.0 and np.int64(2) -> "2")."""
    if _missing(value):
        return "nan"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _curve_index(curves: list[CurveResult]) -> dict[tuple[str, ...], CurveResult]:
    return {tuple(_key_text(v) for v in c.key.values()): c for c in curves}


def _row_curve(
    data: FigureData, row: pd.Series, curves: dict[tuple[str, ...], CurveResult]
) -> CurveResult | None:
    """The fitted curve of one row of the thresholds table."""
    return curves.get(tuple(_key_text(row[k]) for k in curve_keys(data.x, data.by)))


def depth_values(df: pd.DataFrame) -> list:
    """The depths in `df`, ascending, as ints (a missing depth last, as NA)."""
    if "depth" not in df.columns or df.empty:
        return []
    d = df["depth"]
    return [int(v) for v in sorted(d.dropna().unique())] + ([pd.NA] if d.isna().any() else [])


def depth_label(depth: object) -> str:
    return "depth unknown" if _missing(depth) else f"depth {int(depth)}"  # type: ignore[call-overload]


def _only(df: pd.DataFrame, task: str) -> pd.DataFrame:
    return df.loc[equals(df["task"], task)] if len(df) else df


def _task_data(data: FigureData, task: str, kind: str) -> FigureData:
    """The part of `data` one figure needs (small enough to send to a worker process). Only the phase
    diagram and the training figure read the raw table, and only its subtask `all`."""
    table = data.table.iloc[:0]
    if kind == "subtasks" and "subtask_weight" in data.table.columns:  # the weights, one row per subtask
        weighted = _only(data.table, task)
        weighted = weighted.loc[
            weighted["subtask_weight"].notna().to_numpy(), ["task", "subtask", "subtask_weight"]
        ]
        table = weighted.drop_duplicates(["subtask", "subtask_weight"])
    elif kind in ("phase", "training"):
        table = data.table[[c for c in TABLE_COLUMNS if c in data.table.columns]]
        table = _only(table, task)
        table = table.loc[equals(table["subtask"], "all")]
    return replace(
        data,
        table=table,
        obs=_only(data.obs, task),
        points=_only(data.points, task),
        thresholds=_only(data.thresholds, task),
        curves=[c for c in data.curves if str(c.key["task"]) == task],
        metric_check=_only(data.metric_check, task),
        nominal_sizes=data.nominal_sizes if data.nominal_sizes is not None else _nominal(data.table),
    )


def _nominal(table: pd.DataFrame) -> bool | None:
    if "n_params_nominal" not in table.columns or table["n_params_nominal"].isna().all():
        return None
    return bool(table["n_params_nominal"].fillna(False).astype(bool).any())


def draw_all(
    data: FigureData,
    out_dir: Path,
    workers: Workers | None = None,
    console: Console | None = None,
    kinds: tuple[str, ...] = FIGURE_KINDS,
) -> list[Path]:
    """Draw every figure (of `kinds`) of every task; returns the written paths in a stable order. One
    figure is one work item, so two processes share fifteen figures evenly."""
    depths = tuple(d for d in depth_values(data.points) if not _missing(d)) if data.by_depth else ()
    data = replace(data, nominal_sizes=_nominal(data.table), depths=depths)
    tasks = sorted(map(str, data.table["task"].dropna().unique()))
    items = [
        (_task_data(data, task, kind), task, kind) for task in tasks for kind in FIGURE_KINDS if kind in kinds
    ]
    # The slowest figures first, so the workers finish together.
    order = sorted(range(len(items)), key=lambda i: -_cost(items[i][2]))
    work = partial(draw_figure, out_dir=out_dir)
    workers = workers or Workers(1)
    min_items = 2 if workers.started else PARALLEL_MIN_FIGURES  # running workers cost nothing to start
    drawn = workers.map(work, [items[i] for i in order], min_items, console, "drawing figures")
    nested: list[list[Path]] = [[] for _ in items]
    for i, paths in zip(order, drawn, strict=True):
        nested[i] = paths
    return [path for paths in nested for path in paths]


def _cost(kind: str) -> int:
    spec = figure_kind(kind)
    return spec.cost if spec is not None else 1


@dataclass
class View:
    """What the figures against scale draw: on the step axis, the largest model's rows only."""

    points: pd.DataFrame
    obs: pd.DataFrame
    thresholds: pd.DataFrame
    curves: dict[tuple[str, ...], CurveResult]


def draw_figure(item: tuple[FigureData, str, str], out_dir: Path) -> list[Path]:
    """Draw one kind of figure for one task and save it in every format ([] if it does not apply)."""
    data, task, kind = item
    view = View(
        _largest_series(data.points),
        _largest_series(data.obs),
        _largest_series(data.thresholds),
        _curve_index(data.curves),
    )
    with style():
        fig = DRAW[kind](data, task, view)
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


def _draw_curve(
    ax,
    data: FigureData,
    pts: pd.DataFrame,
    seeds: pd.DataFrame,
    rows: pd.DataFrame,
    curves: dict[tuple[str, ...], CurveResult],
    color: str,
    label: str | None = None,
    series: bool = False,
) -> str | None:
    """Seeds, mean +- CI, fit and threshold of one curve (its points, observations and thresholds row)
    on `ax`; returns its classification.

    A lone curve gets a grey dashed fit, and its threshold as a dotted line with a CI band across the
    panel. One `series` among several (one per depth) draws its fit in its own colour, and its threshold as
    a diamond on the fit with a bar for the CI, so that several thresholds do not hide each other."""
    pts = pts.sort_values("x")
    if pts.empty:
        return None
    band = 0.15 if series else 0.2
    # one Line2D of markers: the look of a scatter of s = 7, drawn several times faster in every format
    ax.plot(
        seeds["x"], seeds["value"], "o", markersize=2.65, markeredgewidth=0, color=color, alpha=0.35, zorder=2
    )
    ax.fill_between(pts["x"], pts["ci_low"], pts["ci_high"], color=color, alpha=band, linewidth=0, zorder=1)
    ax.plot(pts["x"], pts["mean"], "o-", color=color, markersize=3, zorder=3, label=label)
    if rows.empty:
        return None
    row = rows.iloc[0]
    curve = _row_curve(data, row, curves)
    if curve is not None and curve.best:
        grid = np.linspace(np.log10(pts["x"].min()), np.log10(pts["x"].max()), CURVE_POINTS)
        fit_color, width = (color, 1.1) if series else ("0.25", 1.0)
        ax.plot(10**grid, curve.predict(grid), "--", color=fit_color, linewidth=width, zorder=4)
    threshold = row.get("threshold", np.nan)
    low, high = row.get("threshold_low", np.nan), row.get("threshold_high", np.nan)
    has_ci = np.isfinite(low) and np.isfinite(high)
    if np.isfinite(threshold) and series:
        y = float(curve.predict(np.array([np.log10(threshold)]))[0]) if curve is not None else np.nan
        if np.isfinite(y):
            if has_ci:  # the CI as a bar with end ticks, the threshold as a diamond on the fit
                ax.plot([low, high], [y, y], "-", color=color, linewidth=1.2, zorder=5, solid_capstyle="butt")
                ax.plot([low, high], [y, y], "|", color=color, markersize=5, markeredgewidth=1.2, zorder=5)
            ax.plot(
                [threshold],
                [y],
                "D",
                markersize=4.5,
                color=color,
                markeredgecolor="white",
                markeredgewidth=0.6,
                zorder=6,
            )
    elif np.isfinite(threshold):
        ax.axvline(threshold, color=color, linestyle=":", linewidth=1.2, zorder=4)
        if has_ci:
            ax.axvspan(low, high, color=color, alpha=0.12, linewidth=0)
    if str(row["classification"]) in ("emergent", "inconclusive"):
        _draw_seed_intervals(ax, curve, color)
    return str(row["classification"])


SEED_TICK_Y = 0.03  # axes fraction of the lowest per-seed interval; each further seed one step higher
SEED_TICK_STEP = 0.025


def _draw_seed_intervals(ax: Axes, curve: CurveResult | None, color: str) -> None:
    """Each jumping seed's threshold interval (the two sizes that bracket its step) as a bar with end ticks
    near the bottom of the panel: the spread of the per-seed thresholds."""
    if curve is None or curve.detection is None:
        return
    jumps = [c for c in curve.detection.per_seed if c.verdict == "jump"]
    trans = ax.get_xaxis_transform()
    for j, seed in enumerate(jumps):
        y = SEED_TICK_Y + SEED_TICK_STEP * j
        ax.plot([seed.lo, seed.hi], [y, y], "-", color=color, linewidth=1.0, alpha=0.8, transform=trans,
                zorder=5, solid_capstyle="butt")  # fmt: skip
        ax.plot([seed.lo, seed.hi], [y, y], "|", color=color, markersize=4, markeredgewidth=1.0, alpha=0.8,
                transform=trans, zorder=5)  # fmt: skip


def _panel_metrics(data: FigureData, pts: pd.DataFrame) -> list[str]:
    """The scale figure's metrics: those of the study (in its order) that are present, else every one."""
    present = metric_order(sorted(map(str, pts["metric"].unique())))
    chosen = [m for m in (data.metrics or ()) if m in present]
    return chosen or present


@dataclass(frozen=True)
class Series:
    """One curve of every panel: the rows where `where` holds, in `color` (None: the panel's colour),
    under `label` in the legend (None: the figure's legend names it). `key` is the split or depth it
    stands for."""

    key: object
    where: dict[str, object]
    color: str | None = None
    label: str | None = None


def _verdict(pts: pd.DataFrame, rows: pd.DataFrame) -> str | None:
    """The classification `_draw_curve` reports for one curve (None where it draws no fitted curve)."""
    return None if pts.empty or rows.empty else str(rows.iloc[0]["classification"])


def _draw_series(
    ax,
    data: FigureData,
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    curves: dict[tuple[str, ...], CurveResult],
    metric: str,
    series: list[Series],
    color: str | None = None,
) -> None:
    """Every series' curve of one metric on `ax` (frames: points, observations, thresholds rows). Curves
    grouped by depth are marked series (`_draw_curve`); without grouping each curve is drawn alone."""
    for one in series:
        parts = [_select(df, metric=metric, **one.where) for df in frames]
        _draw_curve(ax, data, *parts, curves, one.color or color or "0.5", one.label, data.by_depth)


def _scale_figure(data: FigureData, task: str, view: View) -> Figure | None:
    """One panel per metric. Without grouping, one curve per split; grouped by depth, one series per depth
    on the main split (with every split of every depth on one panel the bands would hide each other)."""
    task_pts = _select(view.points, task=task, subtask="all")
    split = main_split(task_pts) if data.by_depth else None
    if split is not None:
        task_pts = _select(task_pts, split=split)
    metrics = _panel_metrics(data, task_pts)
    if not metrics:
        return None
    task_obs = _select(view.obs, task=task, subtask="all")
    rows = _select(view.thresholds, task=task, subtask="all")
    if split is not None:
        task_obs, rows = _select(task_obs, split=split), _select(rows, split=split)
        rows = rows.loc[rows["metric"].astype(str).isin(metrics).to_numpy()]
    frames = (task_pts, task_obs, rows)
    if data.by_depth:
        depths = depth_values(task_pts)
        series = [Series(d, {"depth": d}, data.depth_color(d)) for d in depths]
        titles = [[f"{m} {_arrow(m)}", *verdict_lines(_depth_verdicts(rows, m))] for m in metrics]
        extra = [FIT_ENTRY] if len(rows) else []
        if np.isfinite(rows["threshold"].to_numpy(dtype=float)).any():
            extra.append(THRESHOLD_ENTRY)
        shown = rows["classification"].astype(str).isin(["emergent", "inconclusive"]).to_numpy()
        if np.isfinite(rows.loc[shown, "seed_threshold_low"].to_numpy(dtype=float)).any():
            extra.append(SEED_ENTRY)
        handles = _depth_handles(data, {d: depth_label(d) for d in depths}, extra)
        ncols, bottom = legend_layout(len(handles), grid_width(len(metrics)))
        fig, axes = new_figure(len(metrics), bottom=bottom, title_lines=max(len(t) for t in titles))
    else:
        splits = sorted(map(str, task_pts["split"].unique()), key=lambda s: (s != "test", s))
        series = [Series(s, {"split": s}, PALETTE[i % 8], s) for i, s in enumerate(splits)]
        titles = [[f"{m} {_arrow(m)}", *_split_verdicts(frames, m, series)] for m in metrics]
        bottom = LEGEND_H if len(splits) > 1 else 0.0
        fig, axes = new_figure(len(metrics), bottom=bottom, title_lines=max(len(t) for t in titles))
    for ax, metric, title in zip(axes, metrics, titles, strict=True):
        _draw_series(ax, data, frames, view.curves, metric, series)
        ax.set_title("\n".join(title), fontsize=8.5)
        _log_x(ax, data.x_label, task_pts["x"])
    if data.by_depth:
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=ncols)
        suptitle(fig, f"{task}: metrics {_against(data.x)}, one series per depth ({split} split)")
    else:
        if len(series) > 1:
            handles, names = axes[0].get_legend_handles_labels()
            fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=len(series))
        suptitle(fig, f"{task}: metrics {_against(data.x)}")
    return fig


def _against(x: str) -> str:
    return "over training steps" if x == "step" else "against scale"


def _split_verdicts(
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], metric: str, series: list[Series]
) -> list[str]:
    """Each split's classification of one metric, grouped by verdict and wrapped ("smooth: test, ood ·
    emergent: train"); the bare verdict for one split."""
    pts, _, rows = (_select(df, metric=metric) for df in frames)
    verdicts = {}
    for one in series:
        verdict = _verdict(_select(pts, **one.where), _select(rows, **one.where))
        if verdict:
            verdicts[one.key] = verdict
    if len(series) == 1:
        return list(verdicts.values())
    return _grouped_lines({key: [str(key)] for key in verdicts}, verdicts, "")


def verdict_lines(verdicts: dict[object, str], width: int = TITLE_CHARS) -> list[str]:
    """Per-depth classifications grouped by verdict ("emergent: depth 2 · absent: depth 1"), wrapped into
    lines of about `width` characters."""
    names = {d: ["?" if _missing(d) else str(int(d))] for d in verdicts}  # type: ignore[call-overload]
    return _grouped_lines(names, verdicts, "depth ", width)


def _grouped_lines(
    names: dict[object, list[str]], verdicts: dict[object, str], noun: str, width: int = TITLE_CHARS
) -> list[str]:
    groups: dict[str, list[str]] = {}
    for key, verdict in verdicts.items():
        groups.setdefault(verdict, []).extend(names[key])
    order = [v for v in VERDICT_ORDER if v in groups] + sorted(v for v in groups if v not in VERDICT_ORDER)
    parts = [f"{v}: {noun}{', '.join(groups[v])}" for v in order]
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return lines


def _depth_handles(data: FigureData, labels: dict[object, str], extra: list[tuple[str, str, str]]) -> list:
    """Legend entries: one colour per depth (`labels`: depth -> text), then (linestyle, marker, text)
    entries in grey for what the line styles and markers mean."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=data.depth_color(d), marker="o", markersize=3, label=text)
        for d, text in labels.items()
    ]
    for linestyle, marker, text in extra:
        handles.append(
            Line2D(
                [], [], color="0.35", linestyle=linestyle, marker=marker or None, markersize=4.5, label=text
            )
        )
    return handles


FIT_ENTRY = ("--", "", "best fit")
THRESHOLD_ENTRY = ("-", "D", "threshold, 95% CI")
SEED_ENTRY = ("-", "|", "per-seed threshold intervals")


def _phase_metric(data: FigureData, df: pd.DataFrame) -> str | None:
    metrics = sorted(map(str, df["metric"].unique()))
    if data.phase_metric in metrics:
        return data.phase_metric
    return DISCONTINUOUS if DISCONTINUOUS in metrics else (metric_order(metrics) or [None])[0]


def _final(df: pd.DataFrame) -> pd.DataFrame:
    from emergence_lab.analysis.aggregate import final_rows

    return final_rows(df)


def _phase_figure(data: FigureData, task: str, view: View) -> Figure | None:
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


def _training_figure(data: FigureData, task: str, view: View) -> Figure | None:
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


def _artefact_figure(data: FigureData, task: str, view: View) -> Figure | None:
    """Exact match beside the continuous metric of the metric check, on one x axis. Without grouping, the
    check's one curve of each, the sizes where exact match sat at its floor shaded and token_accuracy^L
    overlaid. Grouped by depth, one series per depth: the legend gives each depth's verdict, a triangle on
    the x axis where its exact match leaves the floor, and a dotted token_accuracy^L per depth."""
    mc = data.metric_check
    if mc.empty:
        return None
    rows = mc.loc[equals(mc["task"], task)]
    if rows.empty:
        return None
    points = view.points
    if data.by_depth:
        if "series" in rows.columns and rows["series"].notna().any():
            rows = _largest_series(rows)
        rows = rows.sort_values("depth", kind="stable", na_position="last")
        chosen = rows["continuous_metric"].astype(str)
        cont = min(chosen.unique(), key=lambda m: (-int((chosen == m).sum()), _continuous_rank(m)))
    else:
        rows = rows.iloc[[-1]]  # on the step axis, the largest model's check
        cont = str(rows["continuous_metric"].iloc[0])
    row = rows.iloc[0]
    split = str(row["split"])
    metrics = (DISCONTINUOUS, cont)
    sub = {"task": task, "split": split, "subtask": "all"}
    frames = (_select(points, **sub), _select(view.obs, **sub), _select(view.thresholds, **sub))
    xs = _select(points, task=task)["x"]
    if data.by_depth:
        depths = list(rows["depth"])
        series = [Series(d, {"depth": d}, data.depth_color(d)) for d in depths]
        titles = [[f"{m} {_arrow(m)}", *verdict_lines(_depth_verdicts(frames[2], m))] for m in metrics]
        floor, power, handles = _check_legend(data, rows, frames[2], cont, points)
        ncols, legend_h = legend_layout(len(handles), grid_width(2), entry_w=1.9)
        fig, axes = new_figure(2, bottom=legend_h, title_lines=max(len(t) for t in titles))
        colors: tuple[str | None, ...] = (None, None)
    else:  # one series, in each panel's colour; no legend but the overlay's
        floor, power, handles, ncols = np.zeros(0, bool), None, [], 1
        series = [Series(None, {})]
        titles = []
        for m in metrics:
            verdict = _verdict(*(_select(frames[i], metric=m) for i in (0, 2)))
            titles.append([f"{m} {_arrow(m)}" + (f" ({verdict})" if verdict else "")])
        fig, axes = new_figure(2, sharex=True)
        colors = (PALETTE[1], PALETTE[0])
    for ax, metric, title, color in zip(axes, metrics, titles, colors, strict=True):
        _draw_series(ax, data, frames, view.curves, metric, series, color)
        if data.by_depth:
            ax.set_title("\n".join(title), fontsize=8.5)
        else:
            ax.set_title(title[0])
            start = row.get("em_rise_start", np.nan)
            if row["verdict"] != "no_jump" and np.isfinite(start):  # the floor sizes shaded
                ax.axvspan(xs.min(), start, color="0.5", alpha=0.12, linewidth=0)
        _log_x(ax, data.x_label, xs)
    if data.by_depth:
        _depth_marks(data, axes[0], rows, floor, power, points, sub)
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=ncols)
        suptitle(fig, f"{task}: exact match vs {cont}, one series per depth ({split} split)")
    else:
        _power_overlay(axes[0], task, split, row, points)
        suptitle(fig, f"{task}: exact match vs {cont} — verdict: {row['verdict']}")
    return fig


def _check_legend(
    data: FigureData, rows: pd.DataFrame, thresholds: pd.DataFrame, cont: str, points: pd.DataFrame
) -> tuple[np.ndarray, int | None, list]:
    """The artefact figure's legend by depth (each depth's check verdict, then what the marks mean), which
    depths' exact match leaves its floor, and the answer length L of the token_accuracy^L overlay."""
    floor = rows["verdict"].ne("no_jump").to_numpy() & np.isfinite(
        rows["em_rise_start"].to_numpy(dtype=float)
    )
    length = rows["answer_len"].dropna()
    power = (
        int(length.iloc[0])
        if len(length) and CONTINUOUS[0] in set(map(str, points["metric"].unique()))
        else None
    )
    extra = [FIT_ENTRY]
    shown = thresholds["metric"].astype(str).isin([DISCONTINUOUS, cont]).to_numpy()
    if np.isfinite(thresholds.loc[shown, "threshold"]).any():
        extra.append(THRESHOLD_ENTRY)
    if power is not None:
        extra.append((":", "", f"token_accuracy^{power}"))
    if floor.any():
        extra.append(("none", "^", "exact match leaves its floor"))
    depths = list(rows["depth"])
    labels = {d: _check_label(r, cont) for d, (_, r) in zip(depths, rows.iterrows(), strict=True)}
    return floor, power, _depth_handles(data, labels, extra)


def _depth_marks(
    data: FigureData,
    ax,
    rows: pd.DataFrame,
    floor: np.ndarray,
    power: int | None,
    points: pd.DataFrame,
    sub: dict[str, object],
) -> None:
    """Per depth: a triangle on the x axis where exact match leaves its floor, and token_accuracy^L dotted."""
    from matplotlib.transforms import blended_transform_factory

    marks = blended_transform_factory(ax.transData, ax.transAxes)
    for (_, row), at_floor in zip(rows.iterrows(), floor, strict=True):
        color = data.depth_color(row["depth"])
        if at_floor:
            ax.plot(
                [row["em_rise_start"]],
                [0.0],
                "^",
                color=color,
                markersize=6,
                transform=marks,
                clip_on=False,
                zorder=7,
            )
        if power is not None:
            ta = _select(points, **sub, metric=CONTINUOUS[0], depth=row["depth"]).sort_values("x")
            ax.plot(ta["x"], ta["mean"] ** power, ":", color=color, linewidth=1.2, zorder=3)


def _power_overlay(ax, task: str, split: str, row: pd.Series, points: pd.DataFrame) -> None:
    """token_accuracy^L over exact match, where the answer length L is known."""
    length = row.get("answer_len", np.nan)
    ta = _select(points, task=task, split=split, subtask="all", metric=CONTINUOUS[0]).sort_values("x")
    if not np.isfinite(length) or ta.empty:
        return
    ax.plot(
        ta["x"],
        ta["mean"] ** int(length),
        "-",
        color="0.4",
        linewidth=1.0,
        label=f"token_accuracy^{int(length)}",
    )
    ax.legend(loc="upper left")  # exact match rises to the right: the upper left stays free


def _continuous_rank(metric: str) -> int:
    return CONTINUOUS.index(metric) if metric in CONTINUOUS else len(CONTINUOUS)


def _check_label(row: pd.Series, shown: str) -> str:
    """A depth's legend entry in the artefact figure: its verdict (and its own continuous metric, where
    the panel shows another)."""
    own = str(row["continuous_metric"])
    return f"{depth_label(row['depth'])} · check: {row['verdict']}" + (
        f" (check on {own})" if own != shown else ""
    )


def _depth_verdicts(thresholds: pd.DataFrame, metric: str) -> dict[object, str]:
    """depth -> classification of one metric's curves, depths in ascending order."""
    here = _select(thresholds, metric=metric)
    pairs = sorted(
        zip(here["depth"], here["classification"].astype(str), strict=True),
        key=lambda p: (_missing(p[0]), 0 if _missing(p[0]) else p[0]),
    )
    return dict(pairs)


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


def _positions_figure(data: FigureData, task: str, view: View) -> Figure | None:
    """Token accuracy of every answer position against scale. With curves grouped by depth: the deepest
    depth's (the one that learns the most positions; one panel stays readable and costs what the pooled
    figure cost; every depth's positions are in points.csv and thresholds.csv)."""
    task_pts = _select(view.points, task=task)
    if task_pts.empty:
        return None
    split = main_split(task_pts)
    task_pts = _select(task_pts, split=split)
    positions = position_subtasks(task_pts)
    if len(positions) < 2:
        return None
    pts = _select(task_pts, metric=CONTINUOUS[0])
    title = f"{task}: token accuracy per position ({split})"
    if data.by_depth:
        depths = [d for d in depth_values(pts.loc[pts["subtask"].astype(str).isin(positions).to_numpy()])]
        known = [d for d in depths if not _missing(d)]
        deepest = known[-1] if known else depths[-1]
        pts = _select(pts, depth=deepest)
        which = depth_label(deepest) + (" (the deepest)" if len(known) > 1 else "")
        title = f"{task}: token accuracy per position\n{which}, {split} split"
    fig = Figure(figsize=(4.6, 3.0), layout="constrained")
    ax = fig.subplots()
    cmap = _cmap()
    for i, pos in enumerate(positions):
        line = _select(pts, subtask=pos).sort_values("x")
        color = cmap(i / max(len(positions) - 1, 1))
        ax.plot(line["x"], line["mean"], "o-", markersize=2.5, color=color, label=pos)
    overall = _select(pts, subtask="all").sort_values("x")
    if len(overall):
        ax.plot(overall["x"], overall["mean"], "--", color="k", linewidth=1.2, label="all")
    ax.set_ylabel(f"{CONTINUOUS[0]} {_arrow(CONTINUOUS[0])}")
    ax.set_title(title)
    fig.legend(ncols=2 if len(positions) > 8 else 1, loc="outside right upper", fontsize=6.5)
    _log_x(ax, data.x_label, pts["x"])
    return fig


SUBTASK_PANELS = (
    3  # the subtasks figure's panels: the study's metrics (else the contract's), at most this many
)


def weighted_subtasks(table: pd.DataFrame) -> pd.Series:
    """subtask -> training frequency (the `subtask_weight` column), largest first; empty without one."""
    if "subtask_weight" not in table.columns:
        return pd.Series(dtype="float64")
    rows = table.loc[table["subtask_weight"].notna().to_numpy()]
    weights = rows.groupby(rows["subtask"].astype(str), sort=True)["subtask_weight"].mean()
    return weights.sort_values(ascending=False, kind="stable")


def _subtasks_figure(data: FigureData, task: str, view: View) -> Figure | None:
    """Each weighted subtask's mean curve against scale, coloured by its frequency rank (dark: the most
    frequent), the subtask `all` (the mean over the uniform test set) dashed, and each subtask's threshold,
    where it has one, as a triangle of its colour on the panel's top edge. With curves grouped by depth,
    the deepest depth's."""
    weights = weighted_subtasks(data.table)
    task_pts = _select(view.points, task=task)
    if len(weights) < 2 or task_pts.empty:
        return None
    split = main_split(task_pts)
    pts = _select(task_pts, split=split)
    title = f"{task}: each subtask against scale ({split})"
    if data.by_depth:
        known = [d for d in depth_values(pts) if not _missing(d)]
        if known:
            pts = _select(pts, depth=known[-1])
            title = f"{task}: each subtask against scale\n{depth_label(known[-1])}, {split} split"
    names = [s for s in weights.index if s in set(pts["subtask"].astype(str))]
    per_metric = pts.loc[pts["subtask"].astype(str).isin(names).to_numpy()]
    present = set(per_metric["metric"].astype(str))
    wanted = [m for m in (data.metrics or TRAINING_METRICS) if m in present] or metric_order(sorted(present))
    metrics = wanted[:SUBTASK_PANELS]
    if not names or not metrics:
        return None
    rows = _select(view.thresholds, task=task, split=split)
    fig, axes = new_figure(len(metrics), right=BAR_W)
    cmap = _cmap()
    norm = Normalize(1, max(len(names), 2))
    for ax, metric in zip(axes, metrics, strict=True):
        for rank, sub in enumerate(names, start=1):
            line = _select(pts, metric=metric, subtask=sub).sort_values("x")
            color = cmap(norm(rank) * 0.9)  # the palette's pale yellow end is too pale for a line
            ax.plot(line["x"], line["mean"], "o-", markersize=2.5, linewidth=1.1, color=color)
            hit = _select(rows, metric=metric, subtask=sub)
            if "threshold" in hit.columns and hit["threshold"].notna().any():
                where = float(hit["threshold"].dropna().iloc[0])
                ax.plot(
                    where,
                    1.0,
                    "v",
                    color=color,
                    markersize=5,
                    clip_on=False,
                    transform=ax.get_xaxis_transform(),
                )
        overall = _select(pts, metric=metric, subtask="all").sort_values("x")
        if len(overall):
            ax.plot(overall["x"], overall["mean"], "--", color="k", linewidth=1.4, label="all (mean)")
            ax.legend(loc="best", fontsize=6.5)
        ax.set_title(f"{metric} {_arrow(metric)}")
        _log_x(ax, data.x_label, pts["x"])
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap

    ranks = ListedColormap([cmap(norm(r) * 0.9) for r in range(1, len(names) + 1)])
    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(0.5, len(names) + 0.5), cmap=ranks),
        cax=side_axes(fig, BAR_W),
        label="frequency rank (1: most frequent)",
    )
    bar.set_ticks(range(1, len(names) + 1))
    bar.ax.invert_yaxis()
    suptitle(fig, title)
    return fig


DrawFunction = Callable[[FigureData, str, View], Figure | None]
# Each kind's draw function; the kinds, their costs and captions are in `analysis.figure_kinds`.
DRAW: dict[str, DrawFunction] = {
    "scale": _scale_figure,
    "phase": _phase_figure,
    "training": _training_figure,
    "artefact": _artefact_figure,
    "positions": _positions_figure,
    "subtasks": _subtasks_figure,
}
if tuple(DRAW) != FIGURE_KINDS:
    raise ImportError(f"figure kinds {FIGURE_KINDS} and their draw functions {tuple(DRAW)} disagree")
