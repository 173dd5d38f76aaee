"""Robots and cameras: rosbag replay, the ROS 2 node's shared pieces (torch-free).

| module        | what it does                                                                   |
|---------------|--------------------------------------------------------------------------------|
| `messages`    | the typestore: ROS 2 Humble plus `vision_msgs` and `audio_common_msgs`          |
| `convert`     | ROS messages -> model inputs (images, captions, audio); predictions -> messages |
| `sync`        | the approximate-time synchronizer and latest-text-wins, as plain classes        |
| `replayer`    | `replay(...)`: a bag through a Session into an output bag (`mmedge replay`)     |
| `bag_io`      | opening the input bag, checking its topics, writing the output bag              |

``rosbags`` (the ``[ros]`` extra) is imported by ``messages`` and ``bag_io`` only; ``convert``
and ``sync`` work on any object with the messages' fields (rosbags' or rclpy's).
"""
