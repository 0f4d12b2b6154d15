"""What every benchmark command shares: one-line argument errors (exit 2) and a description of the machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


class UsageError(Exception):
    """A bad command-line argument: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _int_at_least(low: int):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def parse_device(prog: str, text: str, hint: str = ""):  # type: ignore[no-untyped-def]
    """`torch.device(text)`, or None after printing the one-line error (`prog: error: ...`) for a name torch
    does not know or a CUDA device that is not here. `hint` follows the no-CUDA message."""
    import sys

    import torch

    try:
        device = torch.device(text)
    except RuntimeError as e:
        print(f"{prog}: error: argument --device: {e}", file=sys.stderr)
        return None
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: error: no CUDA device here{hint}", file=sys.stderr)
        return None
    return device


def machine_info() -> dict[str, object]:
    """CPU model, core counts and load: what a reader needs to judge a number from this machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {"cpu_model": model, "cores": os.cpu_count(), "platform": platform.platform()}
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_avg_1_5_15_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def write_report(path: Path | None, report: dict[str, object]) -> None:
    """Write a benchmark's numbers to `--out` as JSON (nothing when it was not given)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
