"""One figure style for every plot, and saving that gives identical bytes on every run.

Figures are built on `matplotlib.figure.Figure` (no pyplot, no global state, Agg rendering). Dates and
tool versions are stripped from the PNG/PDF/SVG metadata and the SVG id salt is fixed, so a rerun on the
same data rewrites byte-identical files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in greyscale by order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
SEQUENTIAL = "viridis"
FORMATS = ("png", "pdf", "svg")
PANEL_W, PANEL_H = 3.2, 2.6

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.titley": 1.0,  # fixed, not searched for each draw: no panel has ticks on top
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.prop_cycle": cycler(color=PALETTE),
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "savefig.dpi": 150,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "svg.hashsalt": "emergence-lab",
    "path.simplify": True,
}

METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None},
    "svg": {"Creator": None, "Date": None},
}

X_LABELS = {
    "n_params": "non-embedding parameters",
    "flops": "training FLOPs",
    "tokens": "training tokens",
    "width": "width (d_model)",
    "depth": "depth (layers)",
    "step": "training step",
}


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _log_label(value: float, _pos: int) -> str:
    # Unicode superscripts instead of mathtext: the same look, a fraction of the drawing time.
    if not value > 0:
        return ""
    exponent = int(np.floor(np.log10(value) + 1e-9))
    mantissa = value / 10.0**exponent
    power = "10" + str(exponent).translate(_SUPERSCRIPT)
    return power if abs(mantissa - 1) < 1e-6 else f"{mantissa:.3g}·{power}"


def log_ticks(axis, span: float = np.inf) -> None:
    """Decade ticks labelled with superscripts (no mathtext), no minor ticks; within a decade also 1-2-3-5
    (every digit below half a decade), 1-2-5 below two decades. Labels such as "4·10²" are wide: every
    digit across most of a decade would run them into each other."""
    if span < 0.5:
        subs: tuple[float, ...] = tuple(range(1, 10))
    else:
        subs = (1.0, 2.0, 3.0, 5.0) if span < 1 else (1.0, 2.0, 5.0) if span < 2 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(_log_label))


def log_x(ax, label: str, lo: float | None = None, hi: float | None = None) -> None:
    """A log10 x axis without minor ticks; decades are labelled, and more within them when the data span
    less than two decades (see `log_ticks`); pass the data range as lo, hi."""
    ax.set_xscale("log")
    log_ticks(ax.xaxis, np.log10(hi / lo) if lo is not None and hi is not None and lo > 0 else np.inf)
    ax.set_xlabel(label)


@contextmanager
def style() -> Iterator[None]:
    with mpl.rc_context(RC):
        yield


# Grid figures have a fixed geometry (inches): every panel the same size, with room for y tick labels on
# the left, a two-line title above and the x label below. Computing it costs nothing; a layout engine was
# a quarter of the drawing time of a figure.
AX_W, AX_H = 2.45, 1.55
LEFT, RIGHT, GAP_W = 0.6, 0.2, 0.7
TITLE_LINE, XLABEL, SUPTITLE = 0.2, 0.5, 0.35


def grid_width(n_panels: int, max_cols: int = 3, right: float = 0.0) -> float:
    """The width in inches of a `new_figure` of `n_panels` panels."""
    cols = max(1, min(n_panels, max_cols))
    return LEFT + cols * AX_W + (cols - 1) * GAP_W + RIGHT + right


def legend_layout(n_entries: int, width: float, entry_w: float = 1.45) -> tuple[int, float]:
    """(columns, inches of height) of a legend of `n_entries` under panels `width` inches wide."""
    ncols = max(1, min(n_entries, int((width - 0.4) // entry_w)))
    rows = -(-n_entries // ncols)
    return ncols, 0.3 + 0.17 * (rows - 1)


def new_figure(
    n_panels: int,
    max_cols: int = 3,
    sharex: bool = False,
    bottom: float = 0.0,
    right: float = 0.0,
    title_lines: int = 1,
    sharey: bool = False,
) -> tuple[Figure, list]:
    """A figure with a grid of `n_panels` panels (at most `max_cols` per row), room for `title_lines`
    of panel title, and `bottom`/`right` inches to spare for a legend or a colour bar."""
    title = 0.1 + TITLE_LINE * title_lines
    cols = max(1, min(n_panels, max_cols))
    rows = max(1, -(-n_panels // cols))
    width = grid_width(n_panels, max_cols, right)
    height = SUPTITLE + rows * (title + AX_H + XLABEL) + bottom
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(
        rows,
        cols,
        left=LEFT / width,
        right=(width - RIGHT - right) / width,
        top=(height - SUPTITLE - title) / height,
        bottom=(XLABEL + bottom) / height,
        wspace=GAP_W / AX_W,
        hspace=(title + XLABEL) / AX_H,
    )
    axes = grid.subplots(sharex=sharex, sharey=sharey, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    for ax in axes[:n_panels]:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))  # fewer, rounder ticks: cleaner and faster
    return fig, axes[:n_panels]


def suptitle(fig: Figure, text: str) -> None:
    """The figure title, in the top strip a `new_figure` leaves for it."""
    fig.suptitle(text, y=1 - 0.08 / fig.get_size_inches()[1], va="top")


def side_axes(fig: Figure, right: float) -> object:
    """An axes for a colour bar in the `right` inches a `new_figure` spared."""
    width, height = fig.get_size_inches()
    return fig.add_axes(
        (
            (width - right + 0.15) / width,
            XLABEL / height,
            0.12 / width,
            (height - SUPTITLE - XLABEL - 0.3) / height,
        )
    )


def save(fig: Figure, base: Path) -> list[Path]:
    """Write base.png, base.pdf and base.svg; returns the paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = base.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt, metadata=METADATA[fmt])
        paths.append(path)
    return paths
