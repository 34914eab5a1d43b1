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
from clipxai.runtime.postprocess import SegmentOptions, points_from_map, resize_bilinear, segment
from clipxai.runtime.preprocess import DEFAULT_MAX_PIXELS, ImageInput, open_image, preprocess
from clipxai.runtime.backends import open_session
from clipxai.runtime.providers import ProviderSpec
from clipxai.runtime.text_encoder import (
    TextEncoder, build_vocabulary, initial_vocabulary, require_text_encoder, text_providers, vocabulary_feeds,
)

log = logging.getLogger("clipxai")


@dataclass
class Prediction:
    """What the graph says about one image.

    similarity: float32 [N, K] per-patch class evidence: surgery's patch-token similarity
        after feature surgery, or grad-eclip's map before normalisation.
    scores: float32 [K] zero-shot class probabilities from the class token.
    heatmaps_grid: float32 [K, g, g] per-class min-max maps on the token grid.
    size: (H, W) of the original image.
    options: segmentation settings used by ``segmentation`` (see ``segment``).

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
    background_threshold: float | None = None
    options: SegmentOptions = SegmentOptions()
    points_down_sample: int = 2

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

    @cached_property
    def segmentation(self) -> np.ndarray:
        """int32 [H, W]: argmax class of the upsampled similarity; -1 (background) where the
        winner's heatmap is below ``background_threshold`` or as ``options`` say."""
        o = self.options
        return self.segment(o.logit_scale, o.prob_threshold, o.background_classes, self.background_threshold)

    def segment(self, logit_scale: float | None = None, prob_threshold: float | None = None,
                background_classes: Sequence[str] = (), background_threshold: float | None = None) -> np.ndarray:
        """int32 [H, W] segmentation with explicit settings, -1 = background: the argmax class of
        the upsampled similarity s, set to -1 where max softmax(logit_scale · s) < prob_threshold,
        where the winner is one of ``background_classes``, or where the winner's heatmap is
        below ``background_threshold``. Raises ClipxaiError for bad settings."""
        opts = SegmentOptions(logit_scale, prob_threshold, tuple(background_classes)).checked(self.classes)
        if background_threshold is not None and not 0.0 <= background_threshold <= 1.0:
            raise ClipxaiError(f"background_threshold must be in [0, 1], got {background_threshold}")
        return segment(self.similarity, self.grid_shape, *self.size, heatmaps_grid=self.heatmaps_grid,
                       background_threshold=background_threshold, logit_scale=opts.logit_scale,
                       prob_threshold=opts.prob_threshold, background=opts.background_indices(self.classes))

    @property
    def top_class(self) -> int:
        return int(np.argmax(self.scores))

    def points(self, k: int, threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """SAM point prompts for class k: (coords int32 [M, 2] as (x, y), labels uint8 [M]).

        M = 2n: n positive points (label 1) from the hottest cells, n negative (label 0)
        from the coldest, of the grid map downsampled by 2 (DESIGN section 6).
        """
        return points_from_map(self.heatmaps_grid[k], *self.size, threshold=threshold,
                               down_sample=self.points_down_sample)

    def select(self, names: Sequence[str]) -> "Prediction":
        """The same prediction restricted to some classes (segmentation among them only;
        scores stay the probabilities over the bundle's whole vocabulary)."""
        idx = [self.classes.index(n) for n in names]
        kept = [self.classes[i] for i in idx]
        o = self.options
        options = SegmentOptions(o.logit_scale, o.prob_threshold, tuple(c for c in o.background_classes if c in kept))
        return Prediction(kept, self.similarity[:, idx], self.scores[idx], self.heatmaps_grid[idx], self.size,
                          self.background_threshold, options, self.points_down_sample)


class Predictor:
    """Runs a bundle's graph with onnxruntime. Create with ``Predictor.from_bundle``."""

    def __init__(self, bundle: Bundle, session, max_pixels: int = DEFAULT_MAX_PIXELS,
                 background_threshold: float | None = None):
        self.bundle = bundle
        self.session = session
        self.max_pixels = max_pixels
        self.background_threshold = background_threshold
        self.segment_options = SegmentOptions()
        self._outputs = [OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS]
        self._buffer = np.empty((0, 3, bundle.image_size, bundle.image_size), np.float32)
        self._text_encoder = None
        self.vocabulary = initial_vocabulary(bundle)  # None: the vocabulary is baked into the graph

    @classmethod
    def from_bundle(cls, path: str | Path, providers: ProviderSpec = "auto", threads: int | None = None,
                    trt_fp16: bool = False, trt_cache_dir: str | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS, background_threshold: float | None = None,
                    backend: str = "onnxruntime", engine: str | Path | None = None,
                    graph_cache: bool | str = True, cache_dir: str | None = None) -> "Predictor":
        """Check the bundle (schema, digests, paths, graph IO), then open a session.

        providers: "auto" (TensorRT > CUDA > CPU, logged), "cpu", "cuda", "tensorrt",
        or an onnxruntime provider list. threads: intra-op threads.
        backend: "onnxruntime" or "tensorrt" (a native engine from jetson/build_engine.sh;
        ``engine`` names one, else the one of this machine's key). trt_cache_dir: TensorRT
        engine cache root (default BUNDLE/engines or the user cache; "off" disables it).
        graph_cache: on the CPU, keep onnxruntime's optimized, prepacked graph in
        ``cache_dir`` (default ~/.cache/clipxai) so later loads are faster and lighter.
        True (default: $CLIPXAI_GRAPH_CACHE, else "background") fills a missing entry in
        a detached low-priority process, "sync" while loading, False/"off" never.
        """
        bundle = load_bundle(path)
        if background_threshold is not None and not 0.0 <= background_threshold <= 1.0:
            raise ClipxaiError(f"background_threshold must be in [0, 1], got {background_threshold}")
        # backends.py: provider/engine choice, keyed TensorRT engine cache, IO binding on GPUs
        session = open_session(bundle, backend, providers, threads, trt_fp16, trt_cache_dir, engine,
                               graph_cache=graph_cache, cache_dir=cache_dir)
        check_graph_io(bundle, session)
        fidelity = bundle.manifest.get("fidelity") or {}
        if fidelity.get("passed") is False:
            log.warning("%s: this %s bundle FAILED its fidelity gate at export (heatmap correlation %.4f, "
                        "pixel agreement %.1f%%) and was written with --force; its maps may be wrong",
                        bundle.path, bundle.manifest["precision"], fidelity.get("correlation", float("nan")),
                        100 * fidelity.get("pixel_agreement", float("nan")))
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

    def set_segmentation(self, logit_scale: float | None = None, prob_threshold: float | None = None,
                         background_classes: Sequence[str] = ()) -> None:
        """Segmentation settings for the predictions that follow (see ``Prediction.segment``):
        logit_scale > 0, prob_threshold in [0, 1] (needs logit_scale), background class names."""
        self.segment_options = SegmentOptions(logit_scale, prob_threshold,
                                              tuple(background_classes)).checked(self.classes)

    def predict_slide(self, image: ImageInput, stride: int, short_side: int, batch_size: int = 8) -> Prediction:
        """Sliding-window prediction (clipxai.runtime.sliding): resize so the short side is
        ``short_side`` (>= S), run S x S windows every ``stride`` pixels (1 <= stride <= S),
        ``batch_size`` windows per graph run, and average the upsampled similarity logits.
        Heatmaps [K, H, W] and segmentation [H, W] are at the original size; scores [K] are
        those of ``predict`` (one pass of the whole image)."""
        from clipxai.runtime.sliding import slide_prediction
        if batch_size < 1:
            raise ClipxaiError(f"batch_size must be >= 1, got {batch_size}")
        return slide_prediction(self, open_image(image, self.max_pixels), stride, short_side, batch_size)

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

    def graph_feeds(self, images: np.ndarray) -> dict:
        """The graph's inputs for preprocessed images [B, 3, S, S] (plus the vocabulary
        of a --text-encoder bundle)."""
        return {INPUT_IMAGE: images, **vocabulary_feeds(self.vocabulary)}

    def _run(self, pil) -> list[Prediction]:
        b, s = len(pil), self.bundle.image_size
        if self._buffer.shape[0] < b:
            self._buffer = np.empty((b, 3, s, s), np.float32)
        for i, im in enumerate(pil):
            preprocess(im, s, self.bundle.mean, self.bundle.std, out=self._buffer[i])
        sim, scores, maps = self.session.run(self._outputs, self.graph_feeds(self._buffer[:b]))
        classes = self.classes
        return [Prediction(classes, sim[i], scores[i], maps[i], (im.height, im.width), self.background_threshold,
                           self.segment_options) for i, im in enumerate(pil)]
