"""Bring your own model: users' PyTorch encoders and fusion heads (and local Hugging Face encoders)
to a bundle, through the very pipeline ``mmedge export`` runs on checkpoints (``export_sources``).

    from mmedge.export.user_model import Member, export_model
    from mmedge.runtime.specs import ImageSpec, TextSpec

    export_model(encoders={"image": my_cnn, "text": "hf:./my-bert"},
                 heads={"gated": Member(GatedHead(), inputs=("image_pooled", "text_pooled"))},
                 specs={"image": ImageSpec(size=64, mean=(0.5,) * 3, std=(0.5,) * 3),  # your module's own
                        "text": TextSpec(max_length=32)},  # tokens to read; the folder brings the tokenizer
                 labels=["cat", "dog"], calib="calib.jsonl", eval_data="test.jsonl", out="bundles/pets")

The contract (``docs/bring_your_own.md``): an encoder takes its modality's preprocessed tensors
and returns its features; a head reads the features it declares and returns logits (B, C).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmedge.config import MemberConfig, Recipe
from mmedge.errors import ConfigError
from mmedge.export.exporter import ExportConfig, export_sources
from mmedge.runtime.modalities import get_modality, modality_names

__all__ = ["Member", "export_model", "build_ensemble"]


@dataclass(frozen=True)
class Member:
    """One ensemble member: a fusion head and the encoder outputs it reads.

    Attributes:
        head: An ``nn.Module`` returning logits (B, C): ``forward(feats: dict)``, or keyword
            parameters named like ``inputs``. An mmedge ``FusionHead`` may leave ``inputs`` empty.
        inputs: Encoder outputs it reads, e.g. ``("image_pooled", "text_pooled")``.
        weight: Its weight in the ensemble (``weighted_mean`` / ``majority_vote``).
        temperature: Its softmax temperature (calibration).
    """

    head: Any
    inputs: tuple[str, ...] = ()
    weight: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.weight >= 0 or not self.temperature > 0:
            raise ConfigError(f"a member needs weight >= 0 and temperature > 0, got {self.weight}, {self.temperature}")


def _member(name: str, value: Any) -> Member:
    member = value if isinstance(value, Member) else Member(value)
    if not member.inputs and callable(getattr(member.head, "input_names", None)):
        member = Member(member.head, tuple(member.head.input_names()), member.weight, member.temperature)
    if not member.inputs:
        raise ConfigError(f"head {name!r} does not declare the features it reads; pass "
                          f"Member(head, inputs=('image_pooled', 'text_pooled'))")
    return member


def _spec(modality: str, name: str | None, specs: Mapping[str, Any]) -> Any:
    """The module's spec as given, or its encoder's own (a ``hf:`` folder's, a registered encoder's)."""
    from mmedge.config import encoder_spec
    from mmedge.hf_folder import hf_name

    cls, base = get_modality(modality).spec_class, specs.get(modality)
    if base is not None and not isinstance(base, cls):
        raise ConfigError(f"specs[{modality!r}] must be a {cls.__name__}, got {type(base).__name__}")
    if name is not None:
        return encoder_spec(hf_name(name), modality, base)
    if base is None:
        raise ConfigError(f"your {modality} module needs its preprocessing: pass specs={{'{modality}': "
                          f"{cls.__name__}(...)}} (size, mean/std, length, rate... as it was trained)")
    return base


def _encoder(modality: str, value: Any, spec: Any):
    from mmedge.encoders import Encoder, create_encoder, freeze
    from mmedge.user_modules import ModuleEncoder, qualname

    if isinstance(value, str):
        enc = create_encoder(value, modality=modality)
    elif isinstance(value, Encoder):
        enc = value
    elif callable(getattr(value, "forward", None)):
        names = getattr(value, "input_names", None) or get_modality(modality).encoder_inputs(spec)
        enc = ModuleEncoder(value, modality=modality, input_names=names)
    else:
        raise ConfigError(f"encoders[{modality!r}] must be an nn.Module or an encoder name (registered or hf:PATH), "
                          f"got {type(value).__name__}")
    name = value if isinstance(value, str) else f"module:{qualname(value)}"
    if enc.modality != modality:
        raise ConfigError(f"encoders[{modality!r}] is a {enc.modality} encoder ({name}); key it by {enc.modality!r}")
    return freeze(enc.cpu()), name


def _tokenizer(encoders: Mapping[str, Any], names: Mapping[str, str], tokenizer: Any) -> Path | None:
    from mmedge.encoders import encoder_tokenizer

    if "text" not in encoders:
        return None
    path = Path(tokenizer) if tokenizer is not None else None
    if path is None and not names["text"].startswith("module:"):
        path = encoder_tokenizer(names["text"])
    if path is None and callable(getattr(type(encoders["text"]), "tokenizer_file", None)):
        path = Path(type(encoders["text"]).tokenizer_file())
    if path is None or not path.is_file():
        raise ConfigError(f"the text encoder needs its tokenizer.json: pass tokenizer=PATH (found {path})")
    return path


def build_ensemble(*, encoders: Mapping[str, Any], heads: Mapping[str, Any], labels: Sequence[str],
                   specs: Mapping[str, Any] | None = None, tokenizer: str | Path | None = None,
                   ensemble: str = "weighted_mean", task: str = "classification", name: str = "model"):
    """The ``MultimodalEnsemble`` of users' modules, its recipe and tokenizer (not yet run).

    Member modalities are provisional (every modality) until ``describe_outputs`` ran the encoders.

    Returns:
        ``(model, tokenizer_file)``; ``model.recipe`` describes it.
    """
    from mmedge.model import MultimodalEnsemble
    from mmedge.user_modules import qualname

    _check_labels(labels)
    unknown = [m for m in encoders if m not in modality_names()]
    if unknown or not encoders:
        raise ConfigError(f"encoders must map modalities {list(modality_names())} to modules or names, "
                          f"got {list(encoders)}")
    specs = dict(specs or {})
    spec = {m: _spec(m, v if isinstance(v, str) else None, specs) for m, v in encoders.items()}
    built = {m: _encoder(m, v, spec[m]) for m, v in encoders.items()}
    encs, names = {m: e for m, (e, _) in built.items()}, {m: n for m, (_, n) in built.items()}
    members = {n: _member(n, v) for n, v in heads.items()}
    if not members:
        raise ConfigError("heads is empty; pass at least one {name: Member(head, inputs=(...))}")
    modalities = tuple(encs)
    recipe = Recipe(name=name, dataset="user", task=task, modalities=modalities, encoders=names, ensemble=ensemble,
                    members=tuple(MemberConfig(n, qualname(mb.head), modalities) for n, mb in members.items()),
                    baselines=False, specs={m: spec[m] for m in modalities})
    model = MultimodalEnsemble(recipe, encs, {n: _head(mb).cpu().eval() for n, mb in members.items()},
                               [mb.temperature for mb in members.values()], [mb.weight for mb in members.values()])
    return model.eval(), _tokenizer(encs, names, tokenizer)


def _head(member: Member):
    """The head as the ensemble calls it: ``head(feats) -> logits`` with ``input_names()``."""
    from mmedge.user_modules import ModuleHead

    names = getattr(member.head, "input_names", None)
    if callable(names) and tuple(names()) == member.inputs:  # an mmedge FusionHead already is one
        return member.head
    return ModuleHead(member.head, member.inputs)


def _check_labels(labels: Sequence[str]) -> None:
    if isinstance(labels, str) or len(labels) < 2 or len(set(map(str, labels))) != len(labels):
        raise ConfigError(f"labels must be at least 2 distinct class names, got {labels!r}")


def describe_outputs(model, feats: Mapping[str, Any], labels: Sequence[str]) -> Recipe:
    """Checks every head against the encoders' outputs (after one run) and sets member modalities.

    Raises:
        ConfigError: a head that reads an output no encoder produces, or whose logits are not
            (B, len(labels)).
    """
    import torch

    produced = {n: m for m, enc in model.encoders.items() for n in enc.output_names()}
    members = []
    for mb in model.recipe.members:
        head = model.heads[mb.name]
        missing = [n for n in head.input_names() if n not in produced]
        if missing:
            raise ConfigError(f"head {mb.name!r} reads {missing}, which no encoder produces; the encoders give "
                              f"{sorted(produced)}")
        try:
            with torch.no_grad():
                logits = head({n: torch.from_numpy(feats[n]) for n in head.input_names()})
        except Exception as e:  # noqa: BLE001 - the user's head on real features, named
            raise ConfigError(f"head {mb.name!r} fails on the encoders' outputs ({type(e).__name__}: {e}); it "
                              f"reads {list(head.input_names())} of shapes "
                              f"{[list(feats[n].shape) for n in head.input_names()]}") from e
        if tuple(logits.shape) != (next(iter(feats.values())).shape[0], len(labels)):
            raise ConfigError(f"head {mb.name!r} returns shape {list(logits.shape)}; it must return logits "
                              f"(batch, {len(labels)}) for labels {list(labels)}")
        used = tuple(m for m in model.recipe.modalities if any(produced[n] == m for n in head.input_names()))
        members.append(MemberConfig(mb.name, mb.head, used))
    return model.recipe.replace(members=tuple(members))


def export_model(*, encoders: Mapping[str, Any], heads: Mapping[str, Any], labels: Sequence[str],
                 out: str | Path, calib: Any, specs: Mapping[str, Any] | None = None,
                 tokenizer: str | Path | None = None, eval_data: Any = None, ensemble: str = "weighted_mean",
                 task: str = "classification", name: str = "model", config: ExportConfig = ExportConfig()
                 ) -> dict[str, Any]:
    """Exports users' encoders and fusion heads to a bundle: ONNX + parity, every precision of
    ``config``, the accuracy report when ``eval_data`` is given; the same manifest as ``mmedge export``.

    Args:
        encoders: modality -> an ``nn.Module`` taking the modality's preprocessed inputs
            (``pixel_values``; ``input_ids``, ``attention_mask``; ``mel`` / ``waveform``) and
            returning a tensor, a ``(pooled, seq, mask)`` tuple or a dict of named tensors
            (outputs ``{modality}_{name}``); or an encoder name, registered or ``hf:PATH``.
        heads: member name -> ``Member(head, inputs=(...), weight, temperature)``.
        labels: Class names, in logit order.
        out: The bundle folder to write.
        calib: Calibration samples: a JSONL file / folder or an iterable of raw-input dicts.
        specs: modality -> ``ImageSpec`` / ``TextSpec`` / ``AudioSpec`` (required for your own
            modules; ``hf:`` and registered encoders bring theirs, a ``hf:`` audio encoder needs the
            clip length: ``AudioSpec(sample_rate=..., clip_seconds=...)``).
        tokenizer: The text encoder's ``tokenizer.json`` (``hf:`` folders bring theirs).
        eval_data: Labelled samples for the accuracy report (JSONL, ``MultimodalDataset`` or dicts).
        ensemble: ``weighted_mean`` | ``soft_vote`` | ``majority_vote``.
        task: ``classification`` or ``matching``.
        name: The bundle's name.
        config: Precisions, tolerances, sample counts (``ExportConfig``).

    Returns:
        The manifest as written.

    Raises:
        ConfigError: a bad encoder, head, spec or label list; a head reading an output nobody produces.
        CalibrationError / DataError: unusable calibration or evaluation samples.
        ExportError: a module that cannot be exported (its module path and op are named).
    """
    from mmedge.export.sources import user_sources

    model, tokenizer_file = build_ensemble(encoders=encoders, heads=heads, labels=labels, specs=specs,
                                           tokenizer=tokenizer, ensemble=ensemble, task=task, name=name)
    src = user_sources(model, tokenizer_file, labels=list(labels), calib=calib, eval_data=eval_data, config=config)
    return export_sources(src, Path(out), config=config)
