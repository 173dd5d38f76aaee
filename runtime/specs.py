"""Preprocessing specs: what the runtime must do to each modality, exactly as training did.

These frozen dataclasses are written into the bundle manifest (``inputs``) and into the
training checkpoint's ``recipe.json``; training and the runtime run the same code on them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ImageSpec:
    """Image preprocessing: decode -> RGB -> resize -> scale to [0,1] -> (x-mean)/std -> NCHW."""

    size: int = 128
    resize: str = "bilinear"  # cv2 interpolation name: "bilinear" | "area" | "nearest"
    mean: tuple[float, float, float] = (0.498, 0.498, 0.498)
    std: tuple[float, float, float] = (0.502, 0.502, 0.502)
    channel_order: str = "RGB"


@dataclass(frozen=True)
class TextSpec:
    """Text preprocessing: a HuggingFace ``tokenizer.json``, padded/truncated to ``max_length``."""

    max_length: int = 32
    tokenizer_file: str = "tokenizer.json"
    lowercase: bool = True


@dataclass(frozen=True)
class AudioSpec:
    """Audio preprocessing: mono float32 at ``sample_rate``, fixed-length clip, then the front end.

    ``front_end`` is ``"log_mel"`` (a log-mel spectrogram, (B, 1, n_mels, frames), from the STFT
    fields below) or ``"waveform"`` (the raw clip, (B, clip_samples), for wav2vec2-style encoders;
    ``normalize`` scales each clip to zero mean and unit variance, as their feature extractors do).
    """

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 8000.0
    front_end: str = "log_mel"
    normalize: bool = False

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def n_frames(self) -> int:
        return 1 + self.clip_samples // self.hop_length


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """A JSON-ready dict of a spec dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def spec_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Builds ``cls`` from a dict, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        from mmedge.errors import ConfigError

        raise ConfigError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)
