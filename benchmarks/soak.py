"""Soak: many threads hammer one ``Session`` with ``predict`` and ``stream`` over a video file.

Every result must be bit-identical to the single-threaded one for the same input, resident memory
must not grow by more than 5% after warm-up, and no file descriptor or thread may be left behind.
The CI test (``tests/e2e/test_soak.py``) runs this for about half a minute; for hour-long runs:

    python benchmarks/soak.py --bundle bundles/digits-av --duration 3600 [--threads 8] [--json out.json]

Prints one progress line a minute and a final report: calls, stream frames, mismatches, RSS at
warm-up and at the end (growth in %), file descriptors and threads before and after.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["SoakReport", "make_inputs", "write_video", "soak"]

TEXTS = ("a handwritten seven", "the digit three", "zero", "a photo of the number nine", "one two", "eight")


@dataclass
class SoakReport:
    """What a soak run measured (``ok`` says whether it passed)."""

    threads: int
    seconds: float = 0.0
    calls: int = 0
    stream_frames: int = 0
    mismatches: int = 0
    errors: list[str] = field(default_factory=list)
    rss_warm_mb: float = 0.0
    rss_end_mb: float = 0.0
    fds_before: int = 0
    fds_after: int = 0
    threads_before: int = 0
    threads_after: int = 0

    @property
    def rss_growth_pct(self) -> float:
        return 100.0 * (self.rss_end_mb - self.rss_warm_mb) / max(self.rss_warm_mb, 1e-9)

    @property
    def ok(self) -> bool:
        return (not self.mismatches and not self.errors and self.rss_growth_pct < 5.0
                and self.fds_after <= self.fds_before and self.threads_after <= self.threads_before)

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "rss_growth_pct": round(self.rss_growth_pct, 3), "ok": self.ok}


def make_inputs(bundle, n: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct single-sample ``predict`` keyword sets for the bundle's modalities."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        case: dict[str, Any] = {}
        if "image" in bundle.modalities:
            case["image"] = rng.integers(0, 256, (40 + 4 * (i % 5), 48, 3), dtype=np.uint8)
        if "text" in bundle.modalities:
            case["text"] = TEXTS[i % len(TEXTS)]
        if "audio" in bundle.modalities and (i % 2 or "audio" not in bundle.optional_modalities):
            case["audio"], case["audio_rate"] = (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000
        cases.append(case)
    return cases


def write_video(path: Path, *, frames: int = 24, size: tuple[int, int] = (64, 48), seed: int = 1) -> Path:
    """A small real MJPG video of random frames."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def _streamable(bundle) -> bool:
    """Whether ``stream()`` can run the bundle: frames (and text) are all it needs."""
    required = set(bundle.modalities) - set(bundle.optional_modalities)
    return "image" in bundle.modalities and required <= {"image", "text"}


def _usage() -> tuple[float, int, int]:
    import psutil

    proc = psutil.Process()
    return proc.memory_info().rss / 2**20, proc.num_fds(), proc.num_threads()


def _stream_probs(session, video: Path, text: str) -> list[np.ndarray]:
    return [pred.probabilities for _, pred in session.stream(video, text=text)]


def _worker(session, cases, expected, video, stream_expected, text, stop: Callable[[], bool], report: SoakReport,
            lock: threading.Lock, index: int) -> None:
    i = index
    try:
        while not stop():
            if video is not None and i % 50 == 49:
                got = _stream_probs(session, video, text)
                bad = len(got) != len(stream_expected) or any(not np.array_equal(a, b) for a, b in zip(got, stream_expected))
                with lock:
                    report.stream_frames += len(got)
                    report.mismatches += bad
            else:
                pred = session.predict(**cases[i % len(cases)])
                bad = not np.array_equal(pred.probabilities, expected[i % len(cases)])
                with lock:
                    report.calls += 1
                    report.mismatches += bad
            i += 1
    except Exception as exc:  # noqa: BLE001 - reported, and fails the soak
        with lock:
            report.errors.append(f"{type(exc).__name__}: {exc}")


def _phase(session, cases, expected, video, stream_expected, text, threads: int, stop, report) -> None:
    lock = threading.Lock()
    workers = [threading.Thread(target=_worker, args=(session, cases, expected, video, stream_expected, text, stop,
                                                      report, lock, k * 7), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def soak(session, *, threads: int = 8, calls: int | None = None, seconds: float | None = None,
         video: Path | None = None, warmup_calls: int = 160, progress: Callable[[str], None] | None = None
         ) -> SoakReport:
    """Runs the soak on ``session`` until ``calls`` predict calls or ``seconds`` have passed."""
    cases = make_inputs(session.bundle)
    expected = [session.predict(**c).probabilities for c in cases]  # single-threaded reference
    text = TEXTS[0] if "text" in session.bundle.modalities else None
    stream_expected = _stream_probs(session, video, text) if video is not None else []
    report = SoakReport(threads=threads)
    _, report.fds_before, report.threads_before = _usage()
    warm = SoakReport(threads=threads)
    _phase(session, cases, expected, video, stream_expected, text, threads, lambda: warm.calls >= warmup_calls, warm)
    gc.collect()
    report.rss_warm_mb = _usage()[0]
    start, last = time.monotonic(), time.monotonic()

    def stop() -> bool:
        nonlocal last
        now = time.monotonic()
        if progress is not None and now - last >= 60:
            last = now
            progress(f"soak: {now - start:.0f} s, {report.calls} calls, {report.stream_frames} frames, "
                     f"{report.mismatches} mismatches, RSS {_usage()[0]:.1f} MB")
        return bool(report.errors) or (calls is not None and report.calls >= calls) or (
            seconds is not None and now - start >= seconds)

    _phase(session, cases, expected, video, stream_expected, text, threads, stop, report)
    report.seconds = time.monotonic() - start
    report.mismatches += warm.mismatches
    report.errors += warm.errors
    gc.collect()
    report.rss_end_mb, report.fds_after, report.threads_after = _usage()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="Bundle folder or .mmedge file.")
    parser.add_argument("--duration", type=float, default=3600.0, help="Seconds to run after warm-up.")
    parser.add_argument("--threads", type=int, default=8, help="Caller threads sharing the Session.")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime threads per graph.")
    parser.add_argument("--json", type=Path, help="Also write the report here.")
    args = parser.parse_args(argv)
    from mmedge.runtime import Session

    with tempfile.TemporaryDirectory() as tmp, Session(args.bundle, precision=args.precision,
                                                       threads=args.ort_threads) as session:
        video = write_video(Path(tmp) / "soak.avi") if _streamable(session.bundle) else None
        if video is None:
            print("soak: this bundle needs more than frames and text: predict only, no stream()", flush=True)
        report = soak(session, threads=args.threads, seconds=args.duration, video=video,
                      progress=lambda line: print(line, flush=True))
    summary = report.summary()
    print(json.dumps(summary, indent=2))
    if args.json:
        described = {"schema": "mmedge.soak/1", "command": " ".join(["python", *sys.argv]),
                     "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **summary}
        args.json.write_text(json.dumps(described, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
