"""Where an export or a quantization failed: the user's module path and the op.

The dynamo exporter records, on every ONNX node, the module scopes it came from
(``pkg.torch.onnx.name_scopes``); a torch program records ``nn_module_stack``. A failure
message that names a node (ONNX Runtime, NNCF) or an FX node (the ONNX translator) is mapped
back to ``module 'backbone.3' (mypkg.Block), op Foo``: what a user can act on.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Sequence

__all__ = ["graph_failure", "export_failure", "node_origin", "clean_path"]

_WRAPPERS = ("enc", "head")  # the export wrappers' attributes (onnx_export.EncoderGraph / HeadGraph)
_ADAPTERS = ("module",)  # mmedge.user_modules' attribute holding the user's module
_FX_NODE = re.compile(r"translating node %(\w+)")
_ATEN = re.compile(r"aten[.:]+(\w+)")


def clean_path(path: str) -> str:
    """``enc.module.backbone.3`` -> ``backbone.3``: the path inside the user's own module."""
    parts = [p for p in re.sub(r"^L\['self'\]\.?", "", path).split(".") if p]
    if parts and parts[0] in _WRAPPERS:
        parts = parts[1:]
    if parts and parts[0] in _ADAPTERS:
        parts = parts[1:]
    return ".".join(parts) or "<root>"


def _meta(node: Any, key: str) -> list[str]:
    raw = next((p.value for p in node.metadata_props if p.key == key), "")
    try:
        value = ast.literal_eval(raw) if raw else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def node_origin(node: Any) -> dict[str, str]:
    """``{"node", "op", "module", "class"}`` of an ONNX node of a dynamo export."""
    scopes, classes = _meta(node, "pkg.torch.onnx.name_scopes"), _meta(node, "pkg.torch.onnx.class_hierarchy")
    return {"node": node.name, "op": node.op_type, "module": clean_path(scopes[-2]) if len(scopes) >= 2 else "<root>",
            "class": classes[-2] if len(classes) >= 2 else ""}


def _messages(err: BaseException) -> str:
    texts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        texts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(texts)


def graph_failure(onnx_path: str | Path, err: BaseException) -> dict[str, str]:
    """The failure of a reduced precision built from ``onnx_path`` (its fp32 graph), located.

    Returns:
        ``{"error", "node", "op", "module", "class"}``: the node named in the error message
        (the longest fp32 node name found in it), or only ``error`` when none is named.
    """
    import onnx

    text = _messages(err)
    found = {"error": f"{type(err).__name__}: {str(err)[:400]}"}
    model = onnx.load(str(onnx_path), load_external_data=False)
    for node in sorted(model.graph.node, key=lambda n: -len(n.name)):
        if node.name and re.search(rf"(?<![\w]){re.escape(node.name)}(?![0-9])", text):
            return {**found, **node_origin(node)}
    return found


def export_failure(module: Any, args: Sequence[Any], err: BaseException) -> str:
    """``module 'odd' (pkg.Odd) uses aten._linalg_eigh``, for a failed torch -> ONNX export.

    Re-traces ``module`` with ``torch.export`` (only after a failure) and maps the FX node the
    ONNX translator names in ``err`` to its ``nn_module_stack``. Empty when it cannot tell.
    """
    import torch

    text = _messages(err)
    wanted = _FX_NODE.search(text)
    op = _ATEN.search(text)
    try:
        program = torch.export.export(module, tuple(args), strict=False).run_decompositions()
    except Exception as trace_err:  # noqa: BLE001 - torch.export's own message says where it stopped
        return f"torch.export cannot trace it: {str(trace_err).splitlines()[0][:300]}"
    for node in program.graph.nodes:
        hit = (wanted and node.name == wanted.group(1)) or (not wanted and op and op.group(1) in str(node.target))
        if hit:
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            path, cls = stack[-1] if stack else ("", "")
            return f"module {clean_path(str(path))!r} ({cls}) uses {node.target}"
    return f"op {op.group(1)}" if op else ""
