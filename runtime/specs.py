"""Preprocessing specs: what the runtime must do to each modality, exactly as training did.

These frozen dataclasses are written into the bundle manifest (``inputs``) and into the
training checkpoint's ``recipe.json``; training and the runtime run the same code on them.

A spec holds no model's numbers as defaults: the size, mean/std, token length, sample rate and
clip length are always stated (by the encoder's recipe, ``mmedge.config``) or derived from the
model (a Hugging Face folder's processor config, ``mmedge.hf_folder``). The defaults left are
choices that suit any model (file names, bilinear resizing, the log-mel framing of speech
front ends). Each field's ``metadata["check"]`` is its manifest schema (``manifest_schema``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from mmedge.runtime.manifest_schema import SchemaError, boolean, check_relpath, choice, number, numbers, ranged

__all__ = ["ImageSpec", "TextSpec", "AudioSpec", "HFConfigs", "spec_to_dict", "spec_from_dict", "required_fields",
           "spec_files"]



@dataclass(frozen=True)
class HFConfigs:
    """The configs of a local Hugging Face model folder that a spec is derived from (``mmedge.hf_folder``).

    Attributes:
        where: The folder, for messages.
        config: ``config.json``.
        processor: ``preprocessor_config.json`` (empty when absent).
        tokenizer: ``tokenizer_config.json`` with ``special_tokens_map.json`` over it (empty when absent).
        special_tokens: The added tokens of ``tokenizer.json`` and their ids (``[PAD]``, ``</s>``, ...).
    """

    where: str
    config: Mapping[str, Any]
    processor: Mapping[str, Any]
    tokenizer: Mapping[str, Any] = field(default_factory=dict)
    special_tokens: Mapping[str, int] = field(default_factory=dict)


def _hf_error(message: str) -> Exception:
    from mmedge.errors import ConfigError

    return ConfigError(message)


def _checked(check: Callable[[Any, str], Any], *, bundle_file: bool = False, **kwargs: Any) -> Any:
    return field(metadata={"check": check, "bundle_file": bundle_file}, **kwargs)


def _resize_modes(value: Any, path: str) -> str:
    from mmedge.runtime.preprocess import resize_mode_names  # the registry, read when a manifest is checked

    return choice(*resize_mode_names())(value, path)


def _token_text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise SchemaError(path, f"must be a token's non-empty text, got {value!r}")
    return value


def _interpolations(value: Any, path: str) -> str:
    from mmedge.runtime.image_resize import interpolation_names

    return choice(*interpolation_names())(value, path)


def _front_ends(value: Any, path: str) -> str:
    from mmedge.runtime.waveform import FRONT_ENDS

    return choice(*FRONT_ENDS)(value, path)


def _clip_fits(value: Any, path: str) -> str:
    from mmedge.runtime.waveform import CLIP_FITS

    return choice(*CLIP_FITS)(value, path)


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """Image preprocessing: decode -> RGB -> resize -> scale to [0,1] -> (x-mean)/std -> NCHW.

    Attributes:
        size: The encoder's input side S (the image becomes S x S).
        resize: A resize mode of ``mmedge.runtime.preprocess`` (``resize_mode_names()``): ``squash``,
            ``shortest_edge`` (then a centre crop), ``letterbox``; ``bilinear`` / ``area`` / ``nearest`` are
            the first bundles' (squash with OpenCV's filter of that name).
        mean: Per-channel mean subtracted after scaling to [0, 1], in ``channel_order``.
        std: Per-channel standard deviation divided by.
        channel_order: ``"RGB"`` or ``"BGR"``: the channel order the encoder takes.
        interpolation: A filter of ``mmedge.runtime.image_resize.INTERPOLATIONS``: ``bilinear``, ``bicubic``,
            ``nearest`` (Pillow's, as Hugging Face processors) or ``cv2_bilinear`` / ``cv2_area`` / ``cv2_nearest``.
        resize_size: The side R the resize mode targets before the centre crop to S (the shortest edge, the
            squashed or letterboxed square); 0: S itself (no crop).
        pad_value: The letterbox padding (0-255, all channels).
        convert_rgb: The processor converts inputs to RGB (Hugging Face ``do_convert_rgb``); the runtime always
            does (grey to 3 channels, alpha dropped), so this records the model's processor. Hugging Face
            composites transparency onto white instead of dropping it: only transparent pixels differ.
    """

    size: int = _checked(ranged(1, 8192))
    resize: str = _checked(_resize_modes, default="bilinear")
    mean: tuple[float, float, float] = _checked(numbers(-1e3, 1e3, length=3))
    std: tuple[float, float, float] = _checked(numbers(1e-6, 1e6, length=3))
    channel_order: str = _checked(choice("RGB", "BGR"), default="RGB")
    interpolation: str = _checked(_interpolations, default="cv2_bilinear")
    resize_size: int = _checked(ranged(0, 8192), default=0)
    pad_value: int = _checked(ranged(0, 255), default=0)
    convert_rgb: bool = _checked(boolean, default=True)

    @classmethod
    def from_hf(cls, hf: HFConfigs, base: ImageSpec | None = None) -> ImageSpec:
        """The spec of a Hugging Face image processor (``mmedge.hf_specs.image_fields``): its resize (squash or
        shortest edge + centre crop), Pillow filter, mean/std and RGB conversion.

        Raises:
            ConfigError: a processor option the runtime cannot reproduce, named (``do_pad``, ``crop_pct``,
                a LANCZOS ``resample``, a non-square size, rescaling other than 1/255, ...).
        """
        from mmedge.hf_specs import image_fields

        return cls(**image_fields(hf.where, hf.processor))


@dataclass(frozen=True, kw_only=True)
class TextSpec:
    """Text preprocessing: a HuggingFace ``tokenizer.json``, truncated to ``max_length`` (its special tokens
    kept, as the fast tokenizer truncates) and padded with ``pad_token``.

    Attributes:
        max_length: Most tokens per text (the encoder's sequence length).
        tokenizer_file: The tokenizer's file name in the bundle.
        lowercase: Lowercase texts before tokenizing (for an uncased model whose tokenizer does
            not do it itself; the tokenizer's own normalizer decides otherwise).
        pad_token: The token that fills a short text's tail (the first bundles': ``[PAD]``).
        pad_id: Its id, checked against the tokenizer when the bundle opens; -1: whatever the tokenizer says.
        padding: ``"longest"``: to the batch's longest text (rounded up to the session's length bucket),
            at most ``max_length``; ``"max_length"``: every text to exactly ``max_length`` (SigLIP, whose text
            embedding depends on it).
    """

    max_length: int = _checked(ranged(1, 65536))
    tokenizer_file: str = _checked(check_relpath, bundle_file=True, default="tokenizer.json")
    lowercase: bool = _checked(boolean, default=False)
    pad_token: str = _checked(_token_text, default="[PAD]")
    pad_id: int = _checked(ranged(-1, 2**31 - 1), default=-1)
    padding: str = _checked(choice("longest", "max_length"), default="longest")

    @classmethod
    def from_hf(cls, hf: HFConfigs, base: TextSpec | None = None) -> TextSpec:
        """The spec of a Hugging Face text model (``mmedge.hf_specs.text_fields``): its ``tokenizer.json``, its
        pad token (else its eos token), its max length (or ``base``'s, if given and within it) and fixed-length
        padding for models trained with it (SigLIP: ``padding="max_length"``); case is left to the tokenizer.

        Raises:
            ConfigError: a tokenizer with neither pad nor eos token, a length the model cannot take, or a
                fixed-length model asked for another length.
        """
        from mmedge.hf_specs import text_fields

        return cls(**text_fields(hf.where, hf.config, hf.tokenizer, hf.special_tokens,
                                 base.max_length if base is not None else None))


@dataclass(frozen=True, kw_only=True)
class AudioSpec:
    """Audio preprocessing: mono float32 at ``sample_rate``, fixed-length clip, then the front end.

    ``front_end`` is ``"log_mel"`` (a log-mel spectrogram, (B, 1, n_mels, frames), from the STFT
    fields below), ``"waveform"`` (the raw clip, (B, clip_samples), for wav2vec2-style encoders;
    ``normalize`` scales each clip to zero mean and unit variance, as their feature extractors do) or
    ``"clap_mel"`` (CLAP's features, (B, 1, frames, n_mels): Slaney mel power in dB).
    ``padding`` fits each wave to the clip length: ``"center"`` (centre crop or centred zeros), or as
    CLAP's extractor pads: ``"pad"`` (zeros after), ``"repeatpad"`` (whole repeats, then zeros),
    ``"repeat"`` (repeats cut to length); those three keep the first ``clip_seconds`` of a longer wave.
    The STFT defaults are the usual speech framing (25 ms windows, 10 ms hop at 16 kHz, 64 mels).
    """

    sample_rate: int = _checked(ranged(1000, 384_000))
    clip_seconds: float = _checked(number(0.0, 600.0, lo_open=True))
    n_fft: int = _checked(ranged(16, 65536), default=512)
    win_length: int = _checked(ranged(1, 65536), default=400)  # 25 ms
    hop_length: int = _checked(ranged(1, 65536), default=160)  # 10 ms
    n_mels: int = _checked(ranged(1, 512), default=64)
    fmin: float = _checked(number(0.0), default=20.0)
    fmax: float = _checked(number(0.0), default=8000.0)
    front_end: str = _checked(_front_ends, default="log_mel")
    normalize: bool = _checked(boolean, default=False)
    padding: str = _checked(_clip_fits, default="center")

    @classmethod
    def from_hf(cls, hf: HFConfigs, base: AudioSpec | None = None) -> AudioSpec:
        """The spec of a Hugging Face feature extractor: CLAP's (``ClapFeatureExtractor``: all of it from its
        config, ``mmedge.hf_specs.audio_fields``), or one over the raw waveform (wav2vec2-style: its rate and
        normalisation; the clip length is ``base``'s, a model does not state one).

        Raises:
            ConfigError: no ``base`` for a waveform model (state the clip length), another spectrogram front
                end, or a CLAP option the runtime cannot reproduce (``truncation="fusion"``), named.
        """
        from mmedge.hf_specs import audio_fields

        cfg = hf.processor
        clap = audio_fields(hf.where, cfg, base.clip_seconds if base is not None else None)
        if clap is not None:
            return cls(**clap)
        if int(cfg.get("feature_size", 1)) != 1:
            raise _hf_error(f"{hf.where}: feature_size {cfg['feature_size']} means a spectrogram front end; mmedge's "
                            "Hugging Face audio encoders take the raw waveform (wav2vec2-style, feature_size 1)")
        if base is None:
            raise _hf_error(f"{hf.where} does not say how long a clip it takes: pass the audio spec, e.g. "
                            "specs={'audio': AudioSpec(sample_rate=16000, clip_seconds=1.0)} (the folder sets the rate)")
        rate = int(cfg.get("sampling_rate", base.sample_rate))
        return dataclasses.replace(base, sample_rate=rate, front_end="waveform",
                                   normalize=bool(cfg.get("do_normalize", True)), fmax=min(base.fmax, rate / 2))

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def n_frames(self) -> int:
        return 1 + self.clip_samples // self.hop_length

    def problems(self) -> list[tuple[str, str]]:
        """``(field, what)`` for each value that does not fit the others (empty: a usable spec)."""
        if self.front_end == "waveform":
            return []  # the STFT fields are not used
        if self.win_length > self.n_fft:
            return [("win_length", f"must be <= n_fft ({self.n_fft}), got {self.win_length}")]
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            return [("fmax", f"must be > fmin ({self.fmin:g}) and <= sample_rate / 2 ({self.sample_rate / 2:g}), "
                             f"got {self.fmax:g}")]
        if self.clip_samples <= self.n_fft // 2:
            return [("clip_seconds", f"gives {self.clip_samples} samples, too few for n_fft {self.n_fft}")]
        if self.front_end != "log_mel":
            return []  # CLAP's Slaney filters: an empty band is floored, as its extractor does
        from mmedge.errors import InputError
        from mmedge.runtime.audio import mel_filterbank

        try:
            mel_filterbank(self)
        except InputError as exc:
            return [("n_mels", str(exc))]
        return []


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """A JSON-ready dict of a spec dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def required_fields(cls: type) -> tuple[str, ...]:
    """The fields of spec class ``cls`` that have no default: the model's own numbers."""
    missing = (dataclasses.MISSING,)
    return tuple(f.name for f in dataclasses.fields(cls) if f.default in missing and f.default_factory in missing)


def spec_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Builds ``cls`` from a dict, rejecting unknown keys and naming missing ones.

    Fields added after the first bundles were written (``front_end``, ``normalize``) have
    defaults, so older manifests and checkpoints still read.
    """
    from mmedge.errors import ConfigError

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {sorted(names)}")
    missing = [k for k in required_fields(cls) if k not in data]
    if missing:
        raise ConfigError(f"{cls.__name__} lacks {missing}; state them (they have no defaults: a spec's size, "
                          "mean/std, length or rate are the model's own)")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)


def spec_files(cls: type, data: Any) -> dict[str, str]:
    """Field -> bundle file, for the fields of spec class ``cls`` that name a file of the bundle (the
    tokenizer): read from a spec or its manifest dict, with the field's default when absent."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("bundle_file"):
            value = getattr(data, f.name) if isinstance(data, cls) else data.get(f.name, f.default)
            out[f.name] = str(value)
    return out
