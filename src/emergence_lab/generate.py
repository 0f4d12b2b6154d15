"""`emergence generate RUN_DIR --prompt TEXT --tokens N [--temperature T] [--top-k K] [--seed S]`.

Samples N tokens from a run's checkpoint (`checkpoints/last.ckpt`, loaded with `weights_only=True`) after
a prompt written in the task's own notation (`Task.encode`: UTF-8 text for `task=text`, `"123+456="` for
addition, `"k3 v1 k3"` for recall, ...), and prints the continuation alone, decoded by `Task.decode`, on
stdout. Nothing else goes to stdout; a bad run folder, checkpoint or prompt is one line on stderr, exit 2.

Sampling: temperature-scaled softmax, optionally restricted to the top K tokens (nanoGPT's `sample.py`);
`--temperature 0` is greedy. Draws come from a CPU generator seeded with `--seed`, and the model runs on
the CPU in float32, so the same run, prompt and seed always give the same text.

Context: the window slides. Once prompt plus sample is longer than the context the run trained on
(`seq_len` of its task, minus the target position), the model sees only the latest that many tokens, as in
nanoGPT; `--tokens` is not capped. Past the trained length, what a synthetic task generates has no meaning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emergence_lab.contract import CHECKPOINT_DIR, CHECKPOINT_FILE, CONFIG_FILE
from emergence_lab.model import Transformer
from emergence_lab.tasks.base import Task


class GenerateError(Exception):
    """A one-line, user-facing error."""


def load_run(run_dir: str | Path) -> tuple[Transformer, Task]:
    """The run's task and its model with the checkpoint's weights, on the CPU, in eval mode."""
    run = Path(run_dir)
    config, ckpt = run / CONFIG_FILE, run / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not run.is_dir():
        raise GenerateError(f"{run} is not a folder")
    if not config.is_file():
        raise GenerateError(f"{run} is not a run folder: no {CONFIG_FILE}")
    if not ckpt.is_file():
        raise GenerateError(f"{run} has no checkpoint ({CHECKPOINT_DIR}/{CHECKPOINT_FILE}); train it first")
    try:
        cfg = OmegaConf.load(config)
        task: Task = instantiate(cfg.task)
        model_cfg = instantiate(cfg.model, vocab_size=task.vocab_size, max_seq_len=task.max_seq_len)
    except Exception as exc:
        raise GenerateError(f"cannot rebuild the run from {config}: {_one_line(exc)}") from None
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
        prefix = "model."
        state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        model = Transformer(model_cfg)
        model.load_state_dict(state)
    except Exception as exc:
        raise GenerateError(f"cannot load {ckpt}: {_one_line(exc)}") from None
    return model.eval(), task


@torch.no_grad()
def sample(
    model: Transformer,
    prompt: list[int],
    n_tokens: int,
    context: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> list[int]:
    """`n_tokens` tokens after `prompt`; the model reads at most the latest `context` tokens."""
    gen = torch.Generator().manual_seed(int(seed))
    tokens = torch.tensor([prompt], dtype=torch.int64)
    for _ in range(n_tokens):
        logits = model(tokens[:, -context:])[0, -1].float()
        if temperature == 0:
            nxt = logits.argmax().view(1)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
        tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
    return tokens[0, len(prompt) :].tolist()


def generate(
    run_dir: str | Path,
    prompt: str,
    n_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The decoded continuation of `prompt` (see the module docstring)."""
    if n_tokens < 1:
        raise GenerateError(f"--tokens must be at least 1, got {n_tokens}")
    if temperature < 0:
        raise GenerateError(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise GenerateError(f"--top-k must be at least 1, got {top_k}")
    model, task = load_run(run_dir)
    try:
        tokens = task.encode(prompt)
    except ValueError as exc:
        raise GenerateError(f"bad prompt: {_one_line(exc)}") from None
    if not tokens:
        raise GenerateError("the prompt is empty; give at least one token (for text, e.g. a newline)")
    context = task.seq_len("train") - 1
    torch.set_num_threads(1)  # one sequence; more threads only add overhead and float reordering
    return task.decode(sample(model, tokens, n_tokens, context, temperature, top_k, seed))


def generate_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="emergence generate",
        description="Sample from a run's checkpoint; prints only the sampled continuation.",
    )
    parser.add_argument("run_dir", help="a run folder (holds config.yaml and checkpoints/last.ckpt)")
    parser.add_argument("--prompt", required=True, help="in the task's notation ('123+456=' for addition)")
    parser.add_argument("--tokens", type=int, required=True, help="tokens to sample (bytes for text)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1.0)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the K likeliest tokens")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same text (default 0)")
    args = parser.parse_args(argv)
    try:
        text = generate(args.run_dir, args.prompt, args.tokens, args.temperature, args.top_k, args.seed)
    except GenerateError as exc:
        print(f"emergence generate: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text + "\n")
    return 0


def _one_line(exc: BaseException) -> str:
    # Hydra wraps a constructor's error as "Error in call to target ...:\nValueError(...)"; keep the cause
    inner = exc.__cause__ or exc
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(inner).__name__
