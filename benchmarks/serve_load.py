"""Load test of ``mmedge serve``: one vs two Triton servers, dynamic batching on vs off, on loopback.

For each configuration it starts the server processes (``python -m mmedge serve``, 127.0.0.1
only), drives them from several client threads (one ``mmedge.client.Client`` per thread,
threads spread round-robin over the servers, as a load balancer would), each thread sending a
bounded number of single-row requests with a deadline, then stops the servers (SIGTERM) and
reports throughput, p50/p99 latency and errors.

Run it in the serve environment (``.ci/serve_tests.sh`` makes ``.venv-serve``)::

    .venv-serve/bin/python benchmarks/serve_load.py --bundle DIR [--samples NPZ] [--json OUT]

``--samples`` takes the ``samples.npz`` of ``tests/serve/make_fixture.py`` (reference
``digits-av`` test rows); without it, random images and fixed captions are sent.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only


@dataclass(frozen=True)
class LoadConfig:
    """One measured configuration."""

    servers: int
    batching: bool


@dataclass(frozen=True)
class LoadResult:
    """What one configuration measured."""

    servers: int
    batching: bool
    threads_per_server: int
    clients: int
    requests: int
    ok: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    first_error: str


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start_server(bundle: Path, batching: bool, threads: int, max_batch: int) -> tuple[subprocess.Popen, str]:
    http, grpc, metrics = _free_ports(3)
    cmd = [sys.executable, "-m", "mmedge", "serve", str(bundle), "--host", HOST, "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", str(threads),
           "--max-batch", str(max_batch), "--batching" if batching else "--no-batching"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"grpc://{HOST}:{grpc}"


def _stop_servers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _inputs(samples: Path | None, count: int) -> list[dict]:
    if samples is not None:
        data = np.load(samples)
        return [{"image": data["images"][i], "text": str(data["texts"][i])} for i in range(len(data["texts"]))]
    rng = np.random.default_rng(0)
    captions = ["an even digit", "a prime number", "a digit larger than five", "an odd number below five"]
    return [{"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "text": captions[i % len(captions)]}
            for i in range(count)]


def _client_thread(url: str, rows: list[dict], count: int, deadline: float, offset: int,
                   latencies: list[float], errors: list[str]) -> None:
    from mmedge.client import Client

    with Client(url) as client:
        for i in range(count):
            if time.monotonic() > deadline:
                errors.append("deadline reached before the request was sent")
                continue
            start = time.perf_counter()
            try:
                client.predict(**rows[(offset + i) % len(rows)])
                latencies.append((time.perf_counter() - start) * 1000.0)
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"{type(exc).__name__}: {exc}")


def _drive(urls: list[str], rows: list[dict], clients: int, per_client: int, deadline_s: float
           ) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + deadline_s
    threads = [threading.Thread(target=_client_thread, args=(urls[c % len(urls)], rows, per_client, deadline,
                                                             c * per_client, latencies, errors))
               for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=deadline_s + 60)
    return latencies, errors, time.perf_counter() - start


def _wait_ready(urls: list[str], timeout_s: float) -> None:
    from mmedge.client import Client

    for url in urls:
        with Client(url) as client:
            client.wait_ready(timeout_s)


def measure(bundle: Path, config: LoadConfig, rows: list[dict], args: argparse.Namespace) -> LoadResult:
    """Starts ``config.servers`` servers, warms them up, drives them, stops them."""
    threads = max(1, (os.cpu_count() or 1) // config.servers)
    started = [_start_server(bundle, config.batching, threads, args.max_batch) for _ in range(config.servers)]
    procs, urls = [p for p, _ in started], [u for _, u in started]
    try:
        _wait_ready(urls, args.startup_timeout)
        _drive(urls, rows, len(urls), args.warmup, args.deadline)  # warm-up, not counted
        latencies, errors, seconds = _drive(urls, rows, args.clients, args.requests, args.deadline)
    finally:
        _stop_servers(procs)
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return LoadResult(config.servers, config.batching, threads, args.clients, args.clients * args.requests,
                      len(latencies), len(errors), round(seconds, 3), round(len(latencies) / seconds, 2),
                      round(float(np.percentile(lat, 50)), 2), round(float(np.percentile(lat, 99)), 2),
                      errors[0] if errors else "")


def _print(results: list[LoadResult], args: argparse.Namespace) -> None:
    print(f"\nmmedge serve load: {args.clients} client threads x {args.requests} single-row requests (image+text), "
          f"gRPC on {HOST}, {os.cpu_count()} cores")
    print(f"{'servers':>7} {'batching':>8} {'thr/srv':>7} {'ok':>5} {'errors':>6} {'req/s':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8}")
    for r in results:
        print(f"{r.servers:>7} {'on' if r.batching else 'off':>8} {r.threads_per_server:>7} {r.ok:>5} {r.errors:>6} "
              f"{r.throughput_rps:>8.1f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f}")
        if r.first_error:
            print(f"        first error: {r.first_error[:200]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="Bundle folder or .mmedge file (image+text).")
    parser.add_argument("--samples", type=Path, default=None, help="samples.npz from tests/serve/make_fixture.py.")
    parser.add_argument("--servers", default="1,2", help="Server counts to compare (comma-separated).")
    parser.add_argument("--batching", default="on,off", help="Dynamic batching settings to compare.")
    parser.add_argument("--clients", type=int, default=8, help="Client threads.")
    parser.add_argument("--requests", type=int, default=40, help="Requests per client thread (bounded).")
    parser.add_argument("--warmup", type=int, default=5, help="Warm-up requests per server, not counted.")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--deadline", type=float, default=120.0, help="Seconds a configuration's load may take.")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    args = parser.parse_args(argv)
    rows = _inputs(args.samples, 16)
    configs = [LoadConfig(int(s), b == "on") for s in args.servers.split(",") for b in args.batching.split(",")]
    results = []
    for config in configs:
        print(f"measuring {config.servers} server(s), batching {'on' if config.batching else 'off'} ...", flush=True)
        results.append(measure(args.bundle, config, rows, args))
    _print(results, args)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "schema": "mmedge.serve_load/1", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
            "settings": {"clients": args.clients, "requests": args.requests, "host": HOST, "bundle": str(args.bundle)},
            "results": [asdict(r) for r in results]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
