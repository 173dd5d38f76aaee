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

from mmedge.runtime.manifest_schema import boolean, check_relpath, choice, number, numbers, ranged

__all__ = ["ImageSpec", "TextSpec", "AudioSpec", "HFConfigs", "spec_to_dict", "spec_from_dict", "required_fields",
           "spec_files"]

_PIL_RESAMPLE = {0: "nearest", 2: "bilinear"}  # PIL codes of HF image processors; others resize bilinearly
_RESCALE = 1.0 / 255.0


@dataclass(frozen=True)
class HFConfigs:
    """The configs of a local Hugging Face model folder that a spec is derived from (``mmedge.hf_folder``).

    Attributes:
        where: The folder, for messages.
        config: ``config.json``.
        processor: ``preprocessor_config.json`` (empty when absent).
    """

    where: str
    config: Mapping[str, Any]
    processor: Mapping[str, Any]


def _hf_error(message: str) -> Exception:
    from mmedge.errors import ConfigError

    return ConfigError(message)


def _checked(check: Callable[[Any, str], Any], *, bundle_file: bool = False, **kwargs: Any) -> Any:
    return field(metadata={"check": check, "bundle_file": bundle_file}, **kwargs)


def _resize_modes(value: Any, path: str) -> str:
    from mmedge.runtime.preprocess import resize_mode_names  # the registry, read when a manifest is checked

    return choice(*resize_mode_names())(value, path)


def _front_ends(value: Any, path: str) -> str:
    from mmedge.runtime.waveform import FRONT_ENDS

    return choice(*FRONT_ENDS)(value, path)


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """Image preprocessing: decode -> RGB -> resize -> scale to [0,1] -> (x-mean)/std -> NCHW.

    Attributes:
        size: The encoder's input side S (the image becomes S x S).
        resize: A resize mode of ``mmedge.runtime.preprocess`` (``resize_mode_names()``).
        mean: Per-channel mean subtracted after scaling to [0, 1], in ``channel_order``.
        std: Per-channel standard deviation divided by.
        channel_order: ``"RGB"`` or ``"BGR"``: the channel order the encoder takes.
    """

    size: int = _checked(ranged(1, 8192))
    resize: str = _checked(_resize_modes, default="bilinear")
    mean: tuple[float, float, float] = _checked(numbers(-1e3, 1e3, length=3))
    std: tuple[float, float, float] = _checked(numbers(1e-6, 1e6, length=3))
    channel_order: str = _checked(choice("RGB", "BGR"), default="RGB")

    @classmethod
    def from_hf(cls, hf: HFConfigs, base: ImageSpec | None = None) -> ImageSpec:
        """The spec of a Hugging Face image processor: its square size, mean/std and resampling.

        Raises:
            ConfigError: a processor mmedge cannot follow (rescaling other than 1/255, a non-square size).
        """
        cfg = hf.processor
        if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", _RESCALE)) - _RESCALE) > 1e-9:
            raise _hf_error(f"{hf.where}: rescale_factor {cfg['rescale_factor']} is not 1/255; mmedge scales "
                            "pixels to [0, 1] before mean/std")
        normalize = cfg.get("do_normalize", True)
        mean = tuple(float(v) for v in cfg.get("image_mean", (0.5,) * 3)) if normalize else (0.0,) * 3
        std = tuple(float(v) for v in cfg.get("image_std", (0.5,) * 3)) if normalize else (1.0,) * 3
        if len(mean) != 3 or len(std) != 3:
            raise _hf_error(f"{hf.where}: image_mean / image_std must hold 3 values (RGB)")
        return cls(size=_square_size(hf), mean=mean, std=std, channel_order="RGB",
                   resize=_PIL_RESAMPLE.get(cfg.get("resample", 2), "bilinear"))


def _square_size(hf: HFConfigs) -> int:
    cfg = hf.processor
    size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        if size.get("height") is not None and size.get("height") == size.get("width"):
            return int(size["height"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
    raise _hf_error(f"{hf.where}: size {size!r} is not square; mmedge resizes to a square S x S: set size to "
                    "{\"height\": S, \"width\": S}")


@dataclass(frozen=True, kw_only=True)
class TextSpec:
    """Text preprocessing: a HuggingFace ``tokenizer.json``, padded/truncated to ``max_length``.

    Attributes:
        max_length: Most tokens per text (the encoder's sequence length).
        tokenizer_file: The tokenizer's file name in the bundle.
        lowercase: Lowercase texts before tokenizing (for an uncased model whose tokenizer does
            not do it itself; the tokenizer's own normalizer decides otherwise).
    """

    max_length: int = _checked(ranged(1, 65536))
    tokenizer_file: str = _checked(check_relpath, bundle_file=True, default="tokenizer.json")
    lowercase: bool = _checked(boolean, default=False)

    @classmethod
    def from_hf(cls, hf: HFConfigs, base: TextSpec | None = None) -> TextSpec:
        """The spec of a Hugging Face text model: its ``tokenizer.json``, case left to the tokenizer's own
        normalizer, ``base``'s ``max_length`` (how many tokens to read is a choice: a model only bounds it).

        Raises:
            ConfigError: no ``base`` (state the length), or a length the model's positions cannot hold.
        """
        if base is None:
            raise _hf_error(f"{hf.where}: state how many tokens to read: pass the text spec, e.g. "
                            "specs={'text': TextSpec(max_length=32)} (the folder brings the tokenizer)")
        limit = hf.config.get("max_position_embeddings")
        if isinstance(limit, int) and base.max_length > limit:
            raise _hf_error(f"text max_length {base.max_length} exceeds {hf.where}'s max_position_embeddings "
                            f"{limit}; lower max_length")
        return cls(max_length=base.max_length, tokenizer_file="tokenizer.json", lowercase=False)


@dataclass(frozen=True, kw_only=True)
class AudioSpec:
    """Audio preprocessing: mono float32 at ``sample_rate``, fixed-length clip, then the front end.

    ``front_end`` is ``"log_mel"`` (a log-mel spectrogram, (B, 1, n_mels, frames), from the STFT
    fields below) or ``"waveform"`` (the raw clip, (B, clip_samples), for wav2vec2-style encoders;
    ``normalize`` scales each clip to zero mean and unit variance, as their feature extractors do).
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

    @classmethod
    def from_hf(cls, hf: HFConfigs, base: AudioSpec | None = None) -> AudioSpec:
        """The spec of a Hugging Face feature extractor over the raw waveform (wav2vec2-style): its rate and
        normalisation; the clip length is ``base``'s (a model does not state one).

        Raises:
            ConfigError: no ``base`` (state the clip length), or a spectrogram front end.
        """
        cfg = hf.processor
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
        if self.front_end != "log_mel":
            return []  # the STFT fields are not used
        if self.win_length > self.n_fft:
            return [("win_length", f"must be <= n_fft ({self.n_fft}), got {self.win_length}")]
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            return [("fmax", f"must be > fmin ({self.fmin:g}) and <= sample_rate / 2 ({self.sample_rate / 2:g}), "
                             f"got {self.fmax:g}")]
        if self.clip_samples <= self.n_fft // 2:
            return [("clip_seconds", f"gives {self.clip_samples} samples, too few for n_fft {self.n_fft}")]
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
