"""Progress reporting for long steps (training, export, bench).

Off by default (library use, tests). The CLI turns it on with ``enable()``: a rich progress
bar when stdout and stderr are both terminals, and plain, throttled progress lines on stdout
otherwise (``mmedge demo > log``, CI logs), so a redirected run is never silent for minutes.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
PLAIN_INTERVAL_S = 5.0  # at most one plain progress line per step this often (plus start and end)
_mode = "off"  # "off" | "rich" | "plain"


def enable(on: bool = True) -> None:
    """Turns progress on: rich bars on a terminal, plain lines when output is redirected."""
    global _mode
    if not on:
        _mode = "off"
    else:
        _mode = "rich" if sys.stdout.isatty() and sys.stderr.isatty() else "plain"


def mode() -> str:
    """The current mode: ``"off"``, ``"rich"`` or ``"plain"``."""
    return _mode


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterates ``items``, reporting progress in the current mode."""
    if _mode == "rich":
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, transient=True)
    elif _mode == "plain":
        yield from _plain_track(items, description, total)
    else:
        yield from items


def _plain_track(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    of = f"/{total}" if total else ""
    start = last = time.monotonic()
    _print(f"{description}: started")
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= PLAIN_INTERVAL_S:
            _print(f"{description}: {done}{of} ({now - start:.0f} s)")
            last = now
    _print(f"{description}: done, {done}{of} in {time.monotonic() - start:.1f} s")


def log(message: str) -> None:
    """A status line: on stderr in rich mode, on stdout in plain mode, nowhere when off."""
    if _mode == "rich":
        from rich.console import Console

        Console(stderr=True).print(message)
    elif _mode == "plain":
        from rich.text import Text

        _print(Text.from_markup(message).plain)  # no "[bold]" in a log file


def _print(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
