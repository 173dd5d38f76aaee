"""``Session.streams``: several video files, one batched predict per tick, threads and captures closed."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from mmedge.errors import InputError
from mmedge.runtime.streams import StreamStats, multi_stream

TEXT = "a handwritten seven"


def _video(path, frames=12, seed=0):
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for _ in range(frames):
        writer.write(np.repeat(np.repeat(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), 8, 0), 8, 1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return [_video(folder / f"cam{i}.avi", frames=10 + 2 * i, seed=i) for i in range(3)]


def _capture_threads():
    return [t for t in threading.enumerate() if t.name.startswith("mmedge-capture-")]


def test_fast_sources_drop_stale_frames_and_every_frame_is_accounted_for(session, videos):
    stats = StreamStats([], [], [])
    ticks = list(multi_stream(session, videos, text=TEXT, fps=5000, stats=stats))
    assert stats.read == [10, 12, 14] and sum(stats.dropped) > 0
    assert [p + d for p, d in zip(stats.predicted, stats.dropped)] == stats.read
    assert sum(len(t) for t in ticks) == sum(stats.predicted)


def test_files_at_fps_0_predict_every_frame_and_rows_match_predict(session, videos):
    stats = StreamStats([], [], [])
    ticks = list(multi_stream(session, videos, text=TEXT, fps=0, stats=stats))
    assert ticks and all(1 <= len(t) <= 3 for t in ticks)
    assert stats.read == stats.predicted == [10, 12, 14] and stats.dropped == [0, 0, 0]
    for tick in ticks[:3]:
        assert len({p.index for p in tick}) == len(tick)  # one frame per source per tick
        for p in tick:
            want = session.predict(image=p.frame, text=TEXT, image_color_order="BGR")
            np.testing.assert_allclose(p.prediction.probabilities, want.probabilities, atol=1e-5)
            assert p.prediction.label == want.label and p.source == videos[p.index]
            assert p.latency_ms >= 0
    assert not _capture_threads()


def test_paced_files_behave_like_cameras(session, videos):
    seen: dict[int, list] = {}
    for tick in session.streams(videos[:2], text=TEXT, fps=40):
        for p in tick:
            seen.setdefault(p.index, []).append(p)
    for preds in seen.values():
        numbers = [p.frame_number for p in preds]
        assert numbers == sorted(set(numbers))  # newest first never goes back
        assert all(b.capture_time > a.capture_time for a, b in zip(preds, preds[1:]))
        assert all(0 <= p.latency_ms < 5000 for p in preds)
    assert set(seen) == {0, 1}


def test_max_ticks_and_max_age(session, videos):
    assert len(list(session.streams(videos, text=TEXT, fps=0, max_ticks=2))) == 2
    stats = StreamStats([], [], [])
    assert list(multi_stream(session, videos, text=TEXT, fps=0, max_age=0.0, stats=stats)) == []
    assert stats.predicted == [0, 0, 0] and stats.dropped == stats.read
    assert not _capture_threads()


def test_closing_early_or_failing_releases_the_captures(session, videos):
    it = session.streams(videos, text=TEXT, fps=30)
    next(it)
    assert len(_capture_threads()) == 3
    it.close()
    assert not _capture_threads()

    def boom(**_):
        raise RuntimeError("consumer failed")

    class Failing:
        limits, predict = session.limits, staticmethod(boom)

    with pytest.raises(RuntimeError):
        next(multi_stream(Failing(), videos, text=TEXT, fps=0))
    assert not _capture_threads()


def test_two_threads_share_one_session(session, videos):
    results, errors = [], []

    def run():
        try:
            results.append(sum(len(t) for t in session.streams(videos[:2], text=TEXT, fps=0)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and all(r > 0 for r in results)


@pytest.mark.parametrize("sources,kwargs,match", [
    ([], {}, "non-empty list"), ("cam.avi", {}, "non-empty list"), ([-1], {}, "camera index"),
    (["missing.avi"], {}, "cannot open video source"), ([0], {"text": ["a", "b"]}, "one text"),
    ([0], {"fps": -1}, "fps must be"), ([0], {"max_ticks": 0}, "max_ticks must be"),
])
def test_bad_arguments(session, sources, kwargs, match):
    with pytest.raises(InputError, match=match):
        next(iter(session.streams(sources, **{"text": TEXT, **kwargs})))
    assert not _capture_threads()
