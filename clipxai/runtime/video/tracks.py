"""From text to tracks: clipxai's points start SAM 2.1 tracks, and take them up again (docs/tracking.md).

    for frame in predictor.track("clip.mp4", sam="bundles/sam2-tiny", classes=["cup"]):
        for t in frame.tracks:
            t.id, t.name, t.mask, t.visible, t.bbox       # stable id, class, bool [H, W], bool, (x, y, w, h)

Per frame (``TextTracks.step``): the ``MaskTracker`` follows every track onto the frame; a track not
visible for ``forget_after`` frames in a row is removed (memory and time stay bounded; a class that
comes back gets a new track from its points). Then clipxai's points are taken again - for every class on
the first frame and every ``reprompt_every`` frames, and on any frame for the classes with no visible
track: each class's mask from its points (``MaskPredictor.masks_for`` on the frame's features) is an
existing track of that class when their IoU is >= ``MATCH_IOU`` (nothing added), else a new track
(``MaskTracker.add``); an empty mask or a class without points adds nothing. Ids count up and are
never reused.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from clipxai.contract import DEFAULT_FORGET_AFTER, DEFAULT_REPROMPT_EVERY  # noqa: F401  (re-exported)
from clipxai.errors import ClipxaiError

DEFAULT_POINT_THRESHOLD = 0.8  # Prediction.points' threshold, as MaskPredictor.masks_for's
MATCH_IOU = 0.5               # a class's new mask is an existing track of that class from this IoU on


@dataclass
class Track:
    """One tracked object on one frame. id: stable over the stream; name: its class; mask: bool [H, W];
    score: the mask's predicted IoU; visible: SAM 2.1's object score > 0; bbox: (x, y, w, h) ((0, 0, 0, 0)
    when empty); area: pixels; new: added on this frame (from its class's points)."""

    id: int
    name: str
    mask: np.ndarray
    score: float
    visible: bool
    bbox: tuple[int, int, int, int]
    area: int
    new: bool = False


@dataclass
class TrackFrame:
    """One frame's tracks: frame_index and timestamp (as the stream's Prediction), frame uint8 [H, W, 3],
    tracks (by id), prompted: the classes whose points were taken again on this frame, prediction: the
    CLIP Prediction of the frame."""

    frame_index: int | None
    timestamp: float | None
    frame: np.ndarray
    tracks: list[Track] = field(default_factory=list)
    prompted: list[str] = field(default_factory=list)
    prediction: object = None


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool [H, W] masks (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def track_map(tracks: Sequence[Track], shape: tuple[int, int]) -> np.ndarray:
    """int64 [H, W]: the id of the visible track covering each pixel, 0 where none; where masks overlap
    the higher score wins (the tracks video's tint and the ROS node's ``tracks`` label map)."""
    out = np.zeros(shape, np.int64)
    for t in sorted((t for t in tracks if t.visible and t.area), key=lambda t: t.score):
        out[t.mask] = t.id  # higher scores painted last
    return out


def open_tracker(sam, options=None):
    """A MaskTracker: ``sam`` itself, or one opened on a SAM 2.1 bundle path with ``options`` (RuntimeOptions)."""
    from clipxai.runtime.sam.tracker import MaskTracker
    if isinstance(sam, MaskTracker):
        return sam
    if isinstance(sam, (str, Path)):
        return MaskTracker(sam, options=options)
    raise ClipxaiError(f"sam must be a MaskTracker or a SAM 2.1 bundle path, not {type(sam).__name__}")


def _positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClipxaiError(f"{name} must be an integer >= 1{' or None' if allow_none else ''}, got {value!r}")


class TextTracks:
    """Tracks started and taken up again by clipxai's points (module docstring), one frame at a time.

    tracker: a MaskTracker (reset here: a TextTracks starts a new stream; ids keep counting up).
    classes: the classes to track (None: every class of the predictions). reprompt_every: frames between
    two prompts of every class. threshold: ``Prediction.points``' threshold. forget_after: frames a track
    may stay invisible before it is removed (None: never)."""

    def __init__(self, tracker, classes: Sequence[str] | None = None,
                 reprompt_every: int = DEFAULT_REPROMPT_EVERY, threshold: float = DEFAULT_POINT_THRESHOLD,
                 forget_after: int | None = DEFAULT_FORGET_AFTER):
        _positive_int("reprompt_every", reprompt_every)
        _positive_int("forget_after", forget_after, allow_none=True)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ClipxaiError(f"threshold must be a number in (0, 1], got {threshold!r}")
        self.tracker, self.classes = tracker, list(classes) if classes is not None else None
        self.reprompt_every, self.threshold, self.forget_after = reprompt_every, float(threshold), forget_after
        tracker.reset()
        self.unseen: dict[int, int] = {}   # id -> frames in a row it was not visible
        self.seen: set[int] = set()        # every id this stream gave
        self.count = 0                     # frames stepped

    def step(self, prediction) -> TrackFrame:
        """The tracks on the prediction's frame (``prediction.frame``, uint8 [H, W, 3], as ``Predictor.stream``
        gives it; for another Prediction set ``frame`` first)."""
        frame = prediction.frame
        if frame is None:
            raise ClipxaiError("the prediction carries no frame: predictions of Predictor.stream do, or set "
                               "prediction.frame = the uint8 [H, W, 3] image it was made from")
        tracked = self._follow(frame)
        wanted = self._to_prompt(prediction, tracked)
        added = self._prompt(prediction, frame, tracked, wanted) if wanted else []
        if added:
            tracked = self.tracker.track(frame)  # completes this frame: the new objects with the others
        self.count += 1
        tracks = [self._track(i, t, i in added) for i, t in sorted(tracked.items())]
        return TrackFrame(prediction.frame_index, prediction.timestamp, frame, tracks, wanted, prediction)

    def _follow(self, frame) -> dict:
        """Every track onto ``frame`` (a new frame of the stream); those invisible too long removed."""
        tracked = self.tracker.track(frame)
        for i in [i for i in self.unseen if i not in self.tracker.objects]:  # a frame-size change dropped them
            del self.unseen[i]
        for i, t in tracked.items():
            self.unseen[i] = 0 if t.visible else self.unseen.get(i, 0) + 1
            if self.forget_after is not None and self.unseen[i] >= self.forget_after:
                self.tracker.remove(i)
                del self.unseen[i]
        return {i: t for i, t in tracked.items() if i in self.unseen}

    def _to_prompt(self, prediction, tracked: dict) -> list[str]:
        """Every class on a reprompt frame, else the classes without a visible track."""
        classes = self.classes if self.classes is not None else list(prediction.classes)
        if self.count % self.reprompt_every == 0:
            return classes
        shown = {t.name for t in tracked.values() if t.visible}
        return [c for c in classes if c not in shown]

    def _prompt(self, prediction, frame, tracked: dict, classes: list[str]) -> list[int]:
        """Each class's mask from its points: an existing track (IoU >= MATCH_IOU) or a new one; the new ids."""
        added = []
        for name, m in self.tracker.sam.masks_for(prediction, classes, self.threshold).items():
            if m is None or not m.area:
                continue
            if any(t.name == name and mask_iou(m.mask, t.mask) >= MATCH_IOU for t in tracked.values()):
                continue
            object_id = self.tracker.add(frame, m.points, m.labels, name=name)
            self.unseen[object_id] = 0
            added.append(object_id)
        return added

    def _track(self, object_id: int, t, new: bool) -> Track:
        self.seen.add(object_id)
        return Track(object_id, t.name, t.mask, t.score, t.visible, t.bbox, t.area, new)


def follow(predictions: Iterator, tracks: TextTracks) -> Iterator[TrackFrame]:
    """``tracks.step`` over a stream of Predictions; closing it closes the stream."""
    with contextlib.closing(predictions):
        for prediction in predictions:
            yield tracks.step(prediction)
