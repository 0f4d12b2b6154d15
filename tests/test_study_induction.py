"""The `induction_text` study (docs/studies/induction_text.md): it plans its grid, its analysis block is
valid, and its verdict table stays true.

The sweep's evaluation rows over steps (tests/fixtures/studies/induction_text.csv: every evaluation of every
run, the metrics of the write-up, only the columns the analysis needs) go through `emergence analyze --x step
--by depth` with the study's settings; the classifications must be the ones the write-up states.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from emergence_lab.analysis.study import check_block
from emergence_lab.launch.plan import plan_from_cli


def test_induction_study_plans_its_grid() -> None:
    master, runs = plan_from_cli(["-m", "experiment=induction_text"])
    assert len(runs) == 9
    assert {(r.width, r.depth, r.seed) for r in runs} == {(32, d, s) for d in (1, 2, 3) for s in (0, 1, 2)}
    assert {(r.task, r.max_steps) for r in runs} == {("text", 6000)}
    assert (master.task.seq_len, master.task.copy_share, master.task.corpus_bytes) == (64, 0.0, 12_000_000)
    assert master.optim.batch_size == 32 and master.budget.rule == "steps"
    assert master.trainer.eval_every == 200
    block = OmegaConf.to_container(master.analysis)
    assert isinstance(block, dict)
    assert (block["primary_metric"], block["x"], block["by"]) == ("induction_score", "step", "depth")
    assert check_block(block, "experiments/induction_text.yaml") is None
