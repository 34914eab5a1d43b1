#!/usr/bin/env python
"""The ROS node's cost over ``Predictor.predict`` on the same frames, side by side in one run.

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=87 \
        python scripts/benchmark_ros.py BUNDLE --frames 20 --threads 2

For 640x480 bgr8 frames (random pixels), alternating frame by frame in one process with one Predictor:

- predict: ``Predictor.predict(rgb)`` on the frame already in RGB, then its segmentation (as the node
  needs it);
- node: what the node does for a frame (clipxai/apps/ros/node.py): the Image message's bytes -> RGB
  (convert.image_to_rgb), predict, segmentation -> mono8 message, scores -> Float32MultiArray, both
  published (rmw_fastrtps, a tester subscription in the same process, LOCALHOST discovery).

Prints the median time per frame of each and the ratio node / predict.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "87")
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray

    from clipxai.apps.ros.convert import ImageFields, image_to_rgb
    from clipxai.apps.ros.node import NodeServer, RosJob, RosSettings, open_predictor

    settings = RosSettings(threads=args.threads, providers="cpu")
    predictor = open_predictor(RosJob(args.bundle), settings)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("clipxai_benchmark", context=ctx)
    server = NodeServer(node, predictor, settings)
    got = []
    node.create_subscription(Image, "segmentation", got.append, 10)
    node.create_subscription(Float32MultiArray, "scores", got.append, 10)

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), np.uint8) for _ in range(4)]
    messages = []
    for bgr in frames:
        m = Image(encoding="bgr8", height=480, width=640, step=640 * 3)
        m.data = bgr.tobytes()
        messages.append(m)
    rgbs = [np.ascontiguousarray(b[..., ::-1]) for b in frames]

    def plain(i):
        predictor.predict(rgbs[i % 4]).segmentation

    def through_node(i):
        m = messages[i % 4]
        server.process(m.header, image_to_rgb(ImageFields(m.encoding, m.height, m.width, m.step, m.data)))

    plain(0), through_node(0)  # warm up
    times = {"predict": [], "node": []}
    for i in range(args.frames):
        for name, f in (("predict", plain), ("node", through_node)) if i % 2 else \
                (("node", through_node), ("predict", plain)):
            t = time.perf_counter()
            f(i)
            times[name].append(time.perf_counter() - t)
    a, b = statistics.median(times["predict"]), statistics.median(times["node"])
    print(f"{predictor.bundle.backbone_name} {predictor.bundle.image_size}, 640x480 bgr8, {args.frames} frames each, "
          f"{args.threads} threads, {predictor.provider}")
    print(f"| path | median ms / frame |\n|---|---|\n| Predictor.predict | {1000 * a:.1f} |\n"
          f"| node (convert in, predict, convert out, publish) | {1000 * b:.1f} |")
    print(f"node / predict: {b / a:.3f}")
    server.close()
    node.destroy_node()
    ctx.try_shutdown()


if __name__ == "__main__":
    main()
