"""Parity between a PyTorch module and its ONNX graph, run in ONNX Runtime on CPU.

``check_parity`` measures, per output and per case, the max absolute difference and the
minimum per-row cosine (rows = batch items, features flattened). ``require_parity``
turns a broken fp32 report into a ``ParityError`` naming the graph, output, case and diff;
``check_reduced_precision`` is the looser, report-only variant for fp16 / int8 graphs.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.errors import ParityError
from mmedge.runtime.backends.ort import create_session
from mmedge.runtime.precisions import get_precision

Arrays = dict[str, np.ndarray]
ModuleFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class OutputParity:
    """Agreement of one output on one case."""

    case: str
    output: str
    shape: list[int]
    max_abs_diff: float
    min_cosine: float


@dataclass(frozen=True)
class ParityReport:
    """Per-output, per-case agreement between PyTorch and an ONNX graph (JSON-ready)."""

    graph: str
    atol: float
    results: list[OutputParity] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        """Largest absolute difference over every output and case."""
        return max((r.max_abs_diff for r in self.results), default=0.0)

    @property
    def min_cosine(self) -> float:
        """Smallest per-row cosine over every output and case."""
        return min((r.min_cosine for r in self.results), default=1.0)

    @property
    def ok(self) -> bool:
        """True when every output of every case is within ``atol``."""
        return self.max_abs_diff <= self.atol

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``parity`` entry: summary figures plus every case."""
        return {
            "graph": self.graph, "atol": self.atol, "max_abs_diff": self.max_abs_diff,
            "min_cosine": self.min_cosine, "ok": self.ok, "cases": [asdict(r) for r in self.results],
        }


def case_name(case: Mapping[str, np.ndarray]) -> str:
    """A readable case label, e.g. ``"input_ids[2x16] attention_mask[2x16]"``."""
    return " ".join(f"{k}[{'x'.join(map(str, v.shape))}]" for k, v in case.items())


def row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Minimum cosine between matching rows of ``a`` and ``b`` (batch first, rest flattened).

    Two all-zero rows count as identical (cosine 1); a zero row against a non-zero one as 0.
    """
    a64 = a.reshape(a.shape[0], -1).astype(np.float64) if a.ndim else a.reshape(1, 1).astype(np.float64)
    b64 = b.reshape(b.shape[0], -1).astype(np.float64) if b.ndim else b.reshape(1, 1).astype(np.float64)
    if a64.shape[1] == 0:
        return 1.0
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    dot = (a64 * b64).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))
    return float(cos.min()) if cos.size else 1.0


def compare_outputs(graph: str, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], case: str) -> list[OutputParity]:
    """Per-output figures of ``got`` against the reference outputs ``ref``."""
    rows = []
    for name, r in ref.items():
        g = np.asarray(got[name])
        if g.shape != r.shape:
            raise ParityError(f"{graph}: output {name!r} has shape {list(g.shape)} in ONNX Runtime but "
                              f"{list(r.shape)} in PyTorch on case {case}; re-export with the right dynamic axes")
        diff = float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
        rows.append(OutputParity(case, name, list(r.shape), diff, row_cosine(r, g)))
    return rows


def check_parity(
    module_fn: ModuleFn, onnx_path: str | Path, cases: Sequence[Mapping[str, np.ndarray]], *, atol: float = 1e-4,
    mask_padding: bool = False, precision: str | None = None,
) -> ParityReport:
    """Runs every case through PyTorch (``module_fn``) and ONNX Runtime and compares outputs.

    Args:
        module_fn: Maps ``dict[input_name, ndarray]`` to ``dict[output_name, ndarray]``
            (see ``torch_fn``); its outputs are the reference.
        onnx_path: The graph to check.
        cases: Inputs, e.g. at batch 1, 2 and 7 and two token lengths.
        atol: Tolerance recorded in the report (``require_parity`` enforces it).
        mask_padding: Zero ``{m}_seq`` positions where ``{m}_mask`` is 0 in both outputs.
        precision: The graph's bundle precision (ONNX Runtime keeps the optimizers that break
            it off, as the runtime does).

    Returns:
        A ``ParityReport`` with max abs diff and min per-row cosine per output and case.
    """
    disabled = get_precision(precision).ort_disabled_optimizers if precision else ()
    sess = create_session(onnx_path, disabled_optimizers=disabled)
    names = [o.name for o in sess.get_outputs()]
    results: list[OutputParity] = []
    for case in cases:
        ref = {k: np.asarray(v, dtype=np.float64) for k, v in module_fn(case).items()}
        got = dict(zip(names, sess.run(names, dict(case))))
        got = mask_sequences(got) if mask_padding else got
        results += compare_outputs(Path(onnx_path).name, ref, got, case_name(case))
    return ParityReport(graph=Path(onnx_path).name, atol=atol, results=results)


def require_parity(report: ParityReport, atol: float | None = None) -> ParityReport:
    """Raises ``ParityError`` on the first output whose max abs diff exceeds ``atol``.

    Args:
        report: From ``check_parity``.
        atol: Tolerance; defaults to the report's.

    Returns:
        The report, unchanged, when every output is within tolerance.
    """
    tol = report.atol if atol is None else atol
    for r in report.results:
        if not r.max_abs_diff <= tol:  # also catches NaN
            raise ParityError(
                f"{report.graph}: output {r.output!r} differs from PyTorch by {r.max_abs_diff:.3g} "
                f"(> atol {tol:g}; min row cosine {r.min_cosine:.6f}) on case {r.case}. The export is wrong: "
                "check dynamic axes (batch 1 examples freeze them) and unsupported ops, or re-export."
            )
    return report


def check_reduced_precision(
    reference: str | Path | ModuleFn, onnx_path: str | Path, cases: Sequence[Mapping[str, np.ndarray]], *,
    precision: str, min_cosine: float | None = None,
) -> dict[str, Any]:
    """Report-only comparison of an fp16 / int8 graph against fp32 (a graph or PyTorch).

    Sequence outputs are compared on valid positions only (``{m}_seq`` rows zeroed where
    ``{m}_mask`` is 0): padded positions carry no information and every head masks them.
    Emits a ``UserWarning`` (never raises) when the min row cosine falls below
    ``min_cosine`` (default: the precision record's ``min_cosine``, e.g. fp16 0.999, int8 0.95).

    Returns:
        The report dict plus ``precision``, ``min_cosine_required`` and ``within_threshold``.
    """
    ref_fn = onnx_fn(reference) if isinstance(reference, (str, Path)) else reference
    report = check_parity(_masked(ref_fn), onnx_path, cases, atol=float("inf"), mask_padding=True, precision=precision)
    threshold = get_precision(precision).min_cosine if min_cosine is None else min_cosine
    ok = report.min_cosine >= threshold
    if not ok:
        warnings.warn(f"{report.graph} ({precision}): min row cosine {report.min_cosine:.4f} vs fp32 is below "
                      f"{threshold}; check calibration data or keep sensitive layers in float", stacklevel=2)
    return {**report.to_dict(), "precision": precision, "min_cosine_required": threshold, "within_threshold": ok}


def mask_sequences(outputs: Mapping[str, np.ndarray]) -> Arrays:
    """Zeroes padded positions of every ``{m}_seq`` (B, N, D) using ``{m}_mask`` (B, N)."""
    out = dict(outputs)
    for name, seq in outputs.items():
        mask = outputs.get(name[: -len("_seq")] + "_mask") if name.endswith("_seq") else None
        if mask is not None and mask.shape == seq.shape[:2]:
            out[name] = seq * (mask[:, :, None] > 0.5)
    return out


def _masked(fn: ModuleFn) -> ModuleFn:
    return lambda case: mask_sequences(fn(case))


def onnx_fn(onnx_path: str | Path | bytes, disabled_optimizers: Sequence[str] = ()) -> ModuleFn:
    """A ``ModuleFn`` that runs an ONNX graph (a file or a serialized model) in ONNX Runtime, with
    ``disabled_optimizers`` off."""
    sess = create_session(onnx_path, disabled_optimizers=disabled_optimizers)
    names = [o.name for o in sess.get_outputs()]
    return lambda case: dict(zip(names, sess.run(names, dict(case))))


def torch_fn(module: Any, input_names: Sequence[str], output_names: Sequence[str]) -> ModuleFn:
    """A ``ModuleFn`` over a torch module called with positional inputs in ``input_names`` order.

    Fusion heads take one dict; pass ``head_forward(head)`` (from ``onnx_export``) as module.
    """
    import torch

    def run(case: Mapping[str, np.ndarray]) -> Arrays:
        with torch.inference_mode():
            outs = module(*[torch.from_numpy(np.ascontiguousarray(case[n])) for n in input_names])
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return {n: o.detach().float().numpy() for n, o in zip(output_names, outs)}

    return run
