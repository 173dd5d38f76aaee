"""The audio front ends beside the log-mel one: the raw waveform (wav2vec2-style encoders) and CLAP's
features; and the ways a wave is fitted to the clip length (``CLIP_FITS``).

``AudioSpec.front_end`` picks the front end; ``mmedge.runtime.audio.preprocess_audio`` loads,
resamples and fits the waves for all of them and then runs the one the spec names, so training,
export and the device compute the same encoder input. numpy only.

CLAP (``clap_mel``) follows transformers' ``ClapFeatureExtractor`` with ``truncation="rand_trunc"``:
a periodic Hann window of ``n_fft``, ``center`` reflect padding, power spectrum, Slaney-scale
Slaney-normalised mel filters between ``fmin`` and ``fmax``, ``10 * log10(max(mel, 1e-10))``, in
float64 as it computes them; (B, 1, frames, n_mels).
"""
from __future__ import annotations

import functools

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.audio import fit_clip, log_mel
from mmedge.runtime.specs import AudioSpec

__all__ = ["FRONT_ENDS", "FRONT_END_FEATURES", "CLIP_FITS", "audio_input_name", "check_front_end", "waveform_input", "normalize_clips",
           "clap_features", "slaney_mel_filters", "fit_wave"]

# front end -> the name of the audio encoder's input; its features: FRONT_END_FEATURES (end of this module)
FRONT_ENDS = {"log_mel": "mel", "waveform": "waveform", "clap_mel": "input_features"}
_NORM_EPS = 1e-7  # as transformers' Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
_MEL_FLOOR = 1e-10  # transformers' spectrogram mel_floor and power_to_db min_value
_SLANEY_BREAK_HZ, _SLANEY_BREAK_MEL, _SLANEY_LOGSTEP = 1000.0, 15.0, 27.0 / np.log(6.4)


def _repeat_pad(wave: np.ndarray, n: int) -> np.ndarray:
    return np.tile(wave, n // wave.shape[0])  # CLAP's "repeatpad": whole repeats, zeros after


def _repeat(wave: np.ndarray, n: int) -> np.ndarray:
    return np.tile(wave, n // wave.shape[0] + 1)[:n]


# AudioSpec.padding -> how a shorter wave is filled before zero padding after it (None: centred, fit_clip's)
CLIP_FITS = {"center": None, "pad": lambda wave, n: wave, "repeatpad": _repeat_pad, "repeat": _repeat}


def fit_wave(wave: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """A mono wave fitted to ``spec.clip_samples`` by ``spec.padding`` (``CLIP_FITS``): ``center`` is
    ``fit_clip``'s centre crop / centred zeros; the others keep a longer wave's first samples and fill a
    shorter one as CLAP's feature extractor does, then zero-pad after it. float32 (clip_samples,)."""
    from mmedge.runtime.audio import fit_clip

    if spec.padding not in CLIP_FITS:
        raise InputError(f"unknown AudioSpec.padding {spec.padding!r}; valid: {sorted(CLIP_FITS)}")
    n, fill = spec.clip_samples, CLIP_FITS[spec.padding]
    if fill is None:
        return fit_clip(wave, n)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.shape[0] >= n:
        return np.ascontiguousarray(wave[:n])
    if wave.shape[0] == 0:
        return np.zeros(n, np.float32)
    out = fill(wave, n)
    return np.pad(out, (0, n - out.shape[0])).astype(np.float32)


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


def _hz_to_slaney(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log = _SLANEY_BREAK_MEL + np.log(np.maximum(hz, 1e-12) / _SLANEY_BREAK_HZ) * _SLANEY_LOGSTEP
    return np.where(hz >= _SLANEY_BREAK_HZ, log, 3.0 * hz / 200.0)


def _slaney_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log = _SLANEY_BREAK_HZ * np.exp((mel - _SLANEY_BREAK_MEL) / _SLANEY_LOGSTEP)
    return np.where(mel >= _SLANEY_BREAK_MEL, log, 200.0 * mel / 3.0)


@functools.lru_cache(maxsize=8)
def slaney_mel_filters(spec: AudioSpec) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filters as transformers' ``mel_filter_bank(norm="slaney",
    mel_scale="slaney")`` builds them (FFT bins up to ``sample_rate // 2``): float64 (n_fft // 2 + 1, n_mels)."""
    bins = spec.n_fft // 2 + 1
    fft_hz = np.linspace(0, spec.sample_rate // 2, bins)
    edges = _slaney_to_hz(np.linspace(_hz_to_slaney(spec.fmin), _hz_to_slaney(spec.fmax), spec.n_mels + 2))
    gaps = np.diff(edges)
    slopes = edges[None, :] - fft_hz[:, None]  # (bins, n_mels + 2)
    down = -slopes[:, :-2] / gaps[:-1]
    up = slopes[:, 2:] / gaps[1:]
    filters = np.maximum(0.0, np.minimum(down, up)) * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    filters.flags.writeable = False
    return filters


def clap_features(clips: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """CLAP's input features of fixed-length clips (``ClapFeatureExtractor``, ``truncation="rand_trunc"``).

    Args:
        clips: float (N, spec.clip_samples) at ``spec.sample_rate``.
        spec: The audio spec (``front_end="clap_mel"``).

    Returns:
        float32 (N, 1, spec.n_frames, n_mels): the mel power in dB.
    """
    clips = np.asarray(clips)
    if clips.ndim != 2 or clips.shape[1] != spec.clip_samples:
        raise InputError(f"clap_features takes (N, {spec.clip_samples}) clips, got shape {clips.shape}")
    half = spec.n_fft // 2
    window = np.hanning(spec.n_fft + 1)[:-1]  # periodic Hann, as transformers' window_function
    padded = np.pad(clips.astype(np.float64), ((0, 0), (half, half)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft, axis=1)[:, ::spec.hop_length]
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (N, frames, bins)
    mel = np.maximum(_MEL_FLOOR, power @ slaney_mel_filters(spec))  # (N, frames, n_mels)
    return np.ascontiguousarray((10.0 * np.log10(mel))[:, None], dtype=np.float32)


# front end -> features(clips (N, clip_samples), spec) -> the encoder input
FRONT_END_FEATURES = {"log_mel": lambda clips, spec: log_mel(clips, spec)[:, None],  # (N, 1, n_mels, n_frames)
                      "waveform": waveform_input,  # (N, clip_samples)
                      "clap_mel": clap_features}  # (N, 1, n_frames, n_mels)
