"""The approximate-time synchronizer (message_filters' policy) and latest-text-wins."""
from __future__ import annotations

import threading

import pytest

from mmedge.errors import ConfigError
from mmedge.robotics.sync import ApproximateTimeSync, LatestValue

MS = 1_000_000


def test_pairs_jittered_stamps_within_slop():
    sync = ApproximateTimeSync(["/cam", "/mic"], queue_size=5, slop=0.01)
    assert sync.add("/cam", 100 * MS, "c1") is None
    match = sync.add("/mic", 104 * MS, "m1")
    assert {t: (s.stamp_ns, s.item) for t, s in match.items()} == {"/cam": (100 * MS, "c1"), "/mic": (104 * MS, "m1")}
    assert sync.pending() == {"/cam": 0, "/mic": 0}


def test_nearest_partner_wins_and_far_ones_wait():
    sync = ApproximateTimeSync(["/cam", "/mic"], queue_size=5, slop=0.01)
    sync.add("/mic", 92 * MS, "early")
    sync.add("/mic", 99 * MS, "near")
    match = sync.add("/cam", 100 * MS, "c")
    assert match["/mic"].item == "near"
    assert sync.add("/cam", 200 * MS, "c2") is None  # nothing within 10 ms
    assert sync.pending() == {"/cam": 1, "/mic": 1}


def test_full_queue_drops_the_oldest():
    sync = ApproximateTimeSync(["/cam", "/mic"], queue_size=2, slop=0.001)
    for i in range(5):
        sync.add("/cam", i * 100 * MS, i)
    assert sync.dropped == {"/cam": 3, "/mic": 0}
    assert sync.add("/mic", 400 * MS, "m")["/cam"].item == 4
    assert sync.add("/mic", 0, "m0") is None  # its partner was dropped


def test_one_topic_matches_at_once_and_config_is_checked():
    assert ApproximateTimeSync(["/cam"]).add("/cam", 5, "x")["/cam"].item == "x"
    for bad in ({"topics": []}, {"topics": ["/a", "/a"]}, {"topics": ["/a"], "queue_size": 0},
                {"topics": ["/a"], "slop": -1.0}):
        with pytest.raises(ConfigError):
            ApproximateTimeSync(bad.pop("topics"), **bad)


def test_thread_safe_pairing():
    sync = ApproximateTimeSync(["/a", "/b"], queue_size=1000, slop=0.0)
    matches = []

    def feed(topic):
        for i in range(500):
            if (m := sync.add(topic, i * MS, i)) is not None:
                matches.append(m)

    threads = [threading.Thread(target=feed, args=(t,)) for t in ("/a", "/b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(matches) == 500 and all(m["/a"].item == m["/b"].item for m in matches)


def test_latest_value():
    caption = LatestValue("fixed")
    assert caption.get() == "fixed"
    caption.set("new")
    assert caption.get() == "new"
    assert LatestValue().get() is None


def test_sample_window_keeps_the_last_seconds_up_to_a_stamp():
    import numpy as np

    from mmedge.robotics.sync import SampleWindow

    window = SampleWindow(0.25)
    assert window.window(10**9, 8) is None
    for k in range(5):  # 8 Hz, one sample per 125 ms chunk
        window.add((k + 1) * 125 * MS, np.array([k], np.float32))
    assert window.window(500 * MS, 8).tolist() == [2, 3]  # chunks stamped <= 500 ms, the last 2 samples
    assert window.window(100 * MS, 8) is None
    for k in range(5, 10):
        window.add((k + 1) * 125 * MS, np.array([k], np.float32))
    assert window.window(1250 * MS, 8).tolist() == [8, 9]
    assert window.window(500 * MS, 8) is None  # older than twice the window: forgotten
    with pytest.raises(ConfigError):
        SampleWindow(0)
