"""The OpenVINO variants of the peers comparison (``mmedge.bench.peers``), where openvino is installed.

- ``mmedge fp32 (openvino)``, ``mmedge int8 (openvino)``: the bundle's own graphs on mmedge's
  OpenVINO backend, exactly as a ``Session(backend="openvino")`` runs them
  (``mmedge.runtime.backends.openvino``: f32 for fp32, quantized graphs row by row);
- ``peer: OpenVINO fp32 ONNX``: OpenVINO on the bundle's fp32 ONNX with its default settings
  (``PERFORMANCE_HINT=LATENCY`` and the bench's thread count only: what a user would write);
- ``peer: OpenVINO NNCF int8``: ``nncf.quantize`` of the same fp32 ONNX with NNCF's defaults,
  calibrated on the same training rows as the other peers, run by OpenVINO the same way.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

__all__ = ["openvino_variants", "nncf_default_int8"]

Feed = dict[str, np.ndarray]
Fn = Callable[[Feed], np.ndarray]


def openvino_variants(modality: str, graphs: Mapping[str, Path], calib: list[Feed], work: Path, threads: int
                      ) -> dict[str, Fn]:
    """The OpenVINO variants of one encoder (empty without openvino).

    Args:
        modality: The encoder's modality (names the NNCF graph's file).
        graphs: The ONNX variants of ``mmedge.bench.peers`` (``"mmedge fp32"``, maybe ``"mmedge int8"``).
        calib: Calibration feeds (training rows), one per row.
        work: A scratch folder.
        threads: The bench's thread count.
    """
    if importlib.util.find_spec("openvino") is None:
        return {}
    out = {f"{k} (openvino)": _mmedge_fn(path, threads, exact=k == "mmedge fp32")
           for k, path in graphs.items() if k in ("mmedge fp32", "mmedge int8")}
    out["peer: OpenVINO fp32 ONNX"] = _default_fn(graphs["mmedge fp32"], threads)
    out["peer: OpenVINO NNCF int8"] = _default_fn(nncf_default_int8(graphs["mmedge fp32"], calib, work, modality),
                                                  threads)
    return out


def _pooled(run: Callable[[Feed], Mapping[str, np.ndarray]], first: str) -> Fn:
    return lambda feed: run(feed)[first]


def _mmedge_fn(path: Path, threads: int, *, exact: bool) -> Fn:
    from mmedge.runtime.backends.openvino import OpenVINOLoader, OpenVINORunner

    runner = OpenVINORunner(OpenVINOLoader(path, threads=threads, inference_precision="f32" if exact else None))
    runner.activate()
    return _pooled(lambda feed: runner.infer({n: feed[n] for n in runner.input_names}), runner.output_names[0])


def _default_fn(path: Path, threads: int) -> Fn:
    """OpenVINO as its documentation shows it: read, compile for the CPU with a latency hint, call."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                           "INFERENCE_NUM_THREADS": int(threads)})
    names = [p.get_any_name() for p in compiled.inputs]
    request = compiled.create_infer_request()
    return lambda feed: np.array(request.infer({i: feed[n] for i, n in enumerate(names)})[0])


def nncf_default_int8(fp32: Path, calib: list[Feed], work: Path, name: str) -> Path:
    """``nncf.quantize`` of an ONNX graph with NNCF's defaults (its ONNX backend), saved beside ``work``."""
    import nncf
    import onnx

    model = onnx.load(str(fp32))
    names = [i.name for i in model.graph.input]
    dataset = nncf.Dataset(calib, lambda feed: {n: feed[n] for n in names})
    quantized = nncf.quantize(model, dataset, subset_size=len(calib))
    out = Path(work) / f"{name}.nncf-default-int8.onnx"
    onnx.save(quantized, str(out))
    return out
