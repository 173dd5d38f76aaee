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
from mmedge.runtime.integrity import Identity, read_file, resolve_inside, sha256_file, verify_files
from mmedge.runtime.limits import DEFAULT_LIMITS, Limits, checked_limits
from mmedge.runtime.manifest import EncoderInfo, EnsembleInfo, GraphEntry, Manifest, MemberInfo, TensorInfo

__all__ = ["Bundle", "TensorInfo", "GraphEntry", "EncoderInfo", "MemberInfo", "EnsembleInfo", "sha256_file"]

_FIX = "re-export or re-copy the bundle"


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

    Build it with ``Bundle.open(path)``. ``manifest`` is the typed manifest
    (``mmedge.runtime.manifest.Manifest``, reports included); the attributes below read it.
    """

    root: Path
    source: Path
    manifest: Manifest
    verified: bool = True
    limits: Limits = DEFAULT_LIMITS
    _identities: Mapping[str, Identity] = field(default_factory=dict, repr=False, compare=False)
    _tmp: Any = field(default=None, repr=False, compare=False)

    name = property(lambda self: self.manifest.name or self.source.stem,
                    doc="The bundle's name (unnamed: its folder's or file's).")
    task = property(lambda self: self.manifest.task, doc="classification | matching | retrieval.")
    labels = property(lambda self: self.manifest.labels, doc="The class labels.")
    modalities = property(lambda self: self.manifest.modalities, doc="The modalities, in order.")
    optional_modalities = property(lambda self: self.manifest.optional_modalities,
                                   doc="Modalities that may be left out at predict time.")
    specs = property(lambda self: self.manifest.inputs, doc="modality -> preprocessing spec.")
    encoders = property(lambda self: self.manifest.encoders, doc="modality -> ``EncoderInfo``.")
    members = property(lambda self: self.manifest.members, doc="The ensemble members (``MemberInfo``).")
    ensemble = property(lambda self: self.manifest.ensemble, doc="How members are combined (``EnsembleInfo``).")
    precision_status = property(lambda self: self.manifest.precisions, doc="precision -> ``ok`` or why not.")
    _files = property(lambda self: self.manifest.files)

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
        from mmedge.runtime.archive import extract_archive  # here: zipfile is loaded only to open an archive

        tmp = extract_archive(source, limits) if source.is_file() else None
        try:
            return cls._load(Path(tmp.name) if tmp else source, source, tmp, verify, limits)
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise

    @classmethod
    def _load(cls, root: Path, source: Path, tmp: Any, verify: bool, limits: Limits) -> "Bundle":
        raw, manifest_sha = _read_manifest(root, limits)
        manifest = Manifest.from_json(raw)
        if verify:
            identities = verify_files(root, manifest.files, manifest_sha, stamp=tmp is None)
        else:
            identities = {}
            for rel in manifest.files:
                resolve_inside(root, rel)
        return cls(root=root, source=source, manifest=manifest, verified=verify, limits=limits,
                   _identities=MappingProxyType(identities), _tmp=tmp)

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
        """Component names: ``encoder.<modality>``, ``head.<member>`` and the merged heads graph (``heads``)."""
        return [owner for owner, _ in self.manifest.graph_owners()]

    def graph_entry(self, component: str, precision: str) -> GraphEntry:
        """The graph entry of ``component`` (``encoder.image``, ``head.concat``...) at ``precision``."""
        owners = dict(self.manifest.graph_owners())
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
