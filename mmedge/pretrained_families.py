"""Pretrained dual-encoder families (CLIP, SigLIP, CLAP) as mmedge sees them: torch-free tables.

Which architectures (``config.json``'s ``architectures``) hold which towers, how each tower is reached
inside the model (its submodule and projection), and how the model turns two embeddings into a
score (logit scale, bias, softmax or sigmoid). ``mmedge.hf_folder`` reads it to tell the modalities of
a folder; ``mmedge.encoders.pretrained`` builds the towers from it. A family is one
``register_family`` call.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from mmedge.errors import ConfigError
from mmedge.registry import Registry

__all__ = ["Tower", "Family", "Architecture", "register_family", "family_of", "architecture_of", "FAMILIES",
           "ARCHITECTURES", "supported_architectures", "unsupported_message"]


@dataclass(frozen=True)
class Tower:
    """One tower of a family: how ``get_<modality>_features`` computes its embedding.

    Attributes:
        module: The submodule running the tower (``vision_model``, ``text_model``, ``audio_model``).
        projection: The linear projection after its pooled output (None: the pooled output is the embedding).
        inputs: The model's keyword inputs it takes, in the encoder's input order.
        normalize: ``get_*_features`` L2-normalizes the embedding (CLAP).
    """

    module: str
    projection: str | None
    inputs: tuple[str, ...]
    normalize: bool = False


@dataclass(frozen=True)
class Family:
    """A dual-encoder family.

    Attributes:
        name: ``clip``, ``siglip``, ``clap``.
        towers: modality -> ``Tower``.
        scale: modality -> the attribute holding ``log(logit scale)`` used when that modality is
            scored against text (CLAP has one per direction: ``logit_scale_a`` for audio).
        bias: The attribute holding the logit bias (SigLIP), or None.
        activation: How a row of logits becomes probabilities: ``softmax`` over the texts (CLIP,
            CLAP) or ``sigmoid`` per pair (SigLIP).
    """

    name: str
    towers: Mapping[str, Tower]
    scale: Mapping[str, str]
    bias: str | None = None
    activation: str = "softmax"


@dataclass(frozen=True)
class Architecture:
    """A model class of a family and the towers it holds (both for ``CLIPModel``, one for
    ``CLIPVisionModelWithProjection``)."""

    cls: str
    family: str
    modalities: tuple[str, ...]


FAMILIES: Registry[Family] = Registry("pretrained family")
ARCHITECTURES: dict[str, Architecture] = {}

_IMAGE = ("pixel_values",)
_TEXT = ("input_ids", "attention_mask")
_AUDIO = ("input_features",)


def register_family(family: Family, classes: Mapping[str, tuple[str, ...]]) -> Family:
    """Registers ``family`` and its model classes (class name -> the modalities it holds).

    Raises:
        RegistryError: a family name registered twice.
        ConfigError: a class holding a modality the family has no tower for, or a class claimed twice.
    """
    for cls, modalities in classes.items():
        bad = [m for m in modalities if m not in family.towers]
        if bad or cls in ARCHITECTURES:
            raise ConfigError(f"{cls}: towers {bad} are not in family {family.name!r}, or the class is registered twice")
    FAMILIES.register(family.name)(family)
    ARCHITECTURES.update({cls: Architecture(cls, family.name, tuple(m)) for cls, m in classes.items()})
    return family


register_family(Family("clip", {"image": Tower("vision_model", "visual_projection", _IMAGE),
                                "text": Tower("text_model", "text_projection", _TEXT)},
                       scale={"image": "logit_scale", "text": "logit_scale"}),
                {"CLIPModel": ("image", "text"), "CLIPVisionModelWithProjection": ("image",),
                 "CLIPTextModelWithProjection": ("text",)})
register_family(Family("siglip", {"image": Tower("vision_model", None, _IMAGE), "text": Tower("text_model", None, _TEXT)},
                       scale={"image": "logit_scale", "text": "logit_scale"}, bias="logit_bias", activation="sigmoid"),
                {"SiglipModel": ("image", "text"), "SiglipVisionModel": ("image",), "SiglipTextModel": ("text",)})
register_family(Family("clap", {"audio": Tower("audio_model", "audio_projection", _AUDIO, normalize=True),
                                "text": Tower("text_model", "text_projection", _TEXT, normalize=True)},
                       scale={"audio": "logit_scale_a", "text": "logit_scale_t"}),
                {"ClapModel": ("audio", "text"), "ClapAudioModelWithProjection": ("audio",),
                 "ClapTextModelWithProjection": ("text",)})

# model types whose configs hold several towers: a folder of one of them that is not in ARCHITECTURES
# is refused by name instead of being read as a one-modality encoder
_MULTI_TOWER_KEYS = ("text_config", "vision_config", "audio_config")


def supported_architectures() -> list[str]:
    """Every registered model class, e.g. ``CLIPModel``, ``SiglipVisionModel``."""
    return sorted(ARCHITECTURES)


def unsupported_message(where: str, what: str) -> str:
    """The message of an unsupported pretrained architecture: the supported families and how to wrap one."""
    families = ", ".join(f"{f.name} ({', '.join(c for c, a in ARCHITECTURES.items() if a.family == f.name)})"
                         for f in FAMILIES.values())
    return (f"{where} holds {what}, which mmedge cannot build as its towers; supported families: {families}. "
            "Wrap anything else in your own nn.Module that returns its embedding and export it with "
            "mmedge.export.export_model (docs/bring_your_own.md)")


def _config(folder: Path) -> dict:
    try:
        data = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {folder}/config.json: {e}; re-save it with save_pretrained") from None
    return data if isinstance(data, dict) else {}


def architecture_of(folder: Path) -> Architecture | None:
    """The registered architecture of a Hugging Face folder (from ``config.json``), or None for a
    one-modality model (BERT, ViT, wav2vec2: today's ``hf:`` encoders).

    Raises:
        ConfigError: a multi-tower model (its config holds several tower configs) of an unsupported class.
    """
    config = _config(folder)
    classes = [c for c in config.get("architectures") or () if isinstance(c, str)]
    for cls in classes:
        if cls in ARCHITECTURES:
            return ARCHITECTURES[cls]
    if sum(key in config for key in _MULTI_TOWER_KEYS) >= 2:
        raise ConfigError(unsupported_message(str(folder), f"a multi-tower {classes or config.get('model_type')} model"))
    return None


def family_of(folder: Path) -> Family | None:
    """The family of a folder's architecture (None: not a registered pretrained family)."""
    arch = architecture_of(folder)
    return FAMILIES[arch.family] if arch is not None else None

