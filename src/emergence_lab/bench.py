"""`emergence bench`: speed numbers, measured side by side in one process (never in the test suite).

- `train`: the framework's training step (Lightning + EmergenceModule) against a plain PyTorch loop doing the
  same work (same model, data generation, AdamW, grad clipping), per width. It also prints the constants for
  the `--dry-run` time estimate (`estimate.step_overhead_s`, `estimate.flops_per_s`).
- `analysis`: the analysis package's scale benchmark (`python -m analysis.bench`).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any, NoReturn

import numpy as np


def _plain_loop(width: int, depth: int, steps: int, warmup: int, digits: int, batch: int) -> float:
    import torch
    import torch.nn.functional as F

    from emergence_lab.model import Transformer, TransformerConfig
    from emergence_lab.tasks import Addition

    task = Addition(digits=digits)
    torch.manual_seed(0)
    cfg = TransformerConfig(width=width, depth=depth, vocab_size=12, max_seq_len=task.max_seq_len)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        b = task.train_batch(batch, 0, step, "cpu")
        logits = model(b.tokens[:, :-1])[:, b.answer_pos - 1]
        loss = F.cross_entropy(logits.flatten(0, 1), b.answers.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps / (time.perf_counter() - start)


def _lightning(width: int, depth: int, steps: int, warmup: int, digits: int, batch: int) -> float:
    import lightning.pytorch as pl
    import torch

    from emergence_lab.model import Transformer, TransformerConfig
    from emergence_lab.module import EmergenceModule
    from emergence_lab.optim import OptimConfig
    from emergence_lab.tasks import Addition

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, *_):  # type: ignore[no-untyped-def]
            if trainer.global_step == warmup:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *_):  # type: ignore[no-untyped-def]
            self.rate = steps / (time.perf_counter() - self.start)

    task = Addition(digits=digits)
    torch.manual_seed(0)
    cfg = TransformerConfig(width=width, depth=depth, vocab_size=12, max_seq_len=task.max_seq_len)
    model = Transformer(cfg)
    module = EmergenceModule(model, task, OptimConfig(batch_size=batch), seed=0, max_steps=warmup + steps)
    clock = Clock()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=warmup + steps,
        logger=False,
        callbacks=[clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module)
    return clock.rate


def bench_train(argv: list[str]) -> int:
    import logging

    import torch
    from rich.console import Console
    from rich.table import Table

    from emergence_lab.model import TransformerConfig

    p = _OneLineParser(prog="emergence bench train")
    p.add_argument("--widths", type=_widths, default="8,16,32,64", help="comma-separated, each >= 1")
    p.add_argument("--depth", type=_int_at_least(1), default=2)
    p.add_argument("--steps", type=_int_at_least(1), default=200)
    p.add_argument("--warmup", type=_int_at_least(0), default=20)
    p.add_argument("--digits", type=_int_at_least(1, 17), default=3)
    p.add_argument("--batch", type=_int_at_least(1), default=128)
    p.add_argument("--threads", type=_int_at_least(1), default=1)
    p.add_argument(
        "--repeats", type=_int_at_least(1), default=3, help="alternate the two loops this many times"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    seq = 3 * args.digits + 2  # model input length of the addition task
    table = Table(title=f"training steps/s, depth {args.depth}, batch {args.batch}, {args.threads} thread(s)")
    for col in ("width", "n_params", "plain PyTorch", "Lightning", "Lightning / plain", "GFLOP/s (plain)"):
        table.add_column(col, justify="right")
    secs, flops = [], []
    for width in args.widths:
        shape = (width, args.depth, args.steps, args.warmup, args.digits, args.batch)
        plain, light = [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            plain.append(_plain_loop(*shape))
            light.append(_lightning(*shape))
        p_rate, l_rate = float(np.median(plain)), float(np.median(light))
        cfg = TransformerConfig(width=width, depth=args.depth, vocab_size=12, max_seq_len=seq + 1)
        step_flops = cfg.flops_per_token(seq) * seq * args.batch
        secs.append(1 / l_rate)
        flops.append(step_flops)
        table.add_row(
            str(width),
            f"{cfg.n_params:,}",
            f"{p_rate:.1f} ± {np.std(plain):.1f}",
            f"{l_rate:.1f} ± {np.std(light):.1f}",
            f"{l_rate / p_rate:.2f}",
            f"{step_flops * p_rate / 1e9:.2f}",
        )
    Console().print(table)
    # seconds per step = overhead + flops / rate, fitted over the widths (the dry-run estimate rule)
    slope, intercept = np.polyfit(np.array(flops), np.array(secs), 1)
    print(
        f"dry-run estimate constants for this machine: estimate.step_overhead_s={max(intercept, 0):.4f} "
        f"estimate.flops_per_s={1 / slope:.3g}"
    )
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """A bad option is one line on stderr and exit 2, like a bad config value (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(lo: int, hi: int | None = None) -> Any:
    """An argparse type: an integer in [lo, hi]; argparse turns a refusal into one error line and exit 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text!r}")
        return value

    return parse


def _widths(text: str) -> list[int]:
    widths = [w.strip() for w in text.split(",")]
    if not all(w.isdigit() and int(w) >= 1 for w in widths):
        raise argparse.ArgumentTypeError(f"must be integers >= 1, comma-separated, got {text!r}")
    return [int(w) for w in widths]


def bench_cli(argv: list[str]) -> int:
    if not argv or argv[0] not in {"train", "analysis"}:
        print("usage: emergence bench {train|analysis} [options]")
        return 2
    if argv[0] == "train":
        return bench_train(argv[1:])
    from emergence_lab.analysis.bench import main as analysis_bench

    return int(analysis_bench(argv[1:]) or 0)
