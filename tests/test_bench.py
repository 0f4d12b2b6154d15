"""`emergence bench train`: argument checks and the bench.json record (nothing here is timed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emergence_lab.bench import bench_cli
from emergence_lab.bench.train import size_record
from emergence_lab.model import TransformerConfig


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "0"], "every width must be >= 1"),
        (["--widths", "abc"], "expected comma-separated integers"),
        (["--widths", "16,,32"], "expected comma-separated integers"),
        (["--widths", "16,-8"], "every width must be >= 1"),
        (["--steps", "0"], "--steps: must be >= 1, got 0"),
        (["--steps", "2.5"], "--steps: expected an integer"),
        (["--repeats", "-1"], "--repeats: must be >= 1, got -1"),
        (["--warmup", "-3"], "--warmup: must be >= 0, got -3"),
        (["--batch", "0"], "--batch: must be >= 1"),
        (["--threads", "0"], "--threads: must be >= 1"),
        (["--depth", "0"], "--depth: must be >= 1"),
        (["--digits", "18"], "--digits: must be <= 17"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    assert bench_cli(["train", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("emergence bench train: error: ")
    assert message in lines[0]


def test_bad_argument_from_the_command_line_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "emergence_lab", "bench", "train", "--widths", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "emergence bench train: error: argument --widths: every width must be >= 1, got '0'"
    ]


def test_unknown_bench_is_usage_and_exit_2(capsys):
    assert bench_cli(["fly"]) == 2
    assert "usage: emergence bench" in capsys.readouterr().err


def test_size_record_derives_tokens_ratio_and_overhead_from_the_rates():
    row = size_record(32, 2, 128, 11, framework=[40.0, 50.0, 45.0], plain=[60.0, 50.0, 55.0])
    assert row["steps_per_s_framework"] == 45.0  # medians
    assert row["steps_per_s_plain"] == 55.0
    assert row["tokens_per_s_framework"] == 45.0 * 128 * 11
    assert row["tokens_per_s_plain"] == 55.0 * 128 * 11
    assert row["ratio"] == pytest.approx(45 / 55)
    assert row["framework_overhead_ms_per_step"] == pytest.approx(1000 * (1 / 45 - 1 / 55))
    cfg = TransformerConfig(width=32, depth=2, vocab_size=12, max_seq_len=12)
    assert row["n_params"] == cfg.n_params == 24_736
    assert row["flops_per_step"] == cfg.flops_per_token(11) * 128 * 11
    assert row["repeats_plain"] == [60.0, 50.0, 55.0]


@pytest.mark.slow
def test_bench_train_writes_every_field(tmp_path):
    out = tmp_path / "sub" / "bench.json"
    args = ["--widths", "8,12", "--steps", "2", "--warmup", "1", "--repeats", "1", "--batch", "4"]
    assert bench_cli(["train", *args, "--digits", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["threads"] == 1
    assert report["torch_version"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu_model"]
    assert [s["width"] for s in report["sizes"]] == [8, 12]
    for s in report["sizes"]:
        assert (s["depth"], s["batch"], s["seq_len"]) == (2, 4, 8)
        assert s["n_params"] == TransformerConfig(width=s["width"], depth=2).n_params
        assert s["tokens_per_s_plain"] == pytest.approx(s["steps_per_s_plain"] * 4 * 8)
        assert s["tokens_per_s_framework"] == pytest.approx(s["steps_per_s_framework"] * 4 * 8)
        assert s["ratio"] == pytest.approx(s["steps_per_s_framework"] / s["steps_per_s_plain"])
        fw, pl = s["steps_per_s_framework"], s["steps_per_s_plain"]
        assert s["framework_overhead_ms_per_step"] == pytest.approx(1000 * (1 / fw - 1 / pl))
    assert report["estimate"]["flops_per_s"] != 0
