"""Bundle reader: opens a bundle folder or ``.mmedge`` zip as a validated, frozen view.

The contract is ``docs/bundle.md``: ``manifest.json`` is read with ``json.loads``, its
``format`` checked, required keys checked, and every file's sha256 verified before anything
is loaded. No torch, no onnx.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Mapping

from mmedge import BUNDLE_FORMAT
from mmedge.errors import BundleError, ConfigError
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec, spec_from_dict

__all__ = ["Bundle", "TensorInfo", "GraphEntry", "EncoderInfo", "MemberInfo", "EnsembleInfo", "SPEC_CLASSES"]

SPEC_CLASSES: Mapping[str, type] = MappingProxyType({"image": ImageSpec, "text": TextSpec, "audio": AudioSpec})
_REQUIRED = ("format", "task", "labels", "modalities", "inputs", "encoders", "members", "ensemble",
             "precisions", "files")
_TASKS = ("classification", "matching", "retrieval")
_CHUNK = 1 << 20
_FIX = "re-export or re-copy the bundle"


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, dtype and shape (ints, or strings for dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphEntry:
    """One graph of one component at one precision."""

    file: str | None
    sha256: str | None
    bytes: int | None
    status: str


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
    weights: tuple[float, ...]
    temperatures: tuple[float, ...]


def _fail(what: str) -> BundleError:
    return BundleError(f"invalid bundle manifest: {what}; {_FIX}")


def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise _fail(f"{where} lacks the required key {key!r}")
    return obj[key]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(items: Any, where: str) -> tuple[TensorInfo, ...]:
    if not isinstance(items, list) or not items:
        raise _fail(f"{where} must be a non-empty list of {{name, dtype, shape}}")
    return tuple(TensorInfo(str(_get(t, "name", where)), str(t.get("dtype", "float32")),
                            tuple(t.get("shape", ()))) for t in items)


def _graphs(raw: Any, where: str) -> Mapping[str, GraphEntry]:
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(f"{where}.graphs must map precision -> {{file, sha256, status}}")
    graphs = {p: GraphEntry(g.get("file"), g.get("sha256"), g.get("bytes"), str(g.get("status", "ok")))
              for p, g in raw.items()}
    for p, g in graphs.items():
        if g.status == "ok" and not (g.file and g.sha256):
            raise _fail(f"{where}.graphs.{p} has status ok but no file/sha256")
    return MappingProxyType(graphs)


def _encoders(manifest: Mapping[str, Any], modalities: tuple[str, ...]) -> Mapping[str, EncoderInfo]:
    raw = _get(manifest, "encoders", "manifest")
    out = {}
    for m in modalities:
        enc = _get(raw, m, "encoders")
        where = f"encoders.{m}"
        out[m] = EncoderInfo(m, str(enc.get("name", m)), _tensors(_get(enc, "inputs", where), f"{where}.inputs"),
                             _tensors(_get(enc, "outputs", where), f"{where}.outputs"),
                             _graphs(_get(enc, "graphs", where), where))
    return MappingProxyType(out)


def _members(manifest: Mapping[str, Any], encoders: Mapping[str, EncoderInfo]) -> tuple[MemberInfo, ...]:
    raw, ens = _get(manifest, "members", "manifest"), _get(manifest, "ensemble", "manifest")
    if not isinstance(raw, list) or not raw:
        raise _fail("members must be a non-empty list")
    weights, temps = ens.get("weights"), ens.get("temperatures")
    for name, vec in (("weights", weights), ("temperatures", temps)):
        if vec is not None and len(vec) != len(raw):
            raise _fail(f"ensemble.{name} has {len(vec)} values for {len(raw)} members")
    features = {o.name for e in encoders.values() for o in e.outputs}
    members = []
    for i, m in enumerate(raw):
        where = f"members[{i}]"
        name, inputs = str(_get(m, "name", where)), tuple(_get(m, "inputs", where))
        unknown = [n for n in inputs if n not in features]
        if unknown:
            raise _fail(f"member {name!r} reads {unknown}, which no encoder outputs")
        members.append(MemberInfo(
            name, str(m.get("head", name)), tuple(_get(m, "modalities", where)), inputs,
            str(m.get("output", "logits")),
            float(temps[i] if temps is not None else m.get("temperature", 1.0)),
            float(weights[i] if weights is not None else m.get("weight", 1.0)),
            _graphs(_get(m, "graphs", where), where)))
    if len({m.name for m in members}) != len(members):
        raise _fail(f"member names must be unique, got {[m.name for m in members]}")
    return tuple(members)


def _specs(manifest: Mapping[str, Any], modalities: tuple[str, ...]) -> Mapping[str, Any]:
    inputs = _get(manifest, "inputs", "manifest")
    specs = {}
    for m in modalities:
        try:
            specs[m] = spec_from_dict(SPEC_CLASSES[m], _get(inputs, m, "inputs"))
        except (ConfigError, TypeError) as exc:
            raise _fail(f"inputs.{m}: {exc}") from exc
    return MappingProxyType(specs)


def _modalities(manifest: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    modalities = tuple(_get(manifest, "modalities", "manifest"))
    bad = [m for m in modalities if m not in SPEC_CLASSES]
    if not modalities or bad:
        raise _fail(f"modalities must be a non-empty subset of {list(SPEC_CLASSES)}, got {list(modalities)}")
    optional = tuple(manifest.get("optional_modalities", ()))
    if any(m not in modalities for m in optional):
        raise _fail(f"optional_modalities {list(optional)} must be among modalities {list(modalities)}")
    return modalities, optional


def _check_format(manifest: Any) -> None:
    if not isinstance(manifest, Mapping):
        raise BundleError(f"manifest.json must hold a JSON object; {_FIX}")
    fmt = manifest.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"bundle format {fmt!r} is not supported: this runtime reads {BUNDLE_FORMAT!r}; "
                          "re-export the bundle with a matching mmedge, or install the mmedge version "
                          "that reads this format")
    for key in _REQUIRED:
        _get(manifest, key, "manifest")
    if manifest["task"] not in _TASKS:
        raise _fail(f"task {manifest['task']!r} is not one of {list(_TASKS)}")
    if not isinstance(manifest["labels"], list) or len(manifest["labels"]) < 2:
        raise _fail("labels must be a list of at least 2 class names")


def _verify_files(root: Path, files: Any, graphs: list[GraphEntry]) -> None:
    if not isinstance(files, Mapping):
        raise _fail("files must map relative path -> sha256")
    for g in graphs:
        if g.status == "ok" and files.get(g.file) != g.sha256:
            raise _fail(f"graph file {g.file!r} is not listed in files with the same sha256")
    for rel, expected in files.items():
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise _fail(f"file path {rel!r} points outside the bundle")
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle file {rel} is missing from {root}; {_FIX}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"bundle file {rel} was modified or corrupted: sha256 expected {expected}, "
                              f"got {actual}; {_FIX}")


def _extract(archive: Path) -> tempfile.TemporaryDirectory:
    tmp = tempfile.TemporaryDirectory(prefix="mmedge-bundle-")
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                pure = PurePosixPath(name)
                if pure.is_absolute() or ".." in pure.parts:
                    raise BundleError(f"{archive} holds an unsafe path {name!r}; {_FIX}")
            zf.extractall(tmp.name)
    except zipfile.BadZipFile as exc:
        tmp.cleanup()
        raise BundleError(f"{archive} is not a valid .mmedge zip ({exc}); {_FIX}") from exc
    except BaseException:
        tmp.cleanup()
        raise
    return tmp


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{root} is not a bundle: no manifest.json at its root; pass a bundle folder "
                          "or .mmedge file written by mmedge export")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); {_FIX}") from exc


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
    _tmp: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> "Bundle":
        """Opens and validates a bundle folder or ``.mmedge`` zip.

        Args:
            path: The bundle folder, or a ``.mmedge`` file (extracted to a temporary folder
                that is removed by ``close()`` or when the bundle is garbage collected).
            verify: Check every file's sha256 against the manifest (default; leave on).

        Raises:
            BundleError: missing path or manifest, unknown format, missing keys, or a
                missing or tampered file.
        """
        source = Path(path)
        if not source.exists():
            raise BundleError(f"bundle not found: {source}; pass a bundle folder or a .mmedge file")
        tmp = _extract(source) if source.is_file() else None
        try:
            return cls._load(Path(tmp.name) if tmp else source, source, tmp, verify)
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise

    @classmethod
    def _load(cls, root: Path, source: Path, tmp: Any, verify: bool) -> "Bundle":
        manifest = _read_manifest(root)
        _check_format(manifest)
        modalities, optional = _modalities(manifest)
        encoders = _encoders(manifest, modalities)
        members = _members(manifest, encoders)
        tokenizer = manifest["inputs"].get("text", {}).get("tokenizer_file") if "text" in modalities else None
        if tokenizer is not None and tokenizer not in manifest["files"]:
            raise _fail(f"tokenizer file {tokenizer!r} is not listed in files")
        if verify:
            graphs = [g for e in encoders.values() for g in e.graphs.values()]
            _verify_files(root, manifest["files"], graphs + [g for m in members for g in m.graphs.values()])
        ens = manifest["ensemble"]
        ensemble = EnsembleInfo(str(_get(ens, "method", "ensemble")), tuple(m.weight for m in members),
                                tuple(m.temperature for m in members))
        return cls(root=root, source=source, manifest=MappingProxyType(manifest),
                   name=str(manifest.get("name", source.stem)), task=manifest["task"],
                   labels=tuple(map(str, manifest["labels"])), modalities=modalities,
                   optional_modalities=optional, specs=_specs(manifest, modalities), encoders=encoders,
                   members=members, ensemble=ensemble,
                   precision_status=MappingProxyType(dict(manifest["precisions"])), _tmp=tmp)

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

    def close(self) -> None:
        """Removes the temporary extraction folder of a ``.mmedge`` bundle (no-op for folders)."""
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
