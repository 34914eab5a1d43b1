"""The video runner: each video file (then the camera) into an annotated video and a JSON Lines file.

For each video, in ``out_dir``:

- ``<name>_segmentation.mp4``: every processed frame tinted by its segmentation, with a legend
  of all classes in its top-left corner (or, with a heatmap class, ``<name>_heatmap_<class>.mp4``:
  that class's heatmap); H.264, the source's frame rate divided by ``every_n``;
- ``<name>.jsonl``: one record per processed frame (records.py): index, timestamp, top class,
  scores, SAM points and masks, frames dropped (live sources).

Both are written under temporary names and renamed when the video ends, is cut short by a decode
error, or is stopped (the command's stop event, or KeyboardInterrupt): the video is then closed
properly (playable) with the frames done so far; a run that wrote no frame leaves no file. Frames
whose size changes mid-stream are scaled to the first frame's size in the output video (and said so).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from clipxai.apps.segment.inputs import output_names
from clipxai.apps.segment.job import SegmentJob
from clipxai.apps.segment.load import Segmenter
from clipxai.apps.segment.records import dumps, frame_record
from clipxai.apps.segment.summary import Summary, announce
from clipxai.common.files import atomic_write_text, exclusive_output, prepare_output_dir
from clipxai.common.report import Reporter
from clipxai.errors import ClipxaiError
from clipxai.runtime.outputs import stable_suffix, unique_names
from clipxai.runtime.video.output import DEFAULT_FPS, VideoWriter, annotate, source_fps, source_frames
from clipxai.runtime.video.sources import VideoError


@dataclass
class VideoResult:
    """What one video run did: frames written, where it stopped and why (None: its end), notes, tracks."""

    source: str
    frames: int = 0
    outputs: list[Path] = field(default_factory=list)
    stopped: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    tracks: int | None = None   # with --track: the tracks it had


def run_videos(job: SegmentJob, reporter: Reporter, stop: threading.Event) -> Summary:
    """Each video of ``job`` (then its camera) through ``segment_video`` (module docstring)."""
    seg = Segmenter(job)
    heat = _heatmap_class(job, seg.classes)
    prepare_output_dir(job.out_dir)
    with exclusive_output(job.out_dir):
        return run_sources(job, seg, reporter, stop,
                           lambda source, name: segment_video(seg, source, name, job.out_dir, heat, reporter, stop))


def run_sources(job: SegmentJob, seg: Segmenter, reporter: Reporter, stop: threading.Event, one) -> Summary:
    """The videos, then the camera, one after the other, while the output folder is ours:
    ``one(source, name) -> VideoResult`` writes a source's files (a video path or a camera index)."""
    videos = [Path(v) for v in job.videos()]
    names = output_names(videos)
    sources = [(str(v), str(names[v])) for v in videos]
    if job.video.camera is not None:
        sources.append((job.video.camera, camera_name(job.video.camera, [str(n) for n in names.values()])))
    announce(reporter, seg, len(sources), "video")
    summary = Summary(unit="video")
    for i, (source, name) in enumerate(sources):
        if stop.is_set():
            summary.interrupted, summary.remaining = True, len(sources) - i
            break
        (job.out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            result = one(source, name)
        except VideoError as e:
            summary.failures.append((str(source), str(e).split(": ", 1)[-1]))
            continue
        _add(summary, source, result)
        if result.interrupted:
            summary.interrupted = True
            summary.remaining = len(sources) - i - 1
            break
    return summary


def camera_name(index: int, taken: list[str]) -> str:
    """``camera<N>``, with a stable suffix where a video of the run already has that name."""
    name = f"camera{index}"
    return name if name.casefold() not in {t.casefold() for t in taken} else f"{name}-{stable_suffix(name)}"


def _heatmap_class(job: SegmentJob, classes: list[str]) -> int | None:
    if job.video.heatmap is None:
        return None
    if job.video.heatmap not in classes:
        raise ClipxaiError(f"--heatmap {job.video.heatmap!r} is not one of the classes: {', '.join(classes)}")
    return classes.index(job.video.heatmap)


def _add(summary: Summary, source, result: VideoResult) -> None:
    summary.notes += [f"{source}: {note}" for note in result.notes]
    if result.frames:
        summary.done.append(source)
        tracks = f", {result.tracks} tracks" if result.tracks is not None else ""
        summary.notes.append(f"{source}: {result.frames} frames{tracks} -> {', '.join(p.name for p in result.outputs)}")
    if result.stopped:
        summary.failures.append((str(source), result.stopped.split(": ", 1)[-1]))


def segment_video(seg: Segmenter, source, name: str, out_dir: Path, heatmap_class: int | None = None,
                  reporter: Reporter | None = None, stop: threading.Event | None = None) -> VideoResult:
    """Run ``seg.predictor.stream`` over a video path or camera index (int) and write the annotated video and
    the JSON Lines file (module docstring); ``record_video`` says how it ends."""
    opts = seg.job.video
    kind = "segmentation" if heatmap_class is None else \
        f"heatmap_{unique_names(seg.classes)[seg.classes[heatmap_class]]}"
    stream = seg.predictor.stream(source, batch_size=opts.frames_per_batch, every_n=opts.every_n,
                                  smoothing=opts.smoothing)
    return record_video(source, name, (out_dir / f"{name}_{kind}.mp4", out_dir / f"{name}.jsonl"),
                        _segmented(seg, stream, heatmap_class), opts.every_n, reporter, stop)


def _segmented(seg: Segmenter, stream, heatmap_class: int | None) -> Iterator[tuple[Image.Image, str]]:
    """Each prediction of ``stream`` -> (the annotated frame, its JSON line); closing it closes the stream."""
    random = seg.predictor.bundle.random_weights
    with contextlib.closing(stream):
        for pred in stream:
            pred = seg.select(pred)
            image = Image.fromarray(pred.frame, "RGB")
            masks = seg.sam.masks(image, pred) if seg.sam is not None else None
            yield annotate(image, pred, heatmap_class, random, masks), dumps(frame_record(pred, masks)) + "\n"


def record_video(source, name: str, paths: tuple[Path, Path], items: Iterator[tuple[Image.Image, str]],
                 every_n: int = 1, reporter: Reporter | None = None, stop: threading.Event | None = None
                 ) -> VideoResult:
    """Write ``items`` ((picture, JSON line) per processed frame of ``source``, a path or a camera index) into
    ``paths`` (the video, the JSON Lines file), with a progress bar named ``name``. ``stop`` (or
    KeyboardInterrupt) ends it cleanly after the frame in progress (``interrupted``); a decode error mid-file
    ends it with ``stopped`` saying where; either way both files hold the frames done (module docstring)."""
    from clipxai.common.report import SILENT
    reporter, stop = reporter or SILENT, stop or threading.Event()
    live = isinstance(source, int)
    writer = VideoWriter(paths[0], (DEFAULT_FPS if live else source_fps(source)) / every_n)
    result, lines = VideoResult(str(source)), []
    total = None if live else source_frames(source)
    try:
        with reporter.progress(-(-total // every_n) if total else None, name) as advance:
            _frames(items, writer, lines, result, stop, advance)
    except BaseException:
        writer.abandon()
        raise
    result.frames = writer.frames
    if writer.resized_at is not None:
        result.notes.append(f"frame size changed at processed frame {writer.resized_at}: scaled to the first "
                            f"frame's {writer.size[0]}x{writer.size[1]} in the output video")
    video = writer.close()
    if video is not None:
        result.outputs += [video, atomic_write_text(paths[1], "".join(lines))]
    return result


def _frames(items, writer: VideoWriter, lines: list[str], result: VideoResult, stop: threading.Event,
            advance) -> None:
    """The frame loop: write each frame and its line; until the end, a stop (checked before each frame's
    work) or an error."""
    start = time.perf_counter()
    try:
        with contextlib.closing(items):
            while not stop.is_set():
                item = next(items, None)
                if item is None:
                    return
                writer.write(item[0])
                lines.append(item[1])
                advance(1, f"{writer.frames / max(time.perf_counter() - start, 1e-9):.1f} frames/s")
            result.interrupted = True
    except KeyboardInterrupt:
        result.interrupted = True
    except VideoError as e:
        if e.stopped_at is None:
            raise
        result.stopped = str(e)
