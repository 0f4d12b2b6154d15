"""A small decoder-only Transformer whose size is set by two numbers: width (d_model) and depth (layers).

Every other size choice follows from those two by a stated rule:
- heads: `n_heads` = the largest divisor of width that is <= `max(1, width // head_dim)`, so every width >= 1
  splits evenly. Where `max(1, width // head_dim)` divides width (8, 16, 24, 32, 48, 64, ...) that is the
  head count itself; other widths get fewer, larger heads (56 -> 2 heads of 28, 75 -> 3 of 25, a prime
  width -> 1 head);
- rotary positions rotate the first even number of dimensions of each head; an odd-sized head passes its
  last dimension through unchanged (partial rotary), so width 1 with rotary positions has no position signal;
- MLP hidden size: `mlp_ratio * width` (4 by default, as in GPT-2 and Kaplan et al.);
- init: weights ~ N(0, init_scale / sqrt(fan_in)); the two residual projections of each block are further
  scaled by 1 / sqrt(2 * depth) (GPT-2). `init="gpt2"` selects GPT-2's fixed std 0.02 instead.

The model knows nothing about tasks or Lightning: tokens in, logits out.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    width: int = 64
    depth: int = 2
    vocab_size: int = 16
    max_seq_len: int = 64
    head_dim: int = 16
    mlp_ratio: int = 4
    positions: str = "rotary"  # "rotary" | "learned"
    dropout: float = 0.0
    bias: bool = False
    init: str = "fan_in"  # "fan_in" | "gpt2"
    init_scale: float = 1.0
    rotary_base: float = 10_000.0

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={self.width}, depth={self.depth}")
        if self.head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")
        if self.positions not in {"rotary", "learned"}:
            raise ValueError(f"positions must be 'rotary' or 'learned', got {self.positions!r}")
        if self.init not in {"fan_in", "gpt2"}:
            raise ValueError(f"init must be 'fan_in' or 'gpt2', got {self.init!r}")

    @property
    def n_heads(self) -> int:
        """The largest divisor of width that is <= max(1, width // head_dim): every width splits evenly."""
        target = max(1, self.width // self.head_dim)
        return next(n for n in range(target, 0, -1) if self.width % n == 0)

    @property
    def d_ff(self) -> int:
        return self.mlp_ratio * self.width

    # ---- counting, from the config alone (the sweep planner uses these without building a model) ------
    @property
    def n_params(self) -> int:
        """Non-embedding parameters: everything but token and position embeddings (Kaplan et al. 2020).

        Per block: attention 4 d^2, MLP 2 d d_ff, two LayerNorms; plus the final LayerNorm. With d_ff = 4d
        the leading term is Kaplan's 12 * depth * width^2.
        """
        d, f = self.width, self.d_ff
        per_block = 4 * d * d + 2 * d * f + 2 * d  # weights + LayerNorm gains
        if self.bias:
            per_block += 4 * d + f + d + 2 * d  # qkv, out, mlp biases + LayerNorm biases
        final_norm = d * (2 if self.bias else 1)
        return self.depth * per_block + final_norm

    @property
    def n_embedding_params(self) -> int:
        pos = self.max_seq_len * self.width if self.positions == "learned" else 0
        return self.vocab_size * self.width + pos  # the output layer is tied to the token embedding

    @property
    def n_params_total(self) -> int:
        return self.n_params + self.n_embedding_params

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6 N for the weight matmuls (forward + backward) plus the attention
        scores and their weighted sum, 12 * depth * seq_len * width (the PaLM / nanoGPT convention).
        The tied output layer (6 * width * vocab) is left out, as in Kaplan's N."""
        t = self.max_seq_len if seq_len is None else seq_len
        return 6 * self.n_params + 12 * self.depth * t * self.width


def compute_dtype(device: torch.device, default: torch.dtype) -> torch.dtype:
    """The dtype activations are computed in: autocast's where it is on for `device`, else `default`."""
    kind = device.type
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else default
    if kind == "cuda" and torch.is_autocast_enabled():
        return torch.get_autocast_gpu_dtype()
    if kind == "cpu" and torch.is_autocast_cpu_enabled():
        return torch.get_autocast_cpu_dtype()
    return default


class RotaryTables(NamedTuple):
    """What one forward needs to rotate every layer's q and k: positions first, [t, ...]."""

    cos: torch.Tensor  # [t, head_dim], 1 on an unrotated last dimension
    sin: torch.Tensor  # [t, head_dim], signed: [-s0, s0, -s1, s1, ...], 0 on an unrotated last dimension
    cis: torch.Tensor | None  # [t, head_dim / 2] complex cos + i sin, where the complex path applies

    def unsqueeze(self, n: int) -> RotaryTables:
        """Add `n` singleton axes after the position axis, to broadcast over e.g. [b, t, 2, H, hd]."""
        idx = (slice(None),) + (None,) * n
        cis = None if self.cis is None else self.cis[idx]
        return RotaryTables(self.cos[idx], self.sin[idx], cis)


class RotaryEmbedding(nn.Module):
    """Rotates the first `head_dim - head_dim % 2` dimensions of each head (all of them for an even head
    size); the last dimension of an odd-sized head passes through unchanged.

    Dimensions (2i, 2i+1) form pair i, turned by angle `position * base^(-2i / rot_dim)`:
    `(x_2i, x_2i+1) -> (x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos)`. The tables are sliced and cast once
    per forward (`tables`). In float32/float64 eager mode a pair is one complex number and the rotation one
    complex multiply (about 3x faster on CPU than slicing and stacking the pairs); otherwise, e.g. in bf16
    or under torch.compile, it is `x * cos + swap_pairs(x) * signed_sin`. Both compute the same products.
    """

    def __init__(self, head_dim: int, max_seq_len: int, base: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.rot_dim = head_dim - head_dim % 2
        exponents = torch.arange(0, self.rot_dim, 2, dtype=torch.float32) / max(1, self.rot_dim)
        inv_freq = 1.0 / (base**exponents)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)  # [T, rot_dim / 2]
        self.register_buffer("sin", angles.sin(), persistent=False)
        pass_through = head_dim - self.rot_dim
        ones, zeros = torch.ones(max_seq_len, pass_through), torch.zeros(max_seq_len, pass_through)
        cos_full = torch.cat((angles.cos().repeat_interleave(2, -1), ones), -1)
        signed = torch.stack((-angles.sin(), angles.sin()), -1).flatten(-2)  # [-s0, s0, -s1, s1, ...]
        sin_full = torch.cat((signed, zeros), -1)
        self.register_buffer("cos_full", cos_full, persistent=False)  # [T, head_dim]
        self.register_buffer("sin_full", sin_full, persistent=False)

    def tables(self, t: int, dtype: torch.dtype) -> RotaryTables:
        """The tables for the first `t` positions, in `dtype` (the dtype q and k are computed in)."""
        cis = None
        complex_ok = dtype in (torch.float32, torch.float64) and self.rot_dim == self.head_dim > 0
        if complex_ok and not torch.compiler.is_compiling():
            cis = torch.complex(self.cos[:t].to(dtype), self.sin[:t].to(dtype))
        return RotaryTables(self.cos_full[:t].to(dtype), self.sin_full[:t].to(dtype), cis)

    def rotate(self, x: torch.Tensor, tables: RotaryTables) -> torch.Tensor:
        """x [..., head_dim], with the tables broadcastable to it (positions on the matching axis)."""
        if self.rot_dim == 0:
            return x
        if tables.cis is not None and x.stride(-1) == 1 and all(s % 2 == 0 for s in x.stride()[:-1]):
            pairs = torch.view_as_complex(x.unflatten(-1, (self.rot_dim // 2, 2)))
            return torch.view_as_real(pairs * tables.cis).flatten(-2)
        rot = x if self.rot_dim == self.head_dim else x[..., : self.rot_dim]
        swapped = rot.unflatten(-1, (self.rot_dim // 2, 2)).flip(-1).flatten(-2)
        if self.rot_dim != self.head_dim:
            swapped = torch.cat((swapped, x[..., self.rot_dim :]), dim=-1)
        return x * tables.cos + swapped * tables.sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, H, T, hd]
        return self.rotate(x, self.tables(x.shape[-2], x.dtype))


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.width // cfg.n_heads
        # one [3 * width, width] projection: rows [0, d) are q, [d, 2d) k, [2d, 3d) v
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)
        self.out = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryEmbedding | None = None,
        tables: RotaryTables | None = None,
    ) -> torch.Tensor:
        b, t, d = x.shape
        # split, not slices: its backward is one cat, where two slices would each zero-fill a [b, t, 3d] grad
        qk, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).split((2, 1), dim=2)
        if rotary is not None and tables is not None:
            # q and k rotate in one op: tables [t, ...] broadcast over [b, t, 2, H, hd]
            qk = rotary.rotate(qk, tables.unsqueeze(2))
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)
        v = v.squeeze(2).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.fc = nn.Linear(cfg.width, cfg.d_ff, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_ff, cfg.width, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryEmbedding | None = None,
        tables: RotaryTables | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), rotary, tables))
        return x + self.drop(self.proj(F.gelu(self.fc(self.norm2(x)))))


class Transformer(nn.Module):
    """Pre-LayerNorm decoder-only Transformer with a causal mask and tied input/output embeddings."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.width) if cfg.positions == "learned" else None
        # one table for every layer; its buffers are not saved, so checkpoints are unchanged
        self.rotary = (
            RotaryEmbedding(cfg.width // cfg.n_heads, cfg.max_seq_len, cfg.rotary_base)
            if cfg.positions == "rotary"
            else None
        )
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        cfg = self.cfg
        residual_scale = 1.0 / math.sqrt(2 * cfg.depth)
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                fan_in = module.weight.shape[1]  # Linear: [out, in]; Embedding: [vocab, width]
                std = 0.02 if cfg.init == "gpt2" else cfg.init_scale / math.sqrt(fan_in)
                if name.endswith(("attn.out", "proj")):
                    std *= residual_scale
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def non_embedding_parameters(self) -> list[nn.Parameter]:
        emb = {id(self.tok_emb.weight)} | ({id(self.pos_emb.weight)} if self.pos_emb is not None else set())
        return [p for p in self.parameters() if id(p) not in emb]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, vocab]."""
        t = tokens.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len {self.cfg.max_seq_len}")
        x = self.tok_emb(tokens)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t, device=tokens.device))
        x = self.drop(x)
        tables = None
        if self.rotary is not None:
            tables = self.rotary.tables(t, compute_dtype(tokens.device, self.tok_emb.weight.dtype))
        for block in self.blocks:
            x = block(x, self.rotary, tables)
        return F.linear(self.norm(x), self.tok_emb.weight)


# ---- torch.compile: when it repays, and a fallback to eager where no compiler works --------------------
# Measured on a 2-core AMD EPYC under load (1 thread, depth 2, batch 128, 3-digit addition, data made
# beforehand, torch 2.13 inductor), against this module's eager step: width 16 went from 106 to 130 steps/s
# (1.7 ms saved per step), width 32 from 28.3 to 27.9 (nothing). Compiling and the first steps took 75 s per
# process on that loaded machine, 9-23 s on an idle one. Narrower widths are given width 16's saving.
CPU_COMPILE_SAVING_S = ((16, 1.7e-3), (32, 0.0))  # (width, seconds saved per step at depth 2)
CPU_COMPILE_COST_S = 25.0
GPU_COMPILE_MIN_STEPS = 1000


def _cpu_saving_per_step(width: int, depth: int) -> float:
    """Linear in width between the measured points, constant outside them; proportional to depth."""
    points = CPU_COMPILE_SAVING_S
    if width <= points[0][0]:
        saving = points[0][1]
    elif width >= points[-1][0]:
        saving = points[-1][1]
    else:
        for (w0, s0), (w1, s1) in itertools.pairwise(points):
            if w0 <= width <= w1:
                saving = s0 + (s1 - s0) * (width - w0) / (w1 - w0)
                break
    return saving * depth / 2


def compile_decision(
    setting: bool | str, width: int, depth: int, steps: int, device_type: str
) -> tuple[bool, str]:
    """Whether to torch.compile the training forward, and why (a line for run.json).

    `setting` is True/"on", False/"off" or "auto". "auto" compiles where the expected saving over the run
    exceeds the compile time: on CPU `steps * saving(width, depth) >= CPU_COMPILE_COST_S`, which at depth 2
    needs about 15,000 steps at width 16, 30,000 at width 24 and never from width 32; on a GPU from
    `GPU_COMPILE_MIN_STEPS` steps (not measured on this project's own GPU runs yet)."""
    if isinstance(setting, str):
        setting = setting.strip().lower()
    if setting in (True, "on", "true"):
        return True, "compile: on (set)"
    if setting in (False, "off", "false"):
        return False, "compile: off (set)"
    if setting != "auto":
        raise ValueError(f"compile must be on, off or auto, got {setting!r}")
    if device_type == "cpu":
        saved = steps * _cpu_saving_per_step(width, depth)
        on = saved >= CPU_COMPILE_COST_S
        why = (
            f"expected saving {saved:.0f} s over {steps} steps vs about {CPU_COMPILE_COST_S:.0f} s to compile"
        )
        return on, f"compile: auto -> {'on' if on else 'off'} ({why})"
    on = steps >= GPU_COMPILE_MIN_STEPS
    why = f"{device_type}, {steps} steps, on from {GPU_COMPILE_MIN_STEPS}"
    return on, f"compile: auto -> {'on' if on else 'off'} ({why})"


def compile_or_eager(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, str]:
    """`torch.compile(model)`, checked by one forward and backward on `example` (the training batch shape,
    so the check is the compile the run pays anyway); where that fails (no C++ compiler, no triton, an
    unsupported op) the eager model, with the reason. Gradients and RNG state are left as they were."""
    try:
        compiled = torch.compile(model)
    except Exception as e:  # torch.compile itself may be missing a backend
        return model, f"eager: torch.compile unavailable ({type(e).__name__}: {e})"[:300]
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    grads = [p.grad for p in model.parameters()]
    try:
        compiled(example).float().sum().backward()
    except Exception as e:
        torch.compiler.reset()
        return model, f"eager: compiling failed ({type(e).__name__}: {e})"[:300]
    finally:
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    return compiled, "compiled (inductor)"
