"""Typed, frozen configs: recipes (what to train) built from JSON at the edge."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from mmedge.ensemble_selection import SelectionRule, parse_rule
from mmedge.errors import ConfigError
from mmedge.hf_folder import hf_name, hf_spec, is_hf_name
from mmedge.registry import Registry
from mmedge.runtime.ensemble import EnsembleMethod, parse_method
from mmedge.runtime.modalities import get_modality, modality_names
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec, spec_from_dict, spec_to_dict

TASKS = ("classification", "matching")
DEFAULT_ENCODERS = {"image": "efficientnet_lite0", "text": "minilm_l6", "audio": "audio_cnn"}

# The reference encoders' own preprocessing, stated here once (a spec class has no model's numbers
# as defaults). A plug-in encoder states its own with ``register_encoder_spec``.
LITE0_IMAGE = ImageSpec(size=128, resize="bilinear", mean=(0.498,) * 3, std=(0.502,) * 3)  # EfficientNet-Lite, ImageNet
MINILM_TEXT = TextSpec(max_length=32, lowercase=True)  # all-MiniLM-L6-v2 (uncased)
AUDIO_CNN_MEL = AudioSpec(sample_rate=16000, clip_seconds=1.0, n_fft=512, win_length=400, hop_length=160, n_mels=64,
                          fmin=20.0, fmax=8000.0, front_end="log_mel")  # audio_cnn, trained here on 1 s log-mel clips
ENCODER_SPECS: Registry[Any] = Registry("encoder preprocessing spec")
for _name, _spec in (("efficientnet_lite0", LITE0_IMAGE), ("efficientnet_lite0_s16", LITE0_IMAGE),
                     ("minilm_l6", MINILM_TEXT), ("audio_cnn", AUDIO_CNN_MEL)):
    ENCODER_SPECS.register(_name)(_spec)


def register_encoder_spec(name: str, spec: Any) -> Any:
    """States the preprocessing spec of registered encoder ``name`` (recipes using it derive theirs from it)."""
    return ENCODER_SPECS.register(name)(spec)


def encoder_spec(name: str, modality: str, base: Any = None) -> Any:
    """The preprocessing spec of encoder ``name`` for ``modality``: a ``hf:PATH`` folder's (from its configs,
    keeping ``base``'s token or clip length), or the one a registered encoder states.

    Raises:
        ConfigError: an encoder that states no spec (pass one), or a folder of another modality.
    """
    if is_hf_name(name):
        return hf_spec(name, modality, base)
    if name in ENCODER_SPECS:
        return ENCODER_SPECS[name]
    if base is not None:
        return base
    raise ConfigError(f"encoder {name!r} states no {modality} preprocessing; give the recipe its spec "
                      f"({get_modality(modality).spec_class.__name__}), or register it with register_encoder_spec")


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
    """Every training hyperparameter, declared once (``recipe.json`` keeps them; a field missing from
    an older file takes its default here).

    Attributes:
        epochs: Most epochs per member head (early stopping may end sooner).
        batch_size: Head training batch.
        lr: Head learning rate (AdamW, cosine decay).
        weight_decay: Head weight decay.
        patience: Epochs without a better validation score before a head stops.
        modality_dropout: Probability of zeroing one modality of a training sample (ModDrop).
        encoder_epochs: Epochs of an encoder trained here or fine-tuned (``unfreeze``).
        seed: Seed of the data order, the encoders' training and the dataset split.
        label_smoothing: Label smoothing of the cross-entropy, heads and encoders alike.
        encoder_batch_size: Batch of encoder training.
        encoder_lr: Peak learning rate of encoder training (AdamW, one-cycle schedule).
        encoder_weight_decay: Weight decay of encoder training.
    """

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 8
    modality_dropout: float = 0.0
    encoder_epochs: int = 12
    seed: int = 0
    label_smoothing: float = 0.05
    encoder_batch_size: int = 64
    encoder_lr: float = 3e-3
    encoder_weight_decay: float = 1e-2

    def __post_init__(self) -> None:
        counts = ("epochs", "batch_size", "patience", "encoder_epochs", "encoder_batch_size")
        small = {k: getattr(self, k) for k in counts if getattr(self, k) < 1}
        if small or not 0.0 <= self.modality_dropout < 1.0 or self.lr <= 0 or self.encoder_lr <= 0 \
                or not 0.0 <= self.label_smoothing < 1.0 or min(self.weight_decay, self.encoder_weight_decay) < 0:
            raise ConfigError(f"invalid training settings {small or ''}: epochs, batch_size, patience, encoder_epochs "
                              f"and encoder_batch_size must be >= 1, lr and encoder_lr > 0, weight decays >= 0, "
                              f"0 <= modality_dropout < 1, 0 <= label_smoothing < 1")


@dataclass(frozen=True)
class Recipe:
    """Everything needed to reproduce a training run; saved as ``recipe.json``.

    Attributes:
        name: Recipe name ("digits-av", "digits-match", or "custom" for ``--data``).
        dataset: Registered dataset name or a JSONL path.
        task: "classification" or "matching".
        modalities: Modalities used by the recipe.
        encoders: modality -> registered encoder name.
        specs: modality -> preprocessing spec; a modality left out gets its encoder's own
            (``encoder_spec``). In ``recipe.json`` each spec sits under its modality's name.
        members: The ensemble members.
        ensemble: How member outputs are combined. ``weighted_mean`` (the default) keeps the rule that
            cross-validates best on the validation split (``mmedge.ensemble_selection``): the best
            member alone, greedy weights, or stacking; ``stacking`` forces stacking.
        ensemble_rule: Force this selection rule (``best_member``, ``greedy``, ``stacking``); None: the
            best cross-validated one. Only with ``ensemble`` ``weighted_mean`` or ``stacking``.
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
    ensemble_rule: SelectionRule | None = None
    train: TrainConfig = TrainConfig()
    specs: Mapping[str, Any] = field(default_factory=dict)
    unfreeze: Mapping[str, int] = field(default_factory=dict)
    baselines: bool = True
    subset: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; valid: {list(TASKS)}")
        enc = {m: hf_name(self.encoders.get(m, DEFAULT_ENCODERS.get(m, ""))) for m in self.modalities}
        object.__setattr__(self, "encoders", enc)
        object.__setattr__(self, "specs", self._checked_specs())
        object.__setattr__(self, "ensemble", parse_method(self.ensemble))
        object.__setattr__(self, "ensemble_rule", parse_rule(self.ensemble_rule))
        _check_rule(self.ensemble, self.ensemble_rule)
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

    def _checked_specs(self) -> dict[str, Any]:
        extra = [m for m in self.specs if m not in self.modalities]
        if extra:
            raise ConfigError(f"specs given for {extra}, which recipe {self.name!r} lacks; "
                              f"it has {list(self.modalities)}")
        specs = {m: self.specs.get(m) or encoder_spec(self.encoders[m], m) for m in self.modalities}
        for m, spec in specs.items():
            cls = get_modality(m).spec_class
            if not isinstance(spec, cls):
                raise ConfigError(f"the {m} spec must be a {cls.__name__}, got {type(spec).__name__}")
        return specs

    def __getattr__(self, name: str) -> Any:
        specs = self.__dict__.get("specs", {})
        if name in specs:  # recipe.image, recipe.text...: the modality's spec
            return specs[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        specs = {**self.specs, **{m: encoder_spec(hf_name(n), m, self.specs[m]) for m, n in encoders.items()}}
        return self.replace(encoders={**self.encoders, **encoders}, specs=specs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``Recipe.from_dict`` inverts it)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "specs"}
        d.update(
            modalities=list(self.modalities), encoders=dict(self.encoders), ensemble=self.ensemble.value,
            ensemble_rule=self.ensemble_rule.value if self.ensemble_rule is not None else None,
            unfreeze=dict(self.unfreeze),
            members=[dict(dataclasses.asdict(m), modalities=list(m.modalities)) for m in self.members],
            train=dataclasses.asdict(self.train),
        )
        d.update({m: spec_to_dict(spec) for m, spec in self.specs.items()})  # each spec under its modality
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """Builds a recipe from a dict (e.g. parsed ``recipe.json``), rejecting unknown keys."""
        d = dict(data)
        raw_specs = {m: d.pop(m) for m in modality_names() if m in d}  # older files hold every modality's spec
        _reject_unknown(cls, d)
        d["members"] = tuple(spec_from_dict(MemberConfig, m) for m in d.get("members", ()))
        d["modalities"] = tuple(d.get("modalities", ()))
        if "train" in d:
            d["train"] = spec_from_dict(TrainConfig, d["train"])
        d["specs"] = {m: spec_from_dict(get_modality(m).spec_class, raw) for m, raw in raw_specs.items()
                      if m in d["modalities"]}
        return cls(**d)


def _check_rule(method: EnsembleMethod, rule: SelectionRule | None) -> None:
    """A forced selection rule needs a method that selection decides (and agrees with stacking)."""
    selected = (EnsembleMethod.WEIGHTED_MEAN, EnsembleMethod.STACKING)
    if rule is not None and (method not in selected or (method is EnsembleMethod.STACKING
                                                        and rule is not SelectionRule.STACKING)):
        raise ConfigError(f"ensemble_rule {rule.value!r} does not go with ensemble {method.value!r}: a rule is "
                          f"chosen only for {[m.value for m in selected]} (stacking forces the stacking rule); "
                          "drop ensemble_rule or set ensemble to weighted_mean")


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


# More seeds of a head: (head, copies), the copy k (2, 3, ...) named ``<head>_<k>`` with seed ``base + 10 (k - 1)``.
LIBRARY_SEEDS = (("contrastive", 3), ("concat", 2), ("cross_attention", 2))


def _library(modalities: tuple[str, ...]) -> tuple[MemberConfig, ...]:
    """The reference recipes' members: the four heads and more seeds of three of them, the library ensemble
    selection picks from (Caruana et al. select from libraries of models; forward selection with replacement
    averages several seeds of a head where that helps). Eight heads on cached features train in minutes; the
    members selection leaves out are not exported. ``benchmarks/ensemble_seeds.py``, 5 runs per recipe: the
    ensemble 97.74% on digits-av and 98.04% on digits-match against 97.47% and 97.90% for selection over the
    four heads alone (the same trained heads), +0.29 and +0.33 points over the member chosen on validation,
    never below it (RESULTS.md). Bilinear, the largest head and the least accurate alone, keeps one seed."""
    heads = {m.head: m for m in _four_heads(modalities)}
    more = [dataclasses.replace(heads[h], name=f"{h}_{k}", seed=heads[h].seed + 10 * (k - 1))
            for h, copies in LIBRARY_SEEDS for k in range(2, copies + 1)]
    return (*heads.values(), *more)


RECIPES.register("digits-av")(Recipe(
    name="digits-av", dataset="digits-av", task="classification",
    modalities=("image", "text", "audio"), members=_library(("image", "text", "audio")),
    encoders={"image": "efficientnet_lite0_s16"}, train=TrainConfig(modality_dropout=0.2),
    specs={"image": LITE0_IMAGE, "text": MINILM_TEXT, "audio": AUDIO_CNN_MEL},
))
RECIPES.register("digits-match")(Recipe(
    name="digits-match", dataset="digits-match", task="matching",
    modalities=("image", "text"), members=_library(("image", "text")),
    encoders={"image": "efficientnet_lite0_s16"}, specs={"image": LITE0_IMAGE, "text": MINILM_TEXT},
))


def recipe_for_data(dataset: str, modalities: tuple[str, ...], *, task: str = "classification") -> Recipe:
    """A recipe for a user's JSONL dataset: the four heads where they apply to its modalities."""
    if len(modalities) >= 2:
        members = _four_heads(tuple(modalities))
    else:
        members = (MemberConfig("concat", "concat", tuple(modalities)), MemberConfig("concat_seed1", "concat", tuple(modalities), seed=1))
    return Recipe(name="custom", dataset=dataset, task=task, modalities=tuple(modalities), members=members,
                  baselines=len(modalities) > 1)
