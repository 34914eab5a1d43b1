"""Pictures: JET heatmap overlays (like the paper's figures), a legended segmentation, and the
random-weights banner (a strip above a picture, never over it).

Large images are drawn in bands of about ``BAND_PIXELS`` pixels: no
full-size float array is ever made, so the memory a picture needs is its own
pixels plus a band (~20 MB of temporaries). Measured for a 79-megapixel PNG
with 5 classes: see docs/performance.md.
"""

from __future__ import annotations

import colorsys
from typing import Callable, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BAND_PIXELS = 1 << 19
Rows = Callable[[int, int], np.ndarray]  # (r0, r1) -> float32 [r1 - r0, W] in [0, 1]
MapLike = Union[np.ndarray, Rows]


def jet(values: np.ndarray) -> np.ndarray:
    """[...] in [0, 1] -> uint8 [..., 3] RGB, the classic JET colour map."""
    v = np.clip(values, 0.0, 1.0)[..., None] * 4.0
    centres = np.array([3.0, 2.0, 1.0], np.float32)  # R, G, B
    rgb = np.clip(1.5 - np.abs(v - centres), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _rows(heatmap: MapLike) -> Rows:
    if callable(heatmap):
        return heatmap
    return lambda r0, r1: heatmap[r0:r1]


def _bands(image: Image.Image, draw_band: Callable[[np.ndarray, int, int], np.ndarray],
           out: Image.Image | None = None) -> Image.Image:
    """``image`` redrawn band by band into ``out`` (default: a new RGB image of its size; a larger
    canvas gets it at its top left): draw_band(pixels uint8 [h, W, 3], r0, r1) -> uint8 [h, W, 3]."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    out = Image.new("RGB", rgb.size) if out is None else out
    rows = max(1, BAND_PIXELS // max(rgb.width, 1))
    for r0 in range(0, rgb.height, rows):
        r1 = min(r0 + rows, rgb.height)
        band = np.asarray(rgb.crop((0, r0, rgb.width, r1)))
        out.paste(Image.fromarray(draw_band(band, r0, r1), "RGB"), (0, r0))
    return out


def _blend(base: np.ndarray, top: np.ndarray, alpha) -> np.ndarray:
    """(1 - alpha)·base + alpha·top, rounded, uint8 (alpha a number or [h, W, 1])."""
    mixed = base.astype(np.float32) * (1.0 - alpha) + top.astype(np.float32) * alpha
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def overlay(image: Image.Image, heatmap: MapLike, alpha: float = 0.6) -> Image.Image:
    """Blend a JET-coloured heatmap over the RGB image: (1 - alpha)·image + alpha·jet(heatmap).

    heatmap: float [H, W] in [0, 1], or a function (r0, r1) -> its rows r0:r1 (so that a
    full-size map need never exist, e.g. ``lambda a, b: prediction.heatmap_rows(k, a, b)``).
    """
    rows = _rows(heatmap)
    return _bands(image, lambda band, r0, r1: _blend(band, jet(rows(r0, r1)), alpha))


def colour(i: int) -> tuple[int, int, int]:
    """The i-th colour of ``palette``: RGB, the same for a given index whatever the palette's length."""
    h = (i * 0.61803398875) % 1.0
    s = 0.65 + 0.35 * ((i // 7) % 2)
    v = 0.95 - 0.25 * ((i // 14) % 2)
    r, g, b = (int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))
    return r, g, b


def palette(k: int) -> np.ndarray:
    """k distinct RGB colours, uint8 [k, 3] (golden-ratio hues, stable for a given index)."""
    return np.array([colour(i) for i in range(k)], np.uint8).reshape(k, 3)


def tint(image: Image.Image, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.55,
         out: Image.Image | None = None) -> Image.Image:
    """Each pixel with a label >= 0 blended with its colour; -1 left as it is (into ``out`` as in
    ``_bands``). labels: int [H, W]; colours: uint8 [n, 3] indexed by label."""
    def band(pixels, r0, r1):
        lab = labels[r0:r1, :, None]
        top = np.where(lab >= 0, colours[np.maximum(lab[..., 0], 0)], pixels)
        return _blend(pixels, top, np.where(lab >= 0, np.float32(alpha), np.float32(0.0)))
    return _bands(image, band, out)


LEGEND_ROW = 18


def legend_canvas(width: int, height: int, entries: list[tuple[tuple[int, int, int], str]]) -> Image.Image:
    """A white canvas wide enough for a ``width`` x ``height`` picture plus a panel listing the
    (colour, text) entries on its right, the panel drawn."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((probe.textlength(t, font=font) for _, t in entries), default=0)
    canvas = Image.new("RGB", (width + int(text_w) + 40, max(height, LEGEND_ROW * len(entries) + 12)),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (colour, text) in enumerate(entries):
        y = 6 + i * LEGEND_ROW
        draw.rectangle([width + 8, y + 2, width + 22, y + 14], fill=colour, outline=(0, 0, 0))
        draw.text((width + 28, y + 2), text, fill=(0, 0, 0), font=font)
    return canvas


def class_counts(labels: np.ndarray, k: int) -> np.ndarray:
    """int64 [k + 1]: pixels per label of int [H, W] labels in -1..k-1 (index 0: background, -1),
    counted a band of rows at a time."""
    counts = np.zeros(k + 1, np.int64)
    rows = max(1, BAND_PIXELS // max(labels.shape[1], 1))
    for r0 in range(0, labels.shape[0], rows):
        counts += np.bincount(labels[r0:r0 + rows].ravel() + 1, minlength=k + 1)
    return counts


def segmentation_image(image: Image.Image, labels: np.ndarray, classes: list[str],
                       alpha: float = 0.55) -> Image.Image:
    """The image with each pixel tinted by its class, and a legend of the classes present (largest first).

    labels: int32 [H, W], -1 for background (shown untinted, listed as 'background').
    """
    cols = palette(len(classes))
    counts = class_counts(labels, len(classes))
    total = labels.size
    entries = [(tuple(int(v) for v in cols[c - 1]) if c else (0, 0, 0),
                f"{classes[c - 1] if c else 'background'}  {100.0 * counts[c] / total:.1f}%")
               for c in np.argsort(-counts, kind="stable") if counts[c]]
    return tint(image, labels, cols, alpha, out=legend_canvas(image.width, image.height, entries))


RANDOM_WEIGHTS_BANNER = "RANDOM WEIGHTS - a placeholder, not a result"  # every random-weights picture's label
BANNER_HEIGHT = 18                 # pixels of the red strip ``stamp`` puts above a picture
BANNER_COLOUR = (200, 0, 0)


def stamp(image: Image.Image, text: str = RANDOM_WEIGHTS_BANNER) -> Image.Image:
    """``image`` [W, H] on a new RGB canvas [W, H + BANNER_HEIGHT]: a red strip carrying ``text`` on
    top (labels random-weight results), the picture below it untouched, legend included. The size
    depends on the picture's only, so every frame of a video keeps one size; text wider than the
    picture is cut."""
    out = Image.new("RGB", (image.width, image.height + BANNER_HEIGHT), BANNER_COLOUR)
    ImageDraw.Draw(out).text((4, 3), text, fill=(255, 255, 255), font=ImageFont.load_default())
    out.paste(image if image.mode == "RGB" else image.convert("RGB"), (0, BANNER_HEIGHT))
    return out


POSITIVE, NEGATIVE = (40, 220, 60), (230, 40, 40)  # SAM point prompts: green in, red out


def mask_overlay(image: Image.Image, mask: np.ndarray | None, points: np.ndarray, labels: np.ndarray,
                 colour=(30, 144, 255), alpha: float = 0.5) -> Image.Image:
    """The image with a bool [H, W] mask tinted and the prompt's points drawn: positive (label 1)
    green, negative (label 0) red, like the CLIP Surgery paper's text -> points -> SAM figure."""
    pic = tint(image, (mask.astype(np.int32) - 1) if mask is not None else np.full(image.size[::-1], -1, np.int32),
               np.array([colour], np.uint8), alpha)
    draw = ImageDraw.Draw(pic)
    radius = max(3, round(min(pic.size) / 80))
    for (x, y), label in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1)):
        fill = POSITIVE if label == 1 else NEGATIVE
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(255, 255, 255),
                     width=max(1, radius // 3))
    return pic
