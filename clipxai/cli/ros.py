"""``clipxai ros BUNDLE [--sam SAM_BUNDLE [--track]] [--ros-args ...]``: run the ROS 2 node (clipxai/apps/ros; docs/ros.md).

Everything from ``--ros-args`` on goes to ``rclpy.init`` (remappings, ``-p`` parameters, ``-r __node:=NAME``).
Ctrl-C or SIGTERM stops the node after the frame in progress, exit 0; a second one stops at once (130).
"""

from __future__ import annotations

import logging

import click

from clipxai.cli import options as opt
from clipxai.cli.console import ConsoleReporter, cli_errors, stop_on_signals
from clipxai.errors import ClipxaiError

ROS_ARGS = "--ros-args"
EXIT_HELP = "Exit status: 0 stopped by Ctrl-C or SIGTERM, 2 bad input (before the node starts), 130 a second signal."


@click.command(context_settings={**opt.COMMAND, "ignore_unknown_options": True}, epilog=EXIT_HELP)
@click.argument("bundle", type=click.Path())
@opt.expect_digest()
@click.option("--sam", "sam_bundle", type=click.Path(), default=None, metavar="SAM_BUNDLE",
              help="A mask-model bundle (clipxai export-sam): each class's object mask, published on 'masks'.")
@opt.track_options
@click.argument("ros_args", nargs=-1, type=click.UNPROCESSED)
def ros(bundle, expect_digest, sam_bundle, track, ros_args):
    """Run a ROS 2 node: segmentation, scores and diagnostics for an image topic (needs clipxai[ros],
    or a sourced ROS 2 Jazzy).

    Topics are relative, so the usual remapping works; parameters are ROS parameters (docs/ros.md):

    \b
      clipxai ros BUNDLE --ros-args -r image:=/camera/color/image_raw \\
          -p publish_overlay:=true -p threads:=4
    """
    from clipxai.apps.ros import RosJob, run_node
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with cli_errors():
        if ros_args and ros_args[0] != ROS_ARGS:
            raise ClipxaiError(f"unexpected argument {ros_args[0]!r}: ROS arguments follow {ROS_ARGS}")
        job = RosJob(bundle=bundle, ros_args=tuple(ros_args), expect_digest=expect_digest, sam=sam_bundle,
                     track=track)
        reporter = ConsoleReporter()
        with stop_on_signals() as stop:
            stats = run_node(job, reporter, stop)
    click.echo(f"stopped: {stats.processed} frames processed, {stats.dropped} dropped, "
               f"{sum(stats.skipped.values())} skipped, {stats.failed} failed", err=True)


main = ros  # the clipxai-ros alias

if __name__ == "__main__":  # pragma: no cover
    ros()
