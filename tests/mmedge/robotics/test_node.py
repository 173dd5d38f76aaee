"""``mmedge.ros``: its parameters map onto the same ReplayConfig and topic roles as replay.

rclpy is not installable here (it comes from a ROS distribution), so the node class itself is not
started; the pieces it delegates to (conversion, synchronizer, MessagePredictor) are tested with replay.
"""
from __future__ import annotations

import pytest

from mmedge.errors import ConfigError
from mmedge.ros import PARAMETER_DEFAULTS, NodeParams, main


def test_parameters_become_the_replay_config():
    params = NodeParams.from_mapping({**PARAMETER_DEFAULTS, "bundle": "b", "image_topic": "/cam", "audio_topic": "/mic",
                                      "text_topic": "/cap", "slop": 0.02, "queries": []})
    cfg = params.replay_config()
    got = (cfg.image_topic, cfg.audio_topic, cfg.text_topic, cfg.slop, cfg.text)
    assert got == ("/cam", "/mic", "/cap", 0.02, None)
    assert params.roles() == {"/cam": "image", "/mic": "audio", "/cap": "text", "/audio_info": "audio_info"}
    assert NodeParams.from_mapping({"bundle": "b", "queries": ["x", "y"]}).replay_config().queries == ("x", "y")


def test_bad_parameters():
    with pytest.raises(ConfigError, match="bundle parameter"):
        NodeParams.from_mapping({})
    with pytest.raises(ConfigError, match="unknown node parameters"):
        NodeParams.from_mapping({"bundle": "b", "topic": "/x"})


def test_main_without_rclpy_says_where_it_comes_from(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rclpy", None)
    with pytest.raises(ConfigError, match="rclpy from your ROS 2 distribution"):
        main([])
