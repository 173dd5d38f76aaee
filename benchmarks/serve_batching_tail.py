"""Where the p99 of ``mmedge serve`` with dynamic batching comes from (the tail in ``serve_load.json``).

For batching on and off it starts one server (``python -m mmedge serve``, 127.0.0.1), drives it with
``--clients`` closed-loop client threads of single-row requests after a warm-up at the same
concurrency, and reports per configuration: the client's p50/p99, the p99 of the requests sent after
the first second, Triton's own per-request queue and compute durations (its Prometheus metrics,
``nv_inference_*``, differenced over the run), the rows per model execution, the runtime's own time
(``Session.predict``: ``server.total`` of each answer) and the slowest requests with the moment they
were sent. ``--busy N`` adds N busy-looping processes beside the server and clients for the run (a
machine shared with other work, as when ``serve_load.json`` was measured); they are stopped at the end.
``--passes``: runs in a row on the same server (a fresh server's first run against later ones).

    .venv-serve/bin/python benchmarks/serve_batching_tail.py --bundle DIR --samples NPZ [--busy 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import HOST, _free_ports, _stop_servers, _wait_ready  # noqa: E402
from serve_traffic import good_rows  # noqa: E402

METRICS = ("nv_inference_request_success", "nv_inference_exec_count", "nv_inference_queue_duration_us",
           "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
           "nv_inference_compute_output_duration_us")


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10).read().decode()
    return {k: sum(float(v) for v in re.findall(rf"^{k}{{[^}}]*}} (\S+)", text, re.M)) for k in METRICS}


def _drive(url: str, rows: list[dict], clients: int, per_client: int) -> np.ndarray:
    """(sent at s, latency ms, server.total ms) of every request."""
    from mmedge.client import Client

    records: list[tuple[float, float, float]] = []
    start = time.perf_counter()

    def worker(c: int) -> None:
        with Client(url) as client:
            client.max_batch()
            for i in range(per_client):
                sent = time.perf_counter()
                pred = client.predict(**rows[(c * per_client + i) % len(rows)])
                records.append((sent - start, (time.perf_counter() - sent) * 1000.0,
                                pred.timings_ms.get("server.total", float("nan"))))

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.asarray(records)


def measure(args: argparse.Namespace, rows: list[dict], batching: bool) -> list[dict]:
    """One server, batching on or off, ``--passes`` runs in a row: the client's and Triton's view of each."""
    http, grpc, metrics = _free_ports(3)
    cmd = [sys.executable, "-m", "mmedge", "serve", str(args.bundle), "--host", HOST, "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", str(args.threads),
           "--max-batch", str(args.max_batch), "--batching" if batching else "--no-batching"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"grpc://{HOST}:{grpc}"
    try:
        _wait_ready([url], 120)
        _drive(url, rows, args.clients, 3)  # warm-up at the same concurrency
        passes = []
        for _ in range(args.passes):
            before = _metrics(metrics)
            rec = _drive(url, rows, args.clients, args.requests)
            passes.append((rec, {k: v - before[k] for k, v in _metrics(metrics).items()}))
    finally:
        _stop_servers([proc])
    return [dict(_summary(rec, d), batching=batching, run=i + 1) for i, (rec, d) in enumerate(passes)]


def _summary(rec: np.ndarray, d: dict[str, float]) -> dict:
    n, lat, late = max(d["nv_inference_request_success"], 1.0), rec[:, 1], rec[rec[:, 0] > 1.0][:, 1]
    compute = sum(d[f"nv_inference_compute_{s}_duration_us"] for s in ("input", "infer", "output"))
    slowest = rec[np.argsort(-lat)][:8]
    return {"requests": len(rec), "seconds": round(float(rec[:, 0].max()), 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "p99_after_first_second_ms": round(float(np.percentile(late, 99)), 1) if len(late) else None,
            "triton_queue_ms": round(d["nv_inference_queue_duration_us"] / n / 1000, 1),
            "triton_compute_ms": round(compute / n / 1000, 1),
            "rows_per_execution": round(n / max(d["nv_inference_exec_count"], 1.0), 2),
            "predict_p50_ms": round(float(np.nanpercentile(rec[:, 2], 50)), 1),
            "predict_p99_ms": round(float(np.nanpercentile(rec[:, 2], 99)), 1),
            "slowest": [[round(float(a), 2), round(float(b), 1), round(float(c), 1)] for a, b, c in slowest]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--samples", type=Path, default=None, help="samples.npz from tests/serve/make_fixture.py.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40, help="Requests per client thread.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="mmedge serve --threads.")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--passes", type=int, default=3, help="Runs in a row on the same server.")
    parser.add_argument("--busy", type=int, default=0, help="Busy-looping processes beside the run.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = good_rows(args.samples)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        runs = [run for batching in (True, False) for run in measure(args, rows, batching)]
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    for run in runs:
        print(json.dumps(run), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "schema": "mmedge.serve_batching_tail/1", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(), "busy": args.busy, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
