"""PyTorch -> ONNX for encoders and fusion heads, with dynamic batch / tokens / frames.

Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``). Every export is
verified in ONNX Runtime against PyTorch at the example and at a different batch and
sequence length; a dynamic axis that does not really work is made static and recorded.
The legacy TorchScript exporter is a fallback, accepted only when parity passes.
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import ExportError, ParityError
from mmedge.export.parity import check_parity, require_parity, torch_fn

# input name -> {axis: dim name}; batch (axis 0) is added for every input.
SEQUENCE_AXES: dict[str, dict[int, str]] = {
    "input_ids": {1: "tokens"}, "attention_mask": {1: "tokens"},
    "text_seq": {1: "tokens"}, "text_mask": {1: "tokens"},
    "mel": {3: "frames"}, "audio_seq": {1: "audio_steps"}, "audio_mask": {1: "audio_steps"},
}
# Output dims computed from an input dim (the audio CNN pools frames /16) get these labels.
DERIVED_DIMS = {"frames": "audio_steps", "tokens": "tokens", "batch": "batch"}
LEGACY_OPSET = 17
_FOLD_LIMIT = 1 << 22  # elements: any weight of a fusion head


@dataclass(frozen=True)
class GraphInfo:
    """What an exported graph takes and gives (written into the bundle manifest).

    Attributes:
        file: Path of the ``.onnx`` file.
        inputs: ``[{name, dtype, shape}]``; dynamic dims are strings ("batch", "tokens", "frames").
        outputs: Same for the outputs.
        opset: Default-domain opset of the graph.
        exporter: "dynamo" or "legacy".
        notes: What was decided during export (e.g. an axis kept static, and why).
    """

    file: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    opset: int
    exporter: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _wrap_encoder(enc: Any) -> Any:
    import torch

    class EncoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = enc

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.enc(*inputs))

    return EncoderGraph().eval()


def head_forward(head: Any) -> Any:
    """A torch module calling ``head`` with positional tensors in ``head.input_names()`` order."""
    import torch

    names = tuple(head.input_names())

    class HeadGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.head(dict(zip(names, inputs)))  # (B, C)

    return HeadGraph().eval()


def export_encoder(enc: Any, path: str | Path, *, example_inputs: Mapping[str, np.ndarray]) -> GraphInfo:
    """Exports an encoder to ONNX with dynamic batch (and tokens / frames where it works).

    Args:
        enc: An ``mmedge.encoders.Encoder`` (put in eval mode here).
        path: Destination ``.onnx`` file (weights embedded, no external data).
        example_inputs: ``{input_name: array}`` at batch >= 2 (batch 1 freezes the axis).

    Returns:
        The graph's ``GraphInfo``.
    """
    enc.eval()
    return _export(_wrap_encoder(enc), Path(path), tuple(enc.input_names), tuple(enc.output_names()), example_inputs)


def export_head(head: Any, path: str | Path, *, example_feats: Mapping[str, np.ndarray]) -> GraphInfo:
    """Exports a fusion head; inputs are ``head.input_names()``, the output is ``"logits"``.

    Args:
        head: An ``mmedge.fusion.FusionHead`` (put in eval mode here).
        path: Destination ``.onnx`` file.
        example_feats: ``{feature_name: array}`` at batch >= 2.

    Returns:
        The graph's ``GraphInfo``.
    """
    head.eval()
    return _export(head_forward(head), Path(path), tuple(head.input_names()), ("logits",), example_feats,
                   fold_weights=True)


def _export(module: Any, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...],
            example: Mapping[str, np.ndarray], *, fold_weights: bool = False) -> GraphInfo:
    _check_example(path.name, inputs, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch", **SEQUENCE_AXES.get(n, {})} for n in inputs}
    notes: list[str] = []
    fn = torch_fn(module, inputs, outputs)
    try:
        exporter = _export_verified(module, path, inputs, outputs, example, axes, fn, "dynamo", notes, fold_weights)
    except Exception as err:  # noqa: BLE001 - any dynamo failure leads to the legacy fallback
        notes.append(f"dynamo exporter failed ({type(err).__name__}: {str(err)[:200]}); used the legacy exporter")
        warnings.warn(f"{path.name}: {notes[-1]}", stacklevel=3)
        try:
            exporter = _export_verified(module, path, inputs, outputs, example, axes, fn, "legacy", notes, fold_weights)
        except ParityError:
            raise
        except Exception as legacy:  # noqa: BLE001 - both exporters failed: say where
            raise _unexportable(path, module, inputs, example, err, legacy) from legacy
    return graph_info(path, exporter=exporter, notes=notes)


def _unexportable(path: Path, module: Any, inputs: tuple[str, ...], example: Mapping[str, np.ndarray],
                  dynamo: Exception, legacy: Exception) -> ExportError:
    import torch

    from mmedge.export.diagnose import export_failure

    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in inputs)
    where = export_failure(module, args, dynamo) or "the failing op is not named in the errors"
    return ExportError(f"{path.name}: cannot be exported to ONNX: {where}. dynamo exporter: "
                       f"{_first_line(dynamo)}; legacy exporter: {_first_line(legacy)}. Replace that op with ones "
                       "ONNX has (or compute it outside the model), then export again")


def _first_line(err: Exception) -> str:
    """The telling line of an exporter error: the dynamo exporter's exception summary, else the first."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines() if line.strip()]
    summary = next((line for line in lines if line.startswith("<class")), lines[0] if lines else "")
    return f"{type(err).__name__}: {summary[:240]}"


def _export_verified(module: Any, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...],
                     example: Mapping[str, np.ndarray], axes: dict[str, dict[int, str]], fn: Any,
                     exporter: str, notes: list[str], fold_weights: bool = False) -> str:
    """Exports, then checks parity at the example and with every dynamic axis changed.

    A non-batch axis whose check fails is made static (noted); a batch failure raises.
    ``fold_weights``: see ``fold_weight_math`` (the parity checks run on the folded graph).
    """
    def export(axes: dict[str, dict[int, str]]) -> None:
        _run_exporter(exporter, module, path, inputs, outputs, example, axes)
        if fold_weights:
            try:
                fold_weight_math(path)
            except Exception as err:  # noqa: BLE001 - the optimizer's own failure: the graph stays as exported
                notes.append(f"weight-only math left unfolded ({type(err).__name__}: {str(err)[:160]})")

    export(axes)
    for dim in sorted({d for a in axes.values() for d in a.values()}):
        cases = [vary_axis(example, axes, dim, size) for size in _probe_sizes(example, axes, dim)]
        # sizes the model itself refuses (a text over its max positions) are not probed
        cases = [c for c in cases if _reference_runs(fn, c)] or cases
        try:
            require_parity(check_parity(fn, path, cases, atol=1e-4))
        except Exception as err:  # noqa: BLE001 - ORT shape errors as well as ParityError
            if dim == "batch":
                raise ParityError(f"{path.name}: dynamic batch does not work with the {exporter} exporter: {err}") from err
            notes.append(f"dynamic '{dim}' failed in ONNX Runtime ({str(err)[:160]}); kept static")
            axes = {n: {a: d for a, d in ax.items() if d != dim} for n, ax in axes.items()}
            export(axes)
    require_parity(check_parity(fn, path, [dict(example)], atol=1e-4))
    return exporter


def fold_weight_math(path: Path) -> None:
    """Folds what a graph computes from its weights alone (cross-attention's ``Wq Wk^T``) into
    initializers, whatever their size. The dynamo exporter's own folding stops at 8192-element
    inputs, which would leave such products to every load and hide the folded weight from the
    quantizers, which look for constant MatMul weights. For heads (small weights) only."""
    import onnx
    import onnxscript.optimizer

    model = onnxscript.optimizer.optimize(onnx.load(str(path)), input_size_limit=_FOLD_LIMIT,
                                          output_size_limit=_FOLD_LIMIT)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _reference_runs(fn: Any, case: Mapping[str, np.ndarray]) -> bool:
    """Whether the PyTorch module runs on ``case`` (a text longer than the model's positions does not)."""
    try:
        fn(case)
        return True
    except Exception:  # noqa: BLE001 - the module's own refusal of that size
        return False


def _run_exporter(exporter: str, module: Any, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...],
                  example: Mapping[str, np.ndarray], axes: dict[str, dict[int, str]]) -> None:
    import onnx
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in inputs)
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # silences "torchvision is not installed" notices
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                dims = {d: torch.export.Dim(d) for a in axes.values() for d in a.values()}
                shapes = tuple({ax: dims[d] for ax, d in axes[n].items()} for n in inputs)
                torch.onnx.export(module, args, str(path), dynamo=True, dynamic_shapes=(shapes,), external_data=False,
                                  input_names=list(inputs), output_names=list(outputs), verbose=False)
            else:
                torch.onnx.export(module, args, str(path), dynamo=False, opset_version=LEGACY_OPSET,
                                  input_names=list(inputs), output_names=list(outputs),
                                  dynamic_axes={**axes, **{o: {0: "batch"} for o in outputs}})
    finally:
        logger.setLevel(level)
    onnx.checker.check_model(str(path))


def _probe_sizes(example: Mapping[str, np.ndarray], axes: dict[str, dict[int, str]], dim: str) -> list[int]:
    """Two sizes that differ from the example's for ``dim`` (batch: 1 and 3)."""
    if dim == "batch":
        return [1, 3]
    n = next(example[k].shape[a] for k, ax in axes.items() for a, d in ax.items() if d == dim and k in example)
    return [max(1, n // 2), n + max(1, n // 2)] if dim != "frames" else [n + 16, n * 2]  # frames: >= 16


def vary_axis(example: Mapping[str, np.ndarray], axes: Mapping[str, Mapping[int, str]], dim: str, size: int) -> dict[str, np.ndarray]:
    """A copy of ``example`` with every axis named ``dim`` resized to ``size`` (tiled / cut)."""
    out = {}
    for name, arr in example.items():
        for axis, d in axes.get(name, {}).items():
            if d == dim:
                arr = resize_axis(arr, axis, size)
        out[name] = arr
    return out


def resize_axis(arr: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Tiles ``arr`` along ``axis`` as needed and cuts it to ``size``."""
    reps = [1] * arr.ndim
    reps[axis] = -(-size // arr.shape[axis])
    return np.ascontiguousarray(np.take(np.tile(arr, reps), np.arange(size), axis=axis))


def _check_example(graph: str, inputs: Sequence[str], example: Mapping[str, np.ndarray]) -> None:
    missing = [n for n in inputs if n not in example]
    if missing:
        raise ExportError(f"{graph}: example inputs lack {missing}; pass one array per input name {list(inputs)}")
    small = [n for n in inputs if np.asarray(example[n]).shape[0] < 2]
    if small:
        raise ExportError(f"{graph}: example inputs {small} have batch < 2; use batch >= 2 or the exporter "
                          "freezes the batch axis")


def _dims(value_info: Any) -> list[int | str]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        name = d.dim_param
        if name and not name.isidentifier():  # e.g. "((frames - 1)//8) + 1"
            base = next((k for k in DERIVED_DIMS if k in name), "dynamic")
            name = DERIVED_DIMS.get(base, "dynamic")
        dims.append(name if name else int(d.dim_value))
    return dims


def graph_info(path: str | Path, *, exporter: str, notes: Sequence[str] = ()) -> GraphInfo:
    """Reads a graph's inputs, outputs (name, dtype, shape) and opset into a ``GraphInfo``."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(path), load_external_data=False)

    def describe(v: Any) -> dict[str, Any]:
        dtype = np.dtype(tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name
        return {"name": v.name, "dtype": dtype, "shape": _dims(v)}

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return GraphInfo(file=str(path), inputs=[describe(v) for v in model.graph.input],
                     outputs=[describe(v) for v in model.graph.output], opset=int(opset),
                     exporter=exporter, notes=list(notes))
