"""`report.md` and `report.html`: the findings first, then the figures, the tables and how they were made.

The report opens with whatever a reader must know before any verdict (runs left out, incomplete runs
analysed), then one short section per task: each metric and depth's verdict as a sentence (`finding`, the one
place that words a verdict) beside the task's scale figure. The other figures follow, then the verdict tables
narrowed to the columns a reader needs (the main split and emergent curves first; every column stays in
thresholds.csv and metric_check.csv), the runs left out, the data and settings, and the warnings.

The report is a list of blocks (heading, paragraph, code, table, image) rendered twice, so the Markdown
and the HTML always say the same thing. Nothing time-dependent goes in: a rebuild gives identical bytes.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from emergence_lab.analysis.curves import describe_row, detect_options
from emergence_lab.analysis.figure_kinds import figure_kind, safe_name
from emergence_lab.analysis.options import CRITERIA_HELP, Criteria
from emergence_lab.analysis.runs import LeftOut
from emergence_lab.analysis.schema import CONTINUOUS, DISCONTINUOUS, base_metric

# The full tables keep only what a reader needs; every column stays in thresholds.csv / metric_check.csv.
THRESHOLD_VIEW: tuple[tuple[str, str], ...] = (
    ("task", "task"),
    ("split", "split"),
    ("subtask", "subtask"),
    ("metric", "metric"),
    ("depth", "depth"),
    ("series", "series"),
    ("classification", "verdict"),
    ("threshold_ci", "threshold (95% CI)"),
    ("width_decades", "rise (decades)"),
    ("noise_source", "noise"),
    ("n_seeds", "seeds"),
    ("reason", "reason"),
)
CHECK_VIEW: tuple[tuple[str, str], ...] = (
    ("task", "task"),
    ("split", "split"),
    ("depth", "depth"),
    ("series", "series"),
    ("verdict", "verdict"),
    ("continuous_metric", "continuous metric"),
    ("em_threshold", "exact match threshold"),
    ("continuous_threshold", "its threshold"),
    ("reason", "reason"),
)
# Verdicts a reader looks for first; labels not listed here (a newer detector's) come right after these.
VERDICT_ORDER: tuple[str, ...] = ("emergent", "inconclusive", "smooth", "absent")
# The scale axis in words, after a number ("at 22k parameters").
X_UNITS = {"n_params": "parameters", "flops": "FLOPs", "tokens": "tokens", "step": "steps"}
GROUPING = {
    "depth": "Curves are grouped by depth (`--by depth`): each depth is fitted, classified, checked and "
    "drawn as its own series, because models of different depth differ in capability at equal parameter "
    "count.",
    "none": "Curves pool every model shape (`--by none`): one curve per task, split, subtask and metric.",
}
MAX_WARNINGS = 50


@dataclass
class Block:
    kind: str  # heading | text | alert | code | table | image | list | finding
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


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def size(value: Any) -> str:
    """A scale value the way people say it: 768, 6.1k, 43k, 1.5M, 7B; huge ones (FLOPs) as 1.2e+15."""
    if _missing(value):
        return "?"
    x = float(value)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            if abs(x) >= 1000 * 1e12:
                return f"{x:.2g}"
            v = x / scale
            text = f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}".removesuffix(".0")
            return text + unit
    return f"{x:.3g}"


def finding(row: Mapping[str, Any], check: Mapping[str, Any] | None = None) -> str:
    """One curve's verdict in words, e.g. "exact match, depth 2: emergent at 22k parameters (95% CI 7k-64k);
    metric check: persists". The one place that writes a verdict as a sentence: fields a detector adds
    (a per-seed threshold spread, the noise source that decided, a power statement) are read here when a
    row has them."""
    metric, _, filtered = str(row.get("metric", "?")).partition(",")
    name = metric.replace("_", " ") + (f" ({filtered})" if filtered else "")
    where = [name]
    if not _missing(row.get("depth")):
        where.append(f"depth {int(row['depth'])}")
    if not _missing(row.get("series")):
        where.append(f"model {size(row['series'])}")
    unit = X_UNITS.get(str(row.get("x", "n_params")), str(row.get("x", "")))
    # the detector's own sentence: threshold, CI and per-seed spread, the reason, or the power statement
    sentence = describe_row(row, ", ".join(where), unit)
    extras = []
    if not _missing(row.get("noise_source")):
        extras.append(f"noise: {row['noise_source']}")
    if check is not None and not _missing(check.get("verdict")) and check.get("verdict") != "no_jump":
        extras.append(f"metric check: {str(check['verdict']).replace('_', '-')}")
    return sentence + "".join(f"; {e}" for e in extras)


def _metric_rank(metric: str) -> tuple[int, str]:
    order = (DISCONTINUOUS, *CONTINUOUS, "loss")
    base = base_metric(metric)
    return (order.index(base), metric) if base in order else (len(order), metric)


def _verdict_rank(label: str) -> int:
    """emergent, inconclusive, then any label this module does not know, then smooth and absent."""
    if label in VERDICT_ORDER[:2]:
        return VERDICT_ORDER.index(label)
    return 3 + VERDICT_ORDER.index(label) if label in VERDICT_ORDER else 2


def _main_split(thresholds: pd.DataFrame) -> str | None:
    splits = sorted(map(str, thresholds["split"].dropna().unique()))
    return "test" if "test" in splits else (splits[0] if splits else None)


def _sorted(df: pd.DataFrame, main: str | None) -> pd.DataFrame:
    """The main split first, then interesting verdicts, then metric (exact match first) and depth."""
    if df.empty:
        return df
    key = pd.DataFrame(
        {
            "split": [(str(s) != main, str(s)) for s in df["split"]],
            "verdict": [_verdict_rank(str(v)) for v in df.get("classification", df.get("verdict"))],
        },
        index=df.index,
    )
    if "metric" in df.columns:
        key["metric"] = [_metric_rank(str(m)) for m in df["metric"]]
    if "depth" in df.columns:
        key["depth"] = df["depth"].astype("float64").fillna(-1)
    order = sorted(df.index, key=lambda i: (str(df.at[i, "task"]), *key.loc[i].tolist()))
    return df.loc[order]


def _view(df: pd.DataFrame, view: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """The reader's columns, renamed; empty grouping columns (depth, series, subtask all `all`) dropped."""
    out = df.copy()
    if "threshold" in out.columns:
        out["threshold_ci"] = [
            ""
            if _missing(t)
            else size(t) + ("" if _missing(lo) or _missing(hi) else f" ({size(lo)}-{size(hi)})")
            for t, lo, hi in zip(out["threshold"], out["threshold_low"], out["threshold_high"], strict=True)
        ]
    for col in ("em_threshold", "continuous_threshold"):
        if col in out.columns:
            out[col] = [size(v) if not _missing(v) else "" for v in out[col]]
    cols = [
        (c, name)
        for c, name in view
        if c in out.columns
        and not (c in ("series", "depth") and out[c].isna().all())
        and not (c == "subtask" and set(out[c].astype(str)) <= {"all"})
        and not (c == "task" and out[c].nunique() <= 1)  # one task: its name heads the findings
    ]
    shown = out[[c for c, _ in cols]] if len(out) else pd.DataFrame(columns=[c for c, _ in cols])
    return shown.set_axis([name for _, name in cols], axis=1)


def _check_for(metric_check: pd.DataFrame, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if metric_check.empty or str(row.get("metric")) != DISCONTINUOUS:
        return None
    hit = (metric_check["task"].astype(str) == str(row["task"])) & (
        metric_check["split"].astype(str) == str(row["split"])
    )
    for col in ("depth", "series"):
        if col in metric_check.columns and col in row:
            if _missing(row[col]):
                hit &= metric_check[col].isna()
            else:
                hit &= metric_check[col].astype("float64") == float(row[col])
    rows = metric_check.loc[hit]
    return rows.iloc[0].to_dict() if len(rows) else None


def _counts(labels: pd.Series) -> str:
    counts = labels.astype(str).value_counts()
    ordered = sorted(counts.index, key=lambda v: (_verdict_rank(v), v))
    return ", ".join(f"{counts[v]} {v}" for v in ordered)


def _findings(task: str, thresholds: pd.DataFrame, metric_check: pd.DataFrame, main: str | None) -> list[str]:
    """The task's verdicts in words: every metric and depth of the main split, then each other split in
    one line (its emergent curves by name)."""
    mine = thresholds.loc[
        (thresholds["task"].astype(str) == task) & (thresholds["subtask"].astype(str) == "all")
    ]
    lines = []
    primary = mine.loc[mine["split"].astype(str) == str(main)]
    depth = primary["depth"].astype("float64").fillna(-1) if "depth" in primary.columns else None
    order = sorted(
        range(len(primary)),
        key=lambda i: (_metric_rank(str(primary["metric"].iloc[i])), 0 if depth is None else depth.iloc[i]),
    )
    primary = primary.iloc[order]
    for _, row in primary.iterrows():
        lines.append(finding(row.to_dict(), _check_for(metric_check, row.to_dict())))
    for split in sorted(set(mine["split"].astype(str)) - {str(main)}):
        # other splits in one short line: the counts, and where the first metric (exact match) turns on
        rows = mine.loc[mine["split"].astype(str) == split]
        line = f"{split} split: {_counts(rows['classification'])}"
        first = min(map(str, rows["metric"]), key=_metric_rank)
        emergent = rows.loc[
            (rows["metric"].astype(str) == first) & (rows["classification"].astype(str) == "emergent")
        ]
        if len(emergent):
            unit = X_UNITS.get(str(emergent["x"].iloc[0]), "") if "x" in emergent.columns else ""
            at = [
                size(r["threshold"]) + (f" (depth {int(r['depth'])})" if not _missing(r.get("depth")) else "")
                for _, r in emergent.sort_values(
                    "depth" if "depth" in emergent.columns else "metric"
                ).iterrows()
            ]
            line += f"; {first.replace('_', ' ')} emergent at {', '.join(at)} {unit}".rstrip()
        lines.append(line)
    return lines


def build_blocks(
    thresholds: pd.DataFrame,
    metric_check: pd.DataFrame,
    figures: list[Path],
    out_dir: Path,
    summary: dict[str, Any],
    criteria: Criteria,
    warnings: list[str],
    by: str = "none",
    left_out: Sequence[LeftOut] = (),
    alerts: Sequence[str] = (),
    sections: Sequence[tuple[str, list[Block]]] = (),
) -> list[Block]:
    """The report: alerts, then one section per task (its verdicts in words beside its scale figure), the
    study-specific sections (`sections`: heading and blocks, from analysis.extras), the other figures, the
    narrowed tables, the runs left out, the data and settings, and the warnings."""
    blocks = [Block("heading", "Emergence analysis", 1)]
    blocks += [Block("alert", a) for a in alerts]
    pngs = [p for p in figures if p.suffix == ".png"]
    main = _main_split(thresholds) if len(thresholds) else None
    if len(thresholds):
        whole = thresholds.loc[thresholds["subtask"].astype(str) == "all", "classification"]
        blocks.append(
            Block(
                "text",
                f"{len(thresholds)} curves fitted; of the {len(whole)} whole-answer curves: "
                f"{_counts(whole)}. Each task's verdicts for the `{main}` split, every metric and depth, "
                "come first; the tables further down hold every curve.",
            )
        )
    tasks = sorted(map(str, thresholds["task"].unique())) if len(thresholds) else []
    if not tasks:
        blocks.append(Block("text", "No curve could be fitted."))
    scale_shown: set[Path] = set()
    for task in tasks:
        blocks.append(Block("heading", task))
        scale = next((p for p in pngs if p.stem == f"scale_{safe_name(task)}"), None)
        image = None
        if scale is not None:
            kind = figure_kind("scale")
            caption = kind.caption_for(by) if kind is not None else scale.stem
            image = (scale.relative_to(out_dir).as_posix(), caption)
            scale_shown.add(scale)
        blocks.append(Block("finding", (_findings(task, thresholds, metric_check, main), image)))
    for title, section in sections:
        blocks.append(Block("heading", title))
        blocks += section
    blocks.append(Block("heading", "Figures"))
    rest = [p for p in pngs if p not in scale_shown]
    for task in dict.fromkeys(p.stem.split("_", 1)[1] for p in rest):
        blocks.append(Block("heading", task, 3))
        for png in (p for p in rest if p.stem.split("_", 1)[1] == task):
            kind = figure_kind(png.stem.split("_", 1)[0])
            caption = kind.caption_for(by) if kind is not None else png.stem
            blocks.append(Block("image", (png.relative_to(out_dir).as_posix(), caption)))
            blocks.append(Block("text", f"{caption} (also as PDF and SVG)"))
    if not rest:
        blocks.append(Block("text", "None besides the scale figures above." if pngs else "None drawn."))
    blocks.append(Block("heading", "Thresholds and classification"))
    blocks.append(Block("text", GROUPING.get(by, GROUPING["none"])))
    if len(thresholds):
        blocks.append(
            Block(
                "text",
                "The main split and the interesting verdicts first; every column is in `thresholds.csv`.",
            )
        )
        is_all = thresholds["subtask"].astype(str) == "all"
        blocks.append(Block("table", _view(_sorted(thresholds.loc[is_all], main), THRESHOLD_VIEW)))
        if (~is_all).any():
            blocks.append(Block("heading", "Subtasks and answer positions", 3))
            blocks.append(Block("table", _view(_sorted(thresholds.loc[~is_all], main), THRESHOLD_VIEW)))
    else:
        blocks.append(Block("text", "No curve could be fitted."))
    blocks.append(Block("heading", "Metric artefacts (exact match vs continuous metrics)"))
    if len(metric_check):
        blocks.append(Block("text", "Every column is in `metric_check.csv`."))
        blocks.append(Block("table", _view(_sorted(metric_check, main), CHECK_VIEW)))
    else:
        blocks.append(Block("text", "No task was measured with both exact match and a continuous metric."))
    blocks.append(Block("heading", "Runs left out"))
    if left_out:
        blocks.append(
            Block(
                "text",
                f"{len(left_out)} run(s) are not in this analysis (`--include-incomplete` analyses runs that "
                "did not complete; `--keep-all-generations` keeps older generations):",
            )
        )
        table = pd.DataFrame(
            [{"run": r.run_id, "status": r.status, "why": r.why, "folder": r.folder} for r in left_out]
        )
        blocks.append(Block("table", table))
    else:
        blocks.append(Block("text", "None: every run found is analysed."))
    blocks.append(Block("heading", "Data and settings"))
    blocks.append(Block("list", [f"{k}: {_fmt(v)}" for k, v in summary.items() if k != "command"]))
    blocks.append(Block("text", "Rebuild every figure, table and this report from `results.parquet` alone:"))
    blocks.append(Block("code", f"emergence figures {out_dir}"))
    if summary.get("command"):
        blocks.append(Block("text", "The table was collected with:"))
        blocks.append(Block("code", str(summary["command"])))
    blocks.append(Block("heading", "Classification criteria", 3))
    blocks.append(Block("text", detect_options(criteria, 0, 0).definition()))
    crit = pd.DataFrame(
        [
            {"criterion": k, "value": v, "meaning": CRITERIA_HELP.get(k, "")}
            for k, v in criteria.as_dict().items()
        ]
    )
    blocks.append(Block("table", crit))
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
        elif b.kind == "alert":
            out.append(f"> **Warning:** {b.content}")
        elif b.kind == "finding":
            lines, image = b.content
            out.append("\n".join(f"- {line}" for line in lines) or "No curve.")
            if image is not None:
                out.append(f"![{image[1]}]({image[0]})")
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
    "table{border-collapse:collapse;font-size:12px;margin:1em 0;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top;white-space:nowrap}"
    "td:last-child{white-space:normal;overflow-wrap:anywhere;min-width:16em}"
    "th{background:#f2f2f2;text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:.6em;"
    "white-space:pre-wrap;overflow-wrap:anywhere}"
    ".finding{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}"
    ".finding .verdicts{flex:1 1 20em;margin:0;padding-left:1.2em;font-size:14px;line-height:1.45}"
    ".finding figure{flex:2 1 34em;margin:0}figcaption{font-size:12px;color:#555}"
    ".alert{background:#fff3cd;border:1px solid #e0b000;padding:.6em}"
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
        elif b.kind == "alert":
            out.append(f"<p class='alert'><strong>Warning:</strong> {_inline(str(b.content))}</p>")
        elif b.kind == "finding":
            lines, image = b.content
            items = "".join(f"<li>{_inline(line)}</li>" for line in lines) or "<li>No curve.</li>"
            figure = (
                f"<figure><img src='{esc(image[0])}' alt='{esc(image[1])}'>"
                f"<figcaption>{_inline(image[1])}</figcaption></figure>"
                if image is not None
                else ""
            )
            out.append(f"<div class='finding'><ul class='verdicts'>{items}</ul>{figure}</div>")
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
