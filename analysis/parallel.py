"""Spread independent work (curve fits, per-task figures) over the machine's cores.

Results come back in input order and every work item is self-seeded, so the output does not depend on the
number of processes. Worker processes are spawned (not forked: the parent may hold Arrow thread pools) and
started only when there is enough work to repay their start-up; one pool serves the whole analysis.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

from analysis.console import Console

T = TypeVar("T")


class Workers:
    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(1, jobs if jobs is not None else min(os.cpu_count() or 1, 8))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def map(
        self,
        func: Callable[[Any], T],
        items: Sequence[Any],
        min_items: int,
        console: Console | None = None,
        description: str = "",
    ) -> list[T]:
        """`[func(i) for i in items]`, in parallel when there are at least `min_items` items; with a
        progress bar on `console` (drawn only on a terminal)."""
        if self.jobs <= 1 or len(items) < max(min_items, 2):
            results: Iterable[T] = (func(item) for item in items)
        else:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"))
            chunk = max(1, len(items) // (self.jobs * 4))
            results = self._pool.map(func, items, chunksize=chunk)
        if console is not None:
            results = console.track(results, description, len(items))
        return list(results)
