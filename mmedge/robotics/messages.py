"""The typestore replay and the node use: ROS 2 Humble plus the message types it lacks.

``rosbags``' Humble store has ``sensor_msgs``, ``std_msgs`` and ``builtin_interfaces`` but not
``vision_msgs`` or ``audio_common_msgs``: their ``.msg`` definitions are registered here, as
published by those packages (vision_msgs 4.x, audio_common_msgs of ROS 2 Humble).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from mmedge.errors import ConfigError

__all__ = ["EXTRA_DEFINITIONS", "typestore", "make_header", "STRING", "CLASSIFICATION", "IMAGE", "COMPRESSED_IMAGE",
           "AUDIO_DATA", "AUDIO_DATA_STAMPED", "AUDIO_INFO"]

STRING = "std_msgs/msg/String"
CLASSIFICATION = "vision_msgs/msg/Classification"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
AUDIO_DATA = "audio_common_msgs/msg/AudioData"
AUDIO_DATA_STAMPED = "audio_common_msgs/msg/AudioDataStamped"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"

EXTRA_DEFINITIONS: dict[str, str] = {  # message type -> its .msg text
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    CLASSIFICATION: "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n",
    AUDIO_DATA: "uint8[] data\n",
    AUDIO_DATA_STAMPED: "std_msgs/Header header\naudio_common_msgs/AudioData audio\n",
    AUDIO_INFO: ("uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\n"
                 "string coding_format\n"),
}


def _rosbags() -> Any:
    try:
        import rosbags.typesys as typesys
    except ImportError:
        raise ConfigError("reading and writing bags needs rosbags: pip install 'mmedge[ros]'") from None
    return typesys


@lru_cache(maxsize=1)
def typestore() -> Any:
    """ROS 2 Humble's types plus ``EXTRA_DEFINITIONS`` (one shared ``rosbags`` Typestore).

    Raises:
        ConfigError: ``rosbags`` is not installed (the ``[ros]`` extra).
    """
    typesys = _rosbags()
    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    types: dict = {}
    for name, text in EXTRA_DEFINITIONS.items():
        types.update(typesys.get_types_from_msg(text, name))
    store.register(types)
    return store


def make_header(stamp_ns: int, frame_id: str = "") -> Any:
    """A ``std_msgs/Header`` of ``typestore()`` at ``stamp_ns`` nanoseconds."""
    store = typestore()
    time_type, header_type = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    return header_type(stamp=time_type(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                       frame_id=frame_id)
