"""`emergence generate`: loading a run, sampling deterministically, the tasks' prompt notations, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, run_cli

from emergence_lab.generate import generate, generate_cli, load_run, sample
from emergence_lab.model import Transformer, TransformerConfig
from emergence_lab.tasks import Addition, Composition, Modular, Parity, Recall, Text


def _fake_run(root: Path, task: dict, width: int = 16) -> Path:
    """A run folder as training leaves it: a resolved config.yaml and a Lightning-style checkpoint."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    model = {"_target_": "emergence_lab.model.TransformerConfig", "width": width, "depth": 1, "head_dim": 8}
    (run / "config.yaml").write_text(yaml.safe_dump({"task": task, "model": model, "seed": 0}))
    from hydra.utils import instantiate

    t = instantiate(task)
    torch.manual_seed(0)
    net = Transformer(
        TransformerConfig(
            vocab_size=t.vocab_size, max_seq_len=t.max_seq_len, width=width, depth=1, head_dim=8
        )
    )
    ckpt = {
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "global_step": 5,
        "rng_cpu": torch.get_rng_state(),
    }
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return run


TEXT = {"_target_": "emergence_lab.tasks.text.Text", "seq_len": 16, "corpus_bytes": 20000, "test_size": 8}


@pytest.fixture
def text_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return _fake_run(tmp_path, TEXT)


def test_same_seed_same_text_and_stdout_holds_only_the_text(text_run, capsys):
    a = generate(text_run, "Kevi met ", 40, seed=3)
    assert a == generate(text_run, "Kevi met ", 40, seed=3)
    assert a != generate(text_run, "Kevi met ", 40, seed=4)
    assert generate_cli([str(text_run), "--prompt", "Kevi met ", "--tokens", "40", "--seed", "3"]) == 0
    out = capsys.readouterr()
    assert out.out == a + "\n" and out.err == ""


def test_loaded_weights_are_the_checkpoints(text_run):
    model, task = load_run(text_run)
    assert isinstance(task, Text) and task.context == 16
    saved = torch.load(text_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(model.tok_emb.weight, saved["model.tok_emb.weight"])
    assert not model.training


def test_greedy_top_k_and_a_sliding_window():
    seen: list[int] = []

    def next_byte(tokens: torch.Tensor) -> torch.Tensor:
        """Puts its mass on (last token + 1) mod 256; remembers how much context it was given."""
        seen.append(tokens.shape[1])
        return torch.nn.functional.one_hot((tokens + 1) % 256, 256).float() * 5

    out = sample(next_byte, [250], 10, context=4, temperature=0)  # type: ignore[arg-type]
    assert out == [251, 252, 253, 254, 255, 0, 1, 2, 3, 4]
    assert seen == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    # top-1 sampling is greedy whatever the temperature and seed
    assert sample(next_byte, [7], 5, context=4, temperature=2.0, top_k=1, seed=9) == [8, 9, 10, 11, 12]  # type: ignore[arg-type]


def test_tokens_beyond_the_trained_context_slide(text_run):
    model, task = load_run(text_run)
    out = sample(model, task.encode("a"), 50, context=task.seq_len("train") - 1, seed=0)
    assert len(out) == 50 and all(0 <= t < 256 for t in out)


@pytest.mark.parametrize(
    ("task", "prompt", "tokens"),
    [
        (Addition(digits=3), "123+456=", [1, 2, 3, 10, 4, 5, 6, 11]),
        (Modular(p=97, op="sub"), "12 - 5 =", [12, 97, 5, 98]),
        (Recall(), "k3 v1 k3", [3, 25, 3]),
        (Composition(steps=2, n_maps=4, n_values=10), "f0 f3 7", [10, 13, 7]),
        (Parity(n_tasks=2, n_bits=4, k=2), "10 0110", [1, 0, 0, 1, 1, 0]),
        (Text(seq_len=16, corpus_bytes=20000, test_size=8), "h\u00e9", [104, 195, 169]),
    ],
)
def test_each_task_encodes_and_decodes_its_own_notation(task, prompt, tokens):
    assert task.encode(prompt) == tokens
    assert task.encode(task.decode(tokens)) == tokens


@pytest.mark.parametrize(
    ("task", "prompt"),
    [
        (Addition(), "12a+3="),
        (Modular(p=7), "9 + 1 ="),
        (Recall(), "k99"),
        (Composition(), "g1"),
        (Parity(), "2"),
    ],
)
def test_a_prompt_outside_the_notation_is_a_value_error(task, prompt):
    with pytest.raises(ValueError):
        task.encode(prompt)


def test_errors_are_one_line_exit_2(text_run, tmp_path, capsys):
    cases = {
        "is not a folder": [str(tmp_path / "nope"), "--prompt", "x", "--tokens", "3"],
        "no config.yaml": [str(tmp_path), "--prompt", "x", "--tokens", "3"],
        "the prompt is empty": [str(text_run), "--prompt", "", "--tokens", "3"],
        "--tokens must be at least 1": [str(text_run), "--prompt", "x", "--tokens", "0"],
    }
    for message, argv in cases.items():
        assert generate_cli(argv) == 2
        err = capsys.readouterr()
        assert err.out == "" and message in err.err and err.err.count("\n") == 1
    (text_run / "checkpoints" / "last.ckpt").unlink()
    assert generate_cli([str(text_run), "--prompt", "x", "--tokens", "3"]) == 2
    assert "has no checkpoint" in capsys.readouterr().err


def test_bad_prompt_for_the_runs_task(tmp_path, capsys):
    run = _fake_run(tmp_path, {"_target_": "emergence_lab.tasks.addition.Addition", "digits": 2})
    assert generate_cli([str(run), "--prompt", "12+x=", "--tokens", "3"]) == 2
    assert "bad prompt: addition prompts use digits" in capsys.readouterr().err
    assert generate_cli([str(run), "--prompt", "12+34=", "--tokens", "3", "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out.strip()) == 3


@pytest.mark.slow
def test_generate_from_a_trained_run(tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, f"hydra.run.dir={run_dir}")
    args = ("generate", str(run_dir), "--prompt", "12+34=", "--tokens", "3", "--seed", "1")
    first, again = run_cli(*args), run_cli(*args)
    assert first.stdout == again.stdout and len(first.stdout) == 4 and first.stdout[:3].isdigit()
    assert first.stderr == ""
