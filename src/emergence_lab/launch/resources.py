"""What a job may use: CPU threads (jobs x threads <= cores) and, with several GPUs visible, which GPU.

GPUs: job k of a parallel sweep, training on one device, prefers GPU k mod n, but takes only a GPU that no
other job on this machine holds (an advisory lock per physical GPU, held until the process starts its next
job or exits), and a worker process that trained on a GPU before keeps it. Pinning by job number alone would
let job k + n start on a GPU whose job k is still running while another GPU sits idle (joblib hands the next
job to whichever worker is free).

Why Lightning's `devices=[i]` and not CUDA_VISIBLE_DEVICES: joblib's loky backend reuses worker processes and
CUDA reads that variable once per process, so it could not move a reused worker to another GPU.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emergence_lab.launch.launchers import Launcher

# The GPU lock this process holds and the GPU it trained on last (a worker process keeps its GPU); private
# to this process and this module.
_held: dict[str, int | None] = {"fd": None}
_last_gpu: list[int] = []


def lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"emergence-lab-gpus-{os.getuid()}"


def physical_ids(n_visible: int) -> list[str]:
    """Names of the visible GPUs that are the same for every process of the machine."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:n_visible] if len(visible) >= n_visible else [str(i) for i in range(n_visible)]


def release() -> None:
    fd = _held["fd"]
    if fd is not None:
        os.close(fd)  # closing the file drops its lock
        _held["fd"] = None


def claim_gpu(n_visible: int, job_num: int, locks: Path | None = None) -> int:
    """The index (among the visible GPUs) this process should train on; see the module docstring. With every
    GPU held (more jobs than GPUs), GPU job_num mod n, unlocked."""
    release()
    locks = locks or lock_dir()
    locks.mkdir(parents=True, exist_ok=True)
    preferred = job_num % n_visible
    order = [*_last_gpu[-1:], *[(preferred + i) % n_visible for i in range(n_visible)]]
    ids = physical_ids(n_visible)
    for index in dict.fromkeys(order):
        fd = os.open(locks / f"gpu-{ids[index]}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held["fd"] = fd
        _last_gpu[:] = [index]
        return index
    return preferred


def pin_device(trainer: Mapping[str, Any], job_num: int) -> Any:
    """Lightning's `devices` for a job: with several GPUs visible and a one-device job, a free GPU, job k
    preferring GPU k mod n (see the module docstring); else `trainer.devices` as configured."""
    if trainer["accelerator"] not in ("gpu", "cuda") or trainer["devices"] != 1:
        return trainer["devices"]
    import torch  # only for GPU jobs: a CPU job skipped as completed starts without torch

    n = torch.cuda.device_count()
    return [claim_gpu(n, job_num)] if n > 1 else trainer["devices"]


# ---- threads: jobs x threads <= cores --------------------------------------------------------------------
def cpu_cores() -> int:
    """The cores this process may use: CPU affinity and cgroup quotas counted, as joblib counts them."""
    try:
        from joblib import cpu_count

        return max(1, int(cpu_count()))
    except ImportError:  # pragma: no cover - joblib comes with hydra-joblib-launcher
        return max(1, len(os.sched_getaffinity(0)))


def threads_per_job(
    launcher: Mapping[str, Any] | None, launch_size: int | None, cores: int | None = None
) -> int:
    """CPU threads for one job with `trainer.threads=auto`: the launcher's cpus_per_task when set (the cores
    SLURM gave the job), else this machine's cores shared evenly by the jobs running at once."""
    spec = Launcher.of(launcher)
    if spec.cpus_per_task:
        return spec.cpus_per_task
    cores = cores or cpu_cores()
    return max(1, cores // spec.jobs_at_once(launch_size, cores))


def job_threads(threads: int | str, launcher: Mapping[str, Any] | None, launch_size: int | None) -> int:
    """`trainer.threads` of a job: a number as given, `auto` from threads_per_job."""
    return threads_per_job(launcher, launch_size) if threads == "auto" else int(threads)
