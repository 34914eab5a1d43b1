"""Postprocessing in numpy (docs/design.md §6): upsampling, segmentation, SAM points.

Bilinear resizing uses half-pixel centres and edge clamping, equal to torch's
``interpolate(mode="bilinear", align_corners=False)`` without antialias, in
both directions. From small grids (token grids) it is applied as two small
interpolation matrices (``A_h @ map @ A_wᵀ``), so memory stays at the output
size; from large maps (sliding-window results, sides > DENSE_MAX) as two-tap
gathers, whose cost does not grow with the input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from clipxai.errors import ClipxaiError
from clipxai.runtime.cpu.threads import blas_single_thread


# Inputs with a side above this are resized by two-tap gathers instead of dense matrices.
DENSE_MAX = 64


@lru_cache(maxsize=64)
def resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output i = (1 - w1[i])·input[i0[i]] + w1[i]·input[i1[i]]: i0, i1 int64 [n_out], w1 float32 [n_out]."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    for a in (i0, i1, w1):
        a.setflags(write=False)
    return i0, i1, w1


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float32 bilinear weights (half-pixel centres, clamp at the edges)."""
    i0, i1, w1 = resize_taps(n_in, n_out)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    m.setflags(write=False)
    return m


def _taps_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Bilinear resize of one axis of x to n_out by two-tap gathers (float32)."""
    i0, i1, w1 = resize_taps(x.shape[axis], n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w1 = w1.reshape(shape)
    a = np.take(x, i0, axis=axis)
    a *= 1.0 - w1
    a += np.take(x, i1, axis=axis) * w1
    return a


@blas_single_thread()
def resize_bilinear(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """[..., h, w] -> [..., height, width] float32 (two GEMMs over all maps at once; two-tap
    gathers, a few maps at a time, when a side is above DENSE_MAX)."""
    *lead, h, w = maps.shape
    if max(h, w) > DENSE_MAX:
        m = np.asarray(maps, dtype=np.float32).reshape(-1, h, w)
        out = np.empty((m.shape[0], height, width), np.float32)
        step = max(1, (1 << 24) // max(1, h * width + height * width))  # ~64 MB of temporaries
        for i in range(0, m.shape[0], step):
            out[i:i + step] = _taps_axis(_taps_axis(m[i:i + step], 2, width), 1, height)
        return out.reshape(*lead, height, width)
    ah = resize_matrix(h, height)
    aw = resize_matrix(w, width)
    m = np.ascontiguousarray(maps, dtype=np.float32).reshape(-1, w)   # [B*h, w]
    b = m.shape[0] // h
    cols = (m @ aw.T).reshape(b, h, width).transpose(1, 0, 2).reshape(h, b * width)  # [h, B*W]
    out = (ah @ cols).reshape(height, b, width).transpose(1, 0, 2)      # [B, H, W]
    return np.ascontiguousarray(out).reshape(*lead, height, width)


@blas_single_thread()
def resize_rows(grid_map: np.ndarray, height: int, width: int, r0: int, r1: int) -> np.ndarray:
    """Rows r0:r1 of ``resize_bilinear(grid_map, height, width)``: float32 [r1 - r0, width].
    grid_map: [h, w]. Memory stays at the rows asked for."""
    h, w = grid_map.shape
    m = np.asarray(grid_map, np.float32)
    if max(h, w) > DENSE_MAX:
        i0, i1, w1 = resize_taps(h, height)
        top = _taps_axis(m[i0[r0:r1]], 1, width)
        bottom = _taps_axis(m[i1[r0:r1]], 1, width)
        wr = w1[r0:r1, None]
        return top * (1.0 - wr) + bottom * wr
    return resize_matrix(h, height)[r0:r1] @ (m @ resize_matrix(w, width).T)


class RowUpsampler:
    """Bilinear upsampling of K maps on a (gh, gw) grid to (height, width), a band of rows at a
    time, class fastest: ``widen`` resizes the columns once, ``rows`` makes rows r0:r1."""

    def __init__(self, gh: int, gw: int, height: int, width: int, k: int):
        self.gh, self.gw, self.width, self.k = gh, gw, width, k
        self.dense = max(gh, gw) <= DENSE_MAX
        self.taps = resize_taps(gh, height)
        if self.dense:
            self.ah, self.aw = resize_matrix(gh, height), resize_matrix(gw, width)

    def widen(self, maps_khw: np.ndarray) -> np.ndarray:
        """[K, gh, gw] -> [gh, W·K]."""
        wide = np.ascontiguousarray(maps_khw, dtype=np.float32).transpose(1, 2, 0).reshape(self.gh, self.gw, self.k)
        if not self.dense:
            return _taps_axis(wide, 1, self.width).reshape(self.gh, self.width * self.k)
        return np.einsum("wj,ijk->iwk", self.aw, wide).reshape(self.gh, self.width * self.k)

    def rows(self, wide: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """Rows r0:r1 of the upsampled maps: [r1 - r0, W, K]."""
        if self.dense:
            out = self.ah[r0:r1] @ wide
        else:
            h0, h1, hw1 = self.taps
            w1 = hw1[r0:r1, None]
            out = wide[h0[r0:r1]] * (1.0 - w1) + wide[h1[r0:r1]] * w1
        return out.reshape(-1, self.width, self.k)


@blas_single_thread()
@dataclass(frozen=True)
class Thresholds:
    """When ``segment`` marks a pixel background (-1), with classes as indices:

    - background_threshold (in [0, 1]): the winning class's upsampled heatmap is below it
      (``segment`` then needs heatmaps_grid);
    - prob_threshold (in [0, 1]): the winning class's probability ``softmax(logit_scale · s)``
      over the K classes of the upsampled similarity s is below it (logit_scale then required;
      the argmax does not depend on it);
    - background: the winning class is one of these class indices.
    """

    background_threshold: float | None = None
    logit_scale: float | None = None
    prob_threshold: float | None = None
    background: tuple[int, ...] = ()


def segment(similarity: np.ndarray, grid: int | tuple[int, int], height: int, width: int,
            heatmaps_grid: np.ndarray | None = None, thresholds: Thresholds = Thresholds(),
            rows_per_chunk: int = 256) -> np.ndarray:
    """Argmax over classes of the similarity upsampled to the image -> int32 [H, W], -1 where
    ``thresholds`` say background.

    similarity: [N, K] similarity on a grid of N = gh·gw cells (row-major);
    ``grid`` is g (square) or (gh, gw). heatmaps_grid: [K, gh, gw] (for background_threshold).
    Works in row chunks so memory stays at K x chunk x W.
    """
    background_threshold, logit_scale = thresholds.background_threshold, thresholds.logit_scale
    prob_threshold, background = thresholds.prob_threshold, thresholds.background
    k = similarity.shape[1]
    gh, gw = (grid, grid) if isinstance(grid, (int, np.integer)) else grid
    if gh * gw != similarity.shape[0]:
        raise ValueError(f"similarity has {similarity.shape[0]} cells, grid {gh}x{gw} needs {gh * gw}")
    if prob_threshold is not None and logit_scale is None:
        raise ValueError("prob_threshold needs logit_scale")
    if background_threshold is not None and heatmaps_grid is None:
        raise ValueError("background_threshold needs heatmaps_grid")
    up = RowUpsampler(gh, gw, height, width, k)
    sim_w = up.widen(similarity.T.reshape(k, gh, gw))
    maps_w = up.widen(heatmaps_grid) if background_threshold is not None else None
    is_background = np.zeros(k, bool)
    is_background[list(background)] = True
    out = np.empty((height, width), np.int32)
    rows_per_chunk = max(1, min(rows_per_chunk, (1 << 23) // (width * k)))  # <= 32 MB per temporary
    for r0 in range(0, height, rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, height)
        sim = up.rows(sim_w, r0, r1)  # [rows, W, K]
        labels = sim.argmax(axis=2).astype(np.int32)
        drop = is_background[labels]
        if maps_w is not None:
            drop |= np.take_along_axis(up.rows(maps_w, r0, r1), labels[..., None], axis=2)[..., 0] \
                < background_threshold
        if prob_threshold is not None:
            drop |= max_probability(sim, logit_scale) < prob_threshold
        labels[drop] = -1
        out[r0:r1] = labels
    return out


def max_probability(logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """[..., K] -> [...]: the largest entry of softmax(logit_scale · logits) over the last axis,
    i.e. 1 / Σ_k exp(logit_scale · (l_k - max l)), computed stably in float32."""
    z = np.float32(logit_scale) * (logits - logits.max(axis=-1, keepdims=True))
    return 1.0 / np.exp(z).sum(axis=-1)


@blas_single_thread()
def points_from_map(grid_map: np.ndarray, height: int, width: int, threshold: float = 0.8,
                    down_sample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """SAM point prompts from one class's grid heatmap [gh, gw] (docs/design.md §6).

    Downsample by ``down_sample`` (bilinear) to [max(gh // d, 1), max(gw // d, 1)],
    min-max normalise, n = min(#cells >= threshold, cells // 2): the n highest
    cells are positive points (label 1), the n lowest negative (label 0). A cell
    (row, col) maps to pixel ((col + 0.5)·W/w, (row + 0.5)·H/h), clipped to the image.
    Returns coords int32 [2n, 2] as (x, y) and labels uint8 [2n].
    """
    gh, gw = grid_map.shape
    side_h, side_w = max(gh // down_sample, 1), max(gw // down_sample, 1)
    sm = resize_bilinear(grid_map, side_h, side_w).reshape(-1)
    lo, hi = sm.min(), sm.max()
    span = hi - lo
    sm = (sm - lo) / span if span > 0 else np.zeros_like(sm)
    order = np.argsort(sm, kind="stable")
    n = int(min((sm >= threshold).sum(), sm.size // 2))
    idx = np.concatenate([order[sm.size - n:], order[:n]]) if n else np.empty(0, np.int64)
    scale_w, scale_h = width / side_w, height / side_h
    x = np.minimum((idx % side_w + 0.5) * scale_w, width - 1)
    y = np.minimum((idx // side_w + 0.5) * scale_h, height - 1)
    coords = np.stack([x, y], axis=1).astype(np.int32).reshape(-1, 2)
    labels = np.concatenate([np.ones(n, np.uint8), np.zeros(n, np.uint8)])
    return coords, labels


@dataclass(frozen=True)
class SegmentOptions:
    """Segmentation settings as the training-free segmentation papers evaluate (SCLIP,
    ClearCLIP, NACLIP); see ``segment`` for the math.

    logit_scale: the similarity is multiplied by it before the softmax over classes
        (the papers use 40-100 on cosine similarities); > 0. Only the probability
        threshold uses it: the argmax does not depend on it.
    prob_threshold: pixels whose winning class's probability is below it are
        background (-1); in [0, 1]; needs logit_scale.
    background_classes: class names whose pixels are background (-1), e.g. the
        "sky", "wall", ... stand-ins the papers use for PASCAL VOC's background.
    background_threshold: pixels where the winning class's heatmap is below it are
        background (-1); in [0, 1].
    """

    logit_scale: float | None = None
    prob_threshold: float | None = None
    background_classes: tuple[str, ...] = ()
    background_threshold: float | None = None

    def checked(self, classes: Sequence[str]) -> "SegmentOptions":
        """These options, checked against a class list; raises ClipxaiError (one line)."""
        if self.logit_scale is not None and not (np.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise ClipxaiError(f"logit_scale must be a positive number, got {self.logit_scale}")
        if self.prob_threshold is not None:
            if not 0.0 <= self.prob_threshold <= 1.0:
                raise ClipxaiError(f"prob_threshold must be in [0, 1], got {self.prob_threshold}")
            if self.logit_scale is None:
                raise ClipxaiError("prob_threshold needs a logit_scale (the softmax temperature; "
                                   "SCLIP uses 40, the papers 40-100)")
        if self.background_threshold is not None and not 0.0 <= self.background_threshold <= 1.0:
            raise ClipxaiError(f"background_threshold must be in [0, 1], got {self.background_threshold}")
        unknown = [c for c in self.background_classes if c not in classes]
        if unknown:
            raise ClipxaiError(f"background class {unknown[0]!r} is not a class of the bundle; "
                               f"it has: {', '.join(classes)}")
        return SegmentOptions(self.logit_scale, self.prob_threshold, tuple(self.background_classes),
                              self.background_threshold)

    def background_indices(self, classes: Sequence[str]) -> list[int]:
        """Indices in ``classes`` of the background classes that are among them."""
        return [i for i, c in enumerate(classes) if c in self.background_classes]
