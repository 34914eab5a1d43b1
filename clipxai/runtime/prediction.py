"""``Prediction``: what the graph says about one image, with its maps at the original size.

K = number of classes, N = g² patch tokens, (H, W) = the ORIGINAL image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

from clipxai.errors import ClipxaiError
from clipxai.runtime.postprocess import (
    SegmentOptions, Thresholds, points_from_map, resize_bilinear, resize_rows, segment,
)


@dataclass
class Prediction:
    """What the graph says about one image.

    similarity: float32 [N, K] per-patch class evidence: surgery's patch-token similarity
        after feature surgery, or grad-eclip's map before normalisation.
    scores: float32 [K] zero-shot class probabilities from the class token.
    heatmaps_grid: float32 [K, g, g] per-class min-max maps on the token grid.
    size: (H, W) of the original image.
    options: segmentation settings used by ``segmentation`` (see ``segment``), the predictor's.
    frame_index, timestamp, dropped, frame: set by ``Predictor.stream`` (see its docstring).
    labels: float32 [K] independent multi-label logits (TaI-DPT's protocol, docs/methods.md), or None
        for a bundle exported before them and for ``predict_slide``; ``present`` thresholds them.

    From ``Predictor.predict_slide`` the grid is the resized image's pixels, (h, w)
    instead of (g, g): similarity [h·w, K] holds the averaged logits, heatmaps_grid
    [K, h, w] their min-max, and points are taken on a grid downsampled by
    ``points_down_sample`` (2 × the patch size there, 2 cells otherwise).
    """

    classes: list[str]
    similarity: np.ndarray
    scores: np.ndarray
    heatmaps_grid: np.ndarray
    size: tuple[int, int]
    options: SegmentOptions = SegmentOptions()
    points_down_sample: int = 2
    frame_index: int | None = None    # from Predictor.stream: the frame's index in its source
    timestamp: float | None = None    # ... its time in seconds (None when the source has none)
    dropped: int = 0                  # ... live sources: frames dropped since the previous prediction
    frame: np.ndarray | None = None   # ... the decoded frame, uint8 [H, W, 3] RGB
    labels: np.ndarray | None = None  # float32 [K] multi-label logits (None: the bundle has none)

    @property
    def grid_size(self) -> int:
        return self.heatmaps_grid.shape[-1]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(gh, gw) of heatmaps_grid: (g, g), or (h, w) for a sliding-window prediction."""
        return tuple(self.heatmaps_grid.shape[-2:])

    @cached_property
    def heatmaps(self) -> np.ndarray:
        """float32 [K, H, W] in [0, 1]: grid maps upsampled bilinearly (half-pixel centres).

        K full-size maps can be large (K·H·W·4 bytes); ``heatmap(k)`` makes one.
        """
        return resize_bilinear(self.heatmaps_grid, *self.size)

    def heatmap(self, k: int) -> np.ndarray:
        """float32 [H, W] in [0, 1] for class k."""
        if "heatmaps" in self.__dict__:
            return self.heatmaps[k]
        return resize_bilinear(self.heatmaps_grid[k], *self.size)

    def heatmap_rows(self, k: int, r0: int, r1: int) -> np.ndarray:
        """float32 [r1 - r0, W]: rows r0:r1 of ``heatmap(k)``, without making the whole map."""
        return resize_rows(self.heatmaps_grid[k], *self.size, r0, r1)

    @cached_property
    def segmentation(self) -> np.ndarray:
        """int32 [H, W]: argmax class of the upsampled similarity; -1 (background) where the
        winner's heatmap is below ``background_threshold`` or as ``options`` say."""
        o = self.options
        return self.segment(o.logit_scale, o.prob_threshold, o.background_classes, o.background_threshold)

    def segment(self, logit_scale: float | None = None, prob_threshold: float | None = None,
                background_classes: Sequence[str] = (), background_threshold: float | None = None) -> np.ndarray:
        """int32 [H, W] segmentation with explicit settings, -1 = background: the argmax class of
        the upsampled similarity s, set to -1 where max softmax(logit_scale · s) < prob_threshold,
        where the winner is one of ``background_classes``, or where the winner's heatmap is
        below ``background_threshold``. Raises ClipxaiError for bad settings."""
        opts = SegmentOptions(logit_scale, prob_threshold, tuple(background_classes),
                              background_threshold).checked(self.classes)
        thresholds = Thresholds(opts.background_threshold, opts.logit_scale, opts.prob_threshold,
                                tuple(opts.background_indices(self.classes)))
        return segment(self.similarity, self.grid_shape, *self.size, self.heatmaps_grid, thresholds)

    def present(self, threshold: float) -> list[str]:
        """The classes whose ``labels`` logit is >= ``threshold`` (pick one per class or overall from
        ``clipxai evaluate multilabel``'s precision/recall, docs/evaluation.md). ClipxaiError for a
        bundle exported without labels."""
        if self.labels is None:
            raise ClipxaiError("this bundle has no multi-label scores (exported before them); re-export it")
        return [name for name, s in zip(self.classes, self.labels) if s >= threshold]

    @property
    def top_class(self) -> int:
        return int(np.argmax(self.scores))

    def points(self, k: int, threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """SAM point prompts for class k: (coords int32 [M, 2] as (x, y), labels uint8 [M]).

        M = 2n: n positive points (label 1) from the hottest cells, n negative (label 0)
        from the coldest, of the grid map downsampled by 2 (docs/design.md §6).
        """
        return points_from_map(self.heatmaps_grid[k], *self.size, threshold=threshold,
                               down_sample=self.points_down_sample)

    def select(self, names: Sequence[str]) -> "Prediction":
        """The same prediction restricted to some classes (segmentation among them only;
        scores stay the probabilities over the bundle's whole vocabulary)."""
        idx = [self.classes.index(n) for n in names]
        kept = [self.classes[i] for i in idx]
        o = self.options
        options = SegmentOptions(o.logit_scale, o.prob_threshold, tuple(c for c in o.background_classes if c in kept),
                                 o.background_threshold)
        return Prediction(kept, self.similarity[:, idx], self.scores[idx], self.heatmaps_grid[idx], self.size,
                          options, self.points_down_sample, self.frame_index,
                          self.timestamp, self.dropped, self.frame,
                          None if self.labels is None else self.labels[idx])
