"""Bundle reader: opens a bundle folder or ``.mmedge`` zip as a validated, frozen view.

The contract is ``docs/bundle.md``: ``manifest.json`` is read with ``json.loads`` and checked
completely against the one schema (``manifest_schema``) before anything is built from it; every
file is reached through a path that stays inside the bundle, and its sha256 is verified once per
bundle version (``integrity``). Loaders take the verified bytes (``Bundle.read_bytes``), not a
path to open again. No torch, no onnx.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from mmedge.errors import BundleError
from mmedge.runtime.archive import extract_archive
from mmedge.runtime.integrity import Identity, read_file, resolve_inside, sha256_file, verify_files
from mmedge.runtime.limits import DEFAULT_LIMITS, Limits, checked_limits
from mmedge.runtime.manifest_schema import validate_manifest
from mmedge.runtime.specs import spec_from_dict

__all__ = ["Bundle", "TensorInfo", "GraphEntry", "EncoderInfo", "MemberInfo", "EnsembleInfo", "sha256_file"]

_FIX = "re-export or re-copy the bundle"


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, dtype and shape (ints, or strings for dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphEntry:
    """One graph of one component at one precision.

    Attributes:
        ort_disabled_optimizers: ONNX Runtime optimizers that stay off for this graph, as export
            recorded them (a bundle written before they were recorded: its precision record's).
    """

    file: str | None
    sha256: str | None
    bytes: int | None
    status: str
    ort_disabled_optimizers: tuple[str, ...] = ()


@dataclass(frozen=True)
class EncoderInfo:
    """An encoder of one modality: its I/O and its graph per precision."""

    modality: str
    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    graphs: Mapping[str, GraphEntry]


@dataclass(frozen=True)
class MemberInfo:
    """An ensemble member: a fusion head over some encoders' outputs."""

    name: str
    head: str
    modalities: tuple[str, ...]
    inputs: tuple[str, ...]
    output: str
    temperature: float
    weight: float
    graphs: Mapping[str, GraphEntry]


@dataclass(frozen=True)
class EnsembleInfo:
    """How members are combined (``mmedge.runtime.ensemble.combine``)."""

    method: str


def _tensors(items: list[Mapping[str, Any]]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(t["name"], t.get("dtype", "float32"), tuple(t.get("shape", ()))) for t in items)


def _graphs(raw: Mapping[str, Mapping[str, Any]]) -> Mapping[str, GraphEntry]:
    return MappingProxyType({p: GraphEntry(g.get("file"), g.get("sha256"), g.get("bytes"), g.get("status", "ok"),
                                           _disabled_optimizers(p, g)) for p, g in raw.items()})


def _disabled_optimizers(precision: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The entry's ``ort_disabled_optimizers``; absent (an older bundle): its precision record's."""
    from mmedge.runtime.precisions import PRECISIONS

    if "ort_disabled_optimizers" in entry:
        return tuple(entry["ort_disabled_optimizers"])
    return PRECISIONS[precision].ort_disabled_optimizers if precision in PRECISIONS else ()


def _encoders(checked: Mapping[str, Any]) -> Mapping[str, EncoderInfo]:
    return MappingProxyType({m: EncoderInfo(m, e.get("name", m), _tensors(e["inputs"]), _tensors(e["outputs"]),
                                            _graphs(e["graphs"])) for m, e in checked["encoders"].items()})


def _members(checked: Mapping[str, Any]) -> tuple[MemberInfo, ...]:
    ens = checked["ensemble"]
    # bundles written before the members held them also list them under ``ensemble`` (same values)
    weights = ens.get("weights") or [m.get("weight", 1.0) for m in checked["members"]]
    temps = ens.get("temperatures") or [m.get("temperature", 1.0) for m in checked["members"]]
    return tuple(MemberInfo(m["name"], m.get("head", m["name"]), tuple(m["modalities"]), tuple(m["inputs"]),
                            m.get("output", "logits"), float(t), float(w), _graphs(m["graphs"]))
                 for m, w, t in zip(checked["members"], weights, temps))


def _specs(checked: Mapping[str, Any]) -> Mapping[str, Any]:
    """Each modality's spec, of its record's class (the schema checked every field and their fit)."""
    from mmedge.runtime.modalities import get_modality

    specs = {m: spec_from_dict(get_modality(m).spec_class, raw) for m, raw in checked["inputs"].items()}
    return MappingProxyType(specs)


def _read_manifest(root: Path, limits: Limits) -> tuple[Any, str]:
    path = root / "manifest.json"
    if not path.exists():
        raise BundleError(f"{root} is not a bundle: no manifest.json at its root; pass a bundle folder "
                          "or .mmedge file written by mmedge export")
    path = resolve_inside(root, "manifest.json")
    if path.stat().st_size > limits.max_manifest_bytes:
        raise BundleError(f"{path} is {path.stat().st_size} bytes, more than max_manifest_bytes "
                          f"({limits.max_manifest_bytes}); {_FIX}, or {limits.raise_hint('max_manifest_bytes')}")
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8")), hashlib.sha256(data).hexdigest()
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{path} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); {_FIX}") from None


@dataclass(frozen=True)
class Bundle:
    """A validated, read-only view of a bundle (``docs/bundle.md``).

    Build it with ``Bundle.open(path)``. Attributes mirror the manifest; ``manifest`` is
    the raw (read-only) mapping, which also holds ``metrics``, ``parity`` and ``versions``.
    """

    root: Path
    source: Path
    manifest: Mapping[str, Any]
    name: str
    task: str
    labels: tuple[str, ...]
    modalities: tuple[str, ...]
    optional_modalities: tuple[str, ...]
    specs: Mapping[str, Any]
    encoders: Mapping[str, EncoderInfo]
    members: tuple[MemberInfo, ...]
    ensemble: EnsembleInfo
    precision_status: Mapping[str, str]
    verified: bool = True
    limits: Limits = DEFAULT_LIMITS
    _files: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    _identities: Mapping[str, Identity] = field(default_factory=dict, repr=False, compare=False)
    _tmp: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True, limits: Limits | None = None) -> "Bundle":
        """Opens and validates a bundle folder or ``.mmedge`` zip.

        Args:
            path: The bundle folder, or a ``.mmedge`` file (extracted to a private temporary
                folder that ``close()`` removes).
            verify: Check every file's sha256 against the manifest (default; leave on). Done once
                per bundle version: a verified stamp in the user cache skips it next time. With
                False, paths and symlinks that lead outside the bundle are still refused.
            limits: Size limits (``max_zip_bytes``, ``max_zip_members``, ``max_manifest_bytes``);
                default ``Limits()``. A Session on this bundle uses them for its inputs too.

        Raises:
            BundleError: a missing path or manifest, a format this runtime does not read, a
                manifest value of the wrong type or range (with its JSON path), a file outside the
                bundle, a missing or tampered file, or an archive over the limits.
            ConfigError: ``limits`` is not a ``Limits``.
        """
        limits = checked_limits(limits)
        source = Path(path)
        if not source.exists():
            raise BundleError(f"bundle not found: {source}; pass a bundle folder or a .mmedge file")
        tmp = extract_archive(source, limits) if source.is_file() else None
        try:
            return cls._load(Path(tmp.name) if tmp else source, source, tmp, verify, limits)
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise

    @classmethod
    def _load(cls, root: Path, source: Path, tmp: Any, verify: bool, limits: Limits) -> "Bundle":
        manifest, manifest_sha = _read_manifest(root, limits)
        checked = validate_manifest(manifest)
        specs = _specs(checked)
        if verify:
            identities = verify_files(root, checked["files"], manifest_sha, stamp=tmp is None)
        else:
            identities = {}
            for rel in checked["files"]:
                resolve_inside(root, rel)
        members = _members(checked)
        ensemble = EnsembleInfo(checked["ensemble"]["method"])
        return cls(root=root, source=source, manifest=MappingProxyType(manifest),
                   name=checked.get("name", source.stem), task=checked["task"], labels=tuple(checked["labels"]),
                   modalities=tuple(checked["modalities"]), optional_modalities=tuple(checked["optional_modalities"]),
                   specs=specs, encoders=_encoders(checked), members=members, ensemble=ensemble,
                   precision_status=MappingProxyType(dict(checked["precisions"])), verified=verify, limits=limits,
                   _files=MappingProxyType(checked["files"]), _identities=MappingProxyType(identities), _tmp=tmp)

    def precisions(self) -> list[str]:
        """Precisions whose status is ``"ok"`` and whose every graph is present and ok."""
        graphs = [e.graphs for e in self.encoders.values()] + [m.graphs for m in self.members]
        return [p for p, status in self.precision_status.items()
                if status == "ok" and all(p in g and g[p].status == "ok" for g in graphs)]

    def precision_problem(self, precision: str) -> str | None:
        """Why ``precision`` cannot be loaded (None when it can)."""
        if precision in self.precisions():
            return None
        status = self.precision_status.get(precision)
        why = "is not in the bundle" if status is None else f"has status {status!r}"
        return f"precision {precision!r} {why}; available precisions: {self.precisions()}"

    def components(self) -> list[str]:
        """Component names: ``encoder.<modality>`` and ``head.<member>``."""
        return [f"encoder.{m}" for m in self.encoders] + [f"head.{m.name}" for m in self.members]

    def graph_entry(self, component: str, precision: str) -> GraphEntry:
        """The graph entry of ``component`` (``encoder.image``, ``head.concat``...) at ``precision``."""
        owners = {**{f"encoder.{k}": e.graphs for k, e in self.encoders.items()},
                  **{f"head.{m.name}": m.graphs for m in self.members}}
        if component not in owners:
            raise BundleError(f"unknown component {component!r}; this bundle has {self.components()}")
        problem = self.precision_problem(precision)
        if problem:
            raise BundleError(problem)
        return owners[component][precision]

    def graph_path(self, component: str, precision: str) -> Path:
        """Path of the ONNX graph of ``component`` at ``precision`` (which must be ok)."""
        return self.root / str(self.graph_entry(component, precision).file)

    def member(self, name: str) -> MemberInfo:
        """The member called ``name``."""
        for m in self.members:
            if m.name == name:
                return m
        raise BundleError(f"no member {name!r}; members: {[m.name for m in self.members]}")

    @property
    def tokenizer_path(self) -> Path | None:
        """The tokenizer file, when the bundle has text."""
        spec = self.specs.get("text")
        return self.root / spec.tokenizer_file if spec is not None else None

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of bundle file ``rel`` (a key of the manifest's ``files``), as verified.

        A file that is not the one verified at ``open`` (replaced, rewritten) is hashed again,
        and refused if its bytes differ from the manifest: loaders run exactly these bytes.

        Raises:
            BundleError: an unlisted file, a file outside the bundle, or one changed since ``open``.
        """
        if rel not in self._files:
            raise BundleError(f"{rel!r} is not a file of this bundle (files: {sorted(self._files)})")
        sha = self._files[rel] if self.verified else None
        return read_file(self.root, rel, sha256=sha, verified=self._identities.get(rel))

    def graph_bytes(self, component: str, precision: str) -> bytes:
        """The verified bytes of the ONNX graph of ``component`` at ``precision``."""
        return self.read_bytes(str(self.graph_entry(component, precision).file))

    def close(self) -> None:
        """Removes the temporary extraction folder of a ``.mmedge`` bundle (no-op for folders)."""
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
