"""`emergence bench`: speed numbers, measured side by side in one process (never in the test suite).

- `train`: the framework's training step against a plain PyTorch loop doing the same work, per width
  (`emergence_lab.bench.train`).
- `gpu`: MFU and tokens/s of one GPT-2-medium-sized model (`emergence_lab.bench.gpu`); imports only torch and
  the project's model code, so it runs on a GPU machine without Hydra or wandb.
- `pack`: N models one at a time against the same N packed into one (`trainer.pack`), per width
  (`emergence_lab.bench.pack`).
- `analysis`: the analysis package's scale benchmark (`emergence_lab.analysis.bench`).
"""

from __future__ import annotations

import sys


def bench_cli(argv: list[str]) -> int:
    if not argv or argv[0] not in {"train", "gpu", "pack", "analysis"}:
        print("usage: emergence bench {train|gpu|pack|analysis} [options]", file=sys.stderr)
        return 2
    if argv[0] == "train":
        from emergence_lab.bench.train import bench_train

        return bench_train(argv[1:])
    if argv[0] == "gpu":
        from emergence_lab.bench.gpu import main as gpu_bench

        return gpu_bench(argv[1:])
    if argv[0] == "pack":
        from emergence_lab.bench.pack import main as pack_bench

        return pack_bench(argv[1:])
    from emergence_lab.analysis.bench import main as analysis_bench

    return int(analysis_bench(argv[1:]) or 0)
