"""``mmedge bench``: orchestration, baselines and the report, in one place.

| module        | what it holds                                                        |
|---------------|----------------------------------------------------------------------|
| `options`     | ``BenchOptions``, the typed settings                                  |
| `context`     | the test split, the checkpoint, bundle / environment descriptions     |
| `orchestrate` | ``run_bench``: sessions, PyTorch baseline, accuracy, interleaved timing |
| `torch_process` | ``--baseline torch-process``: the PyTorch baseline alone, in its own process |
| `peers`       | ``run_peers``: each encoder vs PyTorch, ``torch.compile`` and the peer int8 recipe |
| `roofline`    | FLOPs against the measured matmul peak                                |
| `schema`      | the ``mmedge.bench/1`` report: comparisons, validation, JSON writing  |
| `plot`        | the latency plot (``mmedge bench --plot``)                           |

``benchmarks/RESULTS.md`` is rendered from the report JSON by ``benchmarks/render.py``, with the
reference bundle's goals of ``benchmarks/targets.py``: neither ships in the installed package.
The torch-free primitives it builds on (statistics, interleaving, device probes, the
torch-free footprint process) are in ``mmedge.runtime.timing``, ``.probes`` and ``.footprint``.
"""
from __future__ import annotations

from mmedge.bench.options import BenchOptions
from mmedge.bench.orchestrate import run_bench
from mmedge.bench.schema import SCHEMA, validate_report, write_json

__all__ = ["SCHEMA", "BenchOptions", "run_bench", "validate_report", "write_json"]
