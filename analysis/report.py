"""`report.md` and `report.html`: the verdict tables and every figure, with the command that rebuilds them.

The report is a list of blocks (heading, paragraph, code, table, image) rendered twice, so the Markdown
and the HTML always say the same thing. Nothing time-dependent goes in: a rebuild gives identical bytes.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from emergence_lab.analysis.figure_kinds import figure_kind
from emergence_lab.analysis.options import CRITERIA_HELP, Criteria

THRESHOLD_COLUMNS = (
    "task",
    "split",
    "subtask",
    "metric",
    "depth",
    "series",
    "classification",
    "threshold",
    "threshold_low",
    "threshold_high",
    "sharpness_decades",
    "breakthroughness",
    "linearity",
    "best_fit",
    "n_points",
    "n_seeds",
    "backtest_error",
    "reason",
)
CHECK_COLUMNS = (
    "task",
    "depth",
    "series",
    "split",
    "verdict",
    "continuous_metric",
    "em_threshold",
    "continuous_threshold",
    "floor_sizes",
    "continuous_floor_change",
    "continuous_floor_z",
    "answer_len",
    "em_vs_ta_pow_L_mae",
    "reason",
)
GROUPING = {
    "depth": "Curves are grouped by depth (`--by depth`): each depth is fitted, classified, checked and "
    "drawn as its own series, because models of different depth differ in capability at equal parameter "
    "count.",
    "none": "Curves pool every model shape (`--by none`): one curve per task, split, subtask and metric.",
}
MAX_WARNINGS = 50


@dataclass
class Block:
    kind: str  # heading | text | code | table | image | list
    content: Any
    level: int = 2


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def _table(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    cols = [c for c in columns if c in df.columns and not (c in ("series", "depth") and df[c].isna().all())]
    return df[cols] if len(df) else pd.DataFrame(columns=cols)


def build_blocks(
    thresholds: pd.DataFrame,
    metric_check: pd.DataFrame,
    figures: list[Path],
    out_dir: Path,
    summary: dict[str, Any],
    criteria: Criteria,
    warnings: list[str],
    by: str = "none",
) -> list[Block]:
    blocks = [Block("heading", "Emergence analysis", 1)]
    blocks.append(Block("text", "Rebuild every figure, table and this report from `results.parquet` alone:"))
    blocks.append(Block("code", f"emergence figures {out_dir}"))
    if summary.get("command"):
        blocks.append(Block("text", "The table was collected with:"))
        blocks.append(Block("code", str(summary["command"])))
    blocks.append(Block("heading", "Data"))
    blocks.append(Block("list", [f"{k}: {_fmt(v)}" for k, v in summary.items() if k != "command"]))
    blocks.append(Block("heading", "Classification criteria"))
    crit = pd.DataFrame(
        [
            {"criterion": k, "value": v, "meaning": CRITERIA_HELP.get(k, "")}
            for k, v in criteria.as_dict().items()
        ]
    )
    blocks.append(Block("table", crit))
    blocks.append(Block("heading", "Thresholds and classification"))
    blocks.append(Block("text", GROUPING.get(by, GROUPING["none"])))
    if len(thresholds):
        is_all = thresholds["subtask"].astype(str) == "all"
        blocks.append(Block("table", _table(thresholds.loc[is_all], THRESHOLD_COLUMNS)))
        if (~is_all).any():
            blocks.append(Block("heading", "Subtasks and answer positions", 3))
            blocks.append(Block("table", _table(thresholds.loc[~is_all], THRESHOLD_COLUMNS)))
    else:
        blocks.append(Block("text", "No curve could be fitted."))
    blocks.append(Block("heading", "Metric artefacts (exact match vs continuous metrics)"))
    if len(metric_check):
        blocks.append(Block("table", _table(metric_check, CHECK_COLUMNS)))
    else:
        blocks.append(Block("text", "No task was measured with both exact match and a continuous metric."))
    blocks.append(Block("heading", "Figures"))
    pngs = [p for p in figures if p.suffix == ".png"]
    for task in sorted({p.stem.split("_", 1)[1] for p in pngs}):
        blocks.append(Block("heading", task, 3))
        for png in (p for p in pngs if p.stem.split("_", 1)[1] == task):
            kind = figure_kind(png.stem.split("_", 1)[0])
            caption = kind.caption_for(by) if kind is not None else png.stem
            rel = png.relative_to(out_dir).as_posix()
            blocks.append(Block("image", (rel, caption)))
            blocks.append(Block("text", f"{caption} (also as PDF and SVG)"))
    blocks.append(Block("heading", "Warnings"))
    if warnings:
        shown = warnings[:MAX_WARNINGS]
        more = [f"... and {len(warnings) - MAX_WARNINGS} more"] if len(warnings) > MAX_WARNINGS else []
        blocks.append(Block("list", shown + more))
    else:
        blocks.append(Block("text", "None."))
    return blocks


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            out.append(f"{'#' * b.level} {b.content}")
        elif b.kind == "text":
            out.append(str(b.content))
        elif b.kind == "code":
            out.append(f"```\n{b.content}\n```")
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.content))
        elif b.kind == "image":
            out.append(f"![{b.content[1]}]({b.content[0]})")
        elif b.kind == "table":
            df = b.content
            cells = [[_fmt(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
            lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
            lines += ["| " + " | ".join(row) + " |" for row in cells]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


CSS = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
    "th{background:#f2f2f2}img{max-width:100%}pre{background:#f6f6f6;padding:.6em}"
)


def _inline(text: str) -> str:
    """Escaped text with `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def to_html(blocks: list[Block]) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>Emergence analysis</title>"]
    out.append(f"<style>{CSS}</style></head><body>")
    for b in blocks:
        if b.kind == "heading":
            out.append(f"<h{b.level}>{esc(str(b.content))}</h{b.level}>")
        elif b.kind == "text":
            out.append(f"<p>{_inline(str(b.content))}</p>")
        elif b.kind == "code":
            out.append(f"<pre><code>{esc(str(b.content))}</code></pre>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(str(i))}</li>" for i in b.content) + "</ul>")
        elif b.kind == "image":
            out.append(f"<figure><img src='{esc(b.content[0])}' alt='{esc(b.content[1])}'></figure>")
        elif b.kind == "table":
            df = b.content
            head = "".join(f"<th>{esc(str(c))}</th>" for c in df.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(_fmt(v))}</td>" for v in row) + "</tr>"
                for row in df.itertuples(index=False)
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(blocks: list[Block], out_dir: Path) -> list[Path]:
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks))
    return [md, page]
