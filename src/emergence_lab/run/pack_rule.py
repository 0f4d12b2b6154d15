"""How many seeds to pack into one process: the `trainer.pack: auto` rule, and the per-model gain the dry-run
estimate divides a packed run's time by.

Measured with `nice -n 10 emergence bench pack --widths 8,16,32,64 --packs 8 --steps 40 --repeats 3` on this
project's 2-core AMD EPYC machine (1 thread, depth 2, batch 128, sequence 11, torch 2.13), loaded by
other jobs (load average 5.9-10), per-model steps/s of 8 packed models against the same 8 one at a time:

    width            8     16     32     64
    gain (8 packed)  1.40  1.31   1.01   0.99

A second run of the same command (load 6.7-6.9, docs/bench/pack-cpu.json) gave 1.43 / 1.34 / 1.05 / 0.86, and
an earlier one 1.42 / 1.38 / 1.06 / 0.87. Packing repays on a CPU only while
one model's step is dominated by per-op overhead rather than arithmetic: from width 32 the matmuls fill the
core and packing gains nothing.

The rule:
- CPU: pack 8 seeds where the gain interpolated in non-embedding parameters is at least `CPU_MIN_GAIN` (1.1):
  up to about 17k non-embedding parameters, i.e. width ~27 at depth 2, ~19 at depth 4; otherwise 1
  (unpacked). Depth enters through the parameter count.
- GPU: pack 8 seeds for models under 10M non-embedding parameters, else 1. One such model leaves most of
  the device idle. Measured on an H200 (torch 2.11, bf16 autocast, depth 2, batch 128 per model, sequence
  32, the `measure_pack` step that `emergence bench gpu` runs), aggregate tokens/s packed against one at a
  time: width 64 x 8 models 5.42M vs 0.84M (6.4x), width 64 x 32 models 14.6M vs 0.74M (19.8x), width 256
  x 8 (1.6M parameters each) 6.5x, width 512 x 8 (6.3M each) 4.7x; a second H200 gave 6.7x for width 64 x
  8 (docs/bench/gpu_h200_batch16_run2.json). Larger packs pay more on a GPU, and `trainer.pack=32` sets one.
- The dry-run estimate divides a packed run's training time by `pack_gain`: on a CPU the 8-model gain for
  any pack of 2 or more; on a GPU the 8-model gain above (the lower of the width-64 runs), interpolated in
  parameters, taken as linear in the pack from 1 model (gain 1) to 8, and held at the 8-model gain for
  larger packs (32 models measured 19.8x: the estimate under-promises) and at 1 from `GPU_MAX_PARAMS`.
- Never more than the seeds the job has.
"""

from __future__ import annotations

import itertools
from typing import Any

# (non-embedding parameters at depth 2, gain of 8 packed models) for widths 8, 16, 32, 64
CPU_PACK_GAIN = ((1_576, 1.40), (6_224, 1.31), (24_736, 1.01), (98_624, 0.99))
# (non-embedding parameters at depth 2, gain of 8 packed models) on an H200 for widths 64, 256, 512
GPU_PACK_GAIN = ((98_624, 6.4), (1_574_144, 6.5), (6_294_016, 4.7))
CPU_MIN_GAIN = 1.1
AUTO_PACK = 8
GPU_MAX_PARAMS = 10_000_000


def cpu_gain(n_params: int) -> float:
    """The measured per-model gain of 8 packed models on this CPU, linear in parameters between the measured
    points and constant outside them."""
    return _interpolate(CPU_PACK_GAIN, n_params)


def gpu_gain(n_params: int) -> float:
    """The measured gain of 8 packed models on an H200, as `cpu_gain`; 1 from GPU_MAX_PARAMS (unmeasured)."""
    return 1.0 if n_params >= GPU_MAX_PARAMS else _interpolate(GPU_PACK_GAIN, n_params)


def _interpolate(points: tuple[tuple[int, float], ...], n_params: int) -> float:
    if n_params <= points[0][0]:
        return points[0][1]
    if n_params >= points[-1][0]:
        return points[-1][1]
    for (p0, g0), (p1, g1) in itertools.pairwise(points):
        if p0 <= n_params <= p1:
            return g0 + (g1 - g0) * (n_params - p0) / (p1 - p0)
    raise AssertionError("unreachable")


def pack_size(setting: Any, n_params: int, device_type: str, n_seeds: int) -> int:
    """The number of seeds trained together: `setting` (an integer, or "auto" by the rule above), at most
    `n_seeds` and at least 1."""
    if setting == "auto":
        if device_type == "cpu":
            n = AUTO_PACK if cpu_gain(n_params) >= CPU_MIN_GAIN else 1
        else:
            n = AUTO_PACK if n_params < GPU_MAX_PARAMS else 1
    else:
        n = int(setting)
        if n < 1:
            raise ValueError(f"trainer.pack must be auto or an integer >= 1, got {setting!r}")
    return max(1, min(n, n_seeds))


def pack_gain(n: int, n_params: int, device_type: str) -> float:
    """The per-model speed-up of packing `n` models, for the dry-run estimate (the rule in the module's
    docstring): 1 for one model; on a CPU the 8-model measurement; on a GPU linear in `n` up to the 8-model
    measurement, held there beyond 8."""
    if n <= 1:
        return 1.0
    if device_type == "cpu":
        return cpu_gain(n_params)
    return 1.0 + (gpu_gain(n_params) - 1.0) * (min(n, AUTO_PACK) - 1) / (AUTO_PACK - 1)
