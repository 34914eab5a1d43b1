"""``clipxai ros``: a ROS 2 node on a camera's image topics (node.py; docs/ros.md). The message conversions
(convert.py) and the frame hand-over (frames.py) need no ROS; node.py imports rclpy when it starts."""

from clipxai.apps.ros.node import RosJob, RosSettings, run_node

__all__ = ["RosJob", "RosSettings", "run_node"]
