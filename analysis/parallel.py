"""Spread independent work (curve fits, per-task figures) over the machine's cores.

Results come back in input order and every work item is self-seeded, so the output does not depend on the
number of processes. Workers come from a fork server (or are spawned), never forked from the parent, which
may hold Arrow thread pools. They start only when there is enough work to repay their start-up (seconds of
imports), one pool serves the whole analysis, and `warm_up` starts them early, so that their imports
overlap the parent's serial work. The pool knows no client: the modules its workers import ahead of the
work (`preload`) are the caller's to name.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from emergence_lab.analysis.console import Console

T = TypeVar("T")


def _warm(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


def _context(preload: tuple[str, ...]) -> BaseContext:
    """A fork server that has imported `preload` once, where there is one (Linux, macOS): each worker is
    then a cheap fork of it. Plain spawn elsewhere."""
    if "forkserver" in get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        return context
    return get_context("spawn")


class Workers:
    """A pool of `jobs` processes, started on first use; `preload` names the modules every worker imports
    before its first item (those that define the functions it will run)."""

    def __init__(self, jobs: int | None = None, preload: tuple[str, ...] = ()) -> None:
        self.jobs = max(1, jobs if jobs is not None else min(os.cpu_count() or 1, 8))
        self.preload = tuple(preload)
        self._pool: ProcessPoolExecutor | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=_context(self.preload))
        return self._pool

    def warm_up(self) -> None:
        """Start the worker processes now and let them import `preload` in the background."""
        if self.jobs > 1 and self._pool is None:
            pool = self._start()
            for _ in range(self.jobs):
                pool.submit(_warm, self.preload)

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
            chunk = max(1, len(items) // (self.jobs * 4))
            results = self._start().map(func, items, chunksize=chunk)
        if console is not None:
            results = console.track(results, description, len(items))
        return list(results)
