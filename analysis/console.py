"""Messages for the user: warnings (printed and kept for the report) and progress bars for long work."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Console:
    """Warnings go to stderr as they happen and are kept, so the report can list every skipped input.

    Progress bars (rich) are drawn only when stderr is a terminal; in logs and tests they stay quiet.
    """

    quiet: bool = False
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if not self.quiet:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def info(self, message: str) -> None:
        """Progress notes go to stderr: stdout carries only the paths a command wrote."""
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        if self.quiet or not sys.stderr.isatty():
            yield from items
            return
        from rich.console import Console as RichConsole
        from rich.progress import track

        yield from track(items, description=description, total=total, console=RichConsole(stderr=True))
