"""``replay``: bags recorded with rosbags' writer, through the fixture bundle, into output bags."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rosbags")

from mmedge.errors import BagError, ConfigError, InputError  # noqa: E402
from mmedge.robotics.bag_io import open_reader  # noqa: E402
from mmedge.robotics.replayer import ReplayConfig, read_predictions, replay  # noqa: E402

from bags import RATE, reference_rows, write_bag  # noqa: E402

FULL = ReplayConfig(image_topic="/camera", audio_topic="/audio", text_topic="/caption", slop=0.02)


@pytest.fixture(scope="module")
def rows():
    return reference_rows(6)


def _expected(session, rows, i, audio=True):
    extra = {"audio": rows.waves[i], "audio_rate": RATE} if audio else {}
    return session.predict(image=rows.images[i], text=rows.texts[i], **extra)


def _assert_round_trip(session, rows, out, audio=True):
    got = read_predictions(out)
    assert [s for s, _ in got] == rows.stamps
    for i, (_, payload) in enumerate(got):
        want = _expected(session, rows, i, audio)
        assert payload["label"] == want.label
        probs = np.array([payload["probabilities"][lab] for lab in session.bundle.labels])
        np.testing.assert_allclose(probs, want.probabilities[0], atol=2e-6)
        assert set(payload["timings_ms"]) >= {"total"} and payload["frame_id"] == "camera"


@pytest.mark.parametrize("storage,compressed", [("mcap", False), ("sqlite3", True)])
def test_round_trip_equals_session_predict(session, rows, tmp_path, storage, compressed):
    bag = write_bag(tmp_path / "in", rows, storage=storage, compressed=compressed)
    summary = replay(session, bag, tmp_path / "out", FULL)
    assert summary.complete and summary.predictions == 6 and summary.skipped == 0
    assert summary.read == 6 * 3 + 1 and sum(summary.unpaired.values()) == 0
    _assert_round_trip(session, rows, tmp_path / "out")
    reader = open_reader(tmp_path / "out")  # rosbags reads it back: inputs copied beside the predictions
    topics = {c.topic: c.msgcount for c in reader.connections}
    reader.close()
    assert topics == {"/camera": 6, "/caption": 6, "/audio": 6, "/audio_info": 1, "/mmedge/prediction": 6,
                      "/mmedge/classification": 6}


def test_classification_messages_hold_every_label(session, rows, tmp_path):
    out = tmp_path / "out"
    replay(session, write_bag(tmp_path / "in", rows), out, FULL)
    reader = open_reader(out)
    conns = [c for c in reader.connections if c.topic == "/mmedge/classification"]
    msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    reader.close()
    assert msgs[0].header.frame_id == "camera"
    assert msgs[0].header.stamp.sec * 10**9 + msgs[0].header.stamp.nanosec == rows.stamps[0]
    assert len(msgs[0].results) == len(session.bundle.labels)
    assert msgs[0].results[0].class_id == _expected(session, rows, 0).label


def test_images_and_a_fixed_caption_without_audio(session, rows, tmp_path):
    bag = write_bag(tmp_path / "in", rows, audio=False, encoding="bgr8")
    cfg = ReplayConfig(image_topic="/camera", text="a handwritten seven")
    summary = replay(session, bag, tmp_path / "out", cfg)
    assert summary.predictions == 6
    got = read_predictions(tmp_path / "out")
    want = session.predict(image=rows.images[2], text="a handwritten seven")
    assert got[2][1]["label"] == want.label


def test_truncated_bag_is_a_bag_error(session, rows, tmp_path):
    bag = write_bag(tmp_path / "in", rows)
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    try:
        summary = replay(session, bag, tmp_path / "out", FULL)
    except BagError as e:
        assert "cannot read bag" in str(e)
        return
    assert not summary.complete and summary.error and summary.predictions < 6  # stopped part-way, said where
    assert len(read_predictions(tmp_path / "out")) == summary.predictions


def test_corrupt_message_is_a_recorded_skip(session, rows, tmp_path):
    bag = write_bag(tmp_path / "in", rows, corrupt=(2,))
    summary = replay(session, bag, tmp_path / "out", FULL)
    assert summary.complete and summary.predictions == 5 and summary.skipped == 1
    assert summary.skips[0].topic == "/camera" and "corrupt sensor_msgs/msg/Image" in summary.skips[0].reason
    assert summary.unpaired == {"/camera": 0, "/audio": 1}
    assert len(read_predictions(tmp_path / "out")) == 5


def test_unknown_encoding_is_a_recorded_skip(session, rows, tmp_path):
    bag = write_bag(tmp_path / "in", rows, encoding="yuv422")
    summary = replay(session, bag, tmp_path / "out", FULL)
    assert summary.predictions == 0 and summary.skipped == 6
    assert "image encoding 'yuv422' is not supported" in summary.skips[0].reason
    assert read_predictions(tmp_path / "out") == []


def test_missing_topic_lists_the_bags_topics(session, rows, tmp_path):
    bag = write_bag(tmp_path / "in", rows)
    with pytest.raises(InputError, match=r"'/front_camera' is not in bag .*/camera \(sensor_msgs/msg/Image\)"):
        replay(session, bag, tmp_path / "out", ReplayConfig(image_topic="/front_camera", text="x"))
    with pytest.raises(InputError, match="holds std_msgs/msg/String"):
        replay(session, bag, tmp_path / "out", ReplayConfig(image_topic="/caption", text="x"))
    assert not (tmp_path / "out").exists()


def test_no_pairs_leaves_a_valid_bag_and_counts_unpaired(session, rows, tmp_path):
    bag = write_bag(tmp_path / "in", rows, audio_shift_ns=45_000_000)
    summary = replay(session, bag, tmp_path / "out", FULL)
    assert summary.complete and summary.predictions == 0
    assert summary.unpaired == {"/camera": 6, "/audio": 6}
    assert read_predictions(tmp_path / "out") == []


def test_interrupt_keeps_every_prediction_made(session, rows, tmp_path):
    seen = []

    def stop_after_three(summary):
        seen.append(summary.predictions)
        if summary.predictions == 3:
            raise KeyboardInterrupt

    summary = replay(session, write_bag(tmp_path / "in", rows), tmp_path / "out", FULL, on_message=stop_after_three)
    assert summary.interrupted and summary.predictions == 3 and summary.last_time_ns is not None
    got = read_predictions(tmp_path / "out")
    assert [s for s, _ in got] == rows.stamps[:3]


def test_output_that_exists_and_bad_config_are_refused(session, rows, tmp_path):
    bag = write_bag(tmp_path / "in", rows)
    (tmp_path / "out").mkdir()
    with pytest.raises(BagError, match="exists"):
        replay(session, bag, tmp_path / "out", FULL)
    with pytest.raises(BagError, match="does not exist"):
        replay(session, tmp_path / "nothing", tmp_path / "out2", FULL)
    with pytest.raises(ConfigError, match="needs text: pass --text-topic, --text or --query"):
        replay(session, bag, tmp_path / "out3", ReplayConfig(image_topic="/camera"))
    with pytest.raises(ConfigError):
        ReplayConfig(text="x")
    with pytest.raises(ConfigError):
        ReplayConfig(image_topic="/camera", text="x", text_topic="/caption")


def test_ros1_bag(session, rows, tmp_path):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    from bags import image_msg

    store = get_typestore(Stores.ROS1_NOETIC)
    ros2 = get_typestore(Stores.ROS2_HUMBLE)
    with Writer(tmp_path / "in.bag") as w:
        cam = w.add_connection("/camera", "sensor_msgs/msg/Image", typestore=store)
        for i, stamp in enumerate(rows.stamps[:3]):
            msg = image_msg(ros2, rows.images[i], stamp)
            header = store.types["std_msgs/msg/Header"](seq=i, stamp=msg.header.stamp, frame_id="camera")
            ros1 = store.types["sensor_msgs/msg/Image"](header=header, height=msg.height, width=msg.width,
                                                        encoding="rgb8", is_bigendian=0, step=msg.step, data=msg.data)
            w.write(cam, stamp, store.serialize_ros1(ros1, cam.msgtype))
    summary = replay(session, tmp_path / "in.bag", tmp_path / "out", ReplayConfig(image_topic="/camera", text="seven"))
    assert summary.complete and summary.predictions == 3
    got = read_predictions(tmp_path / "out")
    assert got[1][1]["label"] == session.predict(image=rows.images[1], text="seven").label
    assert json.loads(json.dumps(got[1][1]))["stamp_ns"] == rows.stamps[1]


def test_open_vocabulary_queries(session, rows, tmp_path):
    queries = ("a handwritten seven", "zero")
    summary = replay(session, write_bag(tmp_path / "in", rows, audio=False), tmp_path / "out",
                     ReplayConfig(image_topic="/camera", queries=queries))
    assert summary.predictions == 6
    _, body = read_predictions(tmp_path / "out")[1]
    want = session.predict(image=[rows.images[1]] * 2, text=list(queries))
    assert [q["query"] for q in body["queries"]] == list(queries)
    assert [q["label"] for q in body["queries"]] == want.labels
    reader = open_reader(tmp_path / "out")
    conns = [c for c in reader.connections if c.topic == "/mmedge/classification"]
    msg = reader.deserialize(next(reader.messages(connections=conns))[2], conns[0].msgtype)
    reader.close()
    assert [r.class_id for r in msg.results] == [f"{q}: {lab}" for q, lab in zip(queries, want.labels)]


def test_chunked_audio_with_a_window(session, rows, tmp_path):
    from bags import write_chunked_audio_bag

    bag, stream, times = write_chunked_audio_bag(tmp_path / "in", rows)
    cfg = ReplayConfig(image_topic="/camera", audio_topic="/audio", text_topic="/caption", audio_window=0.3)
    summary = replay(session, bag, tmp_path / "out", cfg)
    heard_any = [i for i, stamp in enumerate(rows.stamps) if times[0] <= stamp]  # frames before any audio: skipped
    assert summary.complete and summary.skipped == len(rows.stamps) - len(heard_any) >= 1
    assert "no audio received yet" in summary.skips[0].reason
    got = read_predictions(tmp_path / "out")
    assert [s for s, _ in got] == [rows.stamps[i] for i in heard_any]
    chunk = len(stream) // len(times)
    for i, (stamp, payload) in zip(heard_any, got):
        heard = sum(t <= stamp for t in times) * chunk
        want = session.predict(image=rows.images[i], text=rows.texts[i], audio=stream[max(0, heard - 4800):heard],
                               audio_rate=RATE)
        probs = np.array([payload["probabilities"][lab] for lab in session.bundle.labels])
        np.testing.assert_allclose(probs, want.probabilities[0], atol=2e-6)
    with pytest.raises(ConfigError, match="audio-window"):
        ReplayConfig(image_topic="/camera", audio_window=0.3, text="x")
