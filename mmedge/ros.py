"""``mmedge.ros``: the ROS 2 node (``mmedge-ros-node``), a thin class over replay's functions.

It subscribes to the configured topics, feeds every message to the same ``MessagePredictor`` as
``mmedge replay`` (same conversion, same approximate-time synchronizer, latest caption wins) and
publishes the same messages: ``<prefix>/prediction`` (``std_msgs/String``, JSON) and, where
``vision_msgs`` is installed, ``<prefix>/classification`` (``vision_msgs/Classification``).

``rclpy`` and the message packages come from the ROS 2 distribution (``source
/opt/ros/humble/setup.bash``), not from PyPI; they are imported when the node starts, never at
import time. They are not installed on the CI machine: the shared functions are tested there.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from mmedge.errors import ConfigError

__all__ = ["NodeParams", "MmedgeNode", "main", "PARAMETER_DEFAULTS"]


@dataclass(frozen=True)
class NodeParams:
    """The node's ROS parameters (``ros2 run ... --ros-args -p bundle:=/path``).

    Attributes:
        bundle: Bundle folder or ``.mmedge`` file (required).
        precision: Bundle precision (``fp32``, ``fp16``, ``int8``...).
        backend: ``auto`` or a backend name.
        image_topic: Image topic ('' for none).
        compressed: The image topic carries ``sensor_msgs/CompressedImage``.
        audio_topic: ``audio_common_msgs/AudioData`` topic ('' for none).
        audio_info_topic: Its ``AudioInfo`` topic.
        audio_window: Seconds of chunked audio before each frame (0: one message = one clip).
        text_topic: ``std_msgs/String`` captions ('' for none).
        text: A fixed caption.
        queries: Open-vocabulary queries.
        slop: Largest stamp spread of a pair, seconds.
        queue_size: Messages per topic the synchronizer keeps.
        prefix: Output topic prefix.
    """

    bundle: str = ""
    precision: str = "fp32"
    backend: str = "auto"
    image_topic: str = "/image"
    compressed: bool = False
    audio_topic: str = ""
    audio_info_topic: str = "/audio_info"
    audio_window: float = 0.0
    text_topic: str = ""
    text: str = ""
    queries: tuple[str, ...] = ()
    slop: float = 0.05
    queue_size: int = 10
    prefix: str = "/mmedge"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "NodeParams":
        """Parameters from name -> value (unknown names are a ``ConfigError``)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown node parameters {unknown}; the node takes {sorted(known)}")
        params = cls(**{k: tuple(v) if k == "queries" else v for k, v in values.items()})
        if not params.bundle:
            raise ConfigError("the node needs the bundle parameter: --ros-args -p bundle:=/path/to/bundle")
        return params

    def replay_config(self) -> Any:
        """The ``ReplayConfig`` (topics and pairing) the shared ``MessagePredictor`` takes."""
        from mmedge.robotics.replayer import ReplayConfig

        return ReplayConfig(image_topic=self.image_topic or None, audio_topic=self.audio_topic or None,
                            audio_info_topic=self.audio_info_topic or None,
                            audio_window=self.audio_window, text_topic=self.text_topic or None,
                            text=self.text or None, queries=self.queries, queue_size=self.queue_size,
                            slop=self.slop, prefix=self.prefix)

    def roles(self) -> dict[str, str]:
        """Topic -> role, as replay's ``plan_inputs`` gives them."""
        pairs = ((self.image_topic, "image"), (self.audio_topic, "audio"), (self.text_topic, "text"),
                 (self.audio_info_topic if self.audio_topic else "", "audio_info"))
        return {t: r for t, r in pairs if t}


PARAMETER_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(NodeParams)}


def _import(module: str, names: Sequence[str]) -> list[Any] | None:
    try:
        mod = __import__(module, fromlist=list(names))
    except ImportError:
        return None
    return [getattr(mod, n) for n in names]


def _rclpy() -> Any:
    try:
        import rclpy
    except ImportError:
        raise ConfigError("the ROS 2 node needs rclpy from your ROS 2 distribution (source "
                          "/opt/ros/<distro>/setup.bash first); rclpy is not installable from PyPI") from None
    return rclpy


class MmedgeNode:
    """Wraps an ``rclpy`` node: subscriptions into a ``MessagePredictor``, its payloads out as messages."""

    def __init__(self, node: Any, params: NodeParams) -> None:
        from mmedge.robotics.predictor import MessagePredictor
        from mmedge.robotics.replayer import check_modalities
        from mmedge.runtime import Session

        self.node, self.params = node, params
        self.session = Session(params.bundle, precision=params.precision, backend=params.backend)
        check_modalities(self.session.bundle, params.replay_config())
        self.predictor = MessagePredictor(self.session, params.replay_config(), params.roles(), self._publish)
        (self._string,) = _import("std_msgs.msg", ["String"])
        self._vision = _import("vision_msgs.msg", ["Classification", "ObjectHypothesis"])
        self._out = node.create_publisher(self._string, f"{params.prefix}/prediction", 10)
        self._out_cls = (node.create_publisher(self._vision[0], f"{params.prefix}/classification", 10)
                         if self._vision else None)
        for topic, role in params.roles().items():
            node.create_subscription(self._msg_type(role), topic, self._callback(topic), params.queue_size)

    def _msg_type(self, role: str) -> Any:
        table = {"image": ("sensor_msgs.msg", "CompressedImage" if self.params.compressed else "Image"),
                 "text": ("std_msgs.msg", "String"), "audio": ("audio_common_msgs.msg", "AudioData"),
                 "audio_info": ("audio_common_msgs.msg", "AudioInfo")}
        module, name = table[role]
        found = _import(module, [name])
        if found is None:
            raise ConfigError(f"the {role} topic needs {module}.{name}: install the ROS package "
                              f"{module.split('.')[0].replace('_', '-')} (apt ros-<distro>-...)")
        return found[0]

    def _callback(self, topic: str) -> Any:
        from mmedge.errors import MmedgeError

        def on_message(msg: Any) -> None:
            try:
                self.predictor.handle(topic, self.node.get_clock().now().nanoseconds, msg)
            except MmedgeError as e:
                self.node.get_logger().warning(f"{topic}: {e}")
        return on_message

    def _publish(self, payloads: list, stamp_ns: int, frame_id: str) -> None:
        from mmedge.robotics import convert

        body = convert.prediction_body(payloads, stamp_ns, frame_id)
        self._out.publish(self._string(data=convert.payload_json(body)))
        if self._out_cls is not None:
            self._out_cls.publish(self._classification(payloads, stamp_ns, frame_id))

    def _classification(self, payloads: list, stamp_ns: int, frame_id: str) -> Any:
        from mmedge.robotics.convert import prediction_results

        classification, hypothesis = self._vision
        msg = classification()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = frame_id
        msg.results = [hypothesis(class_id=c, score=float(s)) for c, s in prediction_results(payloads)]
        return msg

    def close(self) -> None:
        """Frees the Session."""
        self.session.close()


def main(args: Sequence[str] | None = None) -> None:
    """``mmedge-ros-node``: declares the parameters, builds the node and spins until shutdown."""
    rclpy = _rclpy()
    rclpy.init(args=args)
    node = rclpy.create_node("mmedge")
    for name, default in PARAMETER_DEFAULTS.items():  # an empty list has no type: declare the array's type
        node.declare_parameter(name, rclpy.Parameter.Type.STRING_ARRAY if name == "queries" else default)
    values = {n: node.get_parameter(n).value for n in PARAMETER_DEFAULTS}
    values["queries"] = values["queries"] or ()
    wrapper = MmedgeNode(node, NodeParams.from_mapping(values))
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        wrapper.close()
        node.destroy_node()
        rclpy.try_shutdown()
