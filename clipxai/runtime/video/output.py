"""Writing a video out: ``VideoWriter`` (H.264 in an MP4, renamed into place when closed), the
annotated frame (``annotate``; ``annotate_tracks`` for tracks), and what a source file declares (frame rate, frame count)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipxai.common.files import temporary_name
from clipxai.runtime.video.sources import require_av

DEFAULT_FPS = 25.0


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
    top = 2
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
    from clipxai.runtime.visualize import RANDOM_WEIGHTS_BANNER, overlay, palette, stamp, tint
    banner = RANDOM_WEIGHTS_BANNER if random_weights else None
    if heatmap_class is not None:
        pic = overlay(image, lambda r0, r1: pred.heatmap_rows(heatmap_class, r0, r1))
        name = pred.classes[heatmap_class]
        return stamp(pic, f"{name} - {banner}" if banner else name)
    colours = palette(len(pred.classes))
    if masks is not None:
        from clipxai.runtime.sam import label_map
        labels = label_map(masks, pred)
    else:
        labels = pred.segmentation
    pic = legend_box(tint(image, labels, colours), pred.classes, colours)
    return stamp(pic, banner) if banner else pic


def annotate_tracks(image: Image.Image, tracks, random_weights: bool = False) -> Image.Image:
    """The frame for a tracks video: each visible track's mask (``Track``: id, name, mask bool [H, W], score,
    bbox) tinted in its id's colour (``visualize.colour(id)``: the same all along; where masks overlap the
    higher score wins, ``track_map``) and labelled "class #id" at its box's top-left corner; the
    random-weights banner."""
    from clipxai.runtime.video.tracks import track_map
    from clipxai.runtime.visualize import RANDOM_WEIGHTS_BANNER, colour, stamp, tint
    shown = [t for t in tracks if t.visible and t.area]
    ids = np.array(sorted(t.id for t in shown), np.int64)
    labels = track_map(shown, (image.height, image.width))
    rows = np.where(labels > 0, np.searchsorted(ids, labels), -1).astype(np.int32)
    pic = tint(image, rows, np.array([colour(int(i)) for i in ids], np.uint8).reshape(-1, 3))
    draw, font = ImageDraw.Draw(pic), ImageFont.load_default()
    for t in shown:
        x, y = t.bbox[:2]
        text = f"{t.name} #{t.id}"
        box = draw.textbbox((x + 2, y + 1), text, font=font)
        draw.rectangle([x, y, box[2] + 2, box[3] + 1], fill=colour(t.id))
        draw.text((x + 2, y + 1), text, fill=(0, 0, 0), font=font)
    return stamp(pic, RANDOM_WEIGHTS_BANNER) if random_weights else pic


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
