"""``Predictor``: a bundle in, per-class heatmaps, segmentation, scores and SAM points out.

Shape of the API follows segment-anything's SamPredictor: numpy in and out,
shapes in every docstring. K = number of classes, N = g² patch tokens,
(H, W) = the ORIGINAL image size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from clipxai.common.cache import cache_root
from clipxai.contract import (
    INPUT_IMAGE, MODEL_FILE, OUTPUT_EMBEDDING, OUTPUT_LABELS, OUTPUTS,
)
from clipxai.errors import ClipxaiError
from clipxai.runtime.backends import ProviderSpec, RuntimeOptions, open_graph, runtime_options, text_options
from clipxai.runtime.bundle import Bundle, load_bundle
from clipxai.runtime.postprocess import SegmentOptions
from clipxai.runtime.prediction import Prediction
from clipxai.runtime.preprocess import DEFAULT_MAX_PIXELS, ImageInput, open_image, preprocess
from clipxai.runtime.sliding import slide_prediction
from clipxai.runtime.text.encoder import (
    TextEncoder, build_vocabulary, initial_vocabulary, require_text_encoder, vocabulary_feeds,
)
from clipxai.runtime.video.tracks import DEFAULT_FORGET_AFTER, DEFAULT_POINT_THRESHOLD, DEFAULT_REPROMPT_EVERY

log = logging.getLogger("clipxai")


class Predictor:
    """Runs a bundle's graph with onnxruntime. Create with ``Predictor.from_bundle``.

    The interface the frame and window loops build on (video/stream.py, sliding.py): ``preprocess``
    (an image -> the graph's input [3, S, S]), ``outputs`` (inputs [B, 3, S, S] -> named outputs),
    ``prediction`` (one image's arrays -> a Prediction with this predictor's classes and
    segmentation settings) and ``run_graph`` (the two together). Segmentation settings live in
    one place, ``segment_options``, set by ``set_segmentation``.
    """

    def __init__(self, bundle: Bundle, session, max_pixels: int = DEFAULT_MAX_PIXELS,
                 background_threshold: float | None = None, options: RuntimeOptions = RuntimeOptions()):
        self.bundle = bundle
        self.session = session
        self.options = options  # how the graphs open: the text graphs follow the image session's device
        self.max_pixels = max_pixels
        self.segment_options = SegmentOptions(background_threshold=background_threshold)
        self._buffer = np.empty((0, 3, bundle.image_size, bundle.image_size), np.float32)
        self._text_encoder = None
        self._word_explainer = None
        self.vocabulary = initial_vocabulary(bundle)  # None: the vocabulary is baked into the graph
        self.cache_dir: str | Path | None = options.cache_dir  # root of the caches (text encodings)

    @classmethod
    def from_bundle(cls, path: str | Path, providers: ProviderSpec = "auto", threads: int | None = None, *,
                    options: RuntimeOptions | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                    background_threshold: float | None = None, digest: str | None = None,
                    stamps: str | Path | None = None, **settings) -> "Predictor":
        """Check the bundle (schema, digests, paths), then open its image graph (IO checked).

        options: how graphs open (``RuntimeOptions``), or its fields as keywords:
        providers: "auto" (TensorRT > CUDA > CPU, logged), "cpu", "cuda", "tensorrt",
        or an onnxruntime provider list. threads: intra-op threads.
        nvidia: GPU settings (``NvidiaOptions``: native TensorRT backend, fp16 engines,
        engine cache, device id). graph_cache: on the CPU, keep onnxruntime's optimized,
        prepacked graph in the cache so later loads are faster and lighter: True (default:
        $CLIPXAI_GRAPH_CACHE, else "background", filled by a detached low-priority process),
        "sync" (filled while loading), False/"off". cache_dir: root of clipxai's caches.
        max_pixels: larger images are refused. background_threshold: see ``Prediction.segment``.
        digest: the sha256 of the bundle's manifest.json to insist on (``clipxai export`` prints
        it): another bundle, or a changed one, is refused. stamps: a folder of verification stamps
        (clipxai/runtime/stamps.py): a bundle unchanged since a stamped check is not hashed again.
        """
        options = runtime_options(options, providers=providers, threads=threads, **settings)
        bundle = load_bundle(path, expect_digest=digest, stamps=stamps)
        SegmentOptions(background_threshold=background_threshold).checked(bundle.classes)
        session = open_graph(bundle, MODEL_FILE, options)
        _warn_failed_gate(bundle)
        log.info("loaded %s: %s on %s, %d classes, %dx%d", bundle.path, bundle.backbone_name,
                 session.get_providers()[0], len(bundle.classes), bundle.image_size, bundle.image_size)
        return cls(bundle, session, max_pixels, background_threshold, options)

    @property
    def classes(self) -> list[str]:
        return self.vocabulary.classes if self.vocabulary is not None else self.bundle.classes

    def set_classes(self, names: Sequence[str], templates: Sequence[str] | None = None,
                    cache: bool | str | Path = True) -> None:
        """Use these class names from now on (bundles exported with ``--text-encoder``).

        Encodes them with the prompt ensemble (``templates``: None for the 85 of
        docs/design.md §5) on the device and recomputes the redundancy vector;
        the maps equal those of a bundle exported with these classes.
        cache: True (the cache root's ``text`` folder), False, or a cache directory.
        """
        if self._text_encoder is None:
            require_text_encoder(self.bundle)
            self._text_encoder = TextEncoder.from_bundle(self.bundle, options=text_options(self.options, self.session))
        if cache is True and self.cache_dir is not None:
            cache = cache_root(self.cache_dir) / "text"
        self.vocabulary = build_vocabulary(self.bundle, self._text_encoder, names, templates, cache)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def background_threshold(self) -> float | None:
        return self.segment_options.background_threshold

    def set_segmentation(self, logit_scale: float | None = None, prob_threshold: float | None = None,
                         background_classes: Sequence[str] = (), background_threshold: float | None = None) -> None:
        """Segmentation settings for the predictions that follow (see ``Prediction.segment``):
        logit_scale > 0, prob_threshold in [0, 1] (needs logit_scale), background class names,
        background_threshold in [0, 1] (None: the one ``from_bundle`` was given)."""
        if background_threshold is None:
            background_threshold = self.segment_options.background_threshold
        self.segment_options = SegmentOptions(logit_scale, prob_threshold, tuple(background_classes),
                                              background_threshold).checked(self.classes)

    def predict_slide(self, image: ImageInput, stride: int, short_side: int, batch_size: int = 8) -> Prediction:
        """Sliding-window prediction (clipxai.runtime.sliding): resize so the short side is
        ``short_side`` (>= S), run S x S windows every ``stride`` pixels (1 <= stride <= S),
        ``batch_size`` windows per graph run, and average the upsampled similarity logits.
        Heatmaps [K, H, W] and segmentation [H, W] are at the original size; scores [K] are
        those of ``predict`` (one pass of the whole image)."""
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
        return {INPUT_IMAGE: images, **vocabulary_feeds(self.vocabulary, self.bundle.manifest.graph.inputs)}

    def _run(self, pil) -> list[Prediction]:
        b, s = len(pil), self.bundle.image_size
        if self._buffer.shape[0] < b:
            self._buffer = np.empty((b, 3, s, s), np.float32)
        for i, im in enumerate(pil):
            self.preprocess(im, out=self._buffer[i])
        return self.run_graph(self._buffer[:b], [(im.height, im.width) for im in pil])

    def preprocess(self, image, out: np.ndarray | None = None) -> np.ndarray:
        """An RGB PIL image -> float32 [3, S, S], as the graph takes it (into ``out`` if given)."""
        return preprocess(image, self.bundle.image_size, self.bundle.mean, self.bundle.std, out=out)

    def outputs(self, images: np.ndarray, names: Sequence[str] = OUTPUTS) -> list[np.ndarray]:
        """Preprocessed images [B, 3, S, S] -> the graph's outputs ``names`` (default similarity [B, N, K],
        scores [B, K], heatmaps [B, K, g, g])."""
        return self.session.run(list(names), self.graph_feeds(images))

    def prediction(self, similarity: np.ndarray, scores: np.ndarray, heatmaps_grid: np.ndarray,
                   size: tuple[int, int], **fields) -> Prediction:
        """One image's similarity [N, K], scores [K], grid maps [K, gh, gw] and original (H, W) -> a
        Prediction with this predictor's classes and segmentation settings (``fields``: more of its fields)."""
        return Prediction(self.classes, similarity, scores, heatmaps_grid, tuple(size), self.segment_options, **fields)

    @property
    def has_labels(self) -> bool:
        """Whether the image graph outputs ``labels`` (bundles exported since issue 31)."""
        return OUTPUT_LABELS in self.bundle.manifest.graph.outputs

    def run_graph(self, images: np.ndarray, sizes: Sequence[tuple[int, int]]) -> list[Prediction]:
        """Preprocessed images [B, 3, S, S] and their original (H, W) sizes -> B Predictions
        (with ``labels`` [K] when the graph has them)."""
        if not self.has_labels:
            sim, scores, maps = self.outputs(images)
            return [self.prediction(sim[i], scores[i], maps[i], size) for i, size in enumerate(sizes)]
        sim, scores, maps, labels = self.outputs(images, (*OUTPUTS, OUTPUT_LABELS))
        return [self.prediction(sim[i], scores[i], maps[i], size, labels=labels[i]) for i, size in enumerate(sizes)]

    def image_embedding(self, image: ImageInput) -> np.ndarray:
        """Plain CLIP's L2-normalised image embedding, float32 [D] (bundles exported with --text-explainer)."""
        from clipxai.runtime.explain.text import require_text_explainer
        require_text_explainer(self.bundle)
        x = self.preprocess(open_image(image, self.max_pixels))[None]
        return self.session.run([OUTPUT_EMBEDDING], self.graph_feeds(x))[0][0]

    def explain_text(self, image: ImageInput, text: str | Sequence[str], truncate: bool = False):
        """Which words of ``text`` made CLIP match ``image``: Grad-ECLIP's text side (docs/explain.md).

        text: one sentence -> a ``TextExplanation`` (tokens, weights [T] summing to 1, cosine);
        a list of P sentences -> P of them, run as one batch. A text longer than CLIP's 77 tokens
        is refused (the error says where it would be cut) unless truncate=True.
        Needs a bundle exported with ``--text-encoder --text-explainer``.
        """
        from clipxai.runtime.explain.text import WordExplainer
        if self._word_explainer is None:
            self._word_explainer = WordExplainer.from_bundle(self.bundle,
                                                             options=text_options(self.options, self.session))
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ClipxaiError("no text given; pass a sentence to explain")
        out = self._word_explainer.explain(self.image_embedding(image), texts, truncate)
        return out[0] if isinstance(text, str) else out

    def stream(self, source, batch_size: int = 1, every_n: int = 1, smoothing: float | None = None,
               live: bool | None = None, fps: float | None = None) -> Iterator[Prediction]:
        """Predictions for a stream of frames, decoding and preprocessing ahead in a background thread
        while the graph runs (clipxai/runtime/video/stream.py; docs/video.md).

        source: an iterable of frames (HxWx3 uint8 RGB arrays or PIL images), a video file path
        (needs ``clipxai[video]``), or a camera index (``clipxai[camera]``).
        batch_size: frames per graph run. every_n: predict one frame in n.
        smoothing: None (off) or alpha in (0, 1]: an exponential moving average of the similarity
        [N, K] and grid heatmaps [K, g, g], alpha = the newest frame's weight.
        live: None = a camera is live, a file or iterable is not. A file gets every frame in order;
        a live source keeps only the newest frame when the graph falls behind, and each Prediction
        counts the frames ``dropped`` since the previous one.
        fps: timestamps (index / fps) for an iterable; files and cameras carry their own.
        Each Prediction carries ``frame_index``, ``timestamp`` and its decoded ``frame``
        (uint8 [H, W, 3]). Closing the iterator early stops the threads and the decoder.
        """
        from clipxai.runtime.video.stream import stream_predictions
        return stream_predictions(self, source, batch_size, every_n, smoothing, live, fps)

    def track(self, source, sam, classes: Sequence[str] | None = None, reprompt_every: int = DEFAULT_REPROMPT_EVERY,
              threshold: float = DEFAULT_POINT_THRESHOLD, forget_after: int | None = DEFAULT_FORGET_AFTER,
              **stream) -> Iterator:
        """Objects of the classes followed through a stream with SAM 2.1's memory, started from this
        predictor's points (clipxai/runtime/video/tracks.py; docs/tracking.md).

        source: as ``stream`` (an iterable of frames, a video path, a camera index); ``stream``: its
        keywords (batch_size, every_n, smoothing, live, fps). sam: a ``MaskTracker`` (reset here) or a
        SAM 2.1 bundle path exported with its tracking graphs. classes: None for all. Every class's points
        are taken again every ``reprompt_every`` frames, and a class's on any frame where it has no visible
        track: a mask that overlaps a track of its class by IoU >= 0.5 is that track, else a new one.
        threshold: ``Prediction.points``' threshold. forget_after: frames a track may stay invisible before
        it is removed (None: never). Yields a ``TrackFrame`` per frame: frame_index, timestamp, frame uint8
        [H, W, 3], tracks (id, name, mask bool [H, W], score, visible, bbox (x, y, w, h), area, new).
        """
        from clipxai.runtime.video.tracks import TextTracks, follow, open_tracker
        tracks = TextTracks(open_tracker(sam, self.options), classes, reprompt_every, threshold, forget_after)
        return follow(self.stream(source, **stream), tracks)


def _warn_failed_gate(bundle: Bundle) -> None:
    fidelity = bundle.manifest.fidelity or {}  # checked at load: passed is a boolean, the figures numbers
    if fidelity.get("passed") is False:
        log.warning("%s: this %s bundle FAILED its fidelity gate at export (heatmap correlation %.4f, "
                    "pixel agreement %.1f%%) and was written with --force; its maps may be wrong",
                    bundle.path, bundle.precision, fidelity.get("correlation", float("nan")),
                    100 * fidelity.get("pixel_agreement", float("nan")))
