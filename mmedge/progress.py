"""Progress reporting: rich progress bars on a terminal, silent elsewhere (tests, pipes)."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_enabled = False


def enable(on: bool = True) -> None:
    """Turns progress bars on (the CLI does, when stderr is a terminal)."""
    global _enabled
    _enabled = on and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterates ``items``, with a progress bar when enabled."""
    if not _enabled:
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, transient=True)


def log(message: str) -> None:
    """A status line on stderr when progress is enabled."""
    if _enabled:
        from rich.console import Console

        Console(stderr=True).print(message)
