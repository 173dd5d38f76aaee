"""Local Hugging Face model folders as encoders: ``hf:PATH`` names, checks, preprocessing specs.

Torch-free (plain JSON): recipes and the CLI resolve ``hf:`` names and derive each modality's
preprocessing here; ``mmedge.encoders.hf`` loads the weights. Nothing is ever downloaded: a
missing folder, or one without a config or weights, is a ``ConfigError`` saying what to save.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmedge.errors import ConfigError

__all__ = ["HF_PREFIX", "is_hf_name", "hf_name", "hf_folder", "hf_modality", "hf_modalities", "hf_spec", "WEIGHT_FILES"]

HF_PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER = "tokenizer.json"
PROCESSOR = "preprocessor_config.json"


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
    """The modality of a model folder: the first modality record whose Hugging Face front end
    (``Modality.hf``) recognises its processor config's keys, else one whose marker files it holds.

    Raises:
        ConfigError: the folder has none of them (a ``preprocessor_config.json`` or ``tokenizer.json``).
    """
    from mmedge.runtime.modalities import modalities

    processor = folder / PROCESSOR
    cfg = _json(processor) if processor.is_file() else {}
    readable = [r for r in modalities() if r.hf is not None]
    for record in readable:
        if any(key in cfg for key in record.hf.processor_keys):
            return record.name
    for record in readable:
        if record.hf.files and all((folder / f).is_file() for f in record.hf.files):
            return record.name
    raise ConfigError(f"{folder}: cannot tell the modality: save the tokenizer (tokenizer.save_pretrained, which "
                      f"writes {TOKENIZER}), the image processor or the feature extractor ({PROCESSOR}) beside the model")


def hf_modalities(folder: Path) -> tuple[str, ...]:
    """The modalities of a model folder: the towers of a pretrained dual encoder (``CLIPModel``: image
    and text; ``mmedge.pretrained_families``), else the one of ``hf_modality``.

    Raises:
        ConfigError: a multi-tower model of an unsupported class, or a folder of no modality.
    """
    from mmedge.pretrained_families import architecture_of

    arch = architecture_of(folder)
    return arch.modalities if arch is not None else (hf_modality(folder),)


def hf_spec(name: str, modality: str, base: Any = None) -> Any:
    """The preprocessing spec of ``hf:PATH`` for ``modality``, from the folder's own configs
    (``<spec class>.from_hf``).

    Args:
        name: ``hf:PATH``.
        modality: The recipe's modality for this encoder (must be the folder's).
        base: The recipe's current spec of that modality, if any (kept: text ``max_length``, audio
            ``clip_seconds``).

    Raises:
        ConfigError: the folder holds a model of another modality, or configs mmedge cannot follow.
    """
    from mmedge.hf_specs import hf_configs
    from mmedge.runtime.modalities import get_modality

    folder = hf_folder(name)
    found = hf_modalities(folder)
    if modality not in found:
        raise ConfigError(f"encoder {name!r} is given for {modality} but {folder} holds a model for "
                          f"{' and '.join(found)}; use it as --encoder {found[0]}={name}")
    return get_modality(modality).spec_class.from_hf(hf_configs(folder), base)

