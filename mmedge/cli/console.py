"""Consoles, the one error exit, and flag parsing shared by every command module."""
from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from mmedge.errors import ConfigError

__all__ = ["console", "err_console", "fail", "split_list", "int_list"]

# Pipes and CI logs get 140 columns instead of rich's 80, so the wide tables stay readable.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def fail(error: Exception) -> NoReturn:
    """Prints a typed mmedge error on stderr and exits with status 2."""
    err_console.print(f"[bold red]error:[/] {escape(str(error))}")  # "[serve]" is text, not markup
    raise typer.Exit(2)


def split_list(value: str, flag: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; an empty list is a ``ConfigError`` naming ``flag``."""
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise ConfigError(f"{flag} needs at least one value, e.g. {flag} fp32,int8")
    return items


def int_list(value: str, flag: str) -> tuple[int, ...]:
    """``"1,8"`` -> ``(1, 8)``; anything else is a ``ConfigError`` naming ``flag``."""
    try:
        return tuple(int(v) for v in split_list(value, flag))
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {value!r}") from None
