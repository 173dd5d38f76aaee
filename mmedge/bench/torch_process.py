"""``--baseline torch-process``: the PyTorch ensemble timed alone, in a fresh process of its own.

In-process, the PyTorch baseline shares the interpreter with the runtime's ONNX Runtime
sessions (their thread pools, allocator, caches) and is interleaved with them; either side
can be flattered or slowed by the other. ``time_in_own_process`` starts
``python -m mmedge.bench.torch_process SPEC OUT`` instead: the child loads the checkpoint
(``mmedge.evaluation.TorchReference``, the one PyTorch forward), times it on the same test
rows, batches, iterations, warm-up and threads with the bench's own timing loop, scores it
on the same accuracy rows, and writes its records (with its pid) to ``OUT`` as JSON. With
``--torch-compile`` the child also times the same model under ``torch.compile``, interleaved with
eager (each batch size compiles during the warm-up, which is excluded). The child runs under the
fair-baseline rules of ``mmedge.bench.fairness``: one BLAS thread, text padded as the runtime pads
it (``padding``, the runtime's ``Session.length_buckets``), its thread settings recorded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mmedge import errors
from mmedge.bench.options import BenchOptions

__all__ = ["time_in_own_process"]


def time_in_own_process(opts: BenchOptions, checkpoint: Path, accuracy_rows: Sequence[int], *,
                        log: Callable[[str], None] = lambda _msg: None, timeout_s: float = 3600.0,
                        padding: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Times the checkpoint's PyTorch ensemble in a fresh child process.

    Args:
        opts: The bench's options (bundle, data, batches, iters, warmup, threads, seed).
        checkpoint: The ``mmedge train`` folder.
        accuracy_rows: Test rows to score it on (empty: no accuracy).
        log: Receives one progress line.
        timeout_s: Longest the child may run.
        padding: The runtime's length buckets per modality (``Session.length_buckets``; None or
            missing: pad to the spec's full length).

    Returns:
        ``{"pid", "torch_threads", "thread_settings" (``fairness.thread_settings`` in the child, while
        timed), "records": [config record per batch, id "torch/eager (own process)/b<batch>", with
        "pid"], "accuracy": {...} | {}}``.

    Raises:
        MmedgeError: the child's typed error, re-raised as the same class; or, when the child
            crashed, an ``MmedgeError`` with its last stderr lines.
    """
    log(f"timing the PyTorch baseline alone in its own process ({checkpoint})")
    with tempfile.TemporaryDirectory(prefix="mmedge-torch-process-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"bundle": str(opts.bundle), "data": opts.data, "checkpoint": str(checkpoint),
                                    "batches": list(opts.batches), "iters": opts.iters, "warmup": opts.warmup,
                                    "threads": opts.threads, "seed": opts.seed, "compile": opts.torch_compile,
                                    "accuracy_rows": [int(r) for r in accuracy_rows],
                                    "padding": dict(padding or {})}))
        done = subprocess.run([sys.executable, "-m", "mmedge.bench.torch_process", str(spec), str(out)],
                              capture_output=True, text=True, timeout=timeout_s)
        if not out.is_file():
            raise errors.MmedgeError(f"the PyTorch baseline's own process failed ({done.returncode}): "
                                     f"{done.stderr.strip()[-2000:]}; try --baseline torch to see it in-process")
        result = json.loads(out.read_text())
    if "error" in result:
        raise _error_class(result["error"]["type"])(result["error"]["message"])
    for record in result["records"]:  # torch/eager/b1 -> torch/eager (own process)/b1
        name, batch = record["id"].rsplit("/b", 1)
        record["id"] = f"{name} (own process)/b{batch}"
        record["pid"] = result["pid"]
    return result


def _error_class(name: str) -> type[errors.MmedgeError]:
    cls = getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, errors.MmedgeError) else errors.MmedgeError


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from mmedge.bench import context, fairness
    from mmedge.bench.orchestrate import _rows_for, _Run, _time_batch, _torch_config
    from mmedge.evaluation import label_targets
    from mmedge.runtime import Bundle, probes

    opts = BenchOptions(bundle=Path(spec["bundle"]), batches=tuple(spec["batches"]), iters=spec["iters"],
                        warmup=spec["warmup"], threads=spec["threads"], seed=spec["seed"], data=spec["data"],
                        baseline="torch", checkpoint=Path(spec["checkpoint"]), footprint=False, members_compare=False)
    with Bundle.open(opts.bundle) as bundle:
        data, source = context.load_test_split(bundle, opts.data)
        run = _Run(opts, bundle, data, source, label_targets(data, bundle.labels),
                   np.asarray(spec["accuracy_rows"], dtype=np.int64), lambda _msg: None, probes.rss_bytes(),
                   spec.get("padding", {}))
        config, accuracy = _torch_config(run, opts.checkpoint)
        configs = [config] + ([_torch_config(run, opts.checkpoint, compiled=True)[0]] if spec.get("compile") else [])
        with fairness.limit_blas():  # entered once everything is loaded: every BLAS library is held
            records = [r for b in opts.batches for r in _time_batch(opts, configs, _rows_for(len(data), b))]
            threads = fairness.thread_settings()
    return {"pid": os.getpid(), "torch_threads": int(torch.get_num_threads()), "records": records,
            "accuracy": accuracy, "thread_settings": threads}


def main(argv: Sequence[str]) -> None:
    """``python -m mmedge.bench.torch_process SPEC.json OUT.json`` (started by ``time_in_own_process``)."""
    spec_path, out_path = argv
    try:
        result = _child(json.loads(Path(spec_path).read_text()))
    except errors.MmedgeError as e:  # typed: the parent raises it again, same class and message
        result = {"error": {"type": type(e).__name__, "message": str(e)}}
    Path(out_path).write_text(json.dumps(result, default=lambda o: o.item()))  # numpy scalars


if __name__ == "__main__":
    main(sys.argv[1:])
