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
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration


def generate_launch_description() -> LaunchDescription:
    """The node with its parameters taken from launch arguments."""
    args = {
        "bundle": "", "precision": "fp32", "backend": "auto", "image_topic": "/camera/image_raw",
        "audio_topic": "", "audio_info_topic": "/audio_info", "text_topic": "/caption", "slop": "0.05",
    }
    declared = [DeclareLaunchArgument(name, default_value=value) for name, value in args.items()]
    ros_args = ["--ros-args"]
    for name in args:
        ros_args += ["-p", [f"{name}:=", LaunchConfiguration(name)]]
    node = ExecuteProcess(cmd=["mmedge-ros-node", *ros_args], output="screen", name="mmedge")
    return LaunchDescription([*declared, node])
