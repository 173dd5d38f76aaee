"""Start-up and memory of the runtime in a fresh torch-free process (issue 18 item 7), in one run.

For each precision and backend: the time from spawning a new interpreter to its first prediction
on a real test row, and its resident memory (after loading, after the prediction, and the
high-water mark ``VmHWM``), measured by ``mmedge.runtime.footprint`` with ONNX Runtime's
optimized-graph cache (``mmedge.runtime.backends.ort_cache``) off and warm, interleaved, medians
of ``--repeats``; the first start of each (empty cache, bundle not yet verified) is reported
apart. Beside it: the steady-state latency at batch 1 and 8 of Sessions opened with the cache off,
warm, and with ONNX Runtime's CPU memory arena on as before (``VARIANTS``, interleaved in this
process); a fresh process's memory after 20 predictions with the arena on and off; and where a
fresh process's memory and time go: each library the runtime loads, then each graph's session.
The runtime's modules are byte-compiled first, as ``pip install`` leaves them (``compile_bytecode``).

    python benchmarks/startup.py --bundle bundles/digits-av --json benchmarks/startup.json

Figures vary with the machine's load: compare the columns of one run, not runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REFERENCE = {"bundle": Path("bundles/digits-av"), "precisions": "int8,mixed", "backends": "ort,auto",
             "repeats": 7, "threads": 2, "iters": 200}
CACHE_MODES = ("off", "warm")
_KEYS = ("first_prediction_s", "start_ms", "import_ms", "load_ms", "first_predict_ms")
_MIB = ("rss_after_import_bytes", "rss_after_load_bytes", "rss_after_predict_bytes", "peak_rss_bytes")


def _set_cache(mode: str) -> None:
    from mmedge.runtime.backends.ort_cache import OFF_VARIABLE

    if mode == "off":
        os.environ[OFF_VARIABLE] = "0"
    else:
        os.environ.pop(OFF_VARIABLE, None)


def _inputs(bundle: Path) -> dict[str, Any]:
    """Row 0 of the bundle's held-out test split, as ``Session.predict`` arguments."""
    from mmedge.bench.context import load_test_split
    from mmedge.evaluation import raw_inputs
    from mmedge.runtime import Bundle

    opened = Bundle.open(bundle)
    data, _ = load_test_split(opened, None)
    return raw_inputs(data, [0], opened.modalities)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in _KEYS}
    out.update({k.replace("_bytes", "_mib"): statistics.median(r[k] for r in runs) / 2**20 for k in _MIB})
    out.update(backend=runs[0]["backend"], modules_loaded=runs[-1]["modules_loaded"], runs=len(runs))
    return out


def cold_starts(args: argparse.Namespace, inputs: dict[str, Any]) -> dict[str, Any]:
    """Fresh-process figures per ``precision/backend/cache``, interleaved; first starts apart."""
    from mmedge.runtime.footprint import measure_footprint

    configs = [(p, b, c) for p in args.precisions for b in args.backends for c in CACHE_MODES]
    samples: dict[tuple[str, str, str], list[dict[str, Any]]] = {c: [] for c in configs}
    first: dict[str, Any] = {}
    for rep in range(args.repeats + 1):
        for precision, backend, cache in configs:
            _set_cache(cache)
            run = measure_footprint(args.bundle, precision, inputs, threads=args.threads, backend=backend)
            if rep == 0:  # the first start: an empty cache (written now), the bundle verified in full
                first.setdefault(f"{precision}/{backend}", run)
            else:
                samples[(precision, backend, cache)].append(run)
        print(f"  cold starts: round {rep}/{args.repeats}", flush=True)
    _set_cache("warm")
    return {"configs": {"/".join(c): _summary(runs) for c, runs in samples.items()},
            "first_start": {k: _summary([v]) for k, v in first.items()}}


@contextlib.contextmanager
def _arena(on: bool) -> Iterator[None]:
    """Sessions opened inside have ONNX Runtime's CPU memory arena on (the runtime's setting before) or off."""
    from mmedge.runtime.backends import ort

    plain = ort.session_options

    def options(threads: int | None = None) -> Any:
        made = plain(threads)
        made.enable_cpu_mem_arena = on
        return made
    ort.session_options = options
    try:
        yield
    finally:
        ort.session_options = plain


# name -> (ORT cache, CPU memory arena): the runtime's settings now, and each one as it was before
VARIANTS = {"cache off": ("off", False), "cache warm": ("warm", False), "arena on": ("warm", True)}


def steady_state(args: argparse.Namespace, inputs: dict[str, Any]) -> dict[str, Any]:
    """p50 / p90 ms of ``predict`` at batch 1 and 8, on Sessions opened with each of ``VARIANTS``, interleaved."""
    from mmedge.runtime import Session

    out = {}
    for precision in args.precisions:
        sessions = {}
        for name, (cache, arena) in VARIANTS.items():
            _set_cache(cache)
            with _arena(arena):
                sessions[name] = Session(args.bundle, precision=precision, backend="ort", threads=args.threads)
        for batch in (1, 8):
            feed = {k: v * batch if isinstance(v, list) else v for k, v in inputs.items()}
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for i in range(args.iters + 20):
                for name, session in sessions.items():
                    t = time.perf_counter()
                    session.predict(**feed)
                    if i >= 20:
                        times[name].append((time.perf_counter() - t) * 1000.0)
            for name, samples in times.items():
                ordered = sorted(samples)
                out[f"{precision}/ort/b{batch}/{name}"] = {"p50_ms": statistics.median(ordered),
                                                           "p90_ms": ordered[int(0.9 * (len(ordered) - 1))]}
        for session in sessions.values():
            session.close()
    _set_cache("warm")
    return out


_ARENA_RSS = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[4])
from startup import _arena
from mmedge.runtime import Session
from mmedge.runtime.footprint import _load_inputs, _peak_rss, _rss
inputs = _load_inputs(sys.argv[2])
with _arena(sys.argv[3] == "on"):
    session = Session(sys.argv[1], precision=sys.argv[5], backend="ort", threads=int(sys.argv[6]))
for _ in range(20):
    session.predict(**inputs)
print(json.dumps({"rss_mib": _rss() / 2**20, "peak_mib": _peak_rss() / 2**20}))
"""


def arena_memory(args: argparse.Namespace, inputs: dict[str, Any]) -> dict[str, Any]:
    """Resident memory of a fresh process after opening a Session and 20 predictions, arena on and off
    (interleaved, medians of ``--repeats``)."""
    from mmedge.runtime.footprint import _save_inputs

    out = {}
    with tempfile.TemporaryDirectory(prefix="mmedge-arena-") as tmp:
        npz = Path(tmp) / "inputs.npz"
        _save_inputs(npz, inputs)
        for precision in args.precisions:
            runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
            for _ in range(args.repeats):
                for arena in runs:
                    done = subprocess.run([sys.executable, "-c", _ARENA_RSS, str(args.bundle), str(npz), arena,
                                           str(Path(__file__).parent), precision, str(args.threads)],
                                          capture_output=True, text=True, check=True)
                    runs[arena].append(json.loads(done.stdout.strip().splitlines()[-1]))
            out[precision] = {f"arena {arena}": {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                              for arena, rs in runs.items()}
    return out


_BREAKDOWN = r"""
import json, sys, time
from mmedge.runtime.footprint import _rss
steps, last = [], [time.perf_counter(), _rss()]
def mark(name):
    now, rss = time.perf_counter(), _rss()
    steps.append({"step": name, "ms": (now - last[0]) * 1000.0, "rss_delta_mib": (rss - last[1]) / 2**20})
    last[:] = [now, rss]
for lib in ("onnxruntime", "cv2", "tokenizers"):
    __import__(lib); mark("import " + lib)
from mmedge.runtime import Bundle; import mmedge.runtime.session; mark("import mmedge.runtime (+ session)")
from mmedge.runtime.backends import GraphRef, LoadSettings, get_backend
bundle = Bundle.open(sys.argv[1]); mark("Bundle.open")
settings = LoadSettings(bundle.source, sys.argv[2], bundle.root / "engines", int(sys.argv[3]))
make, keep = get_backend("ort").loader.for_session(settings), []
for component in bundle.components():
    try:
        graph = GraphRef.from_bundle(bundle, component, sys.argv[2])
    except Exception:
        continue
    keep.append(make(graph)()); mark("session " + component)
print(json.dumps({"steps": steps}))
"""


def breakdown(args: argparse.Namespace, precision: str) -> list[dict[str, Any]]:
    """Where a fresh process's time and memory go: each library, then each graph's session (warm cache)."""
    done = subprocess.run([sys.executable, "-c", _BREAKDOWN, str(args.bundle), precision, str(args.threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["steps"]


def compile_bytecode() -> dict[str, Any]:
    """Byte-compiles the runtime's modules, as ``pip install`` does, so fresh processes load them as an
    installed runtime does. Without it a machine that sets ``PYTHONDONTWRITEBYTECODE=1`` (this one does)
    compiles them from source in every fresh process: 70-80 ms more to import the runtime, measured here
    (``python -X importtime -c "import numpy; from mmedge.runtime import Session"`` with and without
    ``runtime/__pycache__``)."""
    import compileall

    import mmedge
    import mmedge.runtime

    folders = [str(Path(p)) for pkg in (mmedge, mmedge.runtime) for p in pkg.__path__]
    ok = all(compileall.compile_dir(f, quiet=1) for f in folders)
    return {"folders": folders, "compiled": bool(ok),
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")}


def _machine() -> dict[str, Any]:
    """When and on what: the CPU count and the load average at the start (the machine may be shared)."""
    return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _print(report: dict[str, Any]) -> None:
    print("\nfresh process (medians): first prediction s | start / import / open / predict ms | RSS load / "
          "predict / peak MiB | backend | optional modules loaded")
    for key, s in report["cold"]["configs"].items():
        print(f"  {key:22s} {s['first_prediction_s']:.3f} | {s['start_ms']:.0f} / {s['import_ms']:.0f} / "
              f"{s['load_ms']:.0f} / {s['first_predict_ms']:.0f} | {s['rss_after_load_mib']:.1f} / "
              f"{s['rss_after_predict_mib']:.1f} / {s['peak_rss_mib']:.1f} | {s['backend']} | "
              f"{','.join(s['modules_loaded'])}")
    for key, s in report["cold"]["first_start"].items():
        print(f"  first start {key:10s} {s['first_prediction_s']:.3f} s, open {s['load_ms']:.0f} ms, "
              f"peak {s['peak_rss_mib']:.1f} MiB")
    print("steady state, same process, interleaved (predict p50 / p90 ms):")
    for key, s in report["steady_state"].items():
        print(f"  {key:28s} {s['p50_ms']:.2f} / {s['p90_ms']:.2f}")
    print("fresh process after 20 predictions, CPU memory arena on / off (MiB, current / peak):")
    for precision, arenas in report["arena_memory"].items():
        print(f"  {precision}: " + "; ".join(f"{k} {v['rss_mib']:.1f} / {v['peak_mib']:.1f}" for k, v in arenas.items()))
    for precision, steps in report["breakdown"].items():
        print(f"where a fresh {precision} process goes (ms, +MiB):")
        print("  " + "; ".join(f"{s['step']} {s['ms']:.0f} ms +{s['rss_delta_mib']:.1f}" for s in steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REFERENCE["bundle"])
    ap.add_argument("--precisions", default=REFERENCE["precisions"], type=lambda s: s.split(","))
    ap.add_argument("--backends", default=REFERENCE["backends"], type=lambda s: s.split(","))
    for name in ("repeats", "threads", "iters"):
        ap.add_argument(f"--{name}", type=int, default=REFERENCE[name])
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    inputs = _inputs(args.bundle)
    with tempfile.TemporaryDirectory(prefix="mmedge-startup-") as cache:
        os.environ["MMEDGE_CACHE_DIR"] = cache  # this run's own cache: "first start" starts empty
        report = {"schema": "mmedge.startup/1", "command": ["python", *sys.argv], "bundle": str(args.bundle),
                  "threads": args.threads, "machine": _machine(), "bytecode": compile_bytecode(),
                  "cold": cold_starts(args, inputs), "steady_state": steady_state(args, inputs),
                  "arena_memory": arena_memory(args, inputs),
                  "breakdown": {p: breakdown(args, p) for p in args.precisions}}
    _print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
