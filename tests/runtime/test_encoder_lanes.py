"""runtime/encoder_lanes.py: a call's encoders at once on a CPU backend, every graph on its share of the threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mmedge.errors import ConfigError, InputError
from mmedge.runtime import Bundle, Session
from mmedge.runtime.backends import GraphRef
from mmedge.runtime.backends.base import LoadSettings
from mmedge.runtime.backends.openvino import OpenVINOLoader
from mmedge.runtime.encoder_lanes import EncoderLanes, LanePlan, lane_order, plan_lanes, usable_cores

TEXTS = ["a photo of the digit seven", "three"]


@pytest.mark.parametrize("requested, threads, encoders, cpu, lanes, graph_threads", [
    (None, 2, 3, True, 2, 1),  # the reference digits-av on 2 cores: text in one lane, image then audio in the other
    (None, 8, 3, True, 3, 2),
    (None, 4, 2, True, 2, 2),
    (None, 1, 3, True, 1, 1),  # one thread: in turn
    (None, 2, 1, True, 1, 2),  # one encoder
    (None, 2, 3, False, 1, 2),  # a GPU backend
    (1, 8, 3, True, 1, 8),  # asked for in turn: every graph on every thread, as before lanes
    (5, 4, 2, True, 2, 2),  # at most one lane per encoder
    (2, 2, 3, False, 2, 1),  # asked for by number: a GPU backend too
])
def test_plan_rule(requested, threads, encoders, cpu, lanes, graph_threads):
    plan = plan_lanes(requested, threads=threads, encoders=encoders, cpu_backend=cpu)
    assert (plan.lanes, plan.graph_threads) == (lanes, graph_threads), plan.reason


def test_without_threads_the_plan_shares_the_usable_cores():
    plan = plan_lanes(None, threads=None, encoders=2, cpu_backend=True)
    cores = usable_cores()
    assert plan == (LanePlan(2, cores // 2, plan.reason) if cores >= 2 else LanePlan(1, None, plan.reason))


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_bad_lane_counts_are_config_errors(bad, bundle_path):
    with pytest.raises(ConfigError, match="encoder_lanes must be a positive integer or None"):
        plan_lanes(bad, threads=2, encoders=3, cpu_backend=True)
    with pytest.raises(ConfigError, match="encoder_lanes"):
        Session(bundle_path, encoder_lanes=bad)


def test_jobs_run_at_once_in_lanes_and_in_turn_in_one():
    """Two jobs that each wait for the other finish only if they run at the same time."""
    def jobs(barrier):
        return {name: (lambda n=name: (barrier.wait(), n)[1]) for name in ("text", "image")}

    with_lanes = EncoderLanes(2)
    try:
        assert with_lanes.run(jobs(threading.Barrier(2, timeout=10))) == {"text": "text", "image": "image"}
    finally:
        with_lanes.close()
    with pytest.raises(threading.BrokenBarrierError):
        EncoderLanes(1).run(jobs(threading.Barrier(2, timeout=0.2)))


def test_a_failed_job_raises_once_every_job_has_finished():
    done = threading.Event()
    lanes = EncoderLanes(2)

    def slow():
        done.wait(0.3)
        done.set()
        return "ok"

    def bad():
        raise InputError("image 0 is not an image")

    try:
        with pytest.raises(InputError, match="image 0"):
            lanes.run({"image": bad, "text": slow})
        assert done.is_set()
    finally:
        lanes.close()


def test_the_longest_job_of_the_last_call_goes_first():
    assert lane_order(["image", "text", "audio"], {"image": 2.0, "text": 4.5, "audio": 0.3}) == ["text", "image", "audio"]
    assert lane_order(["image", "text"], {}) == ["image", "text"]
    lanes = EncoderLanes(2)
    try:
        lanes.run({"fast": lambda: None, "slow": lambda: threading.Event().wait(0.05)})
        assert lane_order(["fast", "slow"], lanes._last_ms) == ["slow", "fast"]
    finally:
        lanes.close()


def test_close_stops_the_lane_threads(bundle_path, rng):
    before = set(threading.enumerate())  # other Sessions' lanes (the session-scoped fixture's) stay

    def own_lanes():
        return [t for t in threading.enumerate() if t.name.startswith("mmedge-lane") and t not in before]

    with Session(bundle_path, threads=2) as s:
        s.predict(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), text="seven")
        assert own_lanes()
    assert not own_lanes()


def test_a_session_in_lanes_gives_what_it_gives_in_turn(bundle_path, rng):
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    waves = [(rng.standard_normal(16000) * 0.1).astype(np.float32) for _ in range(2)]
    with Session(bundle_path, threads=2, backend="ort") as lanes, \
            Session(bundle_path, threads=2, backend="ort", encoder_lanes=1) as in_turn:
        assert (lanes.lane_plan.lanes, lanes.lane_plan.graph_threads) == (2, 1)
        assert (in_turn.lane_plan.lanes, in_turn.lane_plan.graph_threads) == (1, 2)
        assert {r.loader.threads for r in lanes._runners.values()} == {1}
        assert {r.loader.threads for r in in_turn._runners.values()} == {2}
        for _ in range(3):  # the second and later calls run the longest encoder first
            a = lanes.predict(image=images, text=TEXTS, audio=waves, audio_rate=16000)
            b = in_turn.predict(image=images, text=TEXTS, audio=waves, audio_rate=16000)
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
            assert a.labels == b.labels
        with pytest.raises(InputError, match="NaN or Inf"):  # one lane's bad input: the call's error
            lanes.predict(image=images, text=TEXTS, audio=[np.full(100, np.nan, np.float32)] * 2, audio_rate=16000)


def test_openvino_graphs_in_lanes_are_compiled_unpinned(bundle_path):
    make = OpenVINOLoader.for_session(LoadSettings(bundle_path, "fp32", bundle_path / "engines", threads=1, lanes=2))
    with Bundle.open(bundle_path) as bundle:
        graph = GraphRef.from_bundle(bundle, "encoder.image", "fp32")
        assert make(graph).config()["ENABLE_CPU_PINNING"] is False
        alone = OpenVINOLoader.for_session(LoadSettings(bundle_path, "fp32", bundle_path / "engines", threads=2))
        assert "ENABLE_CPU_PINNING" not in alone(graph).config()
