"""`emergence bench gpu` on the CPU with tiny shapes: the JSON's fields and the MFU formula, nothing timed."""

from __future__ import annotations

import json

import pytest
import torch

from emergence_lab.bench.gpu import default_peak_flops, main, nanogpt_flops_per_token

TINY = ["--device", "cpu", "--width", "32", "--depth", "2", "--head-dim", "16", "--seq-len", "16"]
TINY += ["--vocab", "64", "--batch", "2", "--steps", "2", "--warmup", "1"]
TINY += [
    "--pack-n",
    "3",
    "--pack-width",
    "8",
    "--pack-batch",
    "2",
    "--pack-seq-len",
    "4",
    "--pack-steps",
    "1",
]


def test_tiny_cpu_run_writes_the_fields_and_mfu_by_the_nanogpt_formula(tmp_path):
    out = tmp_path / "gpu.json"
    assert main([*TINY, "--compile", "off", "--peak-flops", "1e12", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["shape"] == {
        "width": 32,
        "depth": 2,
        "n_heads": 2,
        "head_dim": 16,
        "seq_len": 16,
        "vocab": 64,
        "batch_requested": 2,
        "positions": "rotary",
    }
    # N = 12 L d^2 + LayerNorm gains (24,736) plus the tied 64 x 32 token table
    assert report["n_params_non_embedding"] == 24_736
    assert report["n_params_with_embedding"] == 24_736 + 64 * 32 == 26_784
    # 6 N + 12 L H Q T, with H Q = 32 and T = 16
    assert report["flops_per_token"] == 6 * 26_784 + 12 * 2 * 32 * 16 == 172_992
    assert (report["peak_flops"], report["peak_source"]) == (1e12, "--peak-flops")
    assert report["precision"] == "bf16 autocast"
    assert report["torch_version"] == torch.__version__
    assert list(report["results"]) == ["eager"]
    eager = report["results"]["eager"]
    assert eager["batch"] == 2 and eager["compiled"] is False
    assert eager["tokens_per_s"] > 0 and eager["step_s"] > 0
    assert eager["tokens_per_s"] * eager["step_s"] == pytest.approx(2 * 16)
    assert eager["mfu"] == pytest.approx(eager["tokens_per_s"] * 172_992 / 1e12)
    assert eager["final_loss"] == pytest.approx(eager["final_loss"])  # finite
    pack = report["pack"]
    assert (pack["n"], pack["width"], pack["depth"], pack["batch_per_model"], pack["seq_len"]) == (
        3,
        8,
        2,
        2,
        4,
    )
    assert pack["n_params_per_model"] == 2 * (12 * 8 * 8 + 2 * 8) + 8  # 12 L d^2 + LayerNorm gains
    assert pack["tokens_per_s_packed"] > 0 and pack["tokens_per_s_serial"] > 0
    assert pack["gain"] == pytest.approx(pack["tokens_per_s_packed"] / pack["tokens_per_s_serial"])


def test_pack_zero_skips_the_packing_measurement(tmp_path):
    out = tmp_path / "gpu.json"
    assert main([*TINY, "--compile", "off", "--pack-n", "0", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["pack"] is None


def test_no_peak_on_cpu_leaves_mfu_out(tmp_path):
    out = tmp_path / "gpu.json"
    assert main([*TINY, "--compile", "off", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["peak_flops"] is None
    assert report["results"]["eager"]["mfu"] is None


def test_a_compiler_that_fails_is_recorded_and_eager_still_measured(tmp_path, monkeypatch):
    def broken(*_, **__):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    out = tmp_path / "gpu.json"
    assert main([*TINY, "--compile", "both", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert results["eager"]["tokens_per_s"] > 0
    assert results["compiled"] == {"compiled": True, "error": "RuntimeError: no compiler here"}


def test_default_peaks_by_device_name():
    assert default_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert default_peak_flops("NVIDIA H200") == 989e12
    assert default_peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert default_peak_flops("Tesla T4") is None


def test_nanogpt_count_for_gpt2_small():
    # nanoGPT's GPT-2 small: 124.3M parameters with the tied table (wpe excluded), 12 layers, 768, T 1024
    assert nanogpt_flops_per_token(124_337_664, 12, 768, 1024) == 6 * 124_337_664 + 12 * 12 * 768 * 1024


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "0"], "--width: must be >= 1"),
        (["--peak-flops", "-1"], "--peak-flops: must be > 0"),
        (["--peak-flops", "fast"], "--peak-flops: expected a number"),
        (["--compile", "maybe"], "--compile: invalid choice"),
        (["--device", "nonsense"], "--device"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emergence bench gpu: error: ") and message in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["--steps", "1"]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


def test_the_script_imports_neither_lightning_nor_hydra_nor_wandb(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from emergence_lab.bench.gpu import main; "
        f"assert main({[*TINY, '--compile', 'off', '--out', str(tmp_path / 'g.json')]!r}) == 0; "
        "bad = [m for m in ('lightning', 'hydra', 'wandb', 'omegaconf') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
