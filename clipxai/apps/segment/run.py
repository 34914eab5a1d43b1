"""``run_segment(job)``: check the job, pick its runner, return what happened.

    command -> SegmentJob -> run_segment -> runner (images | videos | tracks | ray) -> Predictor -> writer

Runners report through a ``Reporter`` and stop after the image or frame in progress once
``stop`` is set (the command sets it on Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import threading

from clipxai.apps.segment.job import SegmentJob
from clipxai.apps.segment.summary import Summary
from clipxai.common.report import SILENT, Reporter


def run_segment(job: SegmentJob, reporter: Reporter = SILENT, stop: threading.Event | None = None) -> Summary:
    """Segment every input of ``job`` into result files in ``job.out_dir`` (see apps/segment/writer.py
    for images, videos.py for videos and cameras, tracks.py with ``job.track``); ``job.ray`` spreads images
    over Ray (ray.py)."""
    job.check()
    stop = stop or threading.Event()
    if job.ray is not None:
        from clipxai.apps.segment.ray import run_on_ray
        return run_on_ray(job, reporter, stop)
    if job.track is not None:
        from clipxai.apps.segment.tracks import run_tracks
        return run_tracks(job, reporter, stop)
    if job.video_mode:
        from clipxai.apps.segment.videos import run_videos
        return run_videos(job, reporter, stop)
    from clipxai.apps.segment.images import run_images
    return run_images(job, reporter, stop)
