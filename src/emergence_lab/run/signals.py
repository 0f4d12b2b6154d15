"""The signals that stop a run cleanly: it finishes its step, checkpoints and exits (recorder.py)."""

from __future__ import annotations

import os
import signal


def stop_signals() -> tuple[int, ...]:
    """SIGTERM and SIGUSR1 always; inside a submitit job also submitit's preemption/timeout signal."""
    signals = [signal.SIGTERM, signal.SIGUSR1]
    preempt = submitit_signal()
    if preempt is not None and preempt not in signals:
        signals.append(preempt)
    return tuple(signals)


def submitit_signal() -> int | None:
    """The signal submitit uses for preemption and timeouts, when this process is a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name, None)
