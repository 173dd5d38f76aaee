"""Soak (short CI version of ``benchmarks/soak.py``): 8 threads share one Session for thousands of
``predict`` calls and ``stream()`` passes over a real video file; every result is bit-identical to
the single-threaded one, RSS grows < 5% after warm-up, no file descriptor or thread is leaked."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmedge.runtime import Session

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import soak  # noqa: E402  (benchmarks/soak.py)


def test_eight_threads_soak_one_session(bundle_path, tmp_path):
    video = soak.write_video(tmp_path / "clip.avi", frames=12)
    with Session(bundle_path, threads=1) as session:
        report = soak.soak(session, threads=8, calls=2000, video=video, warmup_calls=240)
    summary = report.summary()
    print("soak", summary)
    assert not report.errors, report.errors
    assert report.mismatches == 0, summary
    assert report.calls >= 2000 and report.stream_frames >= 12 * 8, summary
    assert report.rss_growth_pct < 5.0, summary
    assert report.fds_after <= report.fds_before and report.threads_after <= report.threads_before, summary
