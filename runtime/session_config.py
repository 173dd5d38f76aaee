"""A ``Session``'s own settings (threads, text cache, limits, encoder lanes), checked before anything is opened."""
from __future__ import annotations

from mmedge.errors import ConfigError
from mmedge.runtime.encoder_lanes import check_lanes
from mmedge.runtime.limits import Limits, checked_limits

__all__ = ["check_session_config"]


def check_session_config(threads: int | None, text_cache_size: int, limits: Limits | None,
                         encoder_lanes: int | None = None) -> None:
    """``Session``'s own settings: a ``ConfigError`` names the bad one."""
    checked_limits(limits)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    if isinstance(text_cache_size, bool) or not isinstance(text_cache_size, int) or text_cache_size < 0:
        raise ConfigError(f"text_cache_size must be an integer >= 0, got {text_cache_size!r}")
    check_lanes(encoder_lanes)
