"""A minimal writer of protobuf text format, for Triton's ``config.pbtxt``.

Nested dicts become messages, lists become repeated fields, ``Enum("TYPE_FP32")`` an enum
value (unquoted), strings are quoted. Map fields (``parameters``) are lists of
``{"key": ..., "value": {...}}`` messages, as text format writes maps. The tests parse every
file written with ``tritonclient``'s ``ModelConfig`` proto (``google.protobuf.text_format``).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["Enum", "to_pbtxt", "tensor", "string_parameters"]


class Enum(str):
    """An enum value, written unquoted."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)  # JSON's escapes are valid text-format escapes
    raise TypeError(f"cannot write {type(value).__name__} to pbtxt")


def _field(name: str, value: Any, indent: str) -> list[str]:
    if isinstance(value, Mapping):
        return [f"{indent}{name} {{", *_message(value, indent + "  "), f"{indent}}}"]
    if isinstance(value, (list, tuple)) and value and all(not isinstance(v, Mapping) for v in value):
        return [f"{indent}{name}: [{', '.join(_scalar(v) for v in value)}]"]
    if isinstance(value, (list, tuple)):
        return [line for item in value for line in _field(name, item, indent)]
    return [f"{indent}{name}: {_scalar(value)}"]


def _message(fields: Mapping[str, Any], indent: str) -> list[str]:
    return [line for name, value in fields.items() if value is not None for line in _field(name, value, indent)]


def to_pbtxt(config: Mapping[str, Any]) -> str:
    """The text-format rendering of ``config`` (fields in the dict's order; ``None`` values skipped)."""
    return "\n".join(_message(config, "")) + "\n"


def tensor(name: str, data_type: str, dims: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """A ``ModelInput`` / ``ModelOutput`` message: ``data_type`` without the ``TYPE_`` prefix (``FP32``)."""
    return {"name": name, "data_type": Enum(f"TYPE_{'STRING' if data_type == 'BYTES' else data_type}"),
            "dims": list(dims)}


def string_parameters(values: Mapping[str, str]) -> list[dict[str, Any]]:
    """The ``parameters`` map of a model config, all values as ``string_value``."""
    return [{"key": key, "value": {"string_value": str(value)}} for key, value in values.items()]
