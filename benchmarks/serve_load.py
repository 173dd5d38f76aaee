"""Load test of ``mmedge serve``: one vs two Triton servers, dynamic batching on vs off, on loopback; then
one server's robustness: bad clients mixed in, overload, 2% bad requests.

For each configuration it starts the server processes (``python -m mmedge serve``, 127.0.0.1
only), drives them from several client threads (one ``mmedge.client.Client`` per thread,
threads spread round-robin over the servers, as a load balancer would), each thread sending a
bounded number of single-row requests with a deadline, then stops the servers (SIGTERM) and
reports throughput, p50/p99 latency and errors.

``--robustness`` (``serve_traffic``) then runs one server as ``mmedge serve --max-batch N``
starts it: ``capacity`` (a closed loop of 2 x ``--clients``), ``mixed``: ``--good-clients``
clients and ``--bad-clients`` clients sending whitespace-only text with the same shapes, closed
loop: no good request may fail, every bad one is refused with its message; then one with
``--max-queue`` and ``--queue-timeout-us``: ``overload``, an open loop at ``--overload-factor`` x
that capacity: requests beyond the queue are refused at once (UNAVAILABLE), the accepted ones
keep a bounded p99; ``bad-2pct``: an open loop at 80% of capacity with 2% bad requests.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_traffic import closed_loop, good_rows, open_loop  # noqa: E402  (benchmarks/serve_traffic.py)

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


def _start_server(bundle: Path, batching: bool, threads: int, max_batch: int, max_queue: int = 64,
                  queue_timeout_us: int = 0) -> tuple[subprocess.Popen, str]:
    http, grpc, metrics = _free_ports(3)
    cmd = [sys.executable, "-m", "mmedge", "serve", str(bundle), "--host", HOST, "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", str(threads),
           "--max-batch", str(max_batch), "--batching" if batching else "--no-batching", "--max-queue", str(max_queue),
           "--queue-timeout-us", str(queue_timeout_us)]
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


def robustness(bundle: Path, rows: list[dict], args: argparse.Namespace) -> dict:
    """One server as ``mmedge serve --max-batch N`` starts it: capacity, then bad clients mixed in (closed loops);
    then one with ``--max-queue`` / ``--queue-timeout-us``: overload and 2% bad requests (open loops)."""
    threads = max(1, os.cpu_count() or 1)
    proc, url = _start_server(bundle, True, threads, args.max_batch)
    try:
        _wait_ready([url], args.startup_timeout)
        closed_loop(url, rows, 4, 0, args.warmup * 4)  # warm-up, not counted
        full, full_s = closed_loop(url, rows, 2 * args.clients, 0, args.requests, args.deadline)
        mixed, seconds = closed_loop(url, rows, args.good_clients, args.bad_clients, args.requests, args.deadline)
    finally:
        _stop_servers([proc])
    # what the server answered per second, the better of the two closed loops (on a shared machine one of them
    # can be starved by other work and read far too low)
    capacity = max(len(full.good_ms) / full_s, (len(mixed.good_ms) + len(mixed.bad_refused)) / seconds)
    proc, url = _start_server(bundle, True, threads, args.max_batch, args.max_queue, args.queue_timeout_us)
    try:
        _wait_ready([url], args.startup_timeout)
        closed_loop(url, rows, 4, 0, args.warmup * 4)
        over, over_rate = open_loop(url, rows, args.overload_factor * capacity, args.open_seconds)
        bad, bad_rate = open_loop(url, rows, 0.8 * capacity, args.open_seconds, bad_fraction=0.02, seed=1)
    finally:
        _stop_servers([proc])
    return {"max_batch": args.max_batch, "max_queue": args.max_queue, "queue_timeout_us": args.queue_timeout_us,
            "threads": threads,
            "capacity_rps": round(capacity, 1),
            "capacity": {"clients": 2 * args.clients, "rps": round(len(full.good_ms) / full_s, 1), **full.summary()},
            "mixed": {"good_clients": args.good_clients, "bad_clients": args.bad_clients,
                      "requests_per_client": args.requests, "seconds": round(seconds, 2),
                      "rps": round((len(mixed.good_ms) + len(mixed.bad_refused)) / seconds, 1), **mixed.summary()},
            "overload": {"factor": args.overload_factor, "offered_rps": round(over_rate, 1),
                         "seconds": args.open_seconds, **over.summary()},
            "bad_2pct": {"offered_rps": round(bad_rate, 1), "seconds": args.open_seconds, **bad.summary()}}


def _print_robustness(report: dict) -> None:
    print(f"\nrobustness (one server, max_batch {report['max_batch']}, max_queue {report['max_queue']}):")
    for name in ("capacity", "mixed", "overload", "bad_2pct"):
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in report[name].items() if not k.startswith("first")))
        for k in ("first_good_failure", "first_bad_message"):
            if report[name][k]:
                print(f"    {k}: {report[name][k][:200]}")


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
    parser.add_argument("--servers", default="1,2", help="Server counts to compare (comma-separated; none: skip).")
    parser.add_argument("--batching", default="on,off", help="Dynamic batching settings to compare.")
    parser.add_argument("--clients", type=int, default=8, help="Client threads.")
    parser.add_argument("--requests", type=int, default=40, help="Requests per client thread (bounded).")
    parser.add_argument("--warmup", type=int, default=5, help="Warm-up requests per server, not counted.")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--deadline", type=float, default=120.0, help="Seconds a configuration's load may take.")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    parser.add_argument("--robustness", action="store_true", help="Also the mixed, overload and 2%%-bad runs.")
    parser.add_argument("--good-clients", type=int, default=6)
    parser.add_argument("--bad-clients", type=int, default=2, help="Clients sending whitespace-only text.")
    parser.add_argument("--max-queue", type=int, default=64, help="mmedge serve --max-queue.")
    parser.add_argument("--queue-timeout-us", type=int, default=0, help="mmedge serve --queue-timeout-us.")
    parser.add_argument("--overload-factor", type=float, default=3.0, help="Overload: x the measured capacity.")
    parser.add_argument("--open-seconds", type=float, default=20.0, help="Length of each open-loop run.")
    args = parser.parse_args(argv)
    rows = good_rows(args.samples)
    counts = [] if args.servers == "none" else args.servers.split(",")  # none: the robustness runs only
    configs = [LoadConfig(int(s), b == "on") for s in counts for b in args.batching.split(",")]
    results = []
    for config in configs:
        print(f"measuring {config.servers} server(s), batching {'on' if config.batching else 'off'} ...", flush=True)
        results.append(measure(args.bundle, config, rows, args))
    _print(results, args)
    robust = robustness(args.bundle, rows, args) if args.robustness else None
    if robust is not None:
        _print_robustness(robust)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "schema": "mmedge.serve_load/1", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
            "settings": {"clients": args.clients, "requests": args.requests, "host": HOST, "bundle": str(args.bundle)},
            "results": [asdict(r) for r in results], **({"robustness": robust} if robust else {})}, indent=2) + "\n")


if __name__ == "__main__":
    main()
