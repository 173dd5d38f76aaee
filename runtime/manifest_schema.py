"""The one schema of ``manifest.json`` (``docs/bundle.md``), checked completely at ``Bundle.open``.

Every type, range and cross-reference is checked before anything is built from the manifest, so a
bundle that opens cannot fail later on a value of the wrong type: the first problem is a
``BundleError`` naming its JSON path (``members[1].temperature``), what was found and what is
accepted. Unknown top-level keys are allowed (newer writers add reports); unknown keys inside an
input spec are not (they would change preprocessing).
"""
from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping

from mmedge import BUNDLE_FORMAT, __version__
from mmedge.errors import BundleError

__all__ = ["validate_manifest", "check_format", "check_relpath", "check_spec", "SchemaError", "TASKS", "DTYPES",
           "ranged", "choice", "number", "numbers", "boolean"]

TASKS = ("classification", "matching", "retrieval")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
METHODS = ("weighted_mean", "soft_vote", "majority_vote")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FORMAT = re.compile(r"mmedge\.bundle/(\d+)")
_FIX = "re-export the bundle with mmedge export, or re-copy it"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_+-]*")


class SchemaError(BundleError):
    """A manifest value of the wrong type or range; ``path`` is its JSON path."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"invalid bundle manifest at {path or '(root)'}: {what}; {_FIX}")
        self.path = path


def _key(path: str, key: Any) -> str:
    text = str(key)
    name = text if _IDENT.fullmatch(text) else f'["{text}"]'
    return name if not path else (f"{path}{name}" if name.startswith("[") else f"{path}.{name}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- typed readers ---------------------------------------------------------------------------


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaError(path, f"must be a JSON object, got {type(value).__name__} {_show(value)}")
    return value


def _lst(value: Any, path: str, *, min_len: int = 0, length: int | None = None) -> list:
    if not isinstance(value, list):
        raise SchemaError(path, f"must be a JSON list, got {type(value).__name__} {_show(value)}")
    if length is not None and len(value) != length:
        raise SchemaError(path, f"must hold {length} values, got {len(value)}")
    if len(value) < min_len:
        raise SchemaError(path, f"must hold at least {min_len} value(s), got {len(value)}")
    return value


def _string(value: Any, path: str, *, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise SchemaError(path, f"must be a non-empty string, got {_show(value)}")
    if choices is not None and value not in choices:
        raise SchemaError(path, f"must be one of {list(choices)}, got {_show(value)}")
    return value


def _integer(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SchemaError(path, f"must be an integer in [{lo}, {hi}], got {_show(value)}")
    return value


def _number(value: Any, path: str, lo: float, hi: float = math.inf, *, lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or value > hi or (lo_open and value == lo):
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        bound += f" and <= {hi:g}" if math.isfinite(hi) else ""
        raise SchemaError(path, f"must be a finite number {bound}, got {_show(value)}")
    return float(value)


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SchemaError(path, f"must be true or false, got {_show(value)}")
    return value


def _unique_strings(value: Any, path: str, *, choices: tuple[str, ...] | None = None, min_len: int = 0) -> list[str]:
    items = [_string(v, f"{path}[{i}]", choices=choices) for i, v in enumerate(_lst(value, path, min_len=min_len))]
    if len(set(items)) != len(items):
        raise SchemaError(path, f"must not repeat a value, got {_show(items)}")
    return items


def check_relpath(value: Any, path: str) -> str:
    """A relative POSIX path inside the bundle: no ``..``, no absolute path, no backslash, no NUL."""
    rel = _string(value, path)
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or "\x00" in rel or re.match(r"[A-Za-z]:", rel):
        raise SchemaError(path, f"must be a relative path inside the bundle (no '..', '/', '\\\\' or drive), "
                                f"got {_show(rel)}")
    return rel


def _fields(value: Any, path: str, spec: Mapping[str, Callable[[Any, str], Any]], *, required: tuple[str, ...] = (),
            closed: bool = False) -> dict[str, Any]:
    data = _obj(value, path)
    for key in required:
        if key not in data:
            raise SchemaError(path, f"lacks the required key {key!r}")
    if closed:
        unknown = sorted(set(data) - set(spec))
        if unknown:
            raise SchemaError(_key(path, unknown[0]), f"is not a known key here; valid keys: {sorted(spec)}")
    return {k: check(data[k], _key(path, k)) for k, check in spec.items() if k in data}


# -- sections --------------------------------------------------------------------------------


def check_format(manifest: Any) -> None:
    """The format first: a newer bundle names the mmedge version that wrote it."""
    data = _obj(manifest, "")
    fmt = data.get("format")
    if fmt == BUNDLE_FORMAT:
        return
    match = _FORMAT.fullmatch(fmt) if isinstance(fmt, str) else None
    if match and int(match.group(1)) > int(_FORMAT.fullmatch(BUNDLE_FORMAT).group(1)):
        versions = data.get("versions") if isinstance(data.get("versions"), Mapping) else {}
        writer = versions.get("mmedge")
        known = isinstance(writer, str) and writer != __version__ and re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", writer)
        need = f"mmedge>={writer}" if known else "a newer mmedge"
        raise BundleError(f"this bundle has format {fmt!r}, written by {need.replace('>=', ' ')}; this runtime "
                          f"(mmedge {__version__}) reads {BUNDLE_FORMAT!r}. Install {need} "
                          f"(pip install -U '{need if known else 'mmedge'}'), or re-export the bundle with "
                          f"mmedge {__version__}")
    raise BundleError(f"bundle format {_show(fmt)} is not supported: this runtime reads {BUNDLE_FORMAT!r}; "
                      "re-export the bundle with mmedge export, or install the mmedge version that reads it")


def _numbers(lo: float, hi: float, *, length: int, lo_open: bool = False) -> Callable[[Any, str], list[float]]:
    return lambda v, p: [_number(x, f"{p}[{i}]", lo, hi, lo_open=lo_open) for i, x in enumerate(_lst(v, p, length=length))]


def _ranged(lo: int, hi: int) -> Callable[[Any, str], int]:
    return lambda v, p: _integer(v, p, lo, hi)


def _choice(*choices: str) -> Callable[[Any, str], str]:
    return lambda v, p: _string(v, p, choices=choices)


def number(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Callable[[Any, str], float]:
    """A check of a finite number in [lo, hi] (``lo_open``: > lo)."""
    return lambda v, p: _number(v, p, lo, hi, lo_open=lo_open)


# The checks spec classes declare on their fields (``mmedge.runtime.specs``: ``metadata["check"]``).
ranged, choice, numbers, boolean = _ranged, _choice, _numbers, _boolean


def check_spec(cls: type, value: Any, path: str) -> dict[str, Any]:
    """An input spec (``inputs.<modality>``) against its spec class: each field's own check, the fields
    without a default required, no unknown key, and the values that must fit together (``problems()``).

    Raises:
        SchemaError: the first problem, at its JSON path.
    """
    import dataclasses

    from mmedge.runtime.specs import required_fields, spec_from_dict

    checks = {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}
    given = _fields(value, path, checks, required=required_fields(cls), closed=True)
    for key, what in getattr(spec_from_dict(cls, given), "problems", lambda: [])():
        raise SchemaError(_key(path, key), what)
    return given


def _dim(value: Any, path: str) -> Any:
    if value is None or (isinstance(value, str) and value):
        return value
    return _integer(value, path, 0, 2**31 - 1)


def _tensors(value: Any, path: str) -> list[dict[str, Any]]:
    spec = {"name": _string, "dtype": _choice(*DTYPES),
            "shape": lambda v, p: [_dim(d, f"{p}[{i}]") for i, d in enumerate(_lst(v, p))]}
    return [_fields(t, f"{path}[{i}]", spec, required=("name",)) for i, t in enumerate(_lst(value, path, min_len=1))]


def _graph(value: Any, path: str) -> dict[str, Any]:
    spec = {"file": check_relpath, "bytes": _ranged(0, 2**62), "status": _string,
            "sha256": lambda v, p: _sha256(v, p), "ort_disabled_optimizers": _unique_strings}
    entry = _fields(value, path, spec)
    if entry.get("status", "ok") == "ok":
        for key in ("file", "sha256"):
            if key not in entry:
                raise SchemaError(path, f"has status 'ok' but no {key!r}")
    return entry


def _sha256(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise SchemaError(path, f"must be a sha256 as 64 lowercase hex digits, got {_show(value)}")
    return value


def _graphs(value: Any, path: str) -> dict[str, dict[str, Any]]:
    graphs = _obj(value, path)
    if not graphs:
        raise SchemaError(path, "must map at least one precision to {file, sha256, status}")
    return {p: _graph(g, _key(path, p)) for p, g in graphs.items()}


_ENCODER = {"name": _string, "inputs": _tensors, "outputs": _tensors, "graphs": _graphs}


def _encoders(value: Any, modalities: list[str]) -> dict[str, dict[str, Any]]:
    raw = _obj(value, "encoders")
    out, seen = {}, {}
    for m in modalities:
        if m not in raw:
            raise SchemaError("encoders", f"lacks an encoder for modality {m!r}")
        out[m] = _fields(raw[m], f"encoders.{m}", _ENCODER, required=("inputs", "outputs", "graphs"))
        for i, t in enumerate(out[m]["outputs"]):
            if seen.setdefault(t["name"], m) != m:
                raise SchemaError(f"encoders.{m}.outputs[{i}].name", f"{t['name']!r} is also an output of the "
                                                                     f"{seen[t['name']]} encoder")
    return out


def _member(value: Any, path: str, encoders: Mapping[str, Any]) -> dict[str, Any]:
    spec = {"name": _string, "head": _string, "modalities": lambda v, p: _unique_strings(v, p, min_len=1),
            "inputs": lambda v, p: _unique_strings(v, p, min_len=1), "output": _string,
            "temperature": lambda v, p: _number(v, p, 0.0, 1e6, lo_open=True),
            "weight": lambda v, p: _number(v, p, 0.0, 1e6), "graphs": _graphs}
    member = _fields(value, path, spec, required=("name", "modalities", "inputs", "graphs"))
    for j, m in enumerate(member["modalities"]):
        if m not in encoders:
            raise SchemaError(f"{path}.modalities[{j}]", f"{m!r} is not a modality of this bundle "
                                                         f"({list(encoders)}), so this member could never run")
    features = {t["name"] for m in member["modalities"] for t in encoders[m]["outputs"]}
    for j, name in enumerate(member["inputs"]):
        if name not in features:
            raise SchemaError(f"{path}.inputs[{j}]", f"{name!r} is not an output of the encoders of this member's "
                                                     f"modalities {member['modalities']} (they give {sorted(features)})")
    return member


def _members(value: Any, encoders: Mapping[str, Any]) -> list[dict[str, Any]]:
    members = [_member(m, f"members[{i}]", encoders) for i, m in enumerate(_lst(value, "members", min_len=1))]
    names = [m["name"] for m in members]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SchemaError(f"members[{i}].name", f"{name!r} is the name of an earlier member; names must be unique")
    return members


def _ensemble(value: Any, members: list[dict[str, Any]]) -> dict[str, Any]:
    k = len(members)
    spec = {"method": _choice(*METHODS), "weights": _numbers(0.0, 1e6, length=k),
            "temperatures": _numbers(0.0, 1e6, length=k, lo_open=True)}
    ensemble = _fields(value, "ensemble", spec, required=("method",))
    weights = ensemble.get("weights") or [m.get("weight", 1.0) for m in members]
    if sum(weights) <= 0:
        raise SchemaError("ensemble.weights", f"must not all be 0, got {weights}")
    return ensemble


def _files(value: Any) -> dict[str, str]:
    files = _obj(value, "files")
    return {check_relpath(rel, _key("files", rel)): _sha256(sha, _key("files", rel)) for rel, sha in files.items()}


def _listed(manifest: Mapping[str, Any], files: Mapping[str, str]) -> None:
    """Every graph with status ok, and the tokenizer, are in ``files`` with the same sha256."""
    owners = [(f"encoders.{m}", e) for m, e in manifest["encoders"].items()]
    owners += [(f"members[{i}]", m) for i, m in enumerate(manifest["members"])]
    for where, owner in owners:
        for p, g in owner["graphs"].items():
            if g.get("status", "ok") == "ok" and files.get(g["file"]) != g["sha256"]:
                raise SchemaError(_key(f"{where}.graphs", p), f"file {g['file']!r} is not listed in files with "
                                                               "the same sha256")
    from mmedge.runtime.modalities import get_modality
    from mmedge.runtime.specs import spec_files

    for m, raw in manifest["inputs"].items():
        for key, rel in spec_files(get_modality(m).spec_class, raw).items():
            if rel not in files:
                raise SchemaError(f"inputs.{m}.{key}", f"{rel!r} is not listed in files")


_REQUIRED = ("format", "task", "labels", "modalities", "inputs", "encoders", "members", "ensemble",
             "precisions", "files")


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Checks a parsed ``manifest.json`` completely.

    Args:
        manifest: What ``json.loads`` returned.

    Returns:
        The checked sections (``modalities``, ``inputs``, ``encoders``, ``members``, ``ensemble``,
        ``files``...) with defaults not yet applied; every value has the documented type.

    Raises:
        BundleError: the first problem, with its JSON path (``SchemaError``), or a format this
            runtime does not read (naming the mmedge version that does).
    """
    from mmedge.runtime.modalities import get_modality, modality_names

    check_format(manifest)
    _fields(manifest, "", {}, required=_REQUIRED)
    top = {"name": _string, "task": _choice(*TASKS),
           "labels": lambda v, p: _unique_strings(v, p, min_len=2),
           "modalities": lambda v, p: _unique_strings(v, p, choices=modality_names(), min_len=1),
           "precisions": lambda v, p: {k: _string(s, _key(p, k)) for k, s in _obj(v, p).items()},
           "versions": _obj, "metrics": _obj}
    out = _fields(manifest, "", top)
    modalities = out["modalities"]
    out["optional_modalities"] = _unique_strings(manifest.get("optional_modalities", []), "optional_modalities",
                                                choices=tuple(modalities))
    inputs = _obj(manifest["inputs"], "inputs")
    for m in modalities:
        if m not in inputs:
            raise SchemaError("inputs", f"lacks the preprocessing spec of modality {m!r}")
    out["inputs"] = {m: check_spec(get_modality(m).spec_class, inputs[m], f"inputs.{m}") for m in modalities}
    out["encoders"] = _encoders(manifest["encoders"], modalities)
    out["members"] = _members(manifest["members"], out["encoders"])
    out["ensemble"] = _ensemble(manifest["ensemble"], out["members"])
    out["files"] = _files(manifest["files"])
    _listed({**manifest, **out}, out["files"])
    return out
