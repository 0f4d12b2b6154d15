"""The results contract (`emergence_lab.contract`) is the one description of what training writes and analysis
reads. These tests check the contract itself, and that both sides take their columns, types, file names and
metrics from it (tests may import both sides; the packages themselves import only the contract)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emergence_lab import contract, metrics
from emergence_lab.analysis import collect, jsonl, schema, wandb_io
from emergence_lab.analysis.console import Console
from emergence_lab.contract import COLUMN_TYPES, RESULT_COLUMNS, SOURCE_COLUMNS, TABLE_ORDER
from emergence_lab.run import folder

# The pandas dtype analysis gives each contract type.
PANDAS_DTYPE = {"str": "category", "int": "Int64", "float": "float64", "bool": "boolean"}
SAMPLE = {"str": "x", "int": 3, "float": 0.25, "bool": True}


# ---- the contract itself ---------------------------------------------------------------------------------


def test_every_column_has_one_known_type_and_a_doc() -> None:
    names = [c.name for c in (*RESULT_COLUMNS, *SOURCE_COLUMNS)]
    assert len(names) == len(set(names))
    assert all(c.type in PANDAS_DTYPE and c.doc for c in (*RESULT_COLUMNS, *SOURCE_COLUMNS))
    assert set(TABLE_ORDER) == set(names) and len(TABLE_ORDER) == len(names)
    assert set(contract.MIN_COLUMNS) <= set(contract.COLUMNS)
    assert tuple(c.name for c in RESULT_COLUMNS) == contract.COLUMNS
    for kind in PANDAS_DTYPE:
        assert contract.columns_of_type(kind) == tuple(n for n in TABLE_ORDER if COLUMN_TYPES[n] == kind)


def test_column_types() -> None:
    assert {n for n in contract.COLUMNS if COLUMN_TYPES[n] == "str"} == {
        "run_id",
        "sweep",
        "task",
        "subtask",
        "split",
        "metric",
    }
    assert {n for n in contract.COLUMNS if COLUMN_TYPES[n] == "float"} == {"value", "flops"}
    assert COLUMN_TYPES["schema_version"] == COLUMN_TYPES["step"] == COLUMN_TYPES["n_params"] == "int"
    assert COLUMN_TYPES["stderr"] == "float" and COLUMN_TYPES["higher_is_better"] == "bool"
    assert COLUMN_TYPES["n_params_nominal"] == "bool" and COLUMN_TYPES["source"] == "str"


def test_file_names_are_distinct_plain_names() -> None:
    files = [contract.RESULTS_FILE, contract.RUN_FILE, contract.CONFIG_FILE, contract.MANIFEST_FILE]
    assert len(set(files)) == len(files) and all("/" not in f for f in files)
    assert contract.RESULTS_FILE.endswith(".jsonl") and contract.MANIFEST_FILE.endswith(".json")


def test_metric_meanings() -> None:
    assert contract.metric("acc,none") == contract.metric("acc") and contract.metric("nonsense") is None
    em = contract.metric("exact_match")
    assert em is not None and em.kind == "discontinuous" and em.range == 1.0 and em.higher_is_better
    loss = contract.metric("loss")
    assert loss is not None and not loss.higher_is_better and loss.range is None
    assert contract.metric("brier").range == 1.0  # kept as unit range, so verdicts do not change
    with pytest.raises(ValueError, match="already declared"):
        contract.declare(contract.Metric("loss", True, 0.0, 1.0))


# ---- analysis reads the contract ------------------------------------------------------------------------


def test_normalise_gives_every_contract_column_its_contract_type() -> None:
    frame = pd.DataFrame({name: [SAMPLE[COLUMN_TYPES[name]]] * 2 for name in reversed(TABLE_ORDER)})
    out = schema.normalise(frame.assign(extra=[1, 2]))
    assert list(out.columns) == [*TABLE_ORDER, "extra"]
    for name in TABLE_ORDER:
        assert str(out[name].dtype) == PANDAS_DTYPE[COLUMN_TYPES[name]], name


def test_the_jsonl_reader_types_every_written_column_by_the_contract() -> None:
    assert jsonl.JSONL_SCHEMA.names == list(contract.COLUMNS)
    arrow = {"str": "string", "int": "int64", "float": "double", "bool": "bool"}
    for field in jsonl.JSONL_SCHEMA:
        assert str(field.type) == arrow[COLUMN_TYPES[field.name]], field.name


def test_analysis_uses_the_contract_file_names() -> None:
    assert collect.RESULTS_FILE == wandb_io.RESULTS_FILE == contract.RESULTS_FILE
    assert {contract.RUN_FILE, contract.MANIFEST_FILE} == collect.BOOKKEEPING_FILES
    assert jsonl.RUN_FILE == contract.RUN_FILE


def test_analysis_metric_meanings_are_the_contracts() -> None:
    assert schema.TRAINING_METRICS == contract.TRAINING_METRIC_NAMES
    assert schema.DISCONTINUOUS == "exact_match"
    assert schema.CONTINUOUS == ("token_accuracy", "edit_distance", "answer_logprob", "brier")
    for spec in (*contract.TRAINING_METRICS, *contract.SOURCE_METRICS):
        assert schema.higher_is_better(spec.name) == spec.higher_is_better, spec.name
        assert schema.metric_kind(spec.name) == spec.kind, spec.name
        assert schema.unit_range(spec.name) == spec.range, spec.name
    # a metric nobody declared: higher is better, continuous, range taken from the data
    assert (schema.higher_is_better("zz"), schema.metric_kind("zz"), schema.unit_range("zz")) == (
        True,
        "continuous",
        None,
    )


# ---- training writes the contract ----------------------------------------------------------------------


def test_training_metrics_are_the_contracts() -> None:
    assert metrics.METRICS == contract.TRAINING_METRIC_NAMES
    assert {m.name for m in contract.TRAINING_METRICS if m.kind == "discontinuous"} == metrics.DISCONTINUOUS
    assert {m.name for m in contract.TRAINING_METRICS if not m.higher_is_better} == metrics.LOWER_IS_BETTER
    logits = torch.randn(3, 4, 7)
    target = torch.randint(0, 7, (3, 4))
    values = metrics.all_metrics(logits.argmax(-1), logits, target)
    assert tuple(values) == contract.TRAINING_METRIC_NAMES
    for name, per_example in values.items():
        spec = contract.metric(name)
        v = per_example.float().numpy()
        assert v.shape == (3,) and np.isfinite(v).all(), name
        assert spec.lower is None or (v >= spec.lower - 1e-6).all(), name
        # the multi-class Brier score reaches 2; the contract keeps 1 as its range so that verdicts stay
        upper = 2.0 if name == "brier" else spec.upper
        assert upper is None or (v <= upper + 1e-6).all(), name


def test_training_file_and_columns_are_the_contracts(tmp_path: Path) -> None:
    """A row as training writes it goes through `folder.ResultsWriter` and comes back from analysis's
    reader with every contract column and the contract's types."""
    row = {c.name: SAMPLE[c.type] for c in RESULT_COLUMNS} | {"schema_version": contract.SCHEMA_VERSION}
    writer = folder.ResultsWriter(tmp_path)
    writer.append([row])
    assert writer.path == tmp_path / contract.RESULTS_FILE
    folder.write_run_info(tmp_path, {"status": "completed"})
    assert json.loads((tmp_path / contract.RUN_FILE).read_text())["status"] in contract.RUN_STATUSES
    console = Console(quiet=True)
    table = collect.collect([str(tmp_path)], console)
    assert console.warnings == [] and len(table) == 1
    got = table.iloc[0]
    for column in RESULT_COLUMNS:
        assert str(table[column.name].dtype) == PANDAS_DTYPE[column.type], column.name
        value = got[column.name]
        want = row[column.name]
        assert (str(value) == want) if column.type == "str" else math.isclose(float(value), float(want))
    assert str(got["status"]) == "completed"
