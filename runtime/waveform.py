"""The raw-waveform audio front end (wav2vec2-style encoders), beside the log-mel one.

``AudioSpec.front_end`` picks the front end; ``mmedge.runtime.audio.preprocess_audio`` loads,
resamples and clips the waves for both and then runs the one the spec names, so training,
export and the device compute the same encoder input. numpy only.
"""
from __future__ import annotations

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.specs import AudioSpec

__all__ = ["FRONT_ENDS", "audio_input_name", "check_front_end", "waveform_input", "normalize_clips"]

# front end -> the name of the audio encoder's input
FRONT_ENDS = {"log_mel": "mel", "waveform": "waveform"}
_NORM_EPS = 1e-7  # as transformers' Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


def check_front_end(spec: AudioSpec) -> str:
    """The spec's front end, checked.

    Raises:
        InputError: an unknown front end (the valid ones are listed).
    """
    if spec.front_end not in FRONT_ENDS:
        raise InputError(f"unknown AudioSpec.front_end {spec.front_end!r}; valid: {sorted(FRONT_ENDS)}")
    return spec.front_end


def audio_input_name(spec: AudioSpec) -> str:
    """The audio encoder input the spec's front end produces: ``"mel"`` or ``"waveform"``."""
    return FRONT_ENDS[check_front_end(spec)]


def normalize_clips(clips: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip: ``(x - mean) / sqrt(var + 1e-7)``, float32 (N, T)."""
    x = clips.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return np.ascontiguousarray((x - mean) / np.sqrt(var + _NORM_EPS), dtype=np.float32)


def waveform_input(clips: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """The raw-waveform encoder input of fixed-length clips.

    Args:
        clips: float (N, spec.clip_samples) mono clips at ``spec.sample_rate``.
        spec: The audio spec (``front_end="waveform"``); ``normalize`` scales each clip.

    Returns:
        float32 (N, clip_samples).
    """
    clips = np.asarray(clips)
    if clips.ndim != 2 or clips.shape[1] != spec.clip_samples:
        raise InputError(f"waveform_input takes (N, {spec.clip_samples}) clips, got shape {clips.shape}; "
                         "use fit_clip to cut each wave to spec.clip_samples")
    return normalize_clips(clips) if spec.normalize else np.ascontiguousarray(clips, dtype=np.float32)
