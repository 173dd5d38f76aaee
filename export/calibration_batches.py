"""Calibration batches: the one protocol every int8 precision is calibrated with (NNCF).

TensorRT gets INT8 from the explicit Q/DQ graphs built from it, never from a calibrator.

A calibration set is an iterable of ``dict[input_name, ndarray]`` batches matching a
graph's inputs. ``calibration_batches`` builds them from per-sample dicts;
``check_calibration`` validates them against a graph's declared inputs (``GraphInfo.inputs``)
before any quantizer sees them. The default set's files live in ``calibration_data/``.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from mmedge.errors import CalibrationError

MIN_SAMPLES = 64


def calibration_batches(
    samples: Iterable[Mapping[str, np.ndarray]], input_names: Sequence[str], *, batch: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Stacks per-sample dicts into batches holding exactly ``input_names``.

    Args:
        samples: One dict per sample, arrays without the batch axis (e.g. ``pixel_values``
            (3, S, S), ``input_ids`` (L,)); keys other than ``input_names`` are dropped, so
            a dict of all encoder features can feed a head that reads a few of them.
        input_names: The graph's inputs, e.g. ``enc.input_names`` or ``head.input_names()``.
        batch: Samples per batch (the last batch may be smaller).

    Yields:
        ``dict[input_name, ndarray]`` with a leading batch axis.

    Raises:
        CalibrationError: A sample lacks an input, or samples disagree in shape or dtype.
    """
    if batch < 1:
        raise CalibrationError(f"batch must be >= 1, got {batch}")
    pending: list[Mapping[str, np.ndarray]] = []
    for index, sample in enumerate(samples):
        missing = [n for n in input_names if n not in sample]
        if missing:
            raise CalibrationError(f"calibration sample {index} lacks inputs {missing} (has {sorted(sample)}); "
                                   f"every sample needs {list(input_names)}")
        pending.append(sample)
        if len(pending) == batch:
            yield _stack(pending, input_names, index)
            pending = []
    if pending:
        yield _stack(pending, input_names, -1)


def _stack(samples: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], index: int) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        arrays = [np.asarray(s[name]) for s in samples]
        if len({(a.shape, a.dtype) for a in arrays}) > 1:
            found = sorted({f"{a.dtype}{list(a.shape)}" for a in arrays})
            raise CalibrationError(f"calibration samples up to #{index} disagree on input {name!r}: {found}; "
                                   "pad or resize them to one shape and dtype (or use batch=1)")
        out[name] = np.ascontiguousarray(np.stack(arrays))
    return out


def check_calibration(
    batches: Iterable[Mapping[str, np.ndarray]], expected_inputs: Sequence[Mapping[str, Any]], *,
    min_samples: int = MIN_SAMPLES,
) -> list[dict[str, np.ndarray]]:
    """Validates calibration batches against a graph's inputs.

    Args:
        batches: ``dict[input_name, ndarray]`` batches.
        expected_inputs: ``[{name, dtype, shape}]`` as in ``GraphInfo.inputs``; string dims
            ("batch", "tokens", "frames") are dynamic, int dims must match exactly.
        min_samples: Fewer samples in total than this emits a ``UserWarning``.

    Returns:
        The batches as a list (an iterator is consumed once).

    Raises:
        CalibrationError: No batches, or a batch with a missing / extra input, a wrong
            dtype, rank or static dim; the message names the batch, input and the fix.
    """
    spec = {str(e["name"]): e for e in expected_inputs}
    out = [dict(b) for b in batches]
    if not out:
        raise CalibrationError(f"the calibration set is empty; pass batches with inputs {sorted(spec)}")
    for i, b in enumerate(out):
        _check_batch(i, b, spec)
    total = sum(next(iter(b.values())).shape[0] if b else 0 for b in out)
    if total < min_samples:
        warnings.warn(f"the calibration set has only {total} samples (< {min_samples}); INT8 ranges from so few "
                      "samples are unreliable: use at least 64 real samples from the task's data", stacklevel=2)
    return out


def _check_batch(index: int, batch: Mapping[str, np.ndarray], spec: Mapping[str, Mapping[str, Any]]) -> None:
    missing, extra = sorted(set(spec) - set(batch)), sorted(set(batch) - set(spec))
    if missing or extra:
        raise CalibrationError(f"calibration batch {index}: missing inputs {missing}, unexpected inputs {extra}; "
                               f"the graph takes exactly {sorted(spec)} (use calibration_batches(..., input_names))")
    for name, e in spec.items():
        arr = np.asarray(batch[name])
        want = np.dtype(e["dtype"])
        if arr.dtype != want:
            raise CalibrationError(f"calibration batch {index}: input {name!r} is {arr.dtype}, the graph takes "
                                   f"{want.name}; convert it (e.g. .astype(np.{want.name}))")
        shape = list(e["shape"])
        if arr.ndim != len(shape):
            raise CalibrationError(f"calibration batch {index}: input {name!r} has rank {arr.ndim} {list(arr.shape)}, "
                                   f"the graph takes rank {len(shape)} {shape}; add the batch axis or fix the layout")
        for axis, (got, dim) in enumerate(zip(arr.shape, shape)):
            if isinstance(dim, int) and got != dim:
                raise CalibrationError(f"calibration batch {index}: input {name!r} has {got} at axis {axis}, "
                                       f"the graph fixes it to {dim} (shape {shape}); preprocess with the "
                                       "bundle's spec (image size, mel bins)")
