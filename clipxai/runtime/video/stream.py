"""``Predictor.stream``: a three-stage pipeline over a stream of frames.

    reader thread:  decode -> RGB -> preprocess to [3, S, S]      (clipxai/runtime/video/sources.py)
    graph thread:   batches of frames -> the graph -> Predictions (+ optional smoothing)
    your loop:      whatever you do with each Prediction (maps, video, JSON)

The stages overlap: while your loop draws frame t, the graph runs frame t+1
and the reader decodes frame t+2. Queues between them are bounded:

- **a file or an iterable**: every frame, in order, nothing dropped; the reader
  waits when the graph is behind (at most ``2 × batch_size`` frames ahead);
- **a live source** (a camera): one slot; a newer frame replaces one the graph
  has not taken yet, so the predictions stay current instead of falling
  behind, and each Prediction's ``dropped`` counts the frames replaced since
  the previous one.

``every_n`` keeps one frame in n (the others are decoded, not predicted).
Smoothing (off by default) is an exponential moving average of the
similarity and the grid heatmaps, ``s_t = α·x_t + (1 − α)·s_{t−1}`` with α the
newest frame's weight, restarted when the frame size changes. Closing the
iterator early (``break``, an exception in your loop, garbage collection)
stops both threads and closes the decoder.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from clipxai.errors import ClipxaiError
from clipxai.runtime.prediction import Prediction
from clipxai.runtime.video.sources import Frame, open_source

POLL = 0.05  # seconds a blocked stage waits before checking whether the stream was closed
_END = object()


@dataclass
class _Item:
    frame: Frame
    x: np.ndarray          # float32 [3, S, S]
    dropped: int = 0


class _LatestSlot:
    """A one-frame queue where a newer frame replaces the waiting one (live sources). The end of the
    stream (or its error) waits behind the last frame, so no frame is lost at the end."""

    def __init__(self):
        self._item, self._end, self._dropped = None, None, 0
        self._cond = threading.Condition()

    def put(self, item, stop: threading.Event) -> None:
        with self._cond:
            if not isinstance(item, _Item):
                self._end = item
            else:
                self._dropped += self._item is not None
                self._item = item
            self._cond.notify()

    def get(self, stop: threading.Event):
        with self._cond:
            while self._item is None and self._end is None:
                if stop.is_set():
                    return _END
                self._cond.wait(POLL)
            if self._item is None:
                return self._end
            item, self._item = self._item, None
            item.dropped, self._dropped = self._dropped, 0
            return item

    def get_nowait(self):
        return None  # a live slot never batches: each graph run takes the newest frame


class _Bounded:
    """A bounded FIFO whose blocking calls give up once the stream is closed."""

    def __init__(self, size: int):
        self._q: queue.Queue = queue.Queue(maxsize=size)

    def put(self, item, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._q.put(item, timeout=POLL)
                return
            except queue.Full:
                continue

    def get(self, stop: threading.Event):
        while True:
            try:
                return self._q.get(timeout=POLL)
            except queue.Empty:
                if stop.is_set():
                    return _END

    def get_nowait(self):
        try:
            return self._q.get_nowait()
        except queue.Empty:
            return None


def _check(batch_size: int, every_n: int, smoothing: float | None) -> None:
    for name, value in (("batch_size", batch_size), ("every_n", every_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ClipxaiError(f"{name} must be an integer >= 1, got {value!r}")
    if smoothing is not None and not (isinstance(smoothing, (int, float)) and 0.0 < smoothing <= 1.0):
        raise ClipxaiError(f"smoothing must be None (off) or a number in (0, 1], the newest frame's weight; "
                           f"got {smoothing!r}")


def _read(predictor, frames: Iterator[Frame], every_n: int, out, stop: threading.Event) -> None:
    """Reader thread: decode and preprocess every n-th frame into ``out``; then _END (or the error)."""
    from clipxai.runtime.preprocess import open_image
    try:
        for frame in frames:
            if stop.is_set():
                return
            if frame.index % every_n:
                continue
            image = open_image(frame.image, predictor.max_pixels)
            out.put(_Item(frame, predictor.preprocess(image)), stop)
        out.put(_END, stop)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there in order
        out.put(e, stop)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # a generator over a decoder: releases the container


def _smooth(pred: Prediction, state: dict, alpha: float) -> None:
    if state.get("size") != pred.size:
        state.update(size=pred.size, sim=pred.similarity.copy(), maps=pred.heatmaps_grid.copy())
        return
    state["sim"] = alpha * pred.similarity + (1 - alpha) * state["sim"]
    state["maps"] = alpha * pred.heatmaps_grid + (1 - alpha) * state["maps"]
    pred.similarity = state["sim"].astype(np.float32)
    pred.heatmaps_grid = state["maps"].astype(np.float32)


def _run_graph(predictor, inbox, outbox: _Bounded, batch_size: int, smoothing: float | None,
               stop: threading.Event) -> None:
    """Graph thread: batches from ``inbox`` -> Predictions into ``outbox``, in order; then _END or the error."""
    state: dict = {}
    try:
        while not stop.is_set():
            first = inbox.get(stop)
            if first is _END or isinstance(first, BaseException):
                outbox.put(first, stop)
                return
            batch, tail = [first], None
            while len(batch) < batch_size:
                item = inbox.get_nowait()
                if item is None:
                    break
                if item is _END or isinstance(item, BaseException):
                    tail = item
                    break
                batch.append(item)
            sizes = [item.frame.image.shape[:2] for item in batch]
            preds = predictor.run_graph(np.stack([item.x for item in batch]), sizes)
            for item, pred in zip(batch, preds):
                pred.frame_index, pred.timestamp, pred.dropped = item.frame.index, item.frame.timestamp, item.dropped
                pred.frame = item.frame.image
                if smoothing is not None:
                    _smooth(pred, state, float(smoothing))
                outbox.put(pred, stop)
            if tail is not None:
                outbox.put(tail, stop)
                return
    except BaseException as e:  # noqa: BLE001
        outbox.put(e, stop)


def stream_predictions(predictor, source, batch_size: int = 1, every_n: int = 1, smoothing: float | None = None,
                       live: bool | None = None, fps: float | None = None) -> Iterator[Prediction]:
    """The generator behind ``Predictor.stream`` (module docstring). The source is opened at once,
    so a missing file or camera is an error before the first ``next()``."""
    _check(batch_size, every_n, smoothing)
    frames, is_live = open_source(source, fps)
    return _pipeline(predictor, frames, is_live if live is None else bool(live), batch_size, every_n, smoothing)


def _pipeline(predictor, frames, live: bool, batch_size: int, every_n: int, smoothing) -> Iterator[Prediction]:
    stop = threading.Event()
    inbox = _LatestSlot() if live else _Bounded(2 * batch_size)
    outbox = _Bounded(2 * batch_size)
    threads = [threading.Thread(target=_read, args=(predictor, frames, every_n, inbox, stop),
                                name="clipxai-stream-reader", daemon=True),
               threading.Thread(target=_run_graph, args=(predictor, inbox, outbox, 1 if live else batch_size,
                                                          smoothing, stop),
                                name="clipxai-stream-graph", daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            item = outbox.get(stop)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        for t in threads:
            t.join()

