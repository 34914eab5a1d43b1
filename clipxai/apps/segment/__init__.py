"""Segment inputs into result files: ``run_segment(job)`` (clipxai/apps/segment/run.py).

A ``SegmentJob`` (job.py) is made of small option groups; ``run_segment`` picks the runner:
images (images.py), videos and cameras (videos.py; tracks.py with --track), or Ray (ray.py). Every runner writes
each prediction's JSON record with records.py, so images, frames and Ray rows agree.
"""

from clipxai.apps.segment.job import (
    RayOptions, SamOptions, SegmentationOptions, SegmentJob, SlideOptions, TrackOptions, VideoOptions,
)
from clipxai.apps.segment.run import run_segment
from clipxai.apps.segment.summary import Summary

__all__ = ["SegmentJob", "SegmentationOptions", "SlideOptions", "VideoOptions", "SamOptions", "TrackOptions", "RayOptions",
           "Summary", "run_segment"]
