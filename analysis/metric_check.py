"""Is a jump under exact match an artefact of the metric (Schaeffer et al. 2023)?

For every task measured with exact match and at least one continuous metric (token_accuracy, edit_distance,
answer_logprob, brier), on subtask `all` of its main split (`test` when present), and for every depth of it
when the curves are grouped by depth, `detect.metric_check` decides, in this order:

- `no_jump`: exact match is not classified `emergent` in thresholds.csv (after the false-discovery control):
  there is nothing to explain.
- `metric_induced`: where the answer length L is known, exact match ~ token_accuracy^L within noise and
  token accuracy improves steadily across the sizes where exact match sits at its floor (`pow_l_explains`,
  `steady_at_floor`);
- `persists`: a continuous metric is itself emergent, its threshold within `same_place_decades` of exact
  match's (`continuous_jumps_with_em`);
- `metric_induced`: a continuous metric improves steadily across exact match's floor sizes (at least 3);
- `inconclusive`: none of these.

`em_rise_start` is the last size at exact match's floor (the lower of the two sizes that bracket its jump).

With several continuous metrics, the first verdict in that order wins (metrics in the contract's order).
With a one-token answer (L = 1) token accuracy and edit distance are exact match itself, so only the other
continuous metrics (answer_logprob, brier) are compared; with none of those the verdict is `inconclusive`.
`em_vs_ta_pow_L_mae` / `_max` say how well exact match ~= token_accuracy^L holds across sizes (it is exact
for independent per-token errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from emergence_lab.analysis import detect
from emergence_lab.analysis.aggregate import add_depth, curve_keys
from emergence_lab.analysis.curves import curve_seed, detect_options, spec_of
from emergence_lab.analysis.detect import Detection
from emergence_lab.analysis.options import CheckOptions, Criteria
from emergence_lab.analysis.schema import CONTINUOUS, DISCONTINUOUS, equals


def metric_check(
    thresholds: pd.DataFrame,
    obs: pd.DataFrame,
    x: str,
    directions: dict[str, bool],
    opts: CheckOptions,
    by: str = "none",
    criteria: Criteria | None = None,
    n_boot: int = 200,
    seed: int = 0,
    detections: Sequence[Detection | None] | None = None,
) -> pd.DataFrame:
    """One row per task (per task and depth with `by = "depth"`; per model size too on the step axis);
    the `depth` column is always there (empty unless `by = "depth"`). `detections[i]`: the detector's
    result for row i of `thresholds` (reused where both curves were detected on the same sizes)."""
    group_keys = [k for k in curve_keys(x, by) if k not in ("split", "subtask", "metric")]
    columns = [*group_keys, "split", "verdict"]
    if thresholds.empty:
        return add_depth(pd.DataFrame(columns=columns), after="task")
    rows = []
    top = thresholds.loc[equals(thresholds["subtask"], "all")]
    top_obs = obs.loc[equals(obs["subtask"], "all")]
    for key_values, task_rows in top.groupby(group_keys, sort=True, dropna=False, observed=True):
        key = dict(
            zip(group_keys, key_values if isinstance(key_values, tuple) else (key_values,), strict=True)
        )
        metrics_by_split = task_rows.groupby("split", observed=True)["metric"].agg(lambda s: set(map(str, s)))
        usable = [
            s for s, m in metrics_by_split.items() if DISCONTINUOUS in m and any(c in m for c in CONTINUOUS)
        ]
        if not usable:
            continue
        split = "test" if "test" in usable else sorted(map(str, usable))[0]
        here = task_rows.loc[equals(task_rows["split"], split)]
        by_metric = {str(r["metric"]): r for _, r in here.iterrows()}
        mask = np.ones(len(top_obs), bool)
        for k, v in {**key, "split": split}.items():
            col = top_obs[k]
            mask &= equals(col, v) if not pd.isna(v) else col.isna().to_numpy()
        opt = detect_options(criteria or Criteria(), n_boot, 0)
        rows.append(
            _check_task(key, split, by_metric, top_obs.loc[mask], directions, opts, opt, seed, detections)
        )
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    if "depth" in table.columns:
        table["depth"] = pd.array(table["depth"].astype(object).where(table["depth"].notna()), dtype="Int64")
    return add_depth(table, after="task")


# with a one-token answer these equal exact match (or 1 - it), so they cannot tell an artefact from a jump
SAME_AS_EXACT_AT_ONE_TOKEN = ("token_accuracy", "edit_distance")
# the order in which one continuous metric's verdict beats another's
_RANK = {"metric_induced_pow": 0, "persists": 1, "metric_induced": 2, "inconclusive": 3}


def _per_size(
    obs: pd.DataFrame, metric: str, sizes: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The observations of one metric at each size, and the evaluation stderr per size (None if unknown)."""
    part = obs.loc[equals(obs["metric"], metric)]
    xs = part["x"].to_numpy(float)
    values = part["value"].to_numpy(float)
    se = part["stderr"].to_numpy(float) if "stderr" in part.columns else np.full(len(part), np.nan)
    obs_at = [values[xs == s] for s in sizes]
    stderr = np.array(
        [np.nanmedian(se[xs == s]) if np.isfinite(se[xs == s]).any() else np.nan for s in sizes]
    )
    return obs_at, stderr if np.isfinite(stderr).any() else None


def _check_task(
    key: dict[str, Any],
    split: str,
    by_metric: dict[str, pd.Series],
    obs: pd.DataFrame,
    directions: dict[str, bool],
    opts: CheckOptions,
    det_opts: detect.DetectOptions,
    seed: int,
    detections: Sequence[Detection | None] | None,
) -> dict[str, Any]:
    em = by_metric[DISCONTINUOUS]
    row: dict[str, Any] = {**key, "split": split, "em_classification": em["classification"]}
    # the last size at exact match's floor (the lower size bracketing its jump): the artefact figure shades
    # the floor sizes up to it
    row |= {"em_threshold": em.get("threshold", np.nan), "em_rise_start": em.get("bracket_low", np.nan)}
    row |= _power_law_fit(obs)
    length = row["answer_len"]
    measured = [c for c in CONTINUOUS if c in by_metric]
    # token accuracy and edit distance of a one-token answer are exact match itself: not evidence
    one_token = length == 1
    continuous = [c for c in measured if not (one_token and c in SAME_AS_EXACT_AT_ONE_TOKEN)]
    chosen = (continuous or measured)[0]
    verdict, reason = "no_jump", f"exact match is {em['classification']}: nothing to explain"
    pow_ok: bool | None = None
    steady = False
    floor_sizes = 0
    if em["classification"] == "emergent":
        em_x = np.unique(obs.loc[equals(obs["metric"], DISCONTINUOUS), "x"].to_numpy(float))
        best: tuple[int, str, detect.MetricCheck] | None = None
        for name in continuous:
            cont_x = np.unique(obs.loc[equals(obs["metric"], name), "x"].to_numpy(float))
            sizes = np.intersect1d(em_x, cont_x)
            if sizes.size < det_opts.plateau + 2:
                continue
            em_obs, em_se = _per_size(obs, DISCONTINUOUS, sizes)
            ct_obs, ct_se = _per_size(obs, name, sizes)
            em_key = {**key, "split": split, "subtask": "all", "metric": DISCONTINUOUS}
            known = None
            if detections is not None and sizes.size == em_x.size == cont_x.size:
                pair = (detections[em.name], detections[by_metric[name].name])
                known = pair if pair[0] is not None and pair[1] is not None else None
            check = detect.metric_check(
                sizes,
                em_obs,
                ct_obs,
                spec_of(DISCONTINUOUS, True),
                spec_of(name, directions.get(name, True)),
                answer_len=int(length) if np.isfinite(length) else None,
                same_place_decades=opts.same_place_decades,
                exact_stderr=em_se,
                continuous_stderr=ct_se,
                options=replace(det_opts, seed=curve_seed(em_key, seed)),
                detections=known,
            )
            label = check.verdict
            if label == "metric_induced" and check.pow_l_explains and check.steady_at_floor:
                label = "metric_induced_pow"
            if label not in _RANK:
                continue  # no_jump here: exact match at these sizes alone is not emergent
            if best is None or _RANK[label] < best[0]:
                best = (_RANK[label], name, check)
        if best is None and not continuous:
            verdict = "inconclusive"
            reason = (
                "one-token answer: token accuracy and edit distance are exact match itself, "
                "and no other continuous metric (answer_logprob, brier) was measured"
            )
        elif best is None:
            verdict, reason = "inconclusive", "no continuous metric measured at enough of exact match's sizes"
        else:
            _, chosen, check = best
            verdict, reason = check.verdict, check.reason
            pow_ok, steady = check.pow_l_explains, check.steady_at_floor
            if check.exact.bracket is not None:
                floor_sizes = int((em_x <= check.exact.bracket[0]).sum())
    cont = by_metric[chosen]
    row |= {
        "continuous_metric": chosen,
        "continuous_classification": cont["classification"],
        "continuous_threshold": cont.get("threshold", np.nan),
        "continuous_jumps_with_em": _same_place(cont, em, opts),
        "floor_sizes": floor_sizes,
        "pow_l_explains": pow_ok,
        "steady_at_floor": steady,
        "verdict": verdict,
        "reason": reason,
    }
    return row


def _same_place(cont: pd.Series, em: pd.Series, opts: CheckOptions) -> bool:
    """Is the continuous curve itself emergent, with a threshold near exact match's?"""
    t_cont, t_em = float(cont.get("threshold", np.nan)), float(em.get("threshold", np.nan))
    return bool(
        cont["classification"] == "emergent"
        and np.isfinite(t_cont)
        and np.isfinite(t_em)
        and abs(np.log10(t_cont) - np.log10(t_em)) <= opts.same_place_decades
    )


def _power_law_fit(obs: pd.DataFrame) -> dict[str, Any]:
    """How well exact match ~= token_accuracy^L holds across sizes (per-size means)."""
    out: dict[str, Any] = {"answer_len": np.nan, "em_vs_ta_pow_L_mae": np.nan, "em_vs_ta_pow_L_max": np.nan}
    if "answer_len" not in obs.columns or obs["answer_len"].isna().all():
        return out
    length = int(obs["answer_len"].dropna().median())
    means = obs.groupby([obs["metric"].astype(str), "x"])["value"].mean().unstack(0)
    out["answer_len"] = length
    if DISCONTINUOUS not in means or "token_accuracy" not in means:
        return out
    both = means[[DISCONTINUOUS, "token_accuracy"]].dropna()
    if both.empty:
        return out
    err = (both[DISCONTINUOUS] - both["token_accuracy"] ** length).abs()
    out["em_vs_ta_pow_L_mae"] = float(err.mean())
    out["em_vs_ta_pow_L_max"] = float(err.max())
    return out
