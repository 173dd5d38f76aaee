"""The typed bundle manifest (``docs/bundle.md``): written from these dataclasses, read into them.

``mmedge export`` builds a ``Manifest`` and writes ``Manifest.to_json()``; ``Bundle.open`` reads
``manifest.json`` with ``Manifest.from_json``: each field's ``metadata["check"]`` (the schema,
``manifest_schema``) checks and converts its JSON value, the dataclass defaults are the only
defaults, and ``problems()`` checks what must fit together (a member's inputs are outputs of its
encoders, every graph is listed in ``files``...). Keys written by older mmedge versions are
upgraded in one place (``_upgrade``). No torch, no onnx.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from mmedge.runtime.ensemble import read_stacking
from mmedge.runtime.manifest_schema import (
    DTYPES, METHODS, TASKS, SchemaError, check_format, check_relpath, check_sha256, check_spec, choice, dim, key_path,
    mapping, number, numbers, obj, optional_string, ranged, read_dataclass, string, strings, tuple_of)

__all__ = ["TensorInfo", "GraphEntry", "EncoderInfo", "MemberInfo", "EnsembleInfo", "SimilarityInfo", "Manifest",
           "to_json"]


def _f(check: Callable[[Any, str], Any], **kwargs: Any) -> Any:
    """A manifest field: ``check(value, json_path)`` validates and converts its JSON value."""
    return field(metadata={"check": check}, **kwargs)


def _frozen(value: Any) -> Any:
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


def _report() -> Any:
    """A report (parity, fidelity, metrics...): a JSON object, shown as written; absent: None."""
    return _f(obj, default=None)


@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    """A graph input or output: name, dtype and shape (ints, or strings for dynamic axes)."""

    name: str = _f(string)
    dtype: str = _f(choice(*DTYPES), default="float32")
    shape: tuple[int | str | None, ...] = _f(tuple_of(dim), default=())


@dataclass(frozen=True, kw_only=True)
class GraphEntry:
    """One graph of one component at one precision, and what export measured of it.

    Attributes:
        file, sha256, bytes: The graph file in the bundle (``status`` ok: required).
        status: ``"ok"``, or why the graph is missing.
        ort_disabled_optimizers: ONNX Runtime optimizers that stay off for this graph.
        quantization: How it was made (tool, scheme, ``derived_from``).
        parity / fidelity: fp32 against PyTorch / this graph against fp32 (worst case per output).
        build_fallback / failed / kept_float: The graph could not be built, or was reverted to fp32
            to keep the accuracy: the precision whose graph it uses, the failure, why fp32.
        chosen / latency_ms_batch1: A selected precision (``mixed``): the graph chosen and every
            candidate's batch-1 median (``<precision>`` on ONNX Runtime, ``<precision>@<backend>`` on another);
            ``latency_ms_per_row``: every candidate's median per row at each batch size timed (``{"1": .., "7": ..}``).
        backend: ``mixed``: the CPU backend export timed this graph fastest on, when it is not ONNX
            Runtime; a Session whose ``auto`` resolves to ``ort`` runs the graph there (None: the
            Session's backend).
        backends: What export measured of this graph on other backends than ONNX Runtime, by backend
            (``{"openvino": {"ok", "min_cosine", "min_cosine_required", ...}}``; None: not checked).
            ``auto`` takes OpenVINO only for graphs whose check is ok.
    """

    file: str | None = _f(check_relpath, default=None)
    sha256: str | None = _f(check_sha256, default=None)
    bytes: int | None = _f(ranged(0, 2**62), default=None)
    status: str = _f(string, default="ok")
    ort_disabled_optimizers: tuple[str, ...] = _f(strings(), default=())
    exporter: str | None = _f(optional_string, default=None)
    opset: int | None = _f(ranged(1, 1000), default=None)
    notes: tuple[str, ...] | None = _f(tuple_of(string), default=None)
    graph: Mapping[str, Any] | None = _report()
    parity: Mapping[str, Any] | None = _report()
    quantization: Mapping[str, Any] | None = _report()
    fidelity: Mapping[str, Any] | None = _report()
    warnings: tuple[str, ...] | None = _f(tuple_of(string), default=None)
    build_fallback: str | None = _f(optional_string, default=None)
    failed: Mapping[str, Any] | None = _report()
    kept_float: str | None = _f(optional_string, default=None)
    chosen: str | None = _f(optional_string, default=None)
    latency_ms_batch1: Mapping[str, Any] | None = _report()
    latency_ms_per_row: Mapping[str, Any] | None = _report()
    backends: Mapping[str, Any] | None = _report()
    backend: str | None = _f(optional_string, default=None)

    def problems(self) -> list[tuple[str, str]]:
        """A graph with status ok names its file and hash."""
        if self.status != "ok":
            return []
        return [(k, f"is required when status is 'ok'") for k in ("file", "sha256") if getattr(self, k) is None]

    @property
    def built(self) -> bool:
        """Whether this is a graph of its own precision (not a build fallback or an accuracy revert)."""
        return self.status == "ok" and self.build_fallback is None and self.kept_float is None


def _graphs(value: Any, path: str) -> Mapping[str, GraphEntry]:
    graphs = mapping(lambda v, p: read_dataclass(GraphEntry, v, p))(value, path)
    if not graphs:
        raise SchemaError(path, "must map at least one precision to {file, sha256, status}")
    return graphs


_TENSORS = tuple_of(lambda v, p: read_dataclass(TensorInfo, v, p), min_len=1)


@dataclass(frozen=True, kw_only=True)
class EncoderInfo:
    """The encoder of one modality (``encoders.<modality>``): its I/O and its graph per precision."""

    modality: str = field(default="", metadata={"key": True})  # the key it is written under
    name: str = _f(string)
    inputs: tuple[TensorInfo, ...] = _f(_TENSORS)
    outputs: tuple[TensorInfo, ...] = _f(_TENSORS)
    graphs: Mapping[str, GraphEntry] = _f(_graphs)


@dataclass(frozen=True, kw_only=True)
class MemberInfo:
    """An ensemble member: a fusion head over some encoders' outputs, with its calibration."""

    name: str = _f(string)
    head: str = _f(string)
    modalities: tuple[str, ...] = _f(strings(min_len=1))
    inputs: tuple[str, ...] = _f(strings(min_len=1))
    output: str = _f(string, default="logits")
    temperature: float = _f(number(0.0, 1e6, lo_open=True), default=1.0)
    weight: float = _f(number(0.0, 1e6), default=1.0)
    graphs: Mapping[str, GraphEntry] = _f(_graphs)


@dataclass(frozen=True, kw_only=True)
class EnsembleInfo:
    """How members are combined (``mmedge.runtime.ensemble``); weights live on the members.

    Attributes:
        method: The rule.
        stacking: The ``stacking`` rule's coefficients (``{"coef": (C, K*C), "intercept": (C,)}``);
            absent for the other rules.
        selection: How training chose the rule on the validation split (every candidate's scores,
            disagreement, oracle accuracy, the members dropped); absent in older bundles.
        graphs: The merged heads graph per precision: every member head and this rule as one graph
            (``mmedge.runtime.merged_heads``); absent in older bundles (the Session runs the heads one by one).
    """

    method: str = _f(choice(*METHODS))
    stacking: Mapping[str, Any] | None = _f(read_stacking, default=None)
    selection: Mapping[str, Any] | None = _report()
    graphs: Mapping[str, GraphEntry] | None = _f(lambda v, p: _graphs(v, p), default=None)

    @functools.cached_property
    def stacking_model(self) -> Any:
        """The ``mmedge.runtime.ensemble.Stacking`` of ``stacking`` (None without it), built once."""
        from mmedge.runtime.ensemble import Stacking

        return Stacking.from_dict(self.stacking) if self.stacking is not None else None


@dataclass(frozen=True, kw_only=True)
class SimilarityInfo:
    """How a pretrained dual encoder scores its query modality against text (``similarity``; bundles of
    CLIP, SigLIP, CLAP folders: ``mmedge.runtime.similarity``): ``scale[query] * cos + bias``.

    Attributes:
        modalities: The query modalities and ``"text"``, e.g. ``("image", "text")``.
        scale: query modality -> ``exp(logit_scale)`` (CLAP: ``logit_scale_a`` for audio).
        bias: The logit bias (SigLIP), else 0.
        activation: ``softmax`` over the texts (CLIP, CLAP) or ``sigmoid`` per pair (SigLIP).
        family: ``clip``, ``siglip``, ``clap`` (reported).
    """

    modalities: tuple[str, ...] = _f(strings(min_len=2))
    scale: Mapping[str, float] = _f(mapping(number(0.0, lo_open=True)))
    bias: float = _f(number(-1e6, 1e6), default=0.0)
    activation: str = _f(choice("softmax", "sigmoid"), default="softmax")
    family: str = _f(string, default="")

    def embed(self, modality: str) -> str:
        """The encoder output compared for ``modality``: ``{modality}_embed``."""
        return f"{modality}_embed"

    def problems(self) -> list[tuple[str, str]]:
        """Text and at least one query modality, each query with its scale."""
        queries = [m for m in self.modalities if m != "text"]
        if "text" not in self.modalities or set(self.scale) != set(queries):
            return [("scale", f"must hold a scale for each of {queries} (and modalities must include text), got "
                              f"{sorted(self.scale)} for modalities {list(self.modalities)}")]
        return []


def _encoders(value: Any, path: str) -> Mapping[str, EncoderInfo]:
    return MappingProxyType({m: dataclasses.replace(read_dataclass(EncoderInfo, e, key_path(path, m)), modality=m)
                             for m, e in obj(value, path).items()})


def _inputs(value: Any, path: str) -> Mapping[str, Any]:
    from mmedge.runtime.modalities import get_modality, modality_names
    from mmedge.runtime.specs import spec_from_dict

    out = {}
    for m, raw in obj(value, path).items():
        choice(*modality_names())(m, key_path(path, m))
        cls = get_modality(m).spec_class
        out[m] = spec_from_dict(cls, check_spec(cls, raw, key_path(path, m)))
    return MappingProxyType(out)


def _modalities(value: Any, path: str) -> tuple[str, ...]:
    from mmedge.runtime.modalities import modality_names

    return strings(choices=modality_names(), min_len=1)(value, path)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """``manifest.json``: what the runtime needs, and the reports export wrote beside it.

    Attributes:
        inputs: modality -> preprocessing spec (``mmedge.runtime.specs``).
        precisions: precision -> ``"ok"`` or why it is not usable.
        files: bundle path -> sha256, every file of the bundle.
        metrics, calibration, dataset, versions, source_model: Reports (JSON objects), shown as written.
        extra: Top-level keys this version does not know (a newer writer's reports), kept as read.
    """

    format: str = _f(string)
    name: str | None = _f(optional_string, default=None)  # None: ``Bundle.name`` is the folder's or file's
    task: str = _f(choice(*TASKS))
    labels: tuple[str, ...] = _f(strings(min_len=2))
    modalities: tuple[str, ...] = _f(_modalities)
    optional_modalities: tuple[str, ...] = _f(strings(), default=())
    inputs: Mapping[str, Any] = _f(_inputs)
    encoders: Mapping[str, EncoderInfo] = _f(_encoders)
    members: tuple[MemberInfo, ...] = _f(tuple_of(lambda v, p: read_dataclass(MemberInfo, v, p), min_len=1))
    ensemble: EnsembleInfo = _f(lambda v, p: read_dataclass(EnsembleInfo, v, p))
    precisions: Mapping[str, str] = _f(mapping(string))
    files: Mapping[str, str] = _f(mapping(check_sha256, key=check_relpath))
    metrics: Mapping[str, Any] = _f(obj, default_factory=dict)
    calibration: Mapping[str, Any] | None = _report()
    dataset: Mapping[str, Any] | None = _report()
    source_checkpoint: str | None = _f(optional_string, default=None)
    source_model: Mapping[str, Any] | None = _report()
    versions: Mapping[str, Any] = _f(obj, default_factory=dict)
    similarity: SimilarityInfo | None = _f(lambda v, p: read_dataclass(SimilarityInfo, v, p), default=None)
    extra: Mapping[str, Any] = field(default_factory=dict, metadata={"key": True})

    @classmethod
    def from_json(cls, data: Any) -> "Manifest":
        """Checks a parsed ``manifest.json`` completely and builds the manifest from it.

        Raises:
            BundleError: the first problem, with its JSON path (``SchemaError``), or a format this
                runtime does not read (naming the mmedge version that does).
        """
        check_format(data)
        upgraded = _upgrade(obj(data, ""))
        known = {f.name for f in dataclasses.fields(cls) if "check" in f.metadata}
        manifest = read_dataclass(cls, {k: v for k, v in upgraded.items() if k in known}, "")
        return dataclasses.replace(manifest, extra=MappingProxyType({k: v for k, v in upgraded.items()
                                                                     if k not in known}))

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``json.dumps``-ready); fields left at None are not written."""
        return to_json(self)

    def graph_owners(self) -> Iterator[tuple[str, Mapping[str, GraphEntry]]]:
        """(``encoder.<modality>`` / ``head.<member>``, its graphs), in bundle order."""
        yield from ((f"encoder.{m}", e.graphs) for m, e in self.encoders.items())
        yield from ((f"head.{mb.name}", mb.graphs) for mb in self.members)
        yield from ((("heads", self.ensemble.graphs),) if self.ensemble.graphs else ())  # merged_heads.HEADS

    def problems(self) -> list[tuple[str, str]]:
        """What must fit together across sections: each modality has a spec and an encoder, each
        member reads outputs of its own modalities' encoders, every graph and file is listed."""
        return [*_modality_problems(self), *_member_problems(self), *_file_problems(self)]


def _modality_problems(m: Manifest) -> Iterator[tuple[str, str]]:
    for i, name in enumerate(m.similarity.modalities if m.similarity is not None else ()):
        if name not in m.encoders:
            yield f"similarity.modalities[{i}]", f"{name!r} has no encoder (encoders: {list(m.encoders)})"
    for i, name in enumerate(m.optional_modalities):
        if name not in m.modalities:
            yield f"optional_modalities[{i}]", f"must be one of {list(m.modalities)}, got {name!r}"
    for name in m.modalities:
        if name not in m.inputs:
            yield "inputs", f"lacks the preprocessing spec of modality {name!r}"
        if name not in m.encoders:
            yield "encoders", f"lacks an encoder for modality {name!r}"
    seen: dict[str, str] = {}
    for name, enc in m.encoders.items():
        for i, t in enumerate(enc.outputs):
            if seen.setdefault(t.name, name) != name:
                yield (f"encoders.{name}.outputs[{i}].name",
                       f"{t.name!r} is also an output of the {seen[t.name]} encoder")


def _member_problems(m: Manifest) -> Iterator[tuple[str, str]]:
    names = [mb.name for mb in m.members]
    for i, mb in enumerate(m.members):
        path = f"members[{i}]"
        if mb.name in names[:i]:
            yield f"{path}.name", f"{mb.name!r} is the name of an earlier member; names must be unique"
        for j, mod in enumerate(mb.modalities):
            if mod not in m.encoders or mod not in m.modalities:
                yield (f"{path}.modalities[{j}]", f"{mod!r} is not a modality of this bundle ({list(m.modalities)}), "
                                                  "so this member could never run")
        features = {t.name for mod in mb.modalities if mod in m.encoders for t in m.encoders[mod].outputs}
        for j, name in enumerate(mb.inputs):
            if name not in features:
                yield (f"{path}.inputs[{j}]", f"{name!r} is not an output of the encoders of this member's "
                                              f"modalities {list(mb.modalities)} (they give {sorted(features)})")
    if sum(mb.weight for mb in m.members) <= 0:
        yield "members", f"must not all have weight 0, got {[mb.weight for mb in m.members]}"


def _file_problems(m: Manifest) -> Iterator[tuple[str, str]]:
    """Every graph with status ok, and every file a spec names (the tokenizer), is in ``files``."""
    from mmedge.runtime.specs import spec_files

    for owner, graphs in m.graph_owners():
        where = f"encoders.{owner[8:]}" if owner.startswith("encoder.") else "ensemble" if owner == "heads" else \
            f"members[{[mb.name for mb in m.members].index(owner[5:])}]"
        for p, g in graphs.items():
            if g.status == "ok" and m.files.get(g.file) != g.sha256:
                yield key_path(f"{where}.graphs", p), f"file {g.file!r} is not listed in files with the same sha256"
    for mod, spec in m.inputs.items():
        for key, rel in spec_files(type(spec), spec).items():
            if rel not in m.files:
                yield f"inputs.{mod}.{key}", f"{rel!r} is not listed in files"


def to_json(value: Any) -> Any:
    """A manifest dataclass (or any value inside one) as JSON-ready values: tuples become lists,
    fields left at None are not written, ``key`` fields are the keys they are written under."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not isinstance(value, _MANIFEST_TYPES):
            from mmedge.runtime.specs import spec_to_dict  # an input spec

            return spec_to_dict(value)
        out = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
               if "check" in f.metadata and getattr(value, f.name) is not None}
        out.update(to_json(getattr(value, "extra", {})))
        return out
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    return value


_MANIFEST_TYPES = (TensorInfo, GraphEntry, EncoderInfo, MemberInfo, EnsembleInfo, SimilarityInfo, Manifest)


def _upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keys written by older mmedge versions, in today's form: ensemble weights and temperatures
    listed under ``ensemble`` move onto the members, a member without ``head`` is its own name, a
    graph without ``ort_disabled_optimizers`` gets its precision record's, an encoder without ``name`` is
    called after its modality."""
    out = dict(data)
    members = data.get("members")
    ens = data.get("ensemble")
    if isinstance(members, list) and isinstance(ens, Mapping) and all(isinstance(m, Mapping) for m in members):
        out["ensemble"] = {k: v for k, v in ens.items() if k not in ("weights", "temperatures")}
        legacy = {k: _LEGACY[k](len(members))(ens[k], f"ensemble.{k}") for k in _LEGACY if ens.get(k)}
        if sum(legacy.get("weights", [1.0])) <= 0:
            raise SchemaError("ensemble.weights", f"must not all be 0, got {legacy['weights']}")
        out["members"] = [{**{k[:-1]: values[i] for k, values in legacy.items()},  # weights -> weight
                           "head": m.get("name"), **m, "graphs": _upgrade_graphs(m.get("graphs"))}
                          for i, m in enumerate(members)]
    if isinstance(data.get("encoders"), Mapping):
        out["encoders"] = {k: {"name": k, **e, "graphs": _upgrade_graphs(e.get("graphs"))} if isinstance(e, Mapping)
                           else e for k, e in data["encoders"].items()}
    return out


_LEGACY = {"weights": lambda k: numbers(0.0, 1e6, length=k),
           "temperatures": lambda k: numbers(0.0, 1e6, length=k, lo_open=True)}


def _upgrade_graphs(graphs: Any) -> Any:
    from mmedge.runtime.precisions import PRECISIONS

    if not isinstance(graphs, Mapping):
        return graphs
    return {p: {"ort_disabled_optimizers": list(PRECISIONS[p].ort_disabled_optimizers if p in PRECISIONS else ()),
                **g} if isinstance(g, Mapping) else g for p, g in graphs.items()}
