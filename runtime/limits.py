"""Limits on what a bundle and a ``Session`` accept, with defaults a user can raise.

A device runs unattended on inputs it does not control: a 10-million-character text, a
batch of 100,000 images or a 1 GHz "sample rate" must be refused at once, with a message that
says which limit to raise, not take minutes or gigabytes.

    from mmedge.runtime import Session
    from mmedge.runtime.limits import Limits

    session = Session("bundle", limits=Limits(max_text_chars=50_000, max_batch=512))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from mmedge.errors import ConfigError

__all__ = ["Limits", "DEFAULT_LIMITS", "checked_limits"]


@dataclass(frozen=True)
class Limits:
    """What one call or one bundle may hold; anything larger is a typed error.

    Attributes:
        max_text_chars: Characters per text (the text encoder reads its first ``max_length``
            tokens anyway; longer texts only cost time).
        max_batch: Items per modality in one ``predict`` call.
        max_audio_seconds: Length of one audio clip, in seconds at its own rate.
        min_audio_rate: Lowest accepted ``audio_rate`` (Hz).
        max_audio_rate: Highest accepted ``audio_rate`` (Hz).
        max_image_pixels: Pixels (height x width) of one image, checked before an encoded
            image is decoded.
        max_zip_bytes: Uncompressed size of a ``.mmedge`` archive.
        max_zip_members: Entries in a ``.mmedge`` archive.
        max_manifest_bytes: Size of ``manifest.json``.
    """

    max_text_chars: int = 10_000
    max_batch: int = 256
    max_audio_seconds: float = 60.0
    min_audio_rate: int = 1_000
    max_audio_rate: int = 192_000
    max_image_pixels: int = 50_000_000
    max_zip_bytes: int = 4 * 2**30
    max_zip_members: int = 1_000
    max_manifest_bytes: int = 16 * 2**20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value <= 0 or (f.type == "int" and not isinstance(value, int)):
                kind = "a positive integer" if f.type == "int" else "a positive number"
                raise ConfigError(f"Limits.{f.name} must be {kind}, got {value!r}")
        if self.min_audio_rate > self.max_audio_rate:
            raise ConfigError(f"Limits.min_audio_rate ({self.min_audio_rate}) must not exceed max_audio_rate "
                              f"({self.max_audio_rate})")

    def raise_hint(self, name: str) -> str:
        """How to raise the limit ``name``, for error messages."""
        return f"raise it with limits=Limits({name}=...) (now {getattr(self, name)!r})"


DEFAULT_LIMITS = Limits()


def checked_limits(limits: Limits | None) -> Limits:
    """``limits`` itself, or ``DEFAULT_LIMITS`` for None.

    Raises:
        ConfigError: ``limits`` is something else than a ``Limits``.
    """
    if limits is None:
        return DEFAULT_LIMITS
    if not isinstance(limits, Limits):
        raise ConfigError(f"limits must be a mmedge.runtime.limits.Limits, got {type(limits).__name__}")
    return limits
