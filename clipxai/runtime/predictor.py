"""``Predictor``: a bundle in, per-class heatmaps, segmentation, scores and SAM points out.

Shape of the API follows segment-anything's SamPredictor: numpy in and out,
shapes in every docstring. K = number of classes, N = g² patch tokens,
(H, W) = the ORIGINAL image size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from clipxai.contract import INPUT_IMAGE, OUTPUT_HEATMAPS, OUTPUT_SCORES, OUTPUT_SIMILARITY
from clipxai.errors import ClipxaiError
from clipxai.runtime.bundle import Bundle, check_graph_io, load_bundle
from clipxai.runtime.postprocess import points_from_map, resize_bilinear, segment
from clipxai.runtime.preprocess import DEFAULT_MAX_PIXELS, ImageInput, open_image, preprocess
from clipxai.runtime.providers import ProviderSpec, SessionOptions, create_session
from clipxai.runtime.text_encoder import (
    TextEncoder, build_vocabulary, initial_vocabulary, require_text_encoder, text_providers, vocabulary_feeds,
)

log = logging.getLogger("clipxai")


@dataclass
class Prediction:
    """What the graph says about one image.

    similarity: float32 [N, K] patch-token similarity after feature surgery.
    scores: float32 [K] zero-shot class probabilities from the class token.
    heatmaps_grid: float32 [K, g, g] per-class min-max maps on the token grid.
    size: (H, W) of the original image.
    """

    classes: list[str]
    similarity: np.ndarray
    scores: np.ndarray
    heatmaps_grid: np.ndarray
    size: tuple[int, int]
    background_threshold: float | None = None

    @property
    def grid_size(self) -> int:
        return self.heatmaps_grid.shape[-1]

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

    @cached_property
    def segmentation(self) -> np.ndarray:
        """int32 [H, W]: argmax class of the upsampled similarity; -1 where the winner's
        heatmap is below ``background_threshold`` (when set)."""
        return segment(self.similarity, self.grid_size, *self.size, heatmaps_grid=self.heatmaps_grid,
                       background_threshold=self.background_threshold)

    @property
    def top_class(self) -> int:
        return int(np.argmax(self.scores))

    def points(self, k: int, threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """SAM point prompts for class k: (coords int32 [M, 2] as (x, y), labels uint8 [M]).

        M = 2n: n positive points (label 1) from the hottest cells, n negative (label 0)
        from the coldest, of the grid map downsampled by 2 (DESIGN section 6).
        """
        return points_from_map(self.heatmaps_grid[k], *self.size, threshold=threshold)

    def select(self, names: Sequence[str]) -> "Prediction":
        """The same prediction restricted to some classes (segmentation among them only;
        scores stay the probabilities over the bundle's whole vocabulary)."""
        idx = [self.classes.index(n) for n in names]
        return Prediction([self.classes[i] for i in idx], self.similarity[:, idx], self.scores[idx],
                          self.heatmaps_grid[idx], self.size, self.background_threshold)


class Predictor:
    """Runs a bundle's graph with onnxruntime. Create with ``Predictor.from_bundle``."""

    def __init__(self, bundle: Bundle, session, max_pixels: int = DEFAULT_MAX_PIXELS,
                 background_threshold: float | None = None):
        self.bundle = bundle
        self.session = session
        self.max_pixels = max_pixels
        self.background_threshold = background_threshold
        self._outputs = [OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS]
        self._buffer = np.empty((0, 3, bundle.image_size, bundle.image_size), np.float32)
        self._text_encoder = None
        self.vocabulary = initial_vocabulary(bundle)  # None: the vocabulary is baked into the graph

    @classmethod
    def from_bundle(cls, path: str | Path, providers: ProviderSpec = "auto", threads: int | None = None,
                    trt_fp16: bool = False, trt_cache_dir: str | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS, background_threshold: float | None = None) -> "Predictor":
        """Check the bundle (schema, digests, paths, graph IO), then open a session.

        providers: "auto" (TensorRT > CUDA > CPU, logged), "cpu", "cuda", "tensorrt",
        or an onnxruntime provider list. threads: intra-op threads.
        """
        bundle = load_bundle(path)
        if background_threshold is not None and not 0.0 <= background_threshold <= 1.0:
            raise ClipxaiError(f"background_threshold must be in [0, 1], got {background_threshold}")
        session = create_session(bundle.model_path, providers,
                                 SessionOptions(threads=threads, trt_fp16=trt_fp16, trt_cache_dir=trt_cache_dir))
        check_graph_io(bundle, session)
        log.info("loaded %s: %s on %s, %d classes, %dx%d", bundle.path, bundle.manifest["backbone"]["name"],
                 session.get_providers()[0], len(bundle.classes), bundle.image_size, bundle.image_size)
        return cls(bundle, session, max_pixels, background_threshold)

    @property
    def classes(self) -> list[str]:
        return self.vocabulary.classes if self.vocabulary is not None else self.bundle.classes

    def set_classes(self, names: Sequence[str], templates: Sequence[str] | None = None,
                    cache: bool | str | Path = True) -> None:
        """Use these class names from now on (bundles exported with ``--text-encoder``).

        Encodes them with the prompt ensemble (``templates``: None for the 85 of
        DESIGN section 5) on the device and recomputes the redundancy vector;
        the maps equal those of a bundle exported with these classes.
        cache: True (~/.cache/clipxai/text), False, or a cache directory.
        """
        if self._text_encoder is None:
            require_text_encoder(self.bundle)
            providers, threads = text_providers(self.session)
            self._text_encoder = TextEncoder.from_bundle(self.bundle, providers, threads)
        self.vocabulary = build_vocabulary(self.bundle, self._text_encoder, names, templates, cache)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def predict(self, image: ImageInput) -> Prediction:
        """image: a path, a PIL.Image, or an HxWx3 uint8 RGB ndarray -> Prediction."""
        return self.predict_batch([image], batch_size=1)[0]

    def predict_batch(self, images: Iterable[ImageInput], batch_size: int = 8) -> list[Prediction]:
        """Predictions for many images, running the graph ``batch_size`` images at a time."""
        if batch_size < 1:
            raise ClipxaiError(f"batch_size must be >= 1, got {batch_size}")
        images = list(images)
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            pil = [open_image(im, self.max_pixels) for im in images[start:start + batch_size]]
            out.extend(self._run(pil))
        return out

    def _run(self, pil) -> list[Prediction]:
        b, s = len(pil), self.bundle.image_size
        if self._buffer.shape[0] < b:
            self._buffer = np.empty((b, 3, s, s), np.float32)
        for i, im in enumerate(pil):
            preprocess(im, s, self.bundle.mean, self.bundle.std, out=self._buffer[i])
        feeds = {INPUT_IMAGE: self._buffer[:b], **vocabulary_feeds(self.vocabulary)}
        sim, scores, maps = self.session.run(self._outputs, feeds)
        classes = self.classes
        return [Prediction(classes, sim[i], scores[i], maps[i], (im.height, im.width), self.background_threshold)
                for i, im in enumerate(pil)]
