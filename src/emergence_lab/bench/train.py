"""`emergence bench train`: the framework's training step (Lightning + EmergenceModule) against a plain
PyTorch loop doing the same work (same model, data generation, AdamW, grad clipping), per width. It prints
a table, writes the numbers to `--out` (JSON) when asked, and prints the constants for the `--dry-run`
time estimate (`estimate.step_overhead_s`, `estimate.flops_per_s`). With `--compile` it also times the
framework step with `trainer.compile=on` (torch.compile, inductor), interleaved with the other two, and the
compile time per process (fit start to the first step: compiling plus the one checking step)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from emergence_lab.bench.common import UsageError, _int_at_least, _Parser, machine_info, write_report


def _widths(text: str) -> list[int]:
    parts = [t.strip() for t in text.split(",")]
    try:
        values = [int(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every width must be >= 1, got {text!r}")
    return values


def _plain_loop(width: int, depth: int, steps: int, warmup: int, digits: int, batch: int) -> float:
    """The framework's work without the framework: the module's own optimizer and schedule (whatever
    `configure_optimizers` builds), the same batches, loss and clipping, in a bare loop."""
    import torch
    import torch.nn.functional as F

    from emergence_lab.model import Transformer, TransformerConfig
    from emergence_lab.run.module import EmergenceModule
    from emergence_lab.run.optim import OptimConfig
    from emergence_lab.tasks import Addition

    task = Addition(digits=digits)
    torch.manual_seed(0)
    cfg = TransformerConfig(width=width, depth=depth, vocab_size=12, max_seq_len=task.max_seq_len)
    model = Transformer(cfg)
    module = EmergenceModule(model, task, OptimConfig(batch_size=batch), seed=0, max_steps=warmup + steps)
    configured = module.configure_optimizers()
    opt, sched = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    params = list(model.parameters())
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        b = task.train_batch(batch, 0, step, "cpu")
        logits = model(b.tokens[:, :-1])[:, b.answer_pos - 1]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), b.answers.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    return steps / (time.perf_counter() - start)


def _lightning(
    width: int, depth: int, steps: int, warmup: int, digits: int, batch: int, compile: str = "off"
) -> tuple[float, float, str]:
    """Steps/s of the framework's step after `warmup` steps, the seconds from fit start to the first step
    (the compile time, when compiling) and the module's `compile_mode`."""
    import lightning.pytorch as pl
    import torch

    from emergence_lab.model import Transformer, TransformerConfig
    from emergence_lab.run.module import EmergenceModule
    from emergence_lab.run.optim import OptimConfig
    from emergence_lab.tasks import Addition

    class Clock(pl.Callback):
        def on_fit_start(self, *_):  # type: ignore[no-untyped-def]
            self.fit_start = time.perf_counter()  # before the module's on_fit_start, which compiles

        def on_train_start(self, *_):  # type: ignore[no-untyped-def]
            self.setup_s = time.perf_counter() - self.fit_start

        def on_train_batch_start(self, trainer, *_):  # type: ignore[no-untyped-def]
            if trainer.global_step == warmup:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *_):  # type: ignore[no-untyped-def]
            self.rate = steps / (time.perf_counter() - self.start)

    task = Addition(digits=digits)
    torch.manual_seed(0)
    cfg = TransformerConfig(width=width, depth=depth, vocab_size=12, max_seq_len=task.max_seq_len)
    model = Transformer(cfg)
    module = EmergenceModule(
        model, task, OptimConfig(batch_size=batch), seed=0, max_steps=warmup + steps, compile=compile
    )
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
    return clock.rate, clock.setup_s, module.compile_record["compile_mode"]


def size_record(
    width: int, depth: int, batch: int, seq_len: int, framework: list[float], plain: list[float]
) -> dict[str, object]:
    """One row of bench.json from the repeated rates (steps/s) of the two loops."""
    import numpy as np

    from emergence_lab.model import TransformerConfig

    cfg = TransformerConfig(width=width, depth=depth, vocab_size=12, max_seq_len=seq_len + 1)
    f_rate, p_rate = float(np.median(framework)), float(np.median(plain))
    tokens = batch * seq_len
    return {
        "width": width,
        "depth": depth,
        "n_params": cfg.n_params,
        "batch": batch,
        "seq_len": seq_len,
        "steps_per_s_framework": f_rate,
        "steps_per_s_plain": p_rate,
        "tokens_per_s_framework": f_rate * tokens,
        "tokens_per_s_plain": p_rate * tokens,
        "ratio": f_rate / p_rate,
        "framework_overhead_ms_per_step": 1000 * (1 / f_rate - 1 / p_rate),
        "flops_per_step": cfg.flops_per_token(seq_len) * tokens,
        "repeats_framework": [round(r, 2) for r in framework],
        "repeats_plain": [round(r, 2) for r in plain],
    }


def compiled_record(
    compiled: list[float], compile_s: list[float], modes: list[str], framework: float
) -> dict[str, object]:
    """The `--compile` columns of a bench.json row: the compiled framework step against the eager one."""
    import numpy as np

    rate = float(np.median(compiled))
    return {
        "steps_per_s_framework_compiled": rate,
        "compiled_over_eager": rate / framework,
        "compile_s": [round(s, 2) for s in compile_s],  # per process; the first is the cold one
        "compile_mode": sorted(set(modes)),
        "repeats_framework_compiled": [round(r, 2) for r in compiled],
    }


def _train_parser() -> _Parser:
    p = _Parser(prog="emergence bench train")
    p.add_argument("--widths", type=_widths, default=[8, 16, 32, 64], help="comma-separated, each >= 1")
    p.add_argument("--depth", type=_int_at_least(1), default=2)
    p.add_argument("--steps", type=_int_at_least(1), default=200, help="timed steps per loop")
    p.add_argument("--warmup", type=_int_at_least(0), default=20, help="untimed steps before the clock")
    p.add_argument("--digits", type=_int_at_least(1), default=3, help="addition digits (1-17)")
    p.add_argument("--batch", type=_int_at_least(1), default=128)
    p.add_argument("--threads", type=_int_at_least(1), default=1)
    p.add_argument("--repeats", type=_int_at_least(1), default=3, help="alternate the loops this many times")
    p.add_argument("--out", type=Path, default=None, help="write the numbers here as JSON")
    p.add_argument(
        "--compile", action="store_true", help="also time the framework step with trainer.compile=on"
    )
    return p


def bench_train(argv: list[str]) -> int:
    try:
        args = _train_parser().parse_args(argv)
        if args.digits > 17:
            raise UsageError(f"argument --digits: must be <= 17, got {args.digits}")
    except UsageError as e:
        print(f"emergence bench train: error: {e}", file=sys.stderr)
        return 2

    import logging

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    machine = machine_info()
    seq = 3 * args.digits + 2  # model input length of the addition task
    title = f"training steps/s, depth {args.depth}, batch {args.batch}, {args.threads} thread(s)"
    table = Table(title=title)
    columns = ("width", "n_params", "plain PyTorch", "Lightning", "Lightning / plain", "overhead ms/step")
    if args.compile:
        columns = (*columns, "Lightning, compiled", "compiled / eager", "compile s")
    for col in (*columns, "GFLOP/s (plain)"):
        table.add_column(col, justify="right")
    sizes = []
    for width in args.widths:
        shape = (width, args.depth, args.steps, args.warmup, args.digits, args.batch)
        plain, light, compiled, compile_s, modes = [], [], [], [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            plain.append(_plain_loop(*shape))
            light.append(_lightning(*shape)[0])
            if args.compile:
                rate, setup_s, mode = _lightning(*shape, compile="on")
                compiled.append(rate)
                compile_s.append(setup_s)
                modes.append(mode)
        row = size_record(width, args.depth, args.batch, seq, light, plain)
        p_rate, l_rate = row["steps_per_s_plain"], row["steps_per_s_framework"]
        cells = [
            str(width),
            f"{row['n_params']:,}",
            f"{p_rate:.1f} ± {np.std(plain):.1f}",
            f"{l_rate:.1f} ± {np.std(light):.1f}",
            f"{row['ratio']:.2f}",
            f"{row['framework_overhead_ms_per_step']:.2f}",
        ]
        if args.compile:
            row.update(compiled_record(compiled, compile_s, modes, l_rate))  # type: ignore[arg-type]
            cells += [
                f"{row['steps_per_s_framework_compiled']:.1f} ± {np.std(compiled):.1f}",
                f"{row['compiled_over_eager']:.2f}",
                f"{compile_s[0]:.1f}",
            ]
        sizes.append(row)
        table.add_row(*cells, f"{row['flops_per_step'] * p_rate / 1e9:.2f}")  # type: ignore[operator]
    Console(width=160 if args.compile else 120).print(table)
    # seconds per step = overhead + flops / rate, fitted over the widths (the dry-run estimate rule)
    estimate = None
    if len(sizes) >= 2:
        flops = np.array([r["flops_per_step"] for r in sizes], dtype=float)
        secs = np.array([1 / r["steps_per_s_framework"] for r in sizes], dtype=float)  # type: ignore[operator]
        slope, intercept = np.polyfit(flops, secs, 1)
        estimate = {"step_overhead_s": float(max(intercept, 0.0)), "flops_per_s": float(1 / slope)}
        print(
            f"dry-run estimate constants for this machine: "
            f"estimate.step_overhead_s={estimate['step_overhead_s']:.4f} "
            f"estimate.flops_per_s={estimate['flops_per_s']:.3g}"
        )
    if args.out is not None:
        if hasattr(os, "getloadavg"):
            machine["load_avg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report = {
            "benchmark": "train",
            "task": f"addition, {args.digits} digits",
            "machine": machine,
            "torch_version": torch.__version__,
            "threads": args.threads,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "compile": args.compile,
            "sizes": sizes,
            "estimate": estimate,
        }
        write_report(args.out, report)
    return 0
