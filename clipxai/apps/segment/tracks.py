"""The tracks runner (``clipxai segment VIDEO --sam SAM2_BUNDLE --track``): each video (then the camera) into
a tracks video and a JSON Lines file, with ``Predictor.track`` (clipxai/runtime/video/tracks.py).

For each video, in ``out_dir``:

- ``<name>_tracks.mp4``: every processed frame with each visible track's mask tinted in its own colour
  (one per id, the same all along) and labelled "class #id";
- ``<name>_tracks.jsonl``: one record per processed frame (records.track_record): index, timestamp,
  the classes prompted on it, and per track id, class, visible, score, area, bbox and the mask's COCO RLE.

Written as videos.py writes its files (record_video): atomic, playable after a stop or Ctrl-C, nothing
left by a run that wrote no frame. The SAM bundle must be SAM 2.1 with its tracking graphs: anything else
is refused before a file is written.
"""

from __future__ import annotations

import threading
from typing import Iterator

from PIL import Image

from clipxai.apps.segment.job import SegmentJob
from clipxai.apps.segment.load import Segmenter
from clipxai.apps.segment.records import dumps, track_record
from clipxai.apps.segment.summary import Summary
from clipxai.apps.segment.videos import VideoResult, record_video, run_sources
from clipxai.common.files import exclusive_output, prepare_output_dir
from clipxai.common.report import Reporter
from clipxai.errors import ClipxaiError
from clipxai.runtime.video.output import annotate_tracks


def run_tracks(job: SegmentJob, reporter: Reporter, stop: threading.Event) -> Summary:
    """Each video of ``job`` (then its camera) through ``track_video`` (module docstring)."""
    seg = Segmenter(job)
    tracker = open_tracker(seg)
    prepare_output_dir(job.out_dir)
    with exclusive_output(job.out_dir):
        return run_sources(job, seg, reporter, stop,
                           lambda source, name: track_video(seg, tracker, source, name, reporter, stop))


def open_tracker(seg: Segmenter):
    """A MaskTracker on the job's SAM bundle (its mask predictor, already open); a one-line error for a
    bundle without tracking graphs."""
    from clipxai.runtime.sam.tracker import MaskTracker
    try:
        return MaskTracker(seg.sam.predictor, options=seg.job.runtime)
    except ClipxaiError as e:
        raise ClipxaiError(f"--track needs a SAM 2.1 bundle with its tracking graphs: {e}") from None


def track_video(seg: Segmenter, tracker, source, name: str, reporter: Reporter | None = None,
                stop: threading.Event | None = None) -> VideoResult:
    """Track ``seg.sam``'s classes through a video path or camera index (int) and write the tracks video and
    its JSON Lines file (module docstring); ``record_video`` says how it ends. ``tracks``: the ids it had."""
    job, opts = seg.job, seg.job.video
    frames = seg.predictor.track(source, tracker, list(seg.sam.classes), job.track.reprompt_every,
                                 forget_after=job.track.forget_after, batch_size=opts.frames_per_batch,
                                 every_n=opts.every_n, smoothing=opts.smoothing)
    ids: set[int] = set()
    out = job.out_dir
    result = record_video(source, name, (out / f"{name}_tracks.mp4", out / f"{name}_tracks.jsonl"),
                          _drawn(frames, ids, seg.predictor.bundle.random_weights), opts.every_n, reporter, stop)
    result.tracks = len(ids)
    return result


def _drawn(frames, ids: set[int], random_weights: bool) -> Iterator[tuple[Image.Image, str]]:
    """Each TrackFrame -> (the tracks picture, its JSON line); the ids seen go into ``ids``. Closing it
    closes the frames."""
    try:
        for frame in frames:
            ids.update(t.id for t in frame.tracks)
            picture = annotate_tracks(Image.fromarray(frame.frame, "RGB"), frame.tracks, random_weights)
            yield picture, dumps(track_record(frame)) + "\n"
    finally:
        frames.close()
