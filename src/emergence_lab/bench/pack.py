"""`emergence bench pack`: N models trained one at a time against the same N packed into one (`trainer.pack`),
per width, side by side in one process. Per-model steps/s of each and the gain (packed / one at a time) are
what `run/pack_rule.py`'s `pack: auto` rule is drawn from.

Both sides do the same work per model and step: forward, next-token loss, backward, gradient clipping per
model, fused (or foreach) AdamW, on random tokens made beforehand. Imports torch and this package's model
code only (no Lightning), so `emergence bench gpu` reuses `measure_pack` on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from emergence_lab.bench.common import (
    UsageError,
    _int_at_least,
    _Parser,
    machine_info,
    parse_device,
    write_report,
)


def _ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be >= 1, got {text!r}")
    return values


def _sync(device) -> None:  # type: ignore[no-untyped-def]
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_pack(
    width: int,
    depth: int,
    n: int,
    *,
    steps: int,
    warmup: int,
    batch: int,
    seq_len: int,
    vocab: int,
    device,  # type: ignore[no-untyped-def]
    bf16: bool = False,
) -> dict[str, float]:
    """Seconds per step of N models one at a time and packed, and their ratio. Nothing is timed when
    `steps` is 0 (the CPU tests): the times are then 0."""
    import torch
    import torch.nn.functional as F

    from emergence_lab.model import TransformerConfig
    from emergence_lab.run.optim import OptimConfig, build_optimizer
    from emergence_lab.run.packed_model import PackedTransformer, build_packed_optimizer, build_seed_model

    cfg = TransformerConfig(width=width, depth=depth, vocab_size=vocab, max_seq_len=seq_len)
    optim = OptimConfig(lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    tokens = torch.randint(0, vocab, (n, batch, seq_len + 1), device=device, generator=gen)
    models = [build_seed_model(cfg, s).to(device) for s in range(n)]
    packed = PackedTransformer(models).to(device)
    opts = [build_optimizer(m, optim, device.type) for m in models]
    packed_opt = build_packed_optimizer(packed, optim, device.type)

    def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), reduction="sum") / batch

    def serial_step() -> None:
        for i, (model, opt) in enumerate(zip(models, opts, strict=True)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(tokens[i, :, :-1])
            loss = loss_of(logits, tokens[i, :, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    def packed_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = packed(tokens[:, :, :-1])
        loss = loss_of(logits, tokens[:, :, 1:])  # the sum over models of each model's loss
        packed_opt.zero_grad(set_to_none=True)
        loss.backward()
        packed.clip_grad_norm_(1.0)
        packed_opt.step()

    def seconds_per_step(step) -> float:  # type: ignore[no-untyped-def]
        for _ in range(warmup):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        return (time.perf_counter() - start) / steps if steps else 0.0

    serial_s = seconds_per_step(serial_step)
    packed_s = seconds_per_step(packed_step)
    return {
        "serial_s_per_step": serial_s,
        "packed_s_per_step": packed_s,
        "gain": serial_s / packed_s if packed_s else 0.0,
        "n_params": cfg.n_params,
    }


def _parser() -> _Parser:
    p = _Parser(prog="emergence bench pack")
    p.add_argument("--widths", type=_ints, default=[8, 16, 32, 64])
    p.add_argument("--depth", type=_int_at_least(1), default=2)
    p.add_argument("--packs", type=_ints, default=[8], help="models per pack, e.g. 4,8")
    p.add_argument("--steps", type=_int_at_least(1), default=40, help="timed steps per side and repeat")
    p.add_argument("--warmup", type=_int_at_least(0), default=5)
    p.add_argument("--repeats", type=_int_at_least(1), default=3, help="interleaved rounds; the best is kept")
    p.add_argument("--batch", type=_int_at_least(1), default=128)
    p.add_argument("--seq-len", type=_int_at_least(1), default=11, help="11: 3-digit addition")
    p.add_argument("--vocab", type=_int_at_least(2), default=12)
    p.add_argument("--threads", type=_int_at_least(1), default=1)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--out", type=Path, default=None, help="write the numbers here as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"emergence bench pack: error: {e}", file=sys.stderr)
        return 2
    import torch

    device = parse_device("emergence bench pack", args.device)
    if device is None:
        return 2
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'width':>5} {'N':>3} {'one at a time':>14} {'packed':>10} {'gain':>6}   (per-model steps/s)")
    for width in args.widths:
        for n in args.packs:
            best: dict[str, float] | None = None
            for _ in range(args.repeats):  # interleaved: both sides see the same load
                shape = {"steps": args.steps, "warmup": args.warmup, "batch": args.batch}
                m = measure_pack(
                    width, args.depth, n, **shape, seq_len=args.seq_len, vocab=args.vocab, device=device
                )
                if best is None:
                    best = m
                else:
                    best["serial_s_per_step"] = min(best["serial_s_per_step"], m["serial_s_per_step"])
                    best["packed_s_per_step"] = min(best["packed_s_per_step"], m["packed_s_per_step"])
            assert best is not None
            serial = n / best["serial_s_per_step"]
            packed = n / best["packed_s_per_step"]
            row = {
                "width": width,
                "depth": args.depth,
                "n_params": int(best["n_params"]),
                "pack": n,
                "per_model_steps_per_s_serial": serial,
                "per_model_steps_per_s_packed": packed,
                "gain": packed / serial,
            }
            rows.append(row)
            print(f"{width:>5} {n:>3} {serial:>14.1f} {packed:>10.1f} {packed / serial:>6.2f}", flush=True)
    report = {
        "benchmark": "pack",
        "device": str(device),
        "machine": machine_info(),
        "torch_version": torch.__version__,
        "threads": args.threads,
        "shape": {"batch": args.batch, "seq_len": args.seq_len, "vocab": args.vocab, "depth": args.depth},
        "steps": args.steps,
        "repeats": args.repeats,
        "sizes": rows,
    }
    write_report(args.out, report)
    return 0
