"""`emergence bench gpu`: MFU and tokens/s of one large model, on whatever accelerator is here.

Meant for a borrowed GPU machine that may have torch but no network: it imports torch and this package's
model and optimizer code only (no Hydra, Lightning, wandb or numpy), and finishes in a few minutes.

What it measures, at width 1024, depth 12, sequence 256, vocabulary 50304 by default, random tokens, bf16
autocast, the batch given (16) or the largest power-of-two fraction of it that fits:
- tokens/s of the full training step (forward, backward, clipping, fused AdamW), eager and with the forward
  and the loss torch.compile'd together;
- MFU = tokens/s * FLOPs per token / peak FLOP/s, FLOPs counted as nanoGPT's `estimate_mfu` does:
  `6 N + 12 L H Q T` per token, N all parameters including the tied token embedding (there are no position
  embeddings with rotary), L layers, H heads of size Q, T the sequence length. The peak is `--peak-flops` or
  a per-device default for dense bf16 (H100/H200 989e12, A100 312e12); elsewhere MFU is left out.

- packing (`trainer.pack`): the aggregate tokens/s of `--pack-n` width-64 models (depth 2, batch 128,
  sequence 32, vocabulary 16 by default) trained packed (run/packed_model.py) against the same models one at
  a time, each side a full step per model (forward, backward, per-model clipping, AdamW), bf16 on a GPU.

`--device cpu` with tiny shapes runs the same code path; the test suite does that, timing nothing.
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

# dense bf16 tensor-core peaks, FLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def default_peak_flops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in device_name.upper():
            return peak
    return None


def nanogpt_flops_per_token(n_params_with_embedding: int, depth: int, width: int, seq_len: int) -> int:
    """nanoGPT's `estimate_mfu` count: 6 N + 12 L H Q T, with H * Q = width."""
    return 6 * n_params_with_embedding + 12 * depth * width * seq_len


def _float_positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _parser() -> _Parser:
    p = _Parser(prog="emergence bench gpu")
    p.add_argument("--out", type=Path, default=None, help="write the numbers here as JSON")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--width", type=_int_at_least(1), default=1024)
    p.add_argument("--depth", type=_int_at_least(1), default=12)
    p.add_argument("--head-dim", type=_int_at_least(1), default=64, help="64: 16 heads at width 1024")
    p.add_argument("--seq-len", type=_int_at_least(2), default=256)
    p.add_argument("--vocab", type=_int_at_least(2), default=50304)
    p.add_argument("--batch", type=_int_at_least(1), default=16, help="halved on out-of-memory")
    p.add_argument("--steps", type=_int_at_least(1), default=20, help="timed steps per mode")
    p.add_argument("--warmup", type=_int_at_least(0), default=5, help="untimed steps per mode")
    p.add_argument("--compile", choices=("both", "on", "off"), default="both")
    p.add_argument("--peak-flops", type=_float_positive, default=None, help="default: by device name")
    p.add_argument("--pack-n", type=_int_at_least(0), default=8, help="models packed; 0: skip packing")
    p.add_argument("--pack-width", type=_int_at_least(1), default=64)
    p.add_argument("--pack-depth", type=_int_at_least(1), default=2)
    p.add_argument("--pack-batch", type=_int_at_least(1), default=128, help="per model")
    p.add_argument("--pack-seq-len", type=_int_at_least(1), default=32)
    p.add_argument("--pack-vocab", type=_int_at_least(2), default=16)
    p.add_argument("--pack-steps", type=_int_at_least(1), default=50, help="timed steps per side")
    return p


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from emergence_lab.model import TransformerConfig

    shape = {"width": args.width, "depth": args.depth, "head_dim": args.head_dim}
    return TransformerConfig(**shape, vocab_size=args.vocab, max_seq_len=args.seq_len)


def _sync(device) -> None:  # type: ignore[no-untyped-def]
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(args: argparse.Namespace, device, batch: int, compiled: bool) -> dict[str, object]:  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    from emergence_lab.model import Transformer
    from emergence_lab.run.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    cfg = _config(args)
    model = Transformer(cfg).to(device)
    opt = build_optimizer(model, OptimConfig(lr=3e-4), device.type)
    gen = torch.Generator(device=device).manual_seed(0)
    tokens = torch.randint(0, args.vocab, (batch, args.seq_len + 1), device=device, generator=gen)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # the loss is compiled with the forward (as nanoGPT's is): eager, the float32 copy of the
        # [batch, seq, 50304] logits and its log-softmax are separate passes over gigabytes of memory
        return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())

    loss_fn = torch.compile(loss_of) if compiled else loss_of

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    _sync(device)
    elapsed = time.perf_counter() - start
    out: dict[str, object] = {
        "compiled": compiled,
        "warmup_s": warm_s,
        "step_s": elapsed / args.steps,
        "tokens_per_s": batch * args.seq_len * args.steps / elapsed,
        "final_loss": float(loss.detach()),
    }
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _measure_fitting(args: argparse.Namespace, device, compiled: bool) -> tuple[int, dict[str, object]]:  # type: ignore[no-untyped-def]
    """Try the requested batch, halving it on CUDA out-of-memory."""
    import torch

    batch = args.batch
    while True:
        try:
            return batch, _measure(args, device, batch, compiled)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()


def _measure_packing(args: argparse.Namespace, device) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Aggregate tokens/s of `--pack-n` small models, packed and one at a time."""
    from emergence_lab.bench.pack import measure_pack

    n, seq, batch = args.pack_n, args.pack_seq_len, args.pack_batch
    m = measure_pack(
        args.pack_width,
        args.pack_depth,
        n,
        steps=args.pack_steps,
        warmup=args.warmup,
        batch=batch,
        seq_len=seq,
        vocab=args.pack_vocab,
        device=device,
        bf16=device.type == "cuda",
    )
    tokens = n * batch * seq  # per step of all n models
    packed, serial = tokens / m["packed_s_per_step"], tokens / m["serial_s_per_step"]
    print(f"pack: {n} x width {args.pack_width}: {packed:,.0f} tokens/s packed, {serial:,.0f} one at a time")
    return {
        "n": n,
        "width": args.pack_width,
        "depth": args.pack_depth,
        "batch_per_model": batch,
        "seq_len": seq,
        "n_params_per_model": int(m["n_params"]),
        "tokens_per_s_packed": packed,
        "tokens_per_s_serial": serial,
        "gain": packed / serial,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"emergence bench gpu: error: {e}", file=sys.stderr)
        return 2

    import torch

    device = parse_device("emergence bench gpu", args.device, " (use --device cpu for a dry run)")
    if device is None:
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = str(machine_info()["cpu_model"])
    peak, peak_source = args.peak_flops, "--peak-flops"
    if peak is None:
        peak = default_peak_flops(device_name) if device.type == "cuda" else None
        peak_source = "default for the device name" if peak is not None else "unknown: MFU left out"

    cfg = _config(args)
    n_with_embedding = cfg.n_params_total  # rotary: the tied token table is the only embedding
    flops_per_token = nanogpt_flops_per_token(n_with_embedding, args.depth, args.width, args.seq_len)
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    results: dict[str, dict[str, object]] = {}
    batch = args.batch
    for compiled in modes:
        name = "compiled" if compiled else "eager"
        try:
            used, result = _measure_fitting(args, device, compiled)
        except Exception as e:  # a missing compiler (no triton, no C++ toolchain) must not lose the other
            if not compiled:
                raise
            results[name] = {"compiled": True, "error": f"{type(e).__name__}: {e}"[:500]}
            continue
        batch = min(batch, used)
        result["batch"] = used
        result["mfu"] = None if peak is None else result["tokens_per_s"] * flops_per_token / peak  # type: ignore[operator]
        results[name] = result
        mfu = "" if result["mfu"] is None else f", MFU {100 * result['mfu']:.1f}%"  # type: ignore[operator]
        rate, ms = result["tokens_per_s"], 1e3 * result["step_s"]  # type: ignore[operator]
        print(f"{name}: batch {used}, {rate:,.0f} tokens/s, {ms:.1f} ms/step{mfu}")

    pack = _measure_packing(args, device) if args.pack_n else None
    report = {
        "benchmark": "gpu",
        "device": str(device),
        "device_name": device_name,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "shape": {
            "width": args.width,
            "depth": args.depth,
            "n_heads": cfg.n_heads,
            "head_dim": args.width // cfg.n_heads,
            "seq_len": args.seq_len,
            "vocab": args.vocab,
            "batch_requested": args.batch,
            "positions": cfg.positions,
        },
        "precision": "bf16 autocast",
        "n_params_non_embedding": cfg.n_params,
        "n_params_with_embedding": n_with_embedding,
        "flops_per_token": flops_per_token,
        "flops_formula": "6 N + 12 L H Q T (nanoGPT estimate_mfu), N with the tied token embedding",
        "peak_flops": peak,
        "peak_source": peak_source,
        "steps": args.steps,
        "warmup": args.warmup,
        "results": results,
        "pack": pack,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
