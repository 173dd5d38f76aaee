"""The bags of a replay: opening the input, checking its topics, writing the output bag."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.errors import BagError, InputError
from mmedge.robotics import convert, messages

__all__ = ["open_reader", "InputPlan", "plan_inputs", "OutputBag", "TOPIC_TYPES"]

TOPIC_TYPES: dict[str, tuple[str, ...]] = {  # role -> message types replay reads for it
    "image": (messages.IMAGE, messages.COMPRESSED_IMAGE),
    "audio": (messages.AUDIO_DATA, messages.AUDIO_DATA_STAMPED),
    "audio_info": (messages.AUDIO_INFO,),
    "text": (messages.STRING,),
}


def open_reader(path: Path) -> Any:
    """An open ``rosbags.highlevel.AnyReader`` over a rosbag2 folder or a ROS 1 ``.bag``.

    Raises:
        BagError: the path does not exist or is not a readable bag (truncated, corrupt, not a bag).
    """
    store = messages.typestore()
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise BagError(f"bag {path} does not exist; pass a rosbag2 folder (metadata.yaml + .mcap/.db3) or a .bag file")
    reader = AnyReader([path], default_typestore=store)
    try:
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises several types for a bad file; all mean "unreadable"
        raise BagError(f"cannot read bag {path} ({type(e).__name__}: {e}); is it complete (a recording that was "
                       "killed may lack its metadata.yaml or MCAP footer: `ros2 bag reindex` repairs it)?") from None
    return reader


@dataclass(frozen=True)
class InputPlan:
    """The input connections a replay reads, each topic's role, and the topics the synchronizer pairs."""

    connections: tuple[Any, ...]
    roles: dict[str, str]
    paired: tuple[str, ...]


def _check_topic(topic: str, role: str, found: dict[str, str], bag: str) -> None:
    if topic not in found:
        listing = ", ".join(f"{t} ({ty})" for t, ty in sorted(found.items())) or "none"
        raise InputError(f"topic {topic!r} is not in bag {bag}; its topics: {listing}")
    if found[topic] not in TOPIC_TYPES[role]:
        raise InputError(f"topic {topic!r} holds {found[topic]}; as the {role} topic replay reads "
                         f"{' or '.join(TOPIC_TYPES[role])}")


def plan_inputs(reader: Any, config: Any) -> InputPlan:
    """Checks the configured topics against the bag and returns what to read.

    Raises:
        InputError: a topic the bag lacks (its topics listed), or one of another message type.
    """
    found = {c.topic: c.msgtype for c in reader.connections}
    bag = str(reader.paths[0])
    roles = {t: r for t, r in ((config.image_topic, "image"), (config.audio_topic, "audio"),
                               (config.text_topic, "text"), (config.audio_info_topic, "audio_info")) if t}
    for topic, role in roles.items():
        _check_topic(topic, role, found, bag)
    if config.audio_topic and not config.audio_info_topic:
        roles.update({t: "audio_info" for t, ty in found.items() if ty == messages.AUDIO_INFO})
    paired = tuple(t for t in (config.image_topic, config.audio_topic) if t)
    connections = tuple(c for c in reader.connections if c.topic in roles)
    return InputPlan(connections, roles, paired)


class OutputBag:
    """The output rosbag2: copied inputs, ``<prefix>/prediction`` (String) and ``<prefix>/classification``.

    A context manager: the bag is closed (metadata written) however the block ends.
    """

    def __init__(self, path: Path, plan: InputPlan, config: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if path.exists():
            raise BagError(f"output bag {path} exists; remove it or pass another -o")
        path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if config.storage == "mcap" else StoragePlugin.SQLITE3
        self.path, self.plan, self.config = path, plan, config
        self.store = messages.typestore()
        self._writer = Writer(path, version=9, storage_plugin=plugin)
        self._copies: dict[str, Any] = {}

    def __enter__(self) -> "OutputBag":
        self._writer.open()
        add = self._writer.add_connection
        self._prediction = add(f"{self.config.prefix}/prediction", messages.STRING, typestore=self.store)
        self._classification = add(f"{self.config.prefix}/classification", messages.CLASSIFICATION,
                                   typestore=self.store)
        if self.config.copy_inputs:
            for conn in self.plan.connections:
                if conn.topic not in self._copies:
                    self._copies[conn.topic] = add(conn.topic, conn.msgtype, typestore=self.store)
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def copy(self, conn: Any, time_ns: int, raw: bytes, reader: Any) -> None:
        """Copies one input message (ROS 1 messages converted to CDR; one that does not convert is left out)."""
        target = self._copies.get(conn.topic)
        if target is None:
            return
        if not reader.is2:
            try:
                raw = self.store.serialize_cdr(reader.deserialize(raw, conn.msgtype), conn.msgtype)
            except Exception:  # noqa: BLE001 - a corrupt message: replay records it as a skip
                return
        self._writer.write(target, time_ns, raw)

    def write_prediction(self, payloads: list[dict], stamp_ns: int, frame_id: str) -> None:
        """Writes one prediction (one payload, or one per query) at the input's header stamp."""
        types = self.store.types
        text = types[messages.STRING](data=convert.payload_json(convert.prediction_body(payloads, stamp_ns, frame_id)))
        self._writer.write(self._prediction, stamp_ns, self.store.serialize_cdr(text, messages.STRING))
        hypothesis = types["vision_msgs/msg/ObjectHypothesis"]
        results = convert.prediction_results(payloads)
        msg = types[messages.CLASSIFICATION](header=messages.make_header(stamp_ns, frame_id),
                                             results=[hypothesis(class_id=c, score=float(s)) for c, s in results])
        self._writer.write(self._classification, stamp_ns, self.store.serialize_cdr(msg, messages.CLASSIFICATION))

