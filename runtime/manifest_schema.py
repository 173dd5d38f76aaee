"""The checks of ``manifest.json``'s values (``docs/bundle.md``), run completely at ``Bundle.open``.

The manifest's dataclasses (``mmedge.runtime.manifest``) and the input specs
(``mmedge.runtime.specs``) declare one of these checks on each field (``metadata["check"]``);
``read_dataclass`` runs them. Every type, range and cross-reference is checked before anything is
built from the manifest, so a
bundle that opens cannot fail later on a value of the wrong type: the first problem is a
``BundleError`` naming its JSON path (``members[1].temperature``), what was found and what is
accepted. Unknown top-level keys are allowed (newer writers add reports); unknown keys inside an
input spec are not (they would change preprocessing).
"""
from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any, Callable, Mapping

from mmedge import BUNDLE_FORMAT, __version__
from mmedge.errors import BundleError
from mmedge.runtime.ensemble import EnsembleMethod

__all__ = ["read_dataclass", "check_format", "check_relpath", "check_spec", "check_sha256", "SchemaError", "TASKS",
           "DTYPES", "METHODS", "ranged", "choice", "number", "numbers", "boolean", "obj", "string", "optional_string",
           "strings", "tuple_of", "mapping", "dim", "key_path"]

TASKS = ("classification", "matching", "retrieval")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
METHODS = tuple(m.value for m in EnsembleMethod)  # weighted_mean, soft_vote, majority_vote, stacking
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


def dim(value: Any, path: str) -> Any:
    """A tensor dimension: an int, a named dynamic axis, or null."""
    if value is None or (isinstance(value, str) and value):
        return value
    return _integer(value, path, 0, 2**31 - 1)


def check_sha256(value: Any, path: str) -> str:
    """A sha256 as 64 lowercase hex digits."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise SchemaError(path, f"must be a sha256 as 64 lowercase hex digits, got {_show(value)}")
    return value


def optional_string(value: Any, path: str) -> str | None:
    """A non-empty string, or null."""
    return None if value is None else _string(value, path)


def strings(*, choices: tuple[str, ...] | None = None, min_len: int = 0) -> Callable[[Any, str], tuple[str, ...]]:
    """A check of a list of distinct non-empty strings (of ``choices``, at least ``min_len``)."""
    return lambda v, p: tuple(_unique_strings(v, p, choices=choices, min_len=min_len))


def tuple_of(check: Callable[[Any, str], Any], *, min_len: int = 0) -> Callable[[Any, str], tuple]:
    """A check of a JSON list whose items each pass ``check``."""
    return lambda v, p: tuple(check(x, f"{p}[{i}]") for i, x in enumerate(_lst(v, p, min_len=min_len)))


def mapping(check: Callable[[Any, str], Any], *, key: Callable[[Any, str], Any] | None = None
            ) -> Callable[[Any, str], Mapping[str, Any]]:
    """A check of a JSON object whose values each pass ``check`` (and keys ``key``)."""
    def read(value: Any, path: str) -> Mapping[str, Any]:
        items = _obj(value, path).items()
        return MappingProxyType({(key(k, _key(path, k)) if key else k): check(v, _key(path, k)) for k, v in items})
    return read


def read_dataclass(cls: type, value: Any, path: str) -> Any:
    """Builds manifest dataclass ``cls`` from a JSON object: each field's ``metadata["check"]``
    checks and converts its value, fields without a default are required, unknown keys are
    ignored (a newer writer's), and ``problems()`` (when the class has it) must be empty.

    Raises:
        SchemaError: the first problem, at its JSON path.
    """
    import dataclasses

    checked = [f for f in dataclasses.fields(cls) if "check" in f.metadata]
    missing = (dataclasses.MISSING,)
    required = tuple(f.name for f in checked if f.default in missing and f.default_factory in missing)
    given = _fields(value, path, {f.name: f.metadata["check"] for f in checked}, required=required)
    built = cls(**given)
    for rel, what in getattr(built, "problems", lambda: [])():  # rel: a JSON path below ``path``
        raise SchemaError(rel if not path else f"{path}{rel}" if rel.startswith("[") else f"{path}.{rel}", what)
    return built


# The checks manifest and spec dataclasses declare on their fields (``metadata["check"]``).
ranged, choice, numbers, boolean, obj, string, key_path = _ranged, _choice, _numbers, _boolean, _obj, _string, _key
