"""``clipxai-segment BUNDLE video.mp4 --out DIR`` (and ``--camera N``): an annotated video and a JSON Lines file.

For each video, in ``out_dir``:

- ``<name>_segmentation.mp4``: every processed frame tinted by its segmentation,
  with a legend of all classes in its top-left corner (or, with
  ``--heatmap CLASS``, ``<name>_heatmap_<class>.mp4``: that class's heatmap);
  H.264, the source's frame rate divided by ``--every-n``;
- ``<name>.jsonl``: one line per processed frame: index, timestamp, top class,
  scores, SAM points, frames dropped (live sources).

Both are written under temporary names and renamed when the video ends, is
cut short by a decode error, or is interrupted (Ctrl-C, SIGTERM): the video is
then closed properly (playable) with the frames done so far; a run that wrote
no frame leaves no file. Frames whose size changes mid-stream are scaled to the
first frame's size in the output video (and said so once).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipxai.common.files import atomic_write_text, temporary_name
from clipxai.runtime.outputs import json_safe, safe_name
from clipxai.runtime.video.sources import VideoError, require_av

DEFAULT_FPS = 25.0


@dataclass
class VideoResult:
    """What one video run did: frames written, where it stopped and why (None: its end), notes."""

    source: str
    frames: int = 0
    outputs: list[Path] = field(default_factory=list)
    stopped: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


class VideoWriter:
    """H.264 video from RGB frames, written under a temporary name and renamed by ``close``.
    Sides are padded to even numbers (yuv420p needs them); a frame of another size than the first
    is scaled to it."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), fps
        self.tmp = temporary_name(self.path)
        self.container = self.stream = self.size = None
        self.frames = 0
        self.resized_at: int | None = None

    def write(self, frame: Image.Image) -> None:
        av = require_av()
        if self.container is None:
            self.size = frame.size
            self.container = av.open(str(self.tmp), "w", format="mp4")
            self.stream = self.container.add_stream("h264", rate=Fraction(self.fps).limit_denominator(1001))
            self.stream.width, self.stream.height = (self.size[0] + 1) // 2 * 2, (self.size[1] + 1) // 2 * 2
            self.stream.pix_fmt = "yuv420p"
        if frame.size != self.size:
            self.resized_at = self.frames if self.resized_at is None else self.resized_at
            frame = frame.resize(self.size, Image.BILINEAR)
        canvas = np.zeros((self.stream.height, self.stream.width, 3), np.uint8)
        canvas[:self.size[1], :self.size[0]] = np.asarray(frame.convert("RGB"))
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush, close and rename into place; None (and nothing left) when no frame was written."""
        if self.container is None:
            return None
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.tmp.replace(self.path)
        return self.path

    def abandon(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - removing it anyway
                pass
        self.tmp.unlink(missing_ok=True)


def legend_box(picture: Image.Image, classes: list[str], colours: np.ndarray) -> Image.Image:
    """Draw a legend of every class in the picture's top-left corner (fixed, so every frame has it);
    none on a picture too small to hold it beside the scene."""
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    row = 14
    width = int(max(draw.textlength(c, font=font) for c in classes)) + 24
    top = 20  # below the banner a random-weights bundle's frames carry
    if 2 * width > picture.width or 2 * (top + row * len(classes)) > picture.height:
        return picture
    draw.rectangle([2, top, 2 + width, top + 2 + row * len(classes)], fill=(255, 255, 255))
    for i, name in enumerate(classes):
        y = top + 2 + i * row
        draw.rectangle([5, y + 2, 14, y + 11], fill=tuple(int(v) for v in colours[i]), outline=(0, 0, 0))
        draw.text((18, y), name, fill=(0, 0, 0), font=font)
    return picture


def annotate(image: Image.Image, pred, heatmap_class: int | None, random_weights: bool = False,
             masks=None) -> Image.Image:
    """The frame for the output video: segmentation tint + legend (the SAM masks' label map when there
    are masks), or one class's heatmap + its name; a red banner on every frame of a random-weights bundle."""
    from clipxai.runtime.visualize import overlay, palette, stamp, tint
    banner = "RANDOM WEIGHTS - not a real result" if random_weights else None
    if heatmap_class is not None:
        pic = overlay(image, lambda r0, r1: pred.heatmap_rows(heatmap_class, r0, r1))
        name = pred.classes[heatmap_class]
        return stamp(pic, f"{name} - {banner}" if banner else name, in_place=True)
    colours = palette(len(pred.classes))
    if masks is not None:
        from clipxai.runtime.sam import label_map
        labels = label_map(masks, pred)
    else:
        labels = pred.segmentation
    pic = legend_box(tint(image, labels, colours), pred.classes, colours)
    return stamp(pic, banner, in_place=True) if banner else pic


def frame_record(pred) -> dict:
    points = {}
    for k, name in enumerate(pred.classes):
        coords, labels = pred.points(k)
        points[name] = {"coords": coords.tolist(), "labels": labels.tolist()}
    return {"frame": pred.frame_index, "timestamp": pred.timestamp, "top_class": pred.classes[pred.top_class],
            "scores": {name: float(s) for name, s in zip(pred.classes, pred.scores)}, "points": points,
            "dropped": pred.dropped}


def source_fps(path) -> float:
    """A video file's frame rate (DEFAULT_FPS when it does not say)."""
    av = require_av()
    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate if c.streams.video else None
            return float(rate) if rate else DEFAULT_FPS
    except (av.FFmpegError, IndexError):
        return DEFAULT_FPS


def source_frames(path) -> int | None:
    av = require_av()
    try:
        with av.open(str(path)) as c:
            return int(c.streams.video[0].frames) or None if c.streams.video else None
    except (av.FFmpegError, IndexError):
        return None


def segment_stream(predictor, source, name: str, out_dir: Path, heatmap_class: int | None = None,
                   batch_size: int = 1, every_n: int = 1, smoothing: float | None = None,
                   subset: list[str] | None = None, sam=(None, None)) -> VideoResult:
    """Run ``predictor.stream`` over a video path or camera index and write the annotated video and the
    JSON Lines file (module docstring). Ctrl-C / SIGTERM end it cleanly (``interrupted``); a decode
    error mid-file ends it with ``stopped`` saying where."""
    from clipxai.common.cli import deferred_interrupts, terminate_as_interrupt
    live = isinstance(source, int)
    fps = (DEFAULT_FPS if live else source_fps(source)) / every_n
    kind = "segmentation" if heatmap_class is None else f"heatmap_{safe_name(predictor.classes[heatmap_class])}"
    writer = VideoWriter(out_dir / f"{name}_{kind}.mp4", fps)
    result, lines = VideoResult(str(source)), []
    total = None if live else source_frames(source)
    try:
        with terminate_as_interrupt(), _progress(name, total, every_n) as tick:
            try:
                for pred in predictor.stream(source, batch_size=batch_size, every_n=every_n, smoothing=smoothing):
                    if subset is not None:
                        pred = pred.select(subset)
                    image = Image.fromarray(pred.frame, "RGB")
                    masks = _sam_masks(sam, image, pred)
                    picture = annotate(image, pred, heatmap_class, predictor.bundle.random_weights, masks)
                    line = _json_line(pred, masks)
                    with deferred_interrupts():  # the frame and its line, or neither
                        writer.write(picture)
                        lines.append(line)
                    tick()
            except KeyboardInterrupt:
                result.interrupted = True
            except VideoError as e:
                if e.stopped_at is None:
                    raise
                result.stopped = str(e)
    except BaseException:
        writer.abandon()
        raise
    result.frames = writer.frames
    if writer.resized_at is not None:
        result.notes.append(f"frame size changed at processed frame {writer.resized_at}: scaled to the first "
                            f"frame's {writer.size[0]}x{writer.size[1]} in the output video")
    video = writer.close()
    if video is not None:
        result.outputs += [video, atomic_write_text(out_dir / f"{name}.jsonl", "".join(lines))]
    return result


def _sam_masks(sam, image: Image.Image, pred):
    """SAM's object masks of the frame's classes (class -> ObjectMask or None), or None without --sam."""
    predictor, classes = sam
    if predictor is None:
        return None
    predictor.set_image(image)
    return predictor.masks_for(pred, classes)


def _json_line(pred, masks=None) -> str:
    record = frame_record(pred)
    if masks is not None:
        from clipxai.runtime.sam import mask_record
        record["masks"] = {name: mask_record(m) for name, m in masks.items()}
    return json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False) + "\n"


class _progress:
    """Progress of processed frames with the frames per second so far: a bar when the total is known
    (a file), else a counter line (a camera)."""

    def __init__(self, name: str, total: int | None, every_n: int):
        self.length = -(-total // every_n) if total else None
        self.name, self.done, self.start, self.shown = name, 0, time.perf_counter(), 0.0
        self.bar = None

    def __enter__(self):
        if self.length:
            self.bar = click.progressbar(length=self.length, label=f"  {self.name}", file=sys.stderr,
                                         show_pos=True, item_show_func=lambda rate: rate)
            self.bar.__enter__()
        return self.tick

    def tick(self) -> None:
        self.done += 1
        now = time.perf_counter()
        rate = f"{self.done / max(now - self.start, 1e-9):.1f} frames/s"
        if self.bar is not None:
            self.bar.update(1, rate)
        elif now - self.shown >= 0.5:
            self.shown = now
            click.echo(f"\r  {self.name}: {self.done} frames, {rate}", nl=False, err=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            return self.bar.__exit__(*exc)
        if self.done:
            click.echo(err=True)
        return False


