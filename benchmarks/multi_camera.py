"""Several cameras: ``Session.streams`` (one batched predict per tick) against N separate ``stream()`` loops.

Video files are written with cv2 from real handwritten digits (scikit-learn's ``load_digits``,
rendered as in ``digits-av``), one file per camera. For N = 1, 2, 4, 8 sources it measures, over
``--seconds`` each:

- ``streams``, sources paced at ``--fps`` like cameras: total predictions/s, p50/p99
  capture-to-prediction latency, frames dropped because a newer one arrived;
- ``streams``, unpaced (``fps=0``: every frame of each file, as fast as the batched ticks take
  them): the same figures at full load;
- N threads, each its own ``stream()`` loop over one file (unpaced), sharing the Session:
  latency = the frame's read plus its predict, as ``stream()`` does them back to back.

    python benchmarks/multi_camera.py --bundle BUNDLE --json benchmarks/multi_camera.json

The JSON is rendered into RESULTS.md by ``benchmarks/make_results.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

TEXT = "a handwritten seven"
UNPACED_FPS_MAX = 500  # frames per second per source the videos are long enough for, unpaced


def write_videos(folder: Path, count: int, *, frames: int, fps: float, size: int = 96) -> list[Path]:
    """``count`` MJPG videos of rendered handwritten digits, a different sequence in each."""
    import cv2
    from sklearn.datasets import load_digits

    from mmedge.datasets.digits_av import render_digit

    digits = load_digits().images
    paths = []
    for cam in range(count):
        rng = np.random.default_rng(cam)
        path = folder / f"camera{cam}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
        for i in range(frames):
            rgb = render_digit(digits[(cam * 97 + i // 5) % len(digits)], rng, size=size)
            writer.write(np.ascontiguousarray(rgb[..., ::-1]).astype(np.uint8))
        writer.release()
        paths.append(path)
    return paths


def _figures(latencies_ms: list[float], predictions: int, seconds: float, **extra: Any) -> dict[str, Any]:
    lat = np.asarray(latencies_ms or [np.nan])
    return {"predictions": predictions, "seconds": round(seconds, 3), "fps": round(predictions / seconds, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            **extra}


def run_streams(session: Any, videos: list[Path], seconds: float, fps: float) -> dict[str, Any]:
    """``session.streams(videos)`` for ``seconds``: figures of every prediction."""
    from mmedge.runtime.streams import StreamStats, multi_stream

    stats, latencies, ticks = StreamStats([], [], []), [], 0
    start = time.perf_counter()
    iterator = multi_stream(session, videos, text=TEXT, fps=fps, stats=stats)
    for tick in iterator:
        latencies += [p.latency_ms for p in tick]
        ticks += 1
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    iterator.close()
    return _figures(latencies, len(latencies), elapsed, dropped=int(sum(stats.dropped)),
                    mean_batch=round(len(latencies) / max(ticks, 1), 2))


def run_stream_loops(session: Any, videos: list[Path], seconds: float) -> dict[str, Any]:
    """One thread per video, each its own ``session.stream(video)`` loop, for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def loop(video: Path) -> None:
        frames = session.stream(video, text=TEXT)
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            if next(frames, None) is None:
                break
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000.0)
        frames.close()

    threads = [threading.Thread(target=loop, args=(v,)) for v in videos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _figures(latencies, len(latencies), time.perf_counter() - start)


def run_all(session: Any, folder: Path, counts: list[int], seconds: float, fps: float) -> list[dict[str, Any]]:
    """Every mode for every source count (after a warm-up)."""
    videos = write_videos(folder, max(counts), frames=int(max(fps, UNPACED_FPS_MAX) * (seconds + 1)), fps=fps)
    run_streams(session, videos[:1], 1.0, 0)  # warm-up
    rows = []
    for n in counts:
        for mode, run in ((f"streams, {fps:g} fps per source", lambda: run_streams(session, videos[:n], seconds, fps)),
                          ("streams, unpaced (every frame)", lambda: run_streams(session, videos[:n], seconds, 0)),
                          ("N stream() loops, unpaced", lambda: run_stream_loops(session, videos[:n], seconds))):
            row = {"sources": n, "mode": mode, **run()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per graph")
    parser.add_argument("--sources", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per mode and source count")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the paced sources")
    parser.add_argument("--bundle-note", default="", help="how the bundle was made (printed in RESULTS.md)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from mmedge.runtime import Session

    counts = [int(c) for c in args.sources.split(",")]
    with Session(args.bundle, precision=args.precision, threads=args.threads) as session, \
            tempfile.TemporaryDirectory() as tmp:
        rows = run_all(session, Path(tmp), counts, args.seconds, args.fps)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = {"schema": "mmedge.multi_camera/1", "created_utc": created,
              "command": "python benchmarks/multi_camera.py --bundle BUNDLE --json benchmarks/multi_camera.json",
              "bundle_note": args.bundle_note, "precision": args.precision, "threads": args.threads,
              "seconds": args.seconds, "fps": args.fps, "text": TEXT, "cpu_count": os.cpu_count(),
              "cpu": platform.processor() or platform.machine(), "results": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
