"""Where frames come from: any iterable of images, a video file (PyAV) or a camera (OpenCV).

Every source yields ``Frame``s in order. A file is read to its end; a frame
that does not decode ends the stream with ``VideoError.stopped_at`` saying
where, after the frames that did. So does a file that ends early without a
decode error: after its last frame, what was decoded is compared with what the
container declares (its frame count, its video stream's duration) and a
shortfall of more than a frame is the same VideoError (``_check_complete``).
PyAV is the optional extra ``clipxai[video]``, OpenCV ``clipxai[camera]``;
without them asking for a video or a camera is a one-line error naming the extra.
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
    read = _Read()
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for packet in container.demux(stream):
                read.packets += packet.size > 0  # the last, empty packet only flushes the decoder
                for frame in packet.decode():
                    t = float(frame.pts * stream.time_base) if frame.pts is not None and stream.time_base else None
                    yield Frame(frame.to_ndarray(format="rgb24"), read.frames, t)
                    read.saw(t)
        except av.FFmpegError as e:
            if read.frames == 0:
                raise VideoError(f"{path}: cannot decode its video ({_reason(e)})") from None
            raise VideoError(f"{path}: stopped at frame {read.frames}, the rest does not decode ({_reason(e)})",
                             stopped_at=read.frames) from None
        if read.frames == 0:
            raise VideoError(f"{path}: has no frames")
        _check_complete(path, declared_length(container, stream), read, _frame_period(stream))
    finally:
        container.close()


@dataclass
class _Read:
    """What a file gave: packets demuxed (a frame each, decodable or not), frames decoded, and the
    first and last frame's timestamps."""

    packets: int = 0
    frames: int = 0
    first: float | None = None
    last: float | None = None

    def saw(self, t: float | None) -> None:
        self.frames += 1
        if t is not None:
            self.first = t if self.first is None else self.first
            self.last = t

    def span(self, period: float) -> float | None:
        return None if self.first is None or self.last is None else self.last - self.first + period


# Containers whose header counts exactly the frames a whole file gives. MP4's count is not one of them:
# it includes frames an edit list hides (a stream-copied cut), so MP4 is checked by its duration.
FRAME_COUNT_FORMATS = frozenset({"avi"})


def declared_length(container, stream) -> tuple[int | None, float | None]:
    """(frames, seconds) the container declares for its video stream, None where it declares nothing:
    the header's frame count (FRAME_COUNT_FORMATS); the stream's duration (MP4, MOV), its DURATION
    tag (Matroska, WebM), else the whole file's duration when the video is its only stream. Formats
    written to be streamed (MPEG-TS, fragmented MP4) declare neither: their end cannot be checked."""
    names = set((container.format.name or "").split(","))
    frames = int(stream.frames) if stream.frames and names & FRAME_COUNT_FORMATS else None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    else:
        tag = next((v for k, v in (stream.metadata or {}).items() if k.upper().startswith("DURATION")), None)
        seconds = _clock_seconds(tag)
        if seconds is None and container.duration and len(container.streams) == 1:
            seconds = container.duration / 1_000_000  # av.time_base: microseconds
    return frames, (seconds if seconds and seconds > 0 else None)


def _clock_seconds(text) -> float | None:
    """"HH:MM:SS.fraction" (Matroska's DURATION tag) -> seconds, None when it is not one."""
    try:
        h, m, s = str(text).strip().split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except (TypeError, ValueError):
        return None


def _frame_period(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else None


def _check_complete(path: Path, declared: tuple[int | None, float | None], read: _Read,
                    period: float | None) -> None:
    """VideoError(stopped_at=frames decoded) when the file falls short of what its container declares
    by more than a frame: fewer packets than the header's frame count (packets: a packed bitstream's
    placeholder packets decode to no frame), or a first-to-last-frame span (plus one frame) shorter
    than the declared duration by more than 1.5 frame periods (at least 50 ms)."""
    want_frames, want_seconds = declared
    span = read.span(period) if period else None
    if want_frames is not None and read.packets < want_frames - 1:
        shortfall = f"declares {want_frames} frames, it holds {read.packets}"
    elif want_seconds is not None and span is not None and span < want_seconds - max(1.5 * period, 0.05):
        shortfall = f"declares {want_seconds:.2f} s, it holds {span:.2f} s"
    else:
        return
    raise VideoError(f"{path}: stopped at frame {read.frames}, the file ends early (cut short?): its container "
                     f"{shortfall}", stopped_at=read.frames)


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
