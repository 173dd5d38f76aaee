"""Preprocessing specs derived from a Hugging Face folder's own configs (``<Spec>.from_hf`` calls these).

Torch-free (plain JSON). Each reader takes every option of the processor that changes the encoder's
input and maps it to a spec field, or refuses it by name (``ConfigError``): an option the runtime
cannot reproduce is never silently approximated.

- Images (``preprocessor_config.json``): resize (squash / shortest edge), ``resample`` (Pillow's
  nearest, bilinear, bicubic), centre crop, rescale (any factor, folded into mean/std), mean/std,
  ``do_convert_rgb``.
- Text (``tokenizer_config.json`` / ``special_tokens_map.json``): the pad token (else the eos
  token), the model's max length, fixed-length padding for the families trained with it (SigLIP).
- Audio: CLAP's ``ClapFeatureExtractor`` (rate, FFT, hop, mel bands and range, padding, the
  deterministic ``rand_trunc`` truncation) or a raw-waveform extractor (wav2vec2-style).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mmedge.errors import ConfigError

__all__ = ["hf_configs", "image_fields", "text_fields", "audio_fields", "token_content", "sub_config",
           "FIXED_PADDING_MODELS"]

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # Pillow's codes that the runtime reproduces exactly
_RESAMPLE_NAMES = {1: "LANCZOS", 4: "BOX", 5: "HAMMING"}
_SHORTEST_EDGE_INT = frozenset({"CLIPImageProcessor", "CLIPFeatureExtractor", "ChineseCLIPImageProcessor",
                                "BitImageProcessor", "ConvNextImageProcessor", "BlipImageProcessor"})
_IMAGE_HANDLED = frozenset({"do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"})
_IMAGE_REFUSED = ("crop_pct", "size_divisor", "size_divisibility", "pad_size", "rescale_offset")
FIXED_PADDING_MODELS = frozenset({"siglip", "siglip_text_model", "siglip2", "siglip2_text_model"})
_MAX_SANE_LENGTH = 1_000_000  # transformers writes 1e30 for "no limit"
_CLAP_TRUNCATION = ("rand_trunc",)
_CLAP_PADDING = ("repeatpad", "repeat", "pad")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}; re-save it with save_pretrained") from None


def _object(path: Path) -> dict[str, Any]:
    data = _read(path) if path.is_file() else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; re-save it with save_pretrained")
    return data


def hf_configs(folder: Path) -> Any:
    """The ``HFConfigs`` of a model folder: ``config.json``, ``preprocessor_config.json``, the tokenizer's
    config (``tokenizer_config.json`` with ``special_tokens_map.json`` over it) and ``tokenizer.json``'s added
    tokens; a missing file reads as empty."""
    from mmedge.runtime.specs import HFConfigs

    folder = Path(folder)
    tokenizer = {**_object(folder / "tokenizer_config.json"), **_object(folder / "special_tokens_map.json")}
    added = _object(folder / "tokenizer.json").get("added_tokens") or []
    special = {t["content"]: t["id"] for t in added
               if isinstance(t, dict) and isinstance(t.get("content"), str) and isinstance(t.get("id"), int)}
    return HFConfigs(str(folder), _object(folder / "config.json"), _object(folder / "preprocessor_config.json"),
                     tokenizer, special)


def _refuse(where: str, option: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{where}: processor option {option}={value!r} cannot be reproduced by the mmedge runtime "
                       f"({why}); re-save the processor without it, or wrap the model as a user module with "
                       "your own preprocessing")


def sub_config(config: Mapping[str, Any], modality: str) -> Mapping[str, Any]:
    """The tower config of ``modality`` in a multi-tower ``config.json`` (``text_config``, ``vision_config``,
    ``audio_config``), else the config itself."""
    key = {"image": "vision_config", "text": "text_config", "audio": "audio_config"}[modality]
    inner = config.get(key)
    return inner if isinstance(inner, Mapping) else config


# -- images ----------------------------------------------------------------------------------


def _check_image_options(where: str, cfg: Mapping[str, Any]) -> None:
    for key, value in cfg.items():
        if key.startswith("do_") and key not in _IMAGE_HANDLED and value:
            raise _refuse(where, key, value, "a step mmedge's image preprocessing does not have")
    for key in _IMAGE_REFUSED:
        if cfg.get(key) not in (None, False):
            raise _refuse(where, key, cfg[key], "a resize rule mmedge's image preprocessing does not have")
    if cfg.get("do_resize", True) is False:
        raise _refuse(where, "do_resize", False, "images would reach the model at their own size; mmedge's image "
                                                  "encoders take a fixed S x S")


def _side(where: str, option: str, value: Any) -> int:
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, Mapping) and value.get("height") is not None and value.get("height") == value.get("width"):
        return int(value["height"])
    raise _refuse(where, option, value, "mmedge's image encoders take a square S x S: set "
                                        "{\"height\": S, \"width\": S}")


def _resize(where: str, cfg: Mapping[str, Any]) -> tuple[str, int]:
    """(resize mode, resize side R) of the processor's ``size``."""
    size = cfg.get("size")
    kind = cfg.get("image_processor_type") or cfg.get("feature_extractor_type")
    if isinstance(size, int):
        shortest = kind in _SHORTEST_EDGE_INT or cfg.get("default_to_square") is False
        return ("shortest_edge" if shortest else "squash"), size
    if isinstance(size, Mapping) and set(k for k, v in size.items() if v is not None) == {"shortest_edge"}:
        return "shortest_edge", int(size["shortest_edge"])
    return "squash", _side(where, "size", size)


def _normalisation(where: str, cfg: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The spec's mean/std, on pixels scaled by 1/255, of the processor's rescale then normalise:
    ``(x * r - m) / s == (x / 255 - m / (255 r)) / (s / (255 r))`` (no rescaling: r = 1)."""
    factor = 255.0 * float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 255.0
    if not factor > 0:
        raise _refuse(where, "rescale_factor", cfg.get("rescale_factor"), "a scale must be positive")
    normalize = cfg.get("do_normalize", True)
    mean = tuple(float(v) for v in cfg.get("image_mean", (0.5,) * 3)) if normalize else (0.0,) * 3
    std = tuple(float(v) for v in cfg.get("image_std", (0.5,) * 3)) if normalize else (1.0,) * 3
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{where}: image_mean / image_std must hold 3 values (RGB)")
    if abs(factor - 1.0) <= 1e-9:
        return mean, std
    return tuple(m / factor for m in mean), tuple(v / factor for v in std)


def image_fields(where: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``ImageSpec`` fields of an image processor config.

    Raises:
        ConfigError: an option the runtime cannot reproduce, named.
    """
    _check_image_options(where, cfg)
    resample = cfg.get("resample", 2)
    if resample not in _RESAMPLE:
        raise _refuse(where, "resample", resample, f"Pillow's {_RESAMPLE_NAMES.get(resample, 'unknown')} filter; "
                                                   "mmedge reproduces NEAREST (0), BILINEAR (2) and BICUBIC (3)")
    mode, side = _resize(where, cfg)
    crop = _side(where, "crop_size", cfg.get("crop_size")) if cfg.get("do_center_crop") else None
    if crop is None and mode == "shortest_edge":
        raise _refuse(where, "do_center_crop", False, "a shortest-edge resize without a crop keeps the aspect, so "
                                                      "the tensor is not square")
    mean, std = _normalisation(where, cfg)
    size = crop if crop is not None else side
    return dict(size=size, resize=mode, interpolation=_RESAMPLE[resample], resize_size=0 if side == size else side,
                mean=mean, std=std, channel_order="RGB", convert_rgb=cfg.get("do_convert_rgb") is not False)


# -- text ------------------------------------------------------------------------------------


def token_content(value: Any) -> str | None:
    """A special token's text from a tokenizer config value (a string or an ``AddedToken`` dict)."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _pad_token(where: str, tokenizer: Mapping[str, Any], special: Mapping[str, int]) -> str:
    for key in ("pad_token", "eos_token"):
        found = token_content(tokenizer.get(key))
        if found is not None:
            return found
    if not tokenizer and ("[PAD]" in special or not special):
        return "[PAD]"  # a bare tokenizer.json (no tokenizer_config.json) of a BERT-style model; the runtime checks
    raise ConfigError(f"{where}: the tokenizer has neither a pad token nor an eos token (tokenizer_config.json / "
                      "special_tokens_map.json), so texts of different lengths cannot be batched; set pad_token "
                      "(tokenizer.pad_token = ...; tokenizer.save_pretrained(PATH))")


def _model_length(tokenizer: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(the tokenizer's ``model_max_length``, the limit: that or the model's ``max_position_embeddings``)."""
    length = tokenizer.get("model_max_length")
    stated = int(length) if isinstance(length, (int, float)) and 0 < length < _MAX_SANE_LENGTH else None
    positions = config.get("max_position_embeddings")
    return stated, stated if stated is not None else positions if isinstance(positions, int) else None


def text_fields(where: str, config: Mapping[str, Any], tokenizer: Mapping[str, Any], special: Mapping[str, int],
                max_length: int | None) -> dict[str, Any]:
    """``TextSpec`` fields of a tokenizer: pad token (and its id when ``tokenizer.json`` lists it among its added
    tokens), padding mode and length (``max_length``: the one asked for, None: the tokenizer's ``model_max_length``).

    Raises:
        ConfigError: no pad/eos token, no length asked for or stated by the tokenizer, a length past the
            model's (``model_max_length``, else ``max_position_embeddings``), or a fixed-length model asked for
            another length.
    """
    text = sub_config(config, "text")
    stated, limit = _model_length(tokenizer, text)
    fixed = text.get("model_type") in FIXED_PADDING_MODELS or config.get("model_type") in FIXED_PADDING_MODELS
    if max_length is None and stated is None:
        raise ConfigError(f"{where}: its tokenizer states no model_max_length: state how many tokens to read: pass "
                          "the text spec, e.g. specs={'text': TextSpec(max_length=32)} (the folder brings the tokenizer)")
    length = stated if max_length is None else max_length
    if limit is not None and length > limit:
        raise ConfigError(f"text max_length {length} exceeds {where}'s limit {limit}; lower max_length")
    if fixed and limit is not None and length != limit:
        raise ConfigError(f"{where} was trained on texts padded to {limit} tokens (padding='max_length'), so its "
                          f"text embedding depends on that length; use max_length {limit}, not {length}")
    pad = _pad_token(where, tokenizer, special)
    return dict(max_length=length, tokenizer_file="tokenizer.json", lowercase=False, pad_token=pad,
                pad_id=special.get(pad, -1), padding="max_length" if fixed else "longest")


# -- audio -----------------------------------------------------------------------------------


def _clap_fields(where: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    truncation, padding = cfg.get("truncation", "fusion"), cfg.get("padding", "repeatpad")
    if truncation not in _CLAP_TRUNCATION:
        raise _refuse(where, "truncation", truncation, "'fusion' feeds the model random crops of long clips and "
                      "marks a random clip of each batch as longer; mmedge runs 'rand_trunc' (the unfused CLAP "
                      "checkpoints), taking the first max_length_s of a longer clip")
    if padding not in _CLAP_PADDING:
        raise _refuse(where, "padding", padding, f"mmedge pads CLAP clips with {list(_CLAP_PADDING)}")
    if cfg.get("top_db") is not None:
        raise _refuse(where, "top_db", cfg["top_db"], "mmedge computes CLAP's dB mel without a dynamic-range clip")
    n_fft = int(cfg.get("fft_window_size", 1024))
    return dict(sample_rate=int(cfg.get("sampling_rate", 48000)), clip_seconds=float(cfg.get("max_length_s", 10)),
                n_fft=n_fft, win_length=n_fft, hop_length=int(cfg.get("hop_length", 480)),
                n_mels=int(cfg.get("feature_size", 64)), fmin=float(cfg.get("frequency_min", 0)),
                fmax=float(cfg.get("frequency_max", 14000)), front_end="clap_mel", padding=padding, normalize=False)


def audio_fields(where: str, cfg: Mapping[str, Any], clip_seconds: float | None) -> dict[str, Any] | None:
    """``AudioSpec`` fields of a feature extractor: all of them for CLAP's, else None (a raw-waveform
    extractor, which ``AudioSpec.from_hf`` reads).

    Raises:
        ConfigError: a CLAP option the runtime cannot reproduce, named.
    """
    if cfg.get("feature_extractor_type") != "ClapFeatureExtractor":
        return None
    fields = _clap_fields(where, cfg)
    if clip_seconds is not None and clip_seconds != fields["clip_seconds"]:
        raise ConfigError(f"{where}: CLAP takes clips of max_length_s={fields['clip_seconds']:g} s (its features "
                          f"have a fixed frame count); drop clip_seconds={clip_seconds:g} from the audio spec")
    return fields
