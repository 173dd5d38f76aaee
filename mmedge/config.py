"""Typed, frozen configs: recipes (what to train) built from JSON at the edge."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from mmedge.errors import ConfigError
from mmedge.hf_folder import hf_name, hf_spec, is_hf_name
from mmedge.registry import Registry
from mmedge.runtime.ensemble import EnsembleMethod, parse_method
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec, spec_from_dict, spec_to_dict

TASKS = ("classification", "matching")
DEFAULT_ENCODERS = {"image": "efficientnet_lite0", "text": "minilm_l6", "audio": "audio_cnn"}


@dataclass(frozen=True)
class MemberConfig:
    """One ensemble member: a fusion head over some modalities.

    Attributes:
        name: Unique member name (also the head graph's name in the bundle).
        head: Registered fusion head name.
        modalities: Modalities the head fuses.
        hidden: Width of the head.
        dropout: Dropout in the head.
        seed: Seed of the head's initialization and data order.
    """

    name: str
    head: str
    modalities: tuple[str, ...]
    hidden: int = 256
    dropout: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings shared by every member head."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 8
    modality_dropout: float = 0.0
    encoder_epochs: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        small = {k: getattr(self, k) for k in ("epochs", "batch_size", "patience", "encoder_epochs") if getattr(self, k) < 1}
        if small or not 0.0 <= self.modality_dropout < 1.0 or self.lr <= 0:
            raise ConfigError(f"invalid training settings {small or ''}: epochs, batch_size, patience and "
                              f"encoder_epochs must be >= 1, lr > 0, 0 <= modality_dropout < 1")


@dataclass(frozen=True)
class Recipe:
    """Everything needed to reproduce a training run; saved as ``recipe.json``.

    Attributes:
        name: Recipe name ("digits-av", "digits-match", or "custom" for ``--data``).
        dataset: Registered dataset name or a JSONL path.
        task: "classification" or "matching".
        modalities: Modalities used by the recipe.
        encoders: modality -> registered encoder name.
        members: The ensemble members.
        ensemble: How member outputs are combined.
        unfreeze: modality -> number of last encoder blocks fine-tuned on the labels before
            the heads train (0 = frozen, features cached as they are).
        baselines: Train single-modality baselines for the metrics table.
        subset: Use only this many training samples (tests, quick runs); None = all.
    """

    name: str
    dataset: str
    task: str
    modalities: tuple[str, ...]
    members: tuple[MemberConfig, ...]
    encoders: Mapping[str, str] = field(default_factory=dict)
    ensemble: EnsembleMethod = EnsembleMethod.WEIGHTED_MEAN
    train: TrainConfig = TrainConfig()
    image: ImageSpec = ImageSpec()
    text: TextSpec = TextSpec()
    audio: AudioSpec = AudioSpec()
    unfreeze: Mapping[str, int] = field(default_factory=dict)
    baselines: bool = True
    subset: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; valid: {list(TASKS)}")
        enc = {m: hf_name(self.encoders.get(m, DEFAULT_ENCODERS.get(m, ""))) for m in self.modalities}
        object.__setattr__(self, "encoders", enc)
        object.__setattr__(self, "ensemble", parse_method(self.ensemble))
        if self.subset is not None and self.subset < 2:
            raise ConfigError(f"subset must be at least 2 training samples, got {self.subset}")
        bad = {m: n for m, n in self.unfreeze.items() if m not in self.modalities or int(n) < 0}
        if bad:
            raise ConfigError(f"unfreeze {bad}: keys must be the recipe's modalities {list(self.modalities)}, values >= 0")
        names = [mb.name for mb in self.members]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"a recipe needs at least one member, with unique names; got {names}")
        for mb in self.members:
            missing = [m for m in mb.modalities if m not in self.modalities]
            if missing:
                raise ConfigError(
                    f"member {mb.name!r} uses modalities {missing} that recipe {self.name!r} lacks; "
                    f"it has {list(self.modalities)}"
                )

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_encoders(self, encoders: Mapping[str, str]) -> "Recipe":
        """A copy using ``encoders`` (modality -> registered name or ``hf:PATH``) for those modalities.

        A ``hf:PATH`` encoder brings its folder's preprocessing: the image processor's size and
        mean/std, the ``tokenizer.json``, the feature extractor's rate and raw-waveform front end.

        Raises:
            ConfigError: a modality the recipe lacks, or an unusable Hugging Face folder.
        """
        unknown = [m for m in encoders if m not in self.modalities]
        if unknown:
            raise ConfigError(f"encoders given for {unknown}, which recipe {self.name!r} lacks; "
                              f"it has {list(self.modalities)}")
        changes: dict[str, Any] = {"encoders": {**self.encoders, **encoders}}
        for m, name in encoders.items():
            if is_hf_name(name):
                changes[m] = hf_spec(name, m, getattr(self, m))
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``Recipe.from_dict`` inverts it)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(
            modalities=list(self.modalities), encoders=dict(self.encoders), ensemble=self.ensemble.value,
            unfreeze=dict(self.unfreeze),
            members=[dict(dataclasses.asdict(m), modalities=list(m.modalities)) for m in self.members],
            train=dataclasses.asdict(self.train),
            image=spec_to_dict(self.image), text=spec_to_dict(self.text), audio=spec_to_dict(self.audio),
        )
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """Builds a recipe from a dict (e.g. parsed ``recipe.json``), rejecting unknown keys."""
        d = dict(data)
        _reject_unknown(cls, d)
        d["members"] = tuple(spec_from_dict(MemberConfig, m) for m in d.get("members", ()))
        d["modalities"] = tuple(d.get("modalities", ()))
        for key, spec_cls in (("train", TrainConfig), ("image", ImageSpec), ("text", TextSpec), ("audio", AudioSpec)):
            if key in d:
                d[key] = spec_from_dict(spec_cls, d[key])
        return cls(**d)


def _reject_unknown(cls: type, data: Mapping[str, Any]) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {sorted(names)}")


RECIPES: Registry[Recipe] = Registry("recipe")


def get_recipe(name: str) -> Recipe:
    """The built-in recipe ``name`` (unknown names list the valid ones)."""
    return RECIPES.get(name)


def list_recipes() -> list[str]:
    """Names of the built-in recipes."""
    return RECIPES.names()


def _four_heads(modalities: tuple[str, ...]) -> tuple[MemberConfig, ...]:
    return (
        MemberConfig("concat", "concat", modalities, seed=0),
        MemberConfig("bilinear", "bilinear", modalities, seed=1),
        MemberConfig("cross_attention", "cross_attention", modalities, hidden=128, seed=2),
        MemberConfig("contrastive", "contrastive", modalities, seed=3),
    )


RECIPES.register("digits-av")(Recipe(
    name="digits-av", dataset="digits-av", task="classification",
    modalities=("image", "text", "audio"), members=_four_heads(("image", "text", "audio")),
    encoders={"image": "efficientnet_lite0_s16"}, train=TrainConfig(modality_dropout=0.2),
))
RECIPES.register("digits-match")(Recipe(
    name="digits-match", dataset="digits-match", task="matching",
    modalities=("image", "text"), members=_four_heads(("image", "text")),
    encoders={"image": "efficientnet_lite0_s16"},
))


def recipe_for_data(dataset: str, modalities: tuple[str, ...], *, task: str = "classification") -> Recipe:
    """A recipe for a user's JSONL dataset: the four heads where they apply to its modalities."""
    if len(modalities) >= 2:
        members = _four_heads(tuple(modalities))
    else:
        members = (MemberConfig("concat", "concat", tuple(modalities)), MemberConfig("concat_seed1", "concat", tuple(modalities), seed=1))
    return Recipe(name="custom", dataset=dataset, task=task, modalities=tuple(modalities), members=members,
                  baselines=len(modalities) > 1)
