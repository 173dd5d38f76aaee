"""ROS 2 launch file: the mmedge node on a camera, its captions and a microphone.

    source /opt/ros/humble/setup.bash          # rclpy comes from the ROS distribution, not PyPI
    pip install "mmedge[ros]"                  # into the Python that ROS uses
    ros2 launch examples/ros2_node_launch.py bundle:=/path/to/bundle precision:=int8

The node (``mmedge.ros``, console script ``mmedge-ros-node``) pairs the image and audio topics by
header stamp (approximate time, ``slop`` seconds), keeps the latest caption, and publishes
``/mmedge/prediction`` (``std_msgs/String``, JSON) and ``/mmedge/classification``
(``vision_msgs/Classification``, when vision_msgs is installed). See docs/robotics.md.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

ARGUMENTS = {  # launch argument = node parameter -> default ("" leaves the node's own default)
    "bundle": "", "precision": "fp32", "backend": "auto", "image_topic": "/camera/image_raw",
    "audio_topic": "", "audio_info_topic": "", "text_topic": "/caption", "text": "", "slop": "0.05",
}


def _node(context) -> list:
    """The node process, with a ``-p name:=value`` for every argument given a value."""
    ros_args = ["--ros-args"]
    for name in ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value:
            ros_args += ["-p", f"{name}:={value}"]
    return [ExecuteProcess(cmd=["mmedge-ros-node", *ros_args], output="screen", name="mmedge")]


def generate_launch_description() -> LaunchDescription:
    """The launch arguments and the node built from them."""
    declared = [DeclareLaunchArgument(name, default_value=value) for name, value in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
