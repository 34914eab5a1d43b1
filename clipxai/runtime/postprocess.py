"""Postprocessing in numpy (DESIGN section 6): upsampling, segmentation, SAM points.

Bilinear resizing uses half-pixel centres and edge clamping, equal to torch's
``interpolate(mode="bilinear", align_corners=False)`` without antialias, in
both directions. It is applied as two small interpolation matrices
(``A_h @ map @ A_wᵀ``), so memory stays at the output size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float32 bilinear weights (half-pixel centres, clamp at the edges)."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    m.setflags(write=False)
    return m


def resize_bilinear(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """[..., h, w] -> [..., height, width] float32 (two GEMMs over all maps at once)."""
    *lead, h, w = maps.shape
    ah = resize_matrix(h, height)
    aw = resize_matrix(w, width)
    m = np.ascontiguousarray(maps, dtype=np.float32).reshape(-1, w)   # [B*h, w]
    b = m.shape[0] // h
    cols = (m @ aw.T).reshape(b, h, width).transpose(1, 0, 2).reshape(h, b * width)  # [h, B*W]
    out = (ah @ cols).reshape(height, b, width).transpose(1, 0, 2)      # [B, H, W]
    return np.ascontiguousarray(out).reshape(*lead, height, width)


def segment(similarity: np.ndarray, grid: int, height: int, width: int,
            heatmaps_grid: np.ndarray | None = None, background_threshold: float | None = None,
            rows_per_chunk: int = 256) -> np.ndarray:
    """Argmax over classes of the similarity upsampled to the image -> int32 [H, W].

    similarity: [N, K] patch similarity. With background_threshold (in [0, 1]),
    pixels whose winning class has an upsampled heatmap value below it are -1;
    heatmaps_grid [K, g, g] is then required. Works in row chunks so memory
    stays at K x chunk x W.
    """
    k = similarity.shape[1]
    aw = resize_matrix(grid, width)
    ah = resize_matrix(grid, height)

    def widen(maps_kgg: np.ndarray) -> np.ndarray:  # [K, g, g] -> [g, W*K], class fastest
        wide = np.ascontiguousarray(maps_kgg, dtype=np.float32).transpose(1, 2, 0).reshape(grid, grid, k)
        return np.einsum("wj,ijk->iwk", aw, wide).reshape(grid, width * k)

    sim_w = widen(similarity.T.reshape(k, grid, grid))
    maps_w = None
    if background_threshold is not None:
        if heatmaps_grid is None:
            raise ValueError("background_threshold needs heatmaps_grid")
        maps_w = widen(heatmaps_grid)
    out = np.empty((height, width), np.int32)
    for r0 in range(0, height, rows_per_chunk):
        rows = ah[r0:r0 + rows_per_chunk]
        up = (rows @ sim_w).reshape(-1, width, k)  # [rows, W, K]
        labels = up.argmax(axis=2).astype(np.int32)
        if maps_w is not None:
            conf = np.take_along_axis((rows @ maps_w).reshape(-1, width, k), labels[..., None], axis=2)[..., 0]
            labels[conf < background_threshold] = -1
        out[r0:r0 + rows_per_chunk] = labels
    return out


def points_from_map(grid_map: np.ndarray, height: int, width: int, threshold: float = 0.8,
                    down_sample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """SAM point prompts from one class's grid heatmap [g, g] (DESIGN section 6).

    Downsample by ``down_sample`` (bilinear), min-max normalise, n = min(#cells >=
    threshold, cells // 2): the n highest cells are positive points (label 1),
    the n lowest negative (label 0). A cell (row, col) maps to pixel
    ((col + 0.5)·W/w, (row + 0.5)·H/h), clipped to the image.
    Returns coords int32 [2n, 2] as (x, y) and labels uint8 [2n].
    """
    g = grid_map.shape[0]
    side = max(g // down_sample, 1)
    sm = resize_bilinear(grid_map, side, side).reshape(-1)
    lo, hi = sm.min(), sm.max()
    span = hi - lo
    sm = (sm - lo) / span if span > 0 else np.zeros_like(sm)
    order = np.argsort(sm, kind="stable")
    n = int(min((sm >= threshold).sum(), sm.size // 2))
    idx = np.concatenate([order[sm.size - n:], order[:n]]) if n else np.empty(0, np.int64)
    scale_w, scale_h = width / side, height / side
    x = np.minimum((idx % side + 0.5) * scale_w, width - 1)
    y = np.minimum((idx // side + 0.5) * scale_h, height - 1)
    coords = np.stack([x, y], axis=1).astype(np.int32).reshape(-1, 2)
    labels = np.concatenate([np.ones(n, np.uint8), np.zeros(n, np.uint8)])
    return coords, labels
