"""Sliding-window inference for images larger than the bundle's size (numpy only).

Follows the ``slide_inference`` of the training-free segmentation papers (SCLIP,
ClearCLIP, NACLIP), with S = the bundle's image size and g its token grid:

1. Resize the image so its short side is ``short_side`` (>= S), keeping the
   aspect ratio: (h, w) = the sides times short_side / min(H, W), rounded, the
   short side exactly short_side. Pillow bicubic, then CLIP normalisation, as
   the runtime's normal path (the papers' mmseg pipeline resizes bilinearly
   with OpenCV; their short side is also capped so the long side stays <= 2048).
2. Windows of S x S at offsets 0, stride, 2·stride, ... in each direction; a
   window that would pass the border is moved back to end on it, so the last
   window is aligned to the border and every pixel is covered (stride <= S).
   As short_side >= S, no window is ever smaller than S: nothing is padded.
3. Each window runs through the graph (windows batched); its similarity
   [N, K] is reshaped to [K, g, g] and upsampled bilinearly (half-pixel
   centres) to S x S, added into a [K, h, w] sum, and the sum divided by the
   number of windows covering each pixel: the averaged similarity logits.
4. Heatmaps: per-class min-max of the averaged logits on that (h, w) map,
   with the minimum and maximum taken over the windows' token grids (as the
   normal path takes them on its token grid, before upsampling), then
   upsampled bilinearly to the original (H, W). The averaged logits are convex
   combinations of grid values, so the maps stay in [0, 1]; and as min-max is
   affine and bilinear weights sum to 1, an S x S image (one window) gives the
   normal path's heatmaps. The segmentation is the argmax of the averaged
   logits upsampled to (H, W), as the papers do.
5. Scores (the class-token zero-shot probabilities) come from one extra pass
   of the whole image squashed to S x S, so they equal ``Predictor.predict``'s.

Memory: the averaged map is K·h·w float32 (held twice: logits and heatmaps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from clipxai.contract import OUTPUT_SCORES, OUTPUT_SIMILARITY
from clipxai.errors import ClipxaiError
from clipxai.runtime.postprocess import resize_bilinear
from clipxai.runtime.preprocess import preprocess

# run(windows float32 [B, 3, S, S]) -> (similarity [B, N, K], scores [B, K])
RunWindows = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def check_slide(stride: int, short_side: int, window: int) -> None:
    """One-line ClipxaiError unless 1 <= stride <= window <= short_side (all integers)."""
    for name, value in (("stride", stride), ("short side", short_side)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ClipxaiError(f"sliding window: {name} must be an integer, got {value!r}")
    if stride < 1:
        raise ClipxaiError(f"sliding window: stride must be >= 1, got {stride}")
    if stride > window:
        raise ClipxaiError(f"sliding window: stride {stride} is larger than the window ({window}, the bundle's "
                           "image size): windows would leave gaps; use a stride <= the window")
    if short_side < window:
        raise ClipxaiError(f"sliding window: short side {short_side} is smaller than the window ({window}, the "
                           "bundle's image size); use a short side >= the window, or predict without sliding")


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with min(h, w) == short_side and the aspect ratio kept (rounded)."""
    if height <= width:
        return short_side, max(short_side, int(round(width * short_side / height)))
    return max(short_side, int(round(height * short_side / width))), short_side


def window_offsets(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one side (length >= window): i·stride, the
    last moved back to end on the border. n = ceil((length - window) / stride) + 1."""
    n = (max(length - window, 0) + stride - 1) // stride + 1
    return [min(i * stride, length - window) for i in range(n)]


def windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every window, row-major."""
    return [(y, x) for y in window_offsets(height, window, stride) for x in window_offsets(width, window, stride)]


def normalized_resize(img: Image.Image, height: int, width: int, mean, std) -> np.ndarray:
    """RGB PIL image -> float32 [3, height, width]: Pillow bicubic resize, /255, normalise."""
    a = np.asarray(img.resize((width, height), Image.BICUBIC), dtype=np.float32) / np.float32(255.0)
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


@dataclass
class SlideResult:
    """logits: float32 [K, h, w] averaged similarity logits. lo, hi: float32 [K] minimum
    and maximum over all windows' token grids. scores: float32 [K] of ``extra``, or None."""

    logits: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    scores: np.ndarray | None

    def heatmaps(self) -> np.ndarray:
        """float32 [K, h, w] in [0, 1]: (logits - lo) / (hi - lo) per class (0 where hi == lo)."""
        span = self.hi - self.lo
        span = np.where(span > 0, span, np.float32(1.0))
        return ((self.logits - self.lo[:, None, None]) / span[:, None, None]).astype(np.float32)


def slide_logits(image: np.ndarray, run: RunWindows, window: int, grid: int, stride: int,
                 batch_size: int = 8, extra: np.ndarray | None = None) -> SlideResult:
    """Averaged similarity logits of sliding windows.

    image: float32 [3, h, w] normalised, h, w >= window. run: the graph on a batch.
    extra: optional float32 [3, S, S] run in the first batch as well, for its scores [K].
    """
    _, h, w = image.shape
    tops = windows(h, w, window, stride)
    acc = lo = hi = None
    count = np.zeros((h, w), np.float32)
    scores = None
    for start in range(0, len(tops), batch_size):
        part = tops[start:start + batch_size]
        crops = [image[:, y:y + window, x:x + window] for y, x in part]
        if extra is not None and start == 0:
            crops.append(extra)
        sim, sc = run(np.ascontiguousarray(np.stack(crops), dtype=np.float32))
        if extra is not None and start == 0:
            scores = np.asarray(sc[-1], np.float32)
        k = sim.shape[-1]
        sim = np.asarray(sim[:len(part)], np.float32)  # [B, N, K]
        if acc is None:
            acc = np.zeros((k, h, w), np.float32)
            lo, hi = sim.min(axis=(0, 1)), sim.max(axis=(0, 1))
        lo, hi = np.minimum(lo, sim.min(axis=(0, 1))), np.maximum(hi, sim.max(axis=(0, 1)))
        maps = sim.transpose(0, 2, 1).reshape(len(part), k, grid, grid)
        for (y, x), m in zip(part, maps):  # one window at a time: K·S·S floats, not B·K·S·S
            acc[:, y:y + window, x:x + window] += resize_bilinear(m, window, window)
            count[y:y + window, x:x + window] += 1.0
    acc /= count
    return SlideResult(acc, lo, hi, scores)


def slide_prediction(predictor, img: Image.Image, stride: int, short_side: int, batch_size: int = 8):
    """``Predictor.predict_slide`` on an RGB PIL image -> Prediction (module docstring)."""
    bundle = predictor.bundle
    s, g = bundle.image_size, bundle.grid_size
    check_slide(stride, short_side, s)
    h, w = resized_shape(img.height, img.width, short_side)
    if h * w > predictor.max_pixels:
        raise ClipxaiError(f"sliding window: the image resized to short side {short_side} is {w}x{h}, above the "
                           f"{predictor.max_pixels / 1e6:.0f} MP limit; use a smaller short side")
    image = normalized_resize(img, h, w, bundle.mean, bundle.std)
    whole = preprocess(img, s, bundle.mean, bundle.std)

    def run(batch: np.ndarray):
        return predictor.outputs(batch, (OUTPUT_SIMILARITY, OUTPUT_SCORES))

    res = slide_logits(image, run, s, g, stride, batch_size, extra=whole)
    k = res.logits.shape[0]
    return predictor.prediction(res.logits.reshape(k, h * w).T, res.scores, res.heatmaps(), (img.height, img.width),
                                points_down_sample=2 * max(s // g, 1))
