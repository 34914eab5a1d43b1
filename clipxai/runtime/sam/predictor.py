"""``MaskPredictor``: a mask-model bundle (SAM or SAM 2.1) in, object masks out; numpy in and out.

In the style of segment-anything's ``SamPredictor``: ``set_image`` runs the encoder once, then
``predict`` gives masks for point prompts, as many times as you like. ``masks_for`` takes a clipxai
``Prediction`` and returns each class's mask from its point prompts, the way the CLIP Surgery demo
does: the points of the class's similarity map, multimask output, the mask with the highest
predicted IoU. Shapes: (H, W) the original image; C masks per prompt set (3 with multimask, else 1).

Decoding (docs/sam.md): the decoder graph returns all four mask tokens' low-resolution logits
[B, 4, 256, 256] and IoU [B, 4]; multimask keeps tokens 1..3; a single mask is token 0 (SAM 2.1:
unless its stability score, the share of logits above +0.05 among those above -0.05, is below
0.98; then the best of 1..3, as SAM 2.1 does). Logits are upsampled bilinearly (half-pixel
centres) - SAM: to 1024, cropped to the resized image, to (H, W); SAM 2.1: to (H, W) - and
thresholded at 0. SAM 2.1's returned low-resolution logits are clamped to [-32, 32].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clipxai.contract import (
    KIND_MASK, MASK_DECODER_FILE, MASK_EMBEDDINGS, MASK_ENCODER_FILE, MASK_HIGH_RES, MASK_INPUT_IMAGE, MASK_IOU,
    MASK_LOW_RES, MASK_POINT_COORDS, MASK_POINT_LABELS,
)
from clipxai.errors import ClipxaiError
from clipxai.manifest import MaskManifest
from clipxai.runtime.backends import ProviderSpec, RuntimeOptions, open_graph, runtime_options
from clipxai.runtime.bundle import Bundle, load_bundle
from clipxai.runtime.postprocess import resize_bilinear
from clipxai.runtime.preprocess import DEFAULT_MAX_PIXELS, ImageInput, open_image
from clipxai.runtime.sam.preprocess import INPUT_SIZE, image_input, point_input

log = logging.getLogger("clipxai")

MULTIMASK_TOKENS = slice(1, 4)
STABILITY_DELTA, STABILITY_THRESHOLD = 0.05, 0.98


@dataclass
class ObjectMask:
    """One class's object mask. mask: bool [H, W]; score: its predicted IoU; bbox: (x, y, w, h) of
    the mask's pixels; area: pixels; points: int32 [M, 2] (x, y) and labels: uint8 [M] (1 positive,
    0 negative), the prompt it came from; token: which mask token it is (1-3)."""

    mask: np.ndarray
    score: float
    bbox: tuple[int, int, int, int]
    area: int
    points: np.ndarray
    labels: np.ndarray
    token: int


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a bool [H, W] mask's pixels; (0, 0, 0, 0) for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def stability(logits: np.ndarray, delta: float = STABILITY_DELTA) -> np.ndarray:
    """[..., 256, 256] -> [...]: count(logit > delta) / count(logit > -delta) (1 where nothing is above)."""
    flat = logits.reshape(*logits.shape[:-2], -1)
    inter = (flat > delta).sum(-1)
    union = (flat > -delta).sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


class MaskPredictor:
    """Runs a mask-model bundle. Create with ``MaskPredictor.from_bundle``."""

    def __init__(self, bundle: Bundle, encoder, decoder, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.bundle, self.encoder, self.decoder = bundle, encoder, decoder
        self.manifest: MaskManifest = bundle.manifest
        self.family = self.manifest.family
        self.preprocess = self.manifest.preprocess
        self.mask_threshold = self.manifest.decoding.mask_threshold
        self.max_pixels = max_pixels
        self._features: dict[str, np.ndarray] | None = None
        self.size: tuple[int, int] | None = None          # (H, W) of the image set
        self.input_size: tuple[int, int] | None = None    # (h, w) of it inside the 1024 input

    @classmethod
    def from_bundle(cls, path: str | Path, providers: ProviderSpec = "auto", threads: int | None = None,
                    digest: str | None = None, stamps: str | Path | None = None, *,
                    options: RuntimeOptions | None = None, **settings) -> "MaskPredictor":
        """Check a mask-model bundle (schema, digests, kind) and open its two graphs (IO checked against
        the manifest). A CLIP bundle here is a one-line error. options (or providers, threads, nvidia,
        graph_cache, cache_dir as keywords), digest, stamps: as ``Predictor.from_bundle``. On the CPU
        each graph has its own graph cache entry; the native TensorRT backend runs CLIP image graphs only."""
        options = runtime_options(options, providers=providers, threads=threads, **settings)
        bundle = load_bundle(path, expect_digest=digest, kind=KIND_MASK, stamps=stamps)
        encoder = open_graph(bundle, MASK_ENCODER_FILE, options)
        decoder = open_graph(bundle, MASK_DECODER_FILE, options)
        log.info("loaded %s: %s on %s", bundle.path, bundle.manifest.model, encoder.get_providers()[0])
        return cls(bundle, encoder, decoder)

    @property
    def model(self) -> str:
        return self.manifest.model

    def set_image(self, image: ImageInput) -> None:
        """Encode an image (a path, a PIL image or an HxWx3 uint8 RGB array) for the prompts that follow."""
        pil = open_image(image, self.max_pixels)
        x, self.input_size = image_input(pil, self.preprocess)
        names = [o.name for o in self.encoder.get_outputs()]
        self._features = dict(zip(names, self.encoder.run(names, {MASK_INPUT_IMAGE: x})))
        self.size = (pil.height, pil.width)

    def features(self) -> dict[str, np.ndarray]:
        """The encoder's outputs for the image set: name -> float32 array (MASK_* names)."""
        return self._feeds()

    def _feeds(self) -> dict[str, np.ndarray]:
        if self._features is None:
            raise ClipxaiError("no image set: call set_image(image) before predict()")
        names = (MASK_EMBEDDINGS, *MASK_HIGH_RES) if self.family == "sam2" else (MASK_EMBEDDINGS,)
        return {n: self._features[n] for n in names}

    def decode(self, point_coords: np.ndarray, point_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All four tokens for B prompt sets: point_coords [B, N, 2] (x, y) original pixels, point_labels
        [B, N] -> (low-res logits float32 [B, 4, 256, 256], IoU [B, 4]). The padding point (0, 0) / -1
        is appended to every set, as both packages do for point prompts."""
        feeds = self._feeds()
        coords = np.asarray(point_coords, np.float64)
        labels = np.asarray(point_labels, np.float32)
        if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
            raise ClipxaiError(f"point_coords must be [B, N, 2] and point_labels [B, N]; got {list(coords.shape)} "
                               f"and {list(labels.shape)}")
        b = coords.shape[0]
        c = point_input(coords, self.size, self.input_size, self.preprocess.resize)
        c = np.concatenate([c, np.zeros((b, 1, 2), np.float32)], axis=1)
        lab = np.concatenate([labels, -np.ones((b, 1), np.float32)], axis=1)
        low, iou = self.decoder.run([MASK_LOW_RES, MASK_IOU],
                                    {**feeds, MASK_POINT_COORDS: c, MASK_POINT_LABELS: lab})
        return low, iou

    def upscale(self, low_res: np.ndarray) -> np.ndarray:
        """Low-res logits [..., 256, 256] -> logits [..., H, W] at the original size (module docstring)."""
        if self.preprocess.resize == "longest-side":
            big = resize_bilinear(low_res, INPUT_SIZE, INPUT_SIZE)
            h, w = self.input_size
            return resize_bilinear(np.ascontiguousarray(big[..., :h, :w]), *self.size)
        return resize_bilinear(low_res, *self.size)

    def choose(self, low: np.ndarray, iou: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """[B, 4, ...] tokens -> the returned ones: [B, 3, ...] (multimask) or [B, 1, ...]."""
        if multimask:
            return low[:, MULTIMASK_TOKENS], iou[:, MULTIMASK_TOKENS]
        if self.family == "sam":
            return low[:, :1], iou[:, :1]
        stable = stability(low[:, 0]) >= STABILITY_THRESHOLD
        best = 1 + np.argmax(iou[:, 1:], axis=1)
        pick = np.where(stable, 0, best)
        rows = np.arange(low.shape[0])
        return low[rows, pick][:, None], iou[rows, pick][:, None]

    def predict_batch(self, point_coords: np.ndarray, point_labels: np.ndarray, multimask_output: bool = True,
                      return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B prompt sets in one decoder run: point_coords [B, N, 2] (x, y) original pixels, point_labels
        [B, N] (1 positive, 0 negative) -> (masks bool [B, C, H, W] (logits float32 with return_logits),
        scores float32 [B, C], low-res logits float32 [B, C, 256, 256])."""
        low, iou = self.choose(*self.decode(point_coords, point_labels), multimask_output)
        logits = self.upscale(low)
        if self.family == "sam2":
            low = np.clip(low, -32.0, 32.0)
        masks = logits if return_logits else logits > self.mask_threshold
        return masks, iou.astype(np.float32), low.astype(np.float32)

    def predict(self, point_coords: np.ndarray, point_labels: np.ndarray, multimask_output: bool = True,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt set: point_coords [N, 2] (x, y) original pixels, point_labels [N] -> (masks bool
        [C, H, W], scores float32 [C], low-res logits float32 [C, 256, 256]); C = 3 (multimask) or 1."""
        masks, scores, low = self.predict_batch(np.asarray(point_coords)[None], np.asarray(point_labels)[None],
                                                multimask_output, return_logits)
        return masks[0], scores[0], low[0]

    def masks_for(self, prediction, classes: Sequence[str] | None = None, threshold: float = 0.8
                  ) -> dict[str, ObjectMask | None]:
        """Each class's object mask from a clipxai Prediction of the image set here: the class's point
        prompts (``prediction.points(k, threshold)``), multimask output, the mask with the highest
        predicted IoU. A class with no points gets None. Classes with as many points share one
        decoder run (the padding of a set never changes: the masks equal one run per class)."""
        if self.size != tuple(prediction.size):
            raise ClipxaiError(f"the prediction is of a {prediction.size[1]}x{prediction.size[0]} image, the "
                               f"image set here is {self.size[1] if self.size else 0}x"
                               f"{self.size[0] if self.size else 0}; set_image the same image")
        names = list(classes) if classes is not None else list(prediction.classes)
        prompts = {}
        for name in names:
            if name not in prediction.classes:
                raise ClipxaiError(f"class {name!r} is not in the prediction (it has: {', '.join(prediction.classes)})")
            prompts[name] = prediction.points(prediction.classes.index(name), threshold)
        out: dict[str, ObjectMask | None] = {n: None for n in names}
        by_count: dict[int, list[str]] = {}
        for name, (coords, _) in prompts.items():
            if len(coords):
                by_count.setdefault(len(coords), []).append(name)
        for group in by_count.values():
            coords = np.stack([prompts[n][0] for n in group]).astype(np.float64)
            labels = np.stack([prompts[n][1] for n in group]).astype(np.float32)
            low, iou = self.choose(*self.decode(coords, labels), True)
            for i, name in enumerate(group):
                best = int(np.argmax(iou[i]))
                mask = self.upscale(low[i, best]) > self.mask_threshold
                out[name] = ObjectMask(mask, float(iou[i, best]), bbox(mask), int(mask.sum()), prompts[name][0],
                                       prompts[name][1], best + 1)
        return out
