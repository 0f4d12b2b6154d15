"""The results table is the contract between training and analysis: both sides must agree on it.

analysis/ may not import emergence_lab (it runs without torch), so each side keeps its own list; this test
is what keeps the two lists the same."""

from emergence_lab import contract, metrics
from emergence_lab.analysis import schema


def test_every_written_column_is_known_and_typed_by_analysis():
    typed = set(schema.STRING_COLUMNS) | set(schema.INT_COLUMNS) | set(schema.FLOAT_COLUMNS)
    assert set(contract.COLUMNS) <= typed
    assert set(contract.COLUMNS) <= set(schema.COLUMN_ORDER)
    assert set(schema.MIN_COLUMNS) <= set(contract.COLUMNS)


def test_metric_lists_and_directions_agree():
    assert set(schema.TRAINING_METRICS) == set(metrics.METRICS)
    assert {schema.DISCONTINUOUS} == set(metrics.DISCONTINUOUS)
    for name in metrics.METRICS:
        assert schema.higher_is_better(name) == (name not in metrics.LOWER_IS_BETTER), name
