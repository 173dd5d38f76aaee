"""Soak of ``mmedge serve``: minutes at ~80% of measured capacity with 2% bad requests; memory and fds watched.

Starts one server (``python -m mmedge serve``, 127.0.0.1), measures its capacity with a closed
loop (or takes ``--capacity``), then drives an open loop at ``--load`` x capacity for ``--minutes`` in windows of
``--window`` seconds, a ``--bad`` fraction of the requests carrying whitespace-only text (refused
with INVALID_ARGUMENT). After each window it samples the resident memory and open file
descriptors of the whole server process tree (``mmedge serve``, ``tritonserver``, the
instance processes). Passes when no good request failed, every bad one was refused with its
message, and memory and fds after the warm-up windows stay flat.

Run it in the serve environment (``.ci/serve_tests.sh`` makes ``.venv-serve``)::

    .venv-serve/bin/python benchmarks/serve_soak.py --bundle DIR --samples NPZ [--minutes 10] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import HOST, _start_server, _stop_servers, _wait_ready  # noqa: E402
from serve_traffic import Outcomes, closed_loop, good_rows, open_loop  # noqa: E402


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def sample(pid: int) -> dict:
    """Resident memory (MiB) and open fds of the process tree of ``pid``, and its process count."""
    rss_kib, fds, procs = 0, 0, 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
        procs += 1
        rss_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return {"rss_mib": round(rss_kib / 1024, 1), "fds": fds, "processes": procs}


def soak(args: argparse.Namespace) -> dict:
    """Runs the soak; returns the report."""
    rows = good_rows(args.samples)
    proc, url = _start_server(args.bundle, True, max(1, os.cpu_count() or 1), args.max_batch, args.max_queue)
    samples, total = [], Outcomes()
    try:
        _wait_ready([url], 180)
        closed_loop(url, rows, 4, 0, 20)  # warm-up
        full, seconds = closed_loop(url, rows, 16, 0, 40)
        capacity = args.capacity or len(full.good_ms) / seconds  # a busy machine's moment can read far too low
        rate, windows = args.load * capacity, max(1, int(args.minutes * 60 / args.window))
        start = time.monotonic()
        for w in range(windows):
            _, offered = open_loop(url, rows, rate, args.window, bad_fraction=args.bad, seed=w, out=total)
            samples.append({"t_s": round(time.monotonic() - start, 1), "offered_rps": round(offered, 1),
                            **sample(proc.pid)})
            print(f"window {w + 1}/{windows}: {samples[-1]}", flush=True)
        alive = proc.poll() is None
    finally:
        _stop_servers([proc])
    return {"capacity_rps": round(capacity, 1), "rate_rps": round(rate, 1), "alive_at_end": alive,
            "outcomes": total.summary(), "samples": samples, **_verdict(total, samples, args.warm)}


def _verdict(total: Outcomes, samples: list[dict], warm: int) -> dict:
    steady = samples[min(warm, len(samples) - 1):]
    rss_growth = steady[-1]["rss_mib"] - steady[0]["rss_mib"]
    fds_growth = steady[-1]["fds"] - steady[0]["fds"]
    summary = total.summary()
    ok = (summary["good_failed"] == 0 and summary["bad_answered"] == 0
          and summary["bad_refused"] == summary["bad_refused_with_message"] and fds_growth <= 0 and rss_growth < 50)
    return {"rss_growth_mib_after_warmup": round(rss_growth, 1), "fds_growth_after_warmup": fds_growth, "passed": ok}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--samples", type=Path, default=None, help="samples.npz from tests/serve/make_fixture.py.")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0, help="Seconds between memory / fd samples.")
    parser.add_argument("--warm", type=int, default=2, help="Windows before memory and fds must stay flat.")
    parser.add_argument("--load", type=float, default=0.8, help="Offered rate as a fraction of capacity.")
    parser.add_argument("--capacity", type=float, default=None,
                        help="Capacity in req/s (e.g. serve_load.py --robustness's), instead of measuring it here.")
    parser.add_argument("--bad", type=float, default=0.02, help="Fraction of bad (whitespace-text) requests.")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = soak(args)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "schema": "mmedge.serve_soak/1", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
            "host": HOST, "settings": {k: str(v) for k, v in vars(args).items() if k != "json"}, **report},
            indent=2) + "\n")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
