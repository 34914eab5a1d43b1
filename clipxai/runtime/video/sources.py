"""Where frames come from: any iterable of images, a video file (PyAV) or a camera (OpenCV).

Every source yields ``Frame``s in order. A file is read to its end; a frame
that does not decode ends the stream with ``VideoError.stopped_at`` saying
where, after the frames that did. PyAV is the optional extra ``clipxai[video]``,
OpenCV ``clipxai[camera]``; without them asking for a video or a camera is a
one-line error naming the extra.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np
from PIL import Image

from clipxai.errors import ClipxaiError

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts"})
FrameSource = Union[str, Path, int, Iterable]


@dataclass
class Frame:
    """image: uint8 [H, W, 3] RGB. index: position in the source (0-based, counting every frame
    decoded, skipped ones too). timestamp: seconds from the start (None when the source has none)."""

    image: np.ndarray
    index: int
    timestamp: float | None


class VideoError(ClipxaiError):
    """A video that cannot be read; ``stopped_at`` is the frame index reached when it broke mid-way."""

    def __init__(self, message: str, stopped_at: int | None = None):
        super().__init__(message)
        self.stopped_at = stopped_at


def is_video_path(source) -> bool:
    return isinstance(source, (str, Path)) and Path(source).suffix.lower() in VIDEO_SUFFIXES


def require_av():
    try:
        import av
    except ImportError:
        raise ClipxaiError("reading or writing video needs PyAV: pip install \"clipxai[video]\"") from None
    return av


def _rgb(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ClipxaiError(f"frames must be HxWx3 uint8 RGB arrays or PIL images, got {a.dtype} {list(a.shape)}")
    return a


def iterable_frames(frames: Iterable, fps: float | None = None) -> Iterator[Frame]:
    """Frames from any iterable of images; timestamps index / fps when fps is given."""
    for i, image in enumerate(frames):
        yield Frame(_rgb(image), i, None if fps is None else i / fps)


def video_frames(path: str | Path) -> Iterator[Frame]:
    """Decoded frames of a video file's first video stream, in order. The file is opened at once;
    raises VideoError: no such file, not a video, no video stream, a codec PyAV cannot decode, no
    frames, or a break mid-file (after yielding the frames before it)."""
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return _decode(av, container, path)


def _decode(av, container, path: Path) -> Iterator[Frame]:
    index = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None and stream.time_base else None
                yield Frame(frame.to_ndarray(format="rgb24"), index, t)
                index += 1
        except av.FFmpegError as e:
            if index == 0:
                raise VideoError(f"{path}: cannot decode its video ({_reason(e)})") from None
            raise VideoError(f"{path}: stopped at frame {index}, the rest does not decode ({_reason(e)})",
                             stopped_at=index) from None
        if index == 0:
            raise VideoError(f"{path}: has no frames")
    finally:
        container.close()


def camera_frames(index: int) -> Iterator[Frame]:
    """Frames of camera ``index`` (OpenCV), with wall-clock timestamps from the first frame. The camera
    is opened at once; VideoError when it cannot be."""
    try:
        import cv2
    except ImportError:
        raise ClipxaiError("cameras need OpenCV: pip install \"clipxai[camera]\"") from None
    cap = cv2.VideoCapture(int(index))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"camera {index} cannot be opened (no such device, or it is busy)")
    return _capture(cap, index)


def _capture(cap, index: int) -> Iterator[Frame]:
    import time
    try:
        start = None
        for i in itertools.count():
            ok, bgr = cap.read()
            if not ok:
                if i == 0:
                    raise VideoError(f"camera {index} gives no frames")
                return
            now = time.monotonic()
            start = now if start is None else start
            yield Frame(np.ascontiguousarray(bgr[..., ::-1]), i, now - start)
    finally:
        cap.release()


def open_source(source: FrameSource, fps: float | None = None) -> tuple[Iterator[Frame], bool]:
    """(frames, live): a video path, a camera index (live), or an iterable of images."""
    if isinstance(source, bool):
        raise ClipxaiError("a frame source is a video path, a camera index or an iterable of images")
    if isinstance(source, int):
        return camera_frames(source), True
    if isinstance(source, (str, Path)):
        if not is_video_path(source):
            raise ClipxaiError(f"{source}: not a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return video_frames(source), False
    if isinstance(source, (np.ndarray, Image.Image)):
        raise ClipxaiError("stream() takes many frames: pass a list or iterator of images (predict() takes one)")
    return iterable_frames(source, fps), False


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
