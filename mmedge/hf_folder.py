"""Local Hugging Face model folders as encoders: ``hf:PATH`` names, checks, preprocessing specs.

Torch-free (plain JSON): recipes and the CLI resolve ``hf:`` names and derive each modality's
preprocessing here; ``mmedge.encoders.hf`` loads the weights. Nothing is ever downloaded: a
missing folder, or one without a config or weights, is a ``ConfigError`` saying what to save.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mmedge.errors import ConfigError
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec

__all__ = ["HF_PREFIX", "is_hf_name", "hf_name", "hf_folder", "hf_modality", "hf_spec", "WEIGHT_FILES"]

HF_PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER = "tokenizer.json"
PROCESSOR = "preprocessor_config.json"
_RESAMPLE = {0: "nearest", 2: "bilinear"}  # PIL codes; others (bicubic, lanczos) resize bilinearly
_RESCALE = 1.0 / 255.0


def is_hf_name(name: str) -> bool:
    """True for an encoder name of the form ``hf:PATH``."""
    return isinstance(name, str) and name.startswith(HF_PREFIX)


def hf_name(name: str) -> str:
    """``hf:PATH`` with PATH made absolute (a recipe stays valid from any working folder)."""
    return f"{HF_PREFIX}{Path(name[len(HF_PREFIX):]).expanduser().resolve()}" if is_hf_name(name) else name


def hf_folder(name: str) -> Path:
    """The checked folder of ``hf:PATH``: it exists and holds ``config.json`` and weights.

    Raises:
        ConfigError: a missing folder, or one without ``config.json`` or a weights file.
    """
    folder = Path(name[len(HF_PREFIX):] if is_hf_name(name) else name).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"Hugging Face folder {folder} does not exist (from encoder {name!r}); mmedge never "
                          "downloads: save the model there first (model.save_pretrained(PATH))")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} has no config.json, so it is not a Hugging Face model folder; "
                          "write it with model.save_pretrained(PATH)")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"{folder} has no weights (none of {list(WEIGHT_FILES)}); found "
                          f"{sorted(p.name for p in folder.iterdir())}. Save them with model.save_pretrained(PATH)")
    return folder


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}; re-save it with save_pretrained") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; re-save it with save_pretrained")
    return data


def hf_modality(folder: Path) -> str:
    """The modality of a model folder: an image processor, an audio feature extractor, or a tokenizer.

    Raises:
        ConfigError: the folder has none of ``preprocessor_config.json`` / ``tokenizer.json``.
    """
    processor = folder / PROCESSOR
    if processor.is_file():
        cfg = _json(processor)
        if "image_mean" in cfg or "image_processor_type" in cfg:
            return "image"
        if "sampling_rate" in cfg:
            return "audio"
    if (folder / TOKENIZER).is_file():
        return "text"
    raise ConfigError(f"{folder}: cannot tell the modality: save the tokenizer (tokenizer.save_pretrained, which "
                      f"writes {TOKENIZER}), the image processor or the feature extractor ({PROCESSOR}) beside the model")


def hf_spec(name: str, modality: str, base: Any) -> Any:
    """The preprocessing spec of ``hf:PATH`` for ``modality``, from the folder's own configs.

    Args:
        name: ``hf:PATH``.
        modality: The recipe's modality for this encoder (must be the folder's).
        base: The recipe's current spec of that modality (kept: text ``max_length``, audio ``clip_seconds``).

    Raises:
        ConfigError: the folder holds a model of another modality, or configs mmedge cannot follow.
    """
    folder = hf_folder(name)
    found = hf_modality(folder)
    if found != modality:
        raise ConfigError(f"encoder {name!r} is given for {modality} but {folder} holds a model for {found}; "
                          f"use it as --encoder {found}={name}")
    return {"image": _image_spec, "text": _text_spec, "audio": _audio_spec}[modality](folder, base)


def _text_spec(folder: Path, base: TextSpec) -> TextSpec:
    limit = _json(folder / "config.json").get("max_position_embeddings")
    if isinstance(limit, int) and base.max_length > limit:
        raise ConfigError(f"text max_length {base.max_length} exceeds {folder}'s max_position_embeddings {limit}; "
                          "lower max_length")
    # The tokenizer's own normalizer decides about case (a cased model must not be lowercased).
    return dataclasses.replace(base, tokenizer_file=TOKENIZER, lowercase=False)


def _image_spec(folder: Path, base: ImageSpec) -> ImageSpec:
    cfg = _json(folder / PROCESSOR)
    if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", _RESCALE)) - _RESCALE) > 1e-9:
        raise ConfigError(f"{folder / PROCESSOR}: rescale_factor {cfg['rescale_factor']} is not 1/255; mmedge scales "
                          "pixels to [0, 1] before mean/std")
    size = _square_size(folder, cfg)
    normalize = cfg.get("do_normalize", True)
    mean = tuple(float(v) for v in cfg.get("image_mean", (0.5,) * 3)) if normalize else (0.0,) * 3
    std = tuple(float(v) for v in cfg.get("image_std", (0.5,) * 3)) if normalize else (1.0,) * 3
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{folder / PROCESSOR}: image_mean / image_std must hold 3 values (RGB)")
    return dataclasses.replace(base, size=size, mean=mean, std=std, channel_order="RGB",
                               resize=_RESAMPLE.get(cfg.get("resample", 2), "bilinear"))


def _square_size(folder: Path, cfg: dict[str, Any]) -> int:
    size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        if size.get("height") is not None and size.get("height") == size.get("width"):
            return int(size["height"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
    raise ConfigError(f"{folder / PROCESSOR}: size {size!r} is not square; mmedge resizes to a square "
                      "S x S: set size to {\"height\": S, \"width\": S}")


def _audio_spec(folder: Path, base: AudioSpec) -> AudioSpec:
    cfg = _json(folder / PROCESSOR)
    rate = int(cfg.get("sampling_rate", base.sample_rate))
    if int(cfg.get("feature_size", 1)) != 1:
        raise ConfigError(f"{folder / PROCESSOR}: feature_size {cfg['feature_size']} means a spectrogram front end; "
                          "mmedge's Hugging Face audio encoders take the raw waveform (wav2vec2-style, feature_size 1)")
    return dataclasses.replace(base, sample_rate=rate, front_end="waveform", normalize=bool(cfg.get("do_normalize", True)),
                               fmax=min(base.fmax, rate / 2))
