"""The `parity_quanta` study (docs/studies/parity_quanta.md): it plans its grid and its analysis block is
valid."""

from __future__ import annotations

from emergence_lab.launch.plan import plan_from_cli


def test_quanta_study_plans_its_grid() -> None:
    master, runs = plan_from_cli(["-m", "experiment=parity_quanta"])
    assert len(runs) == 24
    assert {r.width for r in runs} == {8, 12, 16, 24, 32, 48}
    assert {r.depth for r in runs} == {2} and {r.seed for r in runs} == {0, 1, 2, 3}
    assert {r.task for r in runs} == {"parity"} and {r.max_steps for r in runs} == {2500}
    assert (master.task.n_tasks, master.task.n_bits, master.task.k, master.task.alpha) == (8, 8, 2, 1.4)
    assert master.budget.rule == "steps"
    assert master.analysis.primary_metric == "loss"
    assert master.analysis.x == "n_params" and master.analysis.by == "none"
    assert list(master.analysis.figures) == ["scale", "subtasks", "training"]
    assert max(r.n_params for r in runs) >= 10 * min(r.n_params for r in runs)
