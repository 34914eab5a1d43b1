"""``MaskTracker``: SAM 2.1's memory, torch-free. Objects prompted on a frame are followed through a stream.

    tracker = MaskTracker("bundles/sam2-tiny")          # a SAM 2.1 bundle exported with its video graphs
    mug = tracker.add(frame0, [[320, 240]], [1], name="mug")
    for frame in frames:
        for object_id, tracked in tracker.track(frame).items():
            tracked.mask, tracked.visible, tracked.bbox       # bool [H, W], bool, (x, y, w, h)

What ``SAM2VideoPredictor`` does for a causal stream (its ``add_new_points_or_box`` on the frame an object
is prompted, then ``propagate_in_video`` forward), per object:
- the frame where it was prompted is a conditioning frame: its mask comes from the points alone (the
  encoder's embedding with the "no memory" embedding) and its memory is always attended to;
- every other frame attends to the conditioning frames and to the memories of the last
  ``num_maskmem - 1`` frames (memory attention), and to the object pointers of the conditioning frames and
  of the last ``max_obj_ptrs - 1`` frames; then the decoder gives three masks, the best (highest predicted
  IoU) is kept, and the memory encoder turns it into this frame's memory;
- an object whose object score is not positive is not visible: its logits are -1024 (an empty mask) and
  its pointer is the "no object" pointer; it is found again when the score turns positive;
- memories are stored in bfloat16, as the video predictor stores them (their bits kept in uint16).

Objects share the image encoder run; their memory attention, decoder and memory encoder run batched
(objects whose banks have the same length go in one run). Memory is bounded: per object, the conditioning
frames plus the last max(num_maskmem, max_obj_ptrs) - 1 frames. docs/tracking.md has the details.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipxai.contract import (
    MASK_BINARIZE, MASK_CONDITIONED, MASK_EMBEDDINGS, MASK_HIGH_RES, MASK_IOU, MASK_LOW_RES, MASK_MASK_LOGITS,
    MASK_MEMORIES, MASK_MEMORY_SLOTS, MASK_OBJECT_SCORE, MASK_POINT_COORDS, MASK_POINT_LABELS,
    MASK_POINTER_DISTANCES, MASK_POINTERS,
)
from clipxai.errors import ClipxaiError
from clipxai.runtime.backends import RuntimeOptions, open_graph, runtime_options
from clipxai.runtime.postprocess import resize_bilinear
from clipxai.runtime.preprocess import ImageInput, open_image
from clipxai.runtime.sam.predictor import STABILITY_THRESHOLD, MaskPredictor, bbox, stability
from clipxai.runtime.sam.preprocess import point_input

log = logging.getLogger("clipxai")


@dataclass
class TrackedMask:
    """One object on one frame. mask: bool [H, W]; score: the chosen mask's predicted IoU; object_score:
    the occlusion head's logit (> 0: visible); visible: object_score > 0; bbox: (x, y, w, h) of the mask
    ((0, 0, 0, 0) when empty); area: pixels; low_res: float32 [256, 256] logits the mask was upscaled from;
    name: what the object was added as; prompted: True on the frame its points were given."""

    mask: np.ndarray
    score: float
    object_score: float
    visible: bool
    bbox: tuple[int, int, int, int]
    area: int
    low_res: np.ndarray
    name: str | None = None
    prompted: bool = False


@dataclass
class _Memory:
    """One object's output on one frame, as kept for later frames: memory bits (bfloat16 as uint16
    [64, 64, 64]) and the object pointer float32 [256]."""

    bits: np.ndarray
    pointer: np.ndarray


@dataclass
class _Object:
    name: str | None
    prompted: dict[int, _Memory] = field(default_factory=dict)    # conditioning frames, in order
    recent: dict[int, _Memory] = field(default_factory=dict)      # other frames, the last few
    last: TrackedMask | None = None
    last_frame: int = -1


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> the bits of the nearest bfloat16 (round half to even, as torch's ``.to(torch.bfloat16)``)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """The bits of bfloat16 values (uint16) -> float32."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def fill_holes(low_res: np.ndarray, max_area: int) -> np.ndarray:
    """SAM 2's ``fill_holes_in_mask_scores`` on one [256, 256] map: background (logit <= 0) components of at
    most ``max_area`` pixels (8-connected) get the logit 0.1. Needs scipy; without it the maps are returned
    unchanged, as SAM 2 does without its CUDA extension (said once in the log)."""
    if max_area <= 0:
        return low_res
    try:
        from scipy import ndimage
    except ImportError:
        _note_once("scipy is not installed: small holes in the tracked masks are not filled (pip install scipy; "
                   "SAM 2 skips the same step without its CUDA extension)")
        return low_res
    labels, count = ndimage.label(low_res <= 0, structure=np.ones((3, 3), bool))
    if count == 0:
        return low_res
    areas = np.bincount(labels.ravel())
    hole = (labels > 0) & (areas[labels] <= max_area)
    return np.where(hole, np.float32(0.1), low_res).astype(np.float32)


_noted: set[str] = set()


def _note_once(message: str) -> None:
    if message not in _noted:
        _noted.add(message)
        log.warning(message)


class MaskTracker:
    """Follows objects through a stream of frames with SAM 2.1's memory (module docstring).

    source: a SAM 2.1 bundle folder exported with its tracking graphs, or a ``MaskPredictor`` of one.
    num_frames: the video's length when known: SAM 2's video predictor normalises pointer distances by
    min(num_frames, max_obj_ptrs) - 1; a stream (None) uses max_obj_ptrs - 1 (equal for videos of 16
    frames or more)."""

    def __init__(self, source: str | Path | MaskPredictor, options: RuntimeOptions | None = None,
                 num_frames: int | None = None, fill_hole_area: int | None = None, **settings):
        predictor = source if isinstance(source, MaskPredictor) else \
            MaskPredictor.from_bundle(source, options=runtime_options(options, **settings))
        tracking = predictor.manifest.tracking
        if tracking is None:
            how = ("SAM 1 has no memory: export a SAM 2.1 model with clipxai export-sam" if predictor.family == "sam"
                   else "export it again with clipxai export-sam --video")
            raise ClipxaiError(f"{predictor.bundle.path} has no tracking graphs ({predictor.model}); {how}")
        self.sam, self.settings = predictor, tracking
        opts = runtime_options(options, **settings)
        self.attention, self.encoder, self.decoder = (
            open_graph(predictor.bundle, g.file, opts) for g in tracking.graphs().values())
        self.max_pointers = tracking.max_obj_ptrs if num_frames is None else min(num_frames, tracking.max_obj_ptrs)
        self.fill_hole_area = tracking.fill_hole_area if fill_hole_area is None else fill_hole_area
        self._pending = False     # add() ran on the current frame and track() has not completed it
        self.objects: dict[int, _Object] = {}
        self.frame_index = -1
        self._next_id = 1
        self._frame: np.ndarray | None = None
        self._done: set[int] = set()

    # ---- the public calls ---------------------------------------------------------------------------------

    def add(self, frame: ImageInput, points, labels, name: str | None = None) -> int:
        """Start following an object prompted on ``frame``: points [N, 2] (x, y) pixels, labels [N] (1 on the
        object, 0 off it). Returns its id. Adding on the frame last given to ``add`` or ``track`` reuses
        its image features; any other frame opens the next frame of the stream."""
        coords, labs = self._check_points(points, labels)
        image = self._image(frame)
        h, w = image.shape[:2]
        outside = (coords < 0).any(1) | (coords[:, 0] >= w) | (coords[:, 1] >= h)
        if outside.any():
            x, y = coords[outside][0]
            raise ClipxaiError(f"point ({x:g}, {y:g}) is outside the {w}x{h} frame; give points inside it")
        self._open(image, reuse=True)
        self._pending = True
        feats = self.sam.features()
        c = point_input(coords[None], self.sam.size, self.sam.input_size, self.sam.preprocess.resize)
        c = np.concatenate([c, np.zeros((1, 1, 2), np.float32)], axis=1)
        lab = np.concatenate([labs[None], -np.ones((1, 1), np.float32)], axis=1)
        out = self._decode(feats[MASK_EMBEDDINGS], c, lab)
        low, score, pointer, object_score = self._choose(out, len(coords) <= self.settings.multimask_max_points)
        low = fill_holes(low[0], self.fill_hole_area)[None]
        memory = self._encode(low[:, None], object_score, binarize=True)
        object_id = self._next_id
        self._next_id += 1
        obj = _Object(name)
        obj.prompted[self.frame_index] = _Memory(memory[0], pointer[0])
        obj.last, obj.last_frame = self._tracked(low[0], score[0], object_score[0], name, True), self.frame_index
        self.objects[object_id] = obj
        self._done.add(object_id)
        return object_id

    def track(self, frame: ImageInput) -> dict[int, TrackedMask]:
        """Every object on ``frame``: {id: TrackedMask}. The frame last given to ``add`` completes that frame
        (the objects added on it keep their prompted masks); any other frame is the next of the stream."""
        self._open(self._image(frame), reuse=self._pending)
        self._pending = False
        todo = [i for i in self.objects if i not in self._done]
        if todo:
            self._step(todo)
        self._done.update(todo)
        return {i: obj.last for i, obj in self.objects.items() if obj.last_frame == self.frame_index}

    def remove(self, object_id: int) -> None:
        """Stop following an object (its memory is dropped). KeyError-free: an unknown id is a ClipxaiError."""
        if object_id not in self.objects:
            raise ClipxaiError(f"no object {object_id} is tracked (tracked: {sorted(self.objects) or 'none'})")
        del self.objects[object_id]
        self._done.discard(object_id)

    def reset(self) -> None:
        """Forget every object and the stream's position (ids keep counting up)."""
        self.objects.clear()
        self._done.clear()
        self._frame, self.frame_index, self._pending = None, -1, False

    # ---- one frame -----------------------------------------------------------------------------------------

    def _image(self, frame: ImageInput) -> np.ndarray:
        """A frame (path, PIL image, HxWx3 uint8 RGB array) as an RGB uint8 array of its own (a stream may reuse
        its buffer), size-limited as images are."""
        return np.asarray(open_image(frame, self.sam.max_pixels))

    def _open(self, image: np.ndarray, reuse: bool) -> None:
        """Make ``frame`` the current frame. With reuse, pixels equal to the current frame's keep its index
        and features; anything else is encoded as the next frame (a stream may repeat a frame: track() only
        reuses the frame an add() was given). A new frame size restarts the memory (one warning per change)."""
        if reuse and self._frame is not None and image.shape == self._frame.shape and np.array_equal(image, self._frame):
            return
        size = self.sam.size
        self.sam.set_image(image)
        if size is not None and self.objects and self.sam.size != size:
            log.warning(f"the frame size changed from {size[1]}x{size[0]} to {self.sam.size[1]}x{self.sam.size[0]}: "
                       "the tracker restarted its memory (objects must be added again)")
            self.objects.clear()
        self._frame = image   # _image's own array: no copy needed to compare the next frame with
        self.frame_index += 1
        self._done = set()

    def _step(self, ids: list[int]) -> None:
        """Memory attention (batched by bank length), decoder and memory encoder for objects ``ids``."""
        feats = self.sam.features()
        conditioned = np.empty((len(ids), *feats[MASK_EMBEDDINGS].shape[1:]), np.float32)
        banks = {i: self._bank(self.objects[oid]) for i, oid in enumerate(ids)}
        for rows in _groups(banks):
            feed = {MASK_EMBEDDINGS: feats[MASK_EMBEDDINGS],
                    MASK_MEMORIES: np.stack([from_bfloat16_bits(np.stack(banks[r][0])) for r in rows]),
                    MASK_MEMORY_SLOTS: np.array([banks[r][1] for r in rows], np.int64),
                    MASK_POINTERS: np.array([banks[r][2] for r in rows], np.float32),
                    MASK_POINTER_DISTANCES: np.array([banks[r][3] for r in rows], np.float32)}
            conditioned[rows] = self.attention.run([MASK_CONDITIONED], feed)[0]
        b = len(ids)
        out = self._decode(conditioned, np.zeros((b, 2, 2), np.float32), -np.ones((b, 2), np.float32))
        low, score, pointer, object_score = self._choose(out, True)
        memory = self._encode(low[:, None], object_score, binarize=False)
        for i, oid in enumerate(ids):
            obj = self.objects[oid]
            obj.recent[self.frame_index] = _Memory(memory[i], pointer[i])
            shown = fill_holes(low[i], self.fill_hole_area)
            obj.last, obj.last_frame = self._tracked(shown, score[i], object_score[i], obj.name, False), self.frame_index
            self._forget(obj)

    def _bank(self, obj: _Object) -> tuple[list[np.ndarray], list[int], list[np.ndarray], list[float]]:
        """(memory bits, slots, pointers, normalised pointer distances) of an object on the current frame,
        in SAM 2's order: conditioning frames first, then the earlier frames oldest first."""
        n, f = self.settings.num_maskmem, self.frame_index
        memories = [(m.bits, n - 1) for m in obj.prompted.values()]
        for t_pos in range(1, n):
            m = obj.recent.get(f - (n - t_pos))
            if m is not None:
                memories.append((m.bits, n - t_pos - 1))
        pointers = [(m.pointer, f - t) for t, m in obj.prompted.items() if t <= f]
        for t_diff in range(1, self.max_pointers):
            if f - t_diff < 0:
                break
            m = obj.recent.get(f - t_diff)
            if m is not None:
                pointers.append((m.pointer, t_diff))
        scale = np.float32(self.max_pointers - 1)
        return ([b for b, _ in memories], [s for _, s in memories], [p for p, _ in pointers],
                [np.float32(d) / scale for _, d in pointers])

    def _forget(self, obj: _Object) -> None:
        keep = max(self.settings.num_maskmem, self.max_pointers) - 1
        for t in [t for t in obj.recent if t <= self.frame_index - keep]:   # the next frame needs f - keep + 1 on
            del obj.recent[t]

    # ---- graphs ----------------------------------------------------------------------------------------------

    def _decode(self, features: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
        feats = self.sam.features()
        b = coords.shape[0]
        if features.shape[0] != b:
            features = np.repeat(features, b, axis=0)
        feed = {MASK_CONDITIONED: features, MASK_HIGH_RES[0]: feats[MASK_HIGH_RES[0]],
                MASK_HIGH_RES[1]: feats[MASK_HIGH_RES[1]], MASK_POINT_COORDS: coords, MASK_POINT_LABELS: labels}
        return self.decoder.run([MASK_LOW_RES, MASK_IOU, MASK_POINTERS, MASK_OBJECT_SCORE], feed)

    def _choose(self, out: list[np.ndarray], multimask: bool):
        """SAM 2's ``_forward_sam_heads`` after the decoder: the mask token (the best of 1..3 with
        multimask; else token 0 unless unstable, then the best of 1..3), its pointer (with multimask the
        chosen token's, else token 0's), the no-object logit where the object score is not positive.
        -> low-res [B, 256, 256], score [B], pointer [B, 256], object score [B, 1]."""
        low, iou, pointers, object_score = out
        rows = np.arange(low.shape[0])
        best = 1 + np.argmax(iou[:, 1:], axis=1)
        if multimask:
            pick, token = best, best
        else:
            pick = np.where(stability(low[:, 0]) >= STABILITY_THRESHOLD, 0, best)
            token = np.zeros_like(best)
        visible = object_score[:, 0] > 0
        chosen = np.where(visible[:, None, None], low[rows, pick], np.float32(self.settings.no_object_score))
        return chosen.astype(np.float32), iou[rows, pick], pointers[rows, token], object_score

    def _encode(self, low: np.ndarray, object_score: np.ndarray, binarize: bool) -> np.ndarray:
        """Low-res logits [B, 1, 256, 256] -> memory bits (bfloat16 as uint16) [B, 64, 64, 64]."""
        feed = {MASK_EMBEDDINGS: self.sam.features()[MASK_EMBEDDINGS], MASK_MASK_LOGITS: low,
                MASK_OBJECT_SCORE: object_score.astype(np.float32),
                MASK_BINARIZE: np.full(low.shape[0], 1.0 if binarize else 0.0, np.float32)}
        return to_bfloat16_bits(self.encoder.run([MASK_MEMORIES], feed)[0])

    def _tracked(self, low: np.ndarray, score: float, object_score: np.ndarray, name: str | None,
                 prompted: bool) -> TrackedMask:
        mask = resize_bilinear(low, *self.sam.size) > self.sam.mask_threshold
        return TrackedMask(mask, float(score), float(object_score[0]), bool(object_score[0] > 0), bbox(mask),
                           int(mask.sum()), low, name, prompted)

    @staticmethod
    def _check_points(points, labels) -> tuple[np.ndarray, np.ndarray]:
        coords = np.asarray(points, np.float64)
        labs = np.asarray(labels, np.float32)
        if coords.ndim != 2 or coords.shape[1] != 2 or labs.shape != (coords.shape[0],) or not len(coords):
            raise ClipxaiError(f"points must be [N, 2] (x, y) and labels [N] with N >= 1; got {list(coords.shape)} "
                               f"and {list(labs.shape)}")
        if not np.isin(labs, (0.0, 1.0)).all() or not np.isfinite(coords).all():
            raise ClipxaiError("labels must be 1 (on the object) or 0 (off it) and points finite numbers")
        return coords, labs


def _groups(banks: dict[int, tuple]) -> list[list[int]]:
    """Rows whose banks have as many memories and pointers, to run in one batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for row, (memories, _, pointers, _) in banks.items():
        groups.setdefault((len(memories), len(pointers)), []).append(row)
    return list(groups.values())
