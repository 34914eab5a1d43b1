"""Faithfulness of explanation maps: the deletion and insertion tests, numpy only (docs/explain.md).

Protocol (after Grad-ECLIP's ``imagenet_eval_deletion.py`` / ``imagenet_eval_insertion.py``):

- the image is resized so its short side is at most 640 pixels; the map of the target class,
  at that size, ranks the pixels (highest first; ties by position);
- L steps (default 100), each changing the next ``max(1, int(H·W / 2L))`` ranked pixels, so
  the L steps cover half of the image;
- deletion replaces them with uniform noise (integers 0..254 per channel, the reference's
  ``uint8(rand·255)``); insertion starts from the fully noised image and puts the original
  pixels back in the same order;
- every ``cal_gap`` steps (default 10) the state is classified: zero-shot top-1 and top-5 hits
  of the target class against the classifier's vocabulary, and the target's probability.
  The 1 + L/cal_gap states of one image and one method go through the classifier as one batch;
- AUC: the trapezoid area under each curve over the changed fraction (0 .. 0.5), divided by
  that range, so it lies in [0, 1]. Deletion: lower is more faithful; insertion: higher;
- a random ranking (seeded per image) is the baseline. Every method of one image sees the
  same noise, so the methods differ only in their ranking.

The reference code sets no seed and records no AUC; both are this module's choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from clipxai.errors import ClipxaiError

MODES = ("deletion", "insertion")
METRICS = ("top1", "top5", "prob")
RANDOM = "random"

# scores(states uint8 [M, H, W, 3]) -> class probabilities float [M, K]
Classifier = Callable[[np.ndarray], np.ndarray]
# heatmap(image uint8 [H, W, 3], target class index) -> float [H, W] (higher = more important)
Explainer = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Protocol:
    steps: int = 100          # L
    cal_gap: int = 10         # classify every cal_gap steps
    seed: int = 0             # noise and random-ranking seed
    max_short_side: int = 640  # the reference's cap on the image size

    def check(self) -> "Protocol":
        if self.steps < 1 or self.cal_gap < 1 or self.steps % self.cal_gap:
            raise ValueError(f"steps ({self.steps}) must be a positive multiple of cal_gap ({self.cal_gap})")
        return self

    def pixels_per_step(self, area: int) -> int:
        return max(1, int(area / (2 * self.steps)))

    def fractions(self, area: int) -> np.ndarray:
        """The changed fraction of the image at each classified state: [1 + steps/cal_gap]."""
        counts = np.arange(0, self.steps + 1, self.cal_gap) * self.pixels_per_step(area)
        return np.minimum(counts, area) / area


def cap_size(image: Image.Image, max_short_side: int) -> Image.Image:
    """Downsize (bicubic) so the short side is at most max_short_side, as the reference does."""
    short = min(image.size)
    if short <= max_short_side:
        return image
    s = short / max_short_side
    return image.resize((int(image.width / s), int(image.height / s)), Image.BICUBIC)


def ranking(heatmap: np.ndarray) -> np.ndarray:
    """Pixel indices [H·W], highest map value first; equal values keep their raster order."""
    return np.argsort(-np.asarray(heatmap, np.float64).reshape(-1), kind="stable")


def random_ranking(shape: tuple[int, int], seed: int, index: int) -> np.ndarray:
    """The baseline ranking of image ``index``: a permutation fixed by (seed, index)."""
    return np.random.default_rng([seed, index, 1]).permutation(shape[0] * shape[1])


def noise_for(shape: tuple[int, int, int], seed: int, index: int) -> np.ndarray:
    """Uniform noise uint8 [H, W, 3] in 0..254 for image ``index``, fixed by (seed, index)."""
    return np.random.default_rng([seed, index, 0]).integers(0, 255, size=shape, dtype=np.uint8)


def perturbed_states(image: np.ndarray, order: np.ndarray, noise: np.ndarray, mode: str,
                     protocol: Protocol) -> np.ndarray:
    """The classified states: uint8 [1 + steps/cal_gap, H, W, 3]; state j has the first
    j·cal_gap·pixels_per_step ranked pixels deleted (noise) or inserted (original)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    h, w, _ = image.shape
    start, source = (image, noise) if mode == "deletion" else (noise, image)
    flat_src = source.reshape(-1, 3)
    current = start.reshape(-1, 3).copy()
    states = [current.reshape(h, w, 3).copy()]
    chunk = protocol.cal_gap * protocol.pixels_per_step(h * w)
    for j in range(protocol.steps // protocol.cal_gap):
        idx = order[j * chunk:(j + 1) * chunk]
        current[idx] = flat_src[idx]
        states.append(current.reshape(h, w, 3).copy())
    return np.stack(states)


def hits(scores: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """scores [M, K] -> {"top1", "top5": float 0/1 [M], "prob": [M]} for the target class.
    Rank = number of classes scored strictly higher than the target."""
    scores = np.asarray(scores, np.float64)
    rank = (scores > scores[:, target:target + 1]).sum(axis=1)
    return {"top1": (rank < 1).astype(float), "top5": (rank < 5).astype(float), "prob": scores[:, target]}


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x) divided by the x range: in [0, 1] for y in [0, 1]."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


@dataclass
class Curves:
    """Running sums of one method's curves over images (means via ``mean``)."""

    sums: dict = field(default_factory=lambda: {m: {k: 0.0 for k in METRICS} for m in MODES})
    images: int = 0

    def add(self, mode: str, metrics: dict[str, np.ndarray]) -> None:
        for k in METRICS:
            self.sums[mode][k] = self.sums[mode][k] + metrics[k]

    def mean(self, mode: str) -> dict[str, np.ndarray]:
        return {k: np.asarray(self.sums[mode][k]) / max(self.images, 1) for k in METRICS}


@dataclass
class FaithfulnessReport:
    """Mean curves and AUCs per method (and the random baseline) over the evaluated images.

    fractions: [M] the changed fraction at each state (the x axis; the mean over images when
    their sizes differ by a rounding). curves[method][mode][metric]: [M]; aucs likewise, floats.
    """

    protocol: Protocol
    fractions: np.ndarray
    curves: dict
    aucs: dict
    images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"protocol": {"steps": self.protocol.steps, "cal_gap": self.protocol.cal_gap,
                             "seed": self.protocol.seed, "max_short_side": self.protocol.max_short_side,
                             "noise": "uniform integers 0..254 per channel",
                             "auc": "trapezoid over the changed fraction, divided by its range"},
                "images": self.images, "fractions": self.fractions.tolist(),
                "auc": self.aucs,
                "curves": {m: {mode: {k: v.tolist() for k, v in c.items()} for mode, c in per.items()}
                           for m, per in self.curves.items()},
                "skipped": [{"image": p, "reason": r} for p, r in self.skipped]}


def evaluate_image(image: np.ndarray, target: int, index: int, explainers: dict[str, Explainer],
                   classify: Classifier, protocol: Protocol, totals: dict[str, Curves]) -> np.ndarray:
    """Add one image's curves (every method, and the random baseline) to ``totals``; returns its fractions."""
    h, w, _ = image.shape
    noise = noise_for(image.shape, protocol.seed, index)
    orders = {name: ranking(explain(image, target)) for name, explain in explainers.items()}
    orders[RANDOM] = random_ranking((h, w), protocol.seed, index)
    for name, order in orders.items():
        curves = totals.setdefault(name, Curves())
        for mode in MODES:
            curves.add(mode, hits(classify(perturbed_states(image, order, noise, mode, protocol)), target))
        curves.images += 1
    return protocol.fractions(h * w)


def evaluate(samples: Iterable[tuple[str, Callable[[], Image.Image], int]], explainers: dict[str, Explainer],
             classify: Classifier, protocol: Protocol = Protocol(),
             progress: Callable[[], None] | None = None) -> FaithfulnessReport:
    """Deletion and insertion curves for every method over ``samples``.

    samples: (name, load() -> a PIL image at full size, target class index); an image whose
    load raises (OSError, ValueError, ClipxaiError) is skipped and listed. Images are capped to
    ``protocol.max_short_side`` before the maps are taken.
    """
    protocol.check()
    totals: dict[str, Curves] = {}
    fractions, skipped, count = 0.0, [], 0
    for index, (name, load, target) in enumerate(samples):
        try:
            image = np.asarray(cap_size(load().convert("RGB"), protocol.max_short_side))
        except (OSError, ValueError, ClipxaiError) as e:
            skipped.append((name, str(e).splitlines()[0] if str(e) else type(e).__name__))
        else:
            fractions = fractions + evaluate_image(image, target, index, explainers, classify, protocol, totals)
            count += 1
        if progress is not None:
            progress()
    if not count:
        raise ValueError("no image could be evaluated")
    curves = {m: {mode: c.mean(mode) for mode in MODES} for m, c in totals.items()}
    x = fractions / count
    aucs = {m: {mode: {k: auc(x, v) for k, v in per.items()} for mode, per in c.items()} for m, c in curves.items()}
    return FaithfulnessReport(protocol, x, curves, aucs, count, skipped)


def order_methods(names: Sequence[str]) -> list[str]:
    """Methods in the given order, the random baseline last."""
    return [n for n in names if n != RANDOM] + ([RANDOM] if RANDOM in names else [])
