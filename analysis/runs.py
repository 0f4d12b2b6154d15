"""Which collected rows count: finished runs only, the newest generation of each run, no duplicates.

Applied by `collect` after every input is read, in this order:

1. Generations. Two run ids that differ only in their config hash (`<task>-w<W>-d<D>-s<seed>-<hash8>`) in one
   sweep are the same task, shape and seed trained under two configs: a sweep folder relaunched after a
   config change. Both are named in a warning, and only the newest (run.json's ended_at, else started_at,
   else the results file's mtime) counts unless `keep_all_generations`.
2. Status. Only `completed` runs count (and rows whose status nobody recorded: a CSV without a status
   column, lm-eval files); failed, interrupted, running and pending runs are left out unless
   `include_incomplete`. A `running` run whose lock is free was already read as `interrupted`.
3. Duplicates. Rows measured twice (same sweep, run, task, split, subtask, metric and step) with the same
   value are dropped with a warning that says how many and from which files (a CSV concatenated twice would
   otherwise multiply the seeds); with different values they are an error that names them.

Every run left out is returned as a `LeftOut`, for the console and the report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from emergence_lab.analysis.console import Console

# The statuses that count by default; "unknown" is a source that records none (CSV, lm-eval).
COUNTED_STATUSES = frozenset({"completed", "unknown"})
# A row's identity: measured once per run and step. Importers' extra keys count where present.
ROW_KEY: tuple[str, ...] = ("sweep", "run_id", "model", "task", "split", "subtask", "metric", "step", "shots")
_GENERATION = re.compile(r"^(?P<stem>.+-s\d+)-(?P<hash>[0-9a-f]{8})$")
MAX_NAMED = 5


class DuplicateError(ValueError):
    """Conflicting duplicate rows; the message is one line that names them."""


@dataclass(frozen=True)
class LeftOut:
    """A run that is not analysed: its id, its status, where it came from and why it was left out."""

    run_id: str
    status: str
    folder: str
    why: str

    def line(self) -> str:
        return f"{self.run_id} ({self.status}, {self.why}): {self.folder}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Run:
    sweep: str
    run_id: str
    status: str
    source: str


def select(
    table: pd.DataFrame,
    console: Console,
    times: Mapping[str, float | None],
    unkeyed: frozenset[str] = frozenset(),
    include_incomplete: bool = False,
    keep_all_generations: bool = False,
    without_results: Sequence[LeftOut] = (),
    planned: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[pd.DataFrame, list[LeftOut]]:
    """The rows that count, and every run left out. `times` maps a row's `source` to when its run last ran;
    rows from an `unkeyed` source (a table without run ids or seeds) have no identity to compare;
    `without_results` are run folders that wrote no readable rows, listed with the rest; `planned` maps a
    run id to the overrides its sweep's manifest planned it with."""
    left_out: list[LeftOut] = list(without_results)
    if table.empty or "run_id" not in table.columns:
        if left_out:
            _tell(console, left_out, include_incomplete)
            console.warn(f"no run is left to analyse: all {len(left_out)} run(s) were left out")
        return table, left_out
    codes = _run_codes(table)
    runs, run_codes = _runs(table, codes)
    drop: set[tuple[str, str]] = set()
    for old, newest in _older_generations(runs, times, console, keep_all_generations, planned or {}):
        left_out.append(LeftOut(old.run_id, old.status, old.source, f"older generation of {newest.run_id}"))
        drop.add((old.sweep, old.run_id))
    incomplete = [r for r in runs if r.status not in COUNTED_STATUSES and (r.sweep, r.run_id) not in drop]
    if incomplete:
        if include_incomplete:
            console.warn(
                f"{len(incomplete)} run(s) did not complete and are analysed anyway (--include-incomplete): "
                + _counts(incomplete)
            )
        else:
            left_out += [LeftOut(r.run_id, r.status, r.source, "not completed") for r in incomplete]
            drop.update((r.sweep, r.run_id) for r in incomplete)
    if drop:
        dropped = [code for run, code in zip(runs, run_codes, strict=True) if (run.sweep, run.run_id) in drop]
        table = table.loc[~np.isin(codes, dropped)].reset_index(drop=True)
    if left_out:
        _tell(console, left_out, include_incomplete)
    counted = [r for r in runs if (r.sweep, r.run_id) not in drop]
    if runs and not counted:
        console.warn(f"no run is left to analyse: all {len(left_out)} run(s) were left out")
    elif counted and all(r.status not in COUNTED_STATUSES for r in counted):
        console.warn(
            f"EVERY run analysed is incomplete ({_counts(counted)}): the verdicts describe runs that did not "
            "finish"
        )
    return drop_duplicates(table, console, unkeyed), left_out


def _tell(console: Console, left_out: list[LeftOut], include_incomplete: bool) -> None:
    """One warning that counts the runs left out, then each run on its own line."""
    console.warn(
        f"{len(left_out)} run(s) left out ({_counts(left_out)}), each listed in the console and the report"
        + ("" if include_incomplete else "; --include-incomplete analyses runs that did not complete")
    )
    for run in left_out:
        console.info(f"  left out: {run.line()}")


def _text(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), "", dtype=object)
    return table[column].astype(object).where(table[column].notna(), "").astype(str).to_numpy()


def _codes(s: pd.Series) -> np.ndarray:
    """Integer codes of a column, equal for equal values (-1: missing); cheap on categoricals."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.codes.to_numpy(dtype=np.int64)
    return pd.factorize(s, use_na_sentinel=True)[0].astype(np.int64)


def _run_codes(table: pd.DataFrame) -> np.ndarray:
    """One integer per row that identifies its run (sweep and run id)."""
    run = _codes(table["run_id"])
    if "sweep" not in table.columns:
        return run
    return _codes(table["sweep"]) * (int(run.max(initial=0)) + 2) + run


def _runs(table: pd.DataFrame, codes: np.ndarray) -> tuple[list[Run], np.ndarray]:
    """Every run once (its first row's sweep, status and source), and its code."""
    unique, first = np.unique(codes, return_index=True)
    rows = table.iloc[first]
    cols = {c: _text(rows, c) for c in ("sweep", "run_id", "status", "source")}
    runs = [
        Run(sweep, run_id, status or "unknown", source)
        for sweep, run_id, status, source in zip(
            cols["sweep"], cols["run_id"], cols["status"], cols["source"], strict=True
        )
    ]
    return runs, unique


def _counts(runs: list) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _older_generations(
    runs: list[Run],
    times: Mapping[str, float | None],
    console: Console,
    keep_all: bool,
    planned: Mapping[str, tuple[str, ...]],
) -> list[tuple[Run, Run]]:
    """(older run, newest run) for every run id superseded by a later generation of the same stem. Runs
    that the manifest planned with different overrides (a study that varies, say, the learning rate at one
    shape) are distinct runs, not generations."""
    groups: dict[tuple[str, str, tuple[str, ...] | None], list[Run]] = {}
    for run in runs:
        match = _GENERATION.match(run.run_id)
        if match:
            groups.setdefault((run.sweep, match["stem"], planned.get(run.run_id)), []).append(run)
    out: list[tuple[Run, Run]] = []
    for _key, members in sorted(groups.items(), key=lambda item: (item[0][:2], str(item[0][2]))):
        if len(members) < 2:
            continue
        ordered = sorted(members, key=lambda r: (times.get(r.source) or -np.inf, r.run_id))
        names = " and ".join(r.run_id for r in ordered)
        newest = ordered[-1]
        stamp = [times.get(r.source) for r in ordered]
        if keep_all:
            console.warn(f"{names} are one task, shape and seed under different configs; all count")
        elif stamp[-1] is None or stamp.count(stamp[-1]) > 1:
            console.warn(
                f"{names} are one task, shape and seed under different configs, and which is newest is "
                "unknown: all count"
            )
        else:
            console.warn(
                f"{names} are one task, shape and seed under different configs (relaunched after a "
                f"config change?): only the newest, {newest.run_id}, counts (--keep-all-generations "
                "keeps all)"
            )
            out += [(old, newest) for old in ordered[:-1]]
    return out


def drop_duplicates(
    table: pd.DataFrame, console: Console, unkeyed: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """Exact duplicate rows dropped with a warning; conflicting ones raise DuplicateError."""
    key = [c for c in ROW_KEY if c in table.columns]
    if table.empty or "run_id" not in key:
        return table
    keyed = (
        ~table["source"].isin(list(unkeyed)).to_numpy(dtype=bool)
        if unkeyed and "source" in table.columns
        else np.ones(len(table), dtype=bool)
    )
    sub = table.loc[keyed, key]
    repeated = sub.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return table
    rows = np.flatnonzero(keyed)[repeated]
    block = table.iloc[rows]
    values = block["value"].to_numpy(dtype="float64")
    group = block.groupby(key, observed=True, dropna=False, sort=True).ngroup().to_numpy()
    # a group conflicts when its values differ (NaN equals NaN here: the same missing measurement)
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    same_group = g[1:] == g[:-1]
    differ = same_group & ~((v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1])))
    if differ.any():
        conflicting = np.unique(g[1:][differ])
        raise DuplicateError(_conflict_message(block, key, group, conflicting))
    extra = block.duplicated(key, keep="first").to_numpy()
    dropped = rows[extra]
    sources = _text(block, "source")
    kept_source = dict(zip(group[~extra], sources[~extra], strict=True))  # each group's first copy
    where: dict[tuple[str, str], int] = {}
    for code, copy in zip(group[extra], sources[extra], strict=True):
        pair = (copy, kept_source[code])
        where[pair] = where.get(pair, 0) + 1

    def place(copy: str, original: str) -> str:
        name = copy or "an input without a name"
        return name if copy == original else f"{name} (repeating {original or 'an input without a name'})"

    shown = ", ".join(f"{n} in {place(*pair)}" for pair, n in list(where.items())[:MAX_NAMED])
    more = f" and {len(where) - MAX_NAMED} more inputs" if len(where) > MAX_NAMED else ""
    console.warn(f"dropped {len(dropped)} exact duplicate row(s) (the same measurement twice): {shown}{more}")
    return table.drop(index=table.index[dropped]).reset_index(drop=True)


def _conflict_message(block: pd.DataFrame, key: list[str], group: np.ndarray, conflicting: np.ndarray) -> str:
    parts = []
    for code in conflicting[:3]:
        rows = block.loc[group == code]
        first = rows.iloc[0]
        label = ", ".join(f"{c} {first[c]}" for c in key if c != "sweep" and not pd.isna(first[c]))
        values = " vs ".join(f"{v:.6g}" for v in pd.unique(rows["value"]))
        sources = sorted({str(s) for s in rows["source"].dropna()}) if "source" in rows.columns else []
        parts.append(f"{label}: {values}" + (f" ({'; '.join(sources)})" if sources else ""))
    more = f"; and {len(conflicting) - 3} more" if len(conflicting) > 3 else ""
    return (
        f"{len(conflicting)} measurement(s) recorded twice with different values: " + "; ".join(parts) + more
    )
