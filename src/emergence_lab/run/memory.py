"""Memory a run needs, priced from its shape alone (weights, gradients, AdamW state, activations, in bytes by
dtype): the planner refuses a run that cannot fit in what its launcher gives one job (`check_plan_memory`),
and a starting run checks the real device (`check_device_memory`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import ListConfig

from emergence_lab.run.config_schema import ConfigError

if TYPE_CHECKING:
    from emergence_lab.model import TransformerConfig


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one run needs while training, from its shape alone."""

    weights: int
    gradients: int
    optimizer: int  # AdamW's two moments per parameter
    activations: int  # kept for the backward pass of one batch, or an eval chunk's forward pass if larger
    weight_dtype: str
    activation_dtype: str

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def host_state(self) -> int:
        """What a GPU run also holds in host memory: the weights and optimizer state of a checkpoint."""
        return self.weights + self.optimizer

    def packed(self, n: int) -> MemoryEstimate:
        """What `n` models trained together in one process need (trainer.pack): n of everything."""
        w, g, o, a = (n * x for x in (self.weights, self.gradients, self.optimizer, self.activations))
        return MemoryEstimate(w, g, o, a, self.weight_dtype, self.activation_dtype)

    def breakdown(self) -> str:
        return (
            f"weights {human_bytes(self.weights)} + gradients {human_bytes(self.gradients)} + "
            f"AdamW {human_bytes(self.optimizer)} ({self.weight_dtype}) + "
            f"activations {human_bytes(self.activations)} ({self.activation_dtype})"
        )


_DTYPE_BYTES = {"64": ("float64", 8), "32": ("float32", 4), "16": ("float16", 2), "bf16": ("bfloat16", 2)}


def precision_dtypes(precision: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """(weight dtype, bytes), (activation dtype, bytes) of a Lightning precision: `-mixed` keeps float32
    weights, gradients and optimizer state and computes in the half type; `-true` does everything in it."""
    base, _, mode = str(precision).partition("-")
    act = _DTYPE_BYTES.get(base, _DTYPE_BYTES["32"])
    if not mode:
        mode = "mixed" if base in ("16", "bf16") else "true"
    return (act if mode == "true" else _DTYPE_BYTES["32"]), act


def estimate_memory(
    model: TransformerConfig, batch_size: int, seq_len: int, precision: str, eval_rows: int = 0
) -> MemoryEstimate:
    """Weights, gradients and AdamW moments: 1 + 1 + 2 copies of every parameter. Activations per layer
    and token follow Korthikanti et al. 2022 (34 * width + 5 * heads * seq_len bytes at 16 bits, the MLP
    part scaled by mlp_ratio / 4), plus the logits and their float32 softmax and gradient."""
    (wname, wb), (aname, ab) = precision_dtypes(precision)
    n = model.n_params_total
    d, f, heads = model.width, model.d_ff, model.n_heads
    per_token_layer = (15 * d + 4.75 * f + 5 * heads * seq_len) * ab / 2
    logits = model.vocab_size * (ab + 8)
    train_act = batch_size * seq_len * (model.depth * per_token_layer + logits)
    # evaluation runs without gradients: about one layer's activations and the logits at a time
    eval_act = eval_rows * seq_len * (per_token_layer + logits)
    return MemoryEstimate(n * wb, n * wb, 2 * n * wb, int(max(train_act, eval_act)), wname, aname)


def run_memory(spec: Any, trainer: Any) -> MemoryEstimate:
    """The estimate for a planned run (a spec.RunSpec) under its trainer settings; evaluation runs
    `trainer.eval_chunk_size` sequences at once."""
    return estimate_memory(
        spec.model,
        int(spec.optim.batch_size),
        spec.seq_len,
        str(trainer.precision),
        int(trainer.eval_chunk_size),
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def machine_memory() -> int:
    """This machine's RAM, or the cgroup's memory limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


def available_memory() -> int:
    """RAM a new allocation can get now (MemAvailable), or the machine's RAM where /proc is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return machine_memory()


@dataclass(frozen=True)
class MemoryBudget:
    """Host memory one job of a launch may use, where that number comes from, and whether the jobs run on
    this machine (then their GPUs are this machine's visible ones)."""

    limit: int
    source: str
    local: bool


def visible_gpus() -> list[tuple[str, int]]:
    """(name, total bytes) of each GPU this process sees; empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return [(p.name, int(p.total_memory)) for p in props]


def check_plan_memory(
    overrides: list[str], estimate: MemoryEstimate, accelerator: str, budget: MemoryBudget | None
) -> None:
    """Refuse a planned run that cannot fit: its host memory against what its launcher gives one job and,
    for a GPU run on this machine, the whole estimate against the smallest visible GPU (a SLURM node's GPUs
    are not known here; the run checks its GPU when it starts). The message names the run by its overrides,
    without the ones that only say where and how it is launched."""
    if budget is None:
        return
    where = ("hydra", "paths.", "experiment=", "sweep=", "logger", "-")
    label = " ".join(o for o in overrides if not o.lstrip("+~").startswith(where)) or "the default run"
    gpu_run = accelerator in ("gpu", "cuda")
    on_host = estimate.host_state if gpu_run else estimate.total
    if on_host > budget.limit:
        raise ConfigError(
            f"{label}: needs ~{human_bytes(on_host)} of memory ({estimate.breakdown()}), "
            f"more than the {human_bytes(budget.limit)} a job has ({budget.source})"
        )
    gpus = visible_gpus() if gpu_run and budget.local else []
    if gpus:
        name, total = min(gpus, key=lambda g: g[1])
        if estimate.total > total:
            raise ConfigError(
                f"{label}: needs ~{human_bytes(estimate.total)} of GPU memory ({estimate.breakdown()}), "
                f"more than the {human_bytes(total)} of a {name}"
            )


def check_device_memory(label: str, estimate: MemoryEstimate, accelerator: str, devices: Any) -> None:
    """At the start of a run: refuse it when the real device cannot hold it (free RAM, free CUDA memory)."""
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            index = devices[0] if isinstance(devices, (list, tuple, ListConfig)) and devices else None
            free, _ = torch.cuda.mem_get_info(index)
            if estimate.total > free:
                raise MemoryError(
                    f"{label}: needs ~{human_bytes(estimate.total)} of GPU memory ({estimate.breakdown()}), "
                    f"{torch.cuda.get_device_name(index)} has {human_bytes(free)} free"
                )
            return
    free = available_memory()
    if estimate.total > free:
        raise MemoryError(
            f"{label}: needs ~{human_bytes(estimate.total)} of memory ({estimate.breakdown()}), "
            f"{human_bytes(free)} of RAM is available"
        )
