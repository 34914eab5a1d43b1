"""ROS 2 message contents <-> numpy, without ROS: pure functions the node (node.py) calls and the tests
check on their own.

A ``sensor_msgs/Image`` is (encoding, height, width, step, data): ``step`` bytes per row (>= width x
channels; any padding at the row's end is ignored), ``height x step`` bytes of data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from clipxai.contract import ROS_MAX_CLASSES
from clipxai.errors import ClipxaiError
from clipxai.vocabulary import validate_classes

# encoding -> (bytes per pixel, the channels that make R, G, B)
ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
UNASSIGNED = 255  # the mono8 segmentation's value where no class is assigned (background)


class BadFrame(ValueError):
    """A frame the node skips: ``kind`` (encoding, size, step, data) names the problem for throttled logs."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageFields:
    """The fields of a ``sensor_msgs/Image`` (header aside)."""

    encoding: str
    height: int
    width: int
    step: int
    data: bytes


def image_to_rgb(fields: ImageFields, max_pixels: int | None = None) -> np.ndarray:
    """An Image's fields -> uint8 [H, W, 3] RGB (a copy). Raises BadFrame for an encoding not in
    ``ENCODINGS``, an empty or too large size, a step shorter than a row, or data not height x step bytes."""
    if fields.encoding not in ENCODINGS:
        raise BadFrame("encoding", f"encoding {fields.encoding!r} is not one of {', '.join(ENCODINGS)}")
    channels, order = ENCODINGS[fields.encoding]
    h, w = fields.height, fields.width
    if h <= 0 or w <= 0 or (max_pixels is not None and h * w > max_pixels):
        raise BadFrame("size", f"image size {w}x{h} is empty or too large")
    row = w * channels
    if fields.step < row:
        raise BadFrame("step", f"step {fields.step} is shorter than a row of {w} {fields.encoding} pixels ({row} bytes)")
    data = np.frombuffer(fields.data, np.uint8)
    if data.size != h * fields.step:
        raise BadFrame("data", f"data has {data.size} bytes, height x step is {h * fields.step}")
    pixels = data.reshape(h, fields.step)[:, :row].reshape(h, w, channels)
    return np.ascontiguousarray(pixels[..., list(order)])


def compressed_to_rgb(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """A CompressedImage's JPEG or PNG bytes -> uint8 [H, W, 3] RGB; BadFrame("compressed") if it does not decode."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            if im.format not in ("JPEG", "PNG"):
                raise BadFrame("compressed", f"compressed format {im.format} is not JPEG or PNG")
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise BadFrame("size", f"image size {im.width}x{im.height} is too large")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise BadFrame("compressed", f"compressed image does not decode: {e}") from None


def rgb_fields(rgb: np.ndarray) -> ImageFields:
    """uint8 [H, W, 3] RGB -> an ``rgb8`` Image's fields."""
    h, w = rgb.shape[:2]
    return ImageFields("rgb8", h, w, 3 * w, np.ascontiguousarray(rgb, np.uint8).tobytes())


def mono8_fields(labels: np.ndarray) -> ImageFields:
    """A segmentation int32 [H, W] (-1 = background) -> a ``mono8`` Image's fields: class k as k,
    UNASSIGNED (255) for -1. Classes are at most ROS_MAX_CLASSES, so k < 255."""
    h, w = labels.shape
    out = np.where(labels < 0, UNASSIGNED, labels).astype(np.uint8)
    return ImageFields("mono8", h, w, w, out.tobytes())


def mono16_fields(ids: np.ndarray) -> ImageFields:
    """Track ids int [H, W] (0: none) -> a ``mono16`` Image's fields (little-endian); an id above 65535 is
    published as ((id - 1) mod 65535) + 1, so it is never 0."""
    h, w = ids.shape
    out = np.where(ids > 0, (ids - 1) % 65535 + 1, 0).astype("<u2")
    return ImageFields("mono16", h, w, 2 * w, out.tobytes())


def heatmap_fields(heatmap: np.ndarray) -> ImageFields:
    """A heatmap float32 [H, W] in [0, 1] -> a ``32FC1`` Image's fields (little-endian)."""
    h, w = heatmap.shape
    return ImageFields("32FC1", h, w, 4 * w, np.ascontiguousarray(heatmap, "<f4").tobytes())


def parse_classes(text: str) -> list[str]:
    """A ``classes`` message ("a, b,c") -> the names; ClipxaiError for an empty list, a blank name,
    duplicates, or more than ROS_MAX_CLASSES names (the mono8 segmentation's limit)."""
    names = validate_classes(text.split(","), source="classes")
    return check_class_count(names)


def check_class_count(names: list[str]) -> list[str]:
    if len(names) > ROS_MAX_CLASSES:
        raise ClipxaiError(f"classes: {len(names)} names, the node publishes at most {ROS_MAX_CLASSES} "
                           "(class index per pixel in a mono8 image)")
    return names


def topic_part(name: str) -> str:
    """A class name as a ROS topic name part: letters, digits and underscores ('red mug' -> 'red_mug')."""
    out = "".join(c if c.isascii() and c.isalnum() else "_" for c in name.strip())
    return out if out and not out[0].isdigit() else f"c_{out}"
