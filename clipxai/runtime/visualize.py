"""Pictures: JET heatmap overlays (like the paper's figures) and a legended segmentation."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def jet(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> uint8 [H, W, 3] RGB, the classic JET colour map."""
    v = np.clip(values, 0.0, 1.0)[..., None] * 4.0
    centres = np.array([3.0, 2.0, 1.0], np.float32)  # R, G, B
    rgb = np.clip(1.5 - np.abs(v - centres), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """Blend a JET-coloured heatmap [H, W] over the RGB image: (1 - alpha)·image + alpha·jet."""
    base = np.asarray(image.convert("RGB"), np.float32)
    mixed = (1.0 - alpha) * base + alpha * jet(heatmap).astype(np.float32)
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), "RGB")


def palette(k: int) -> np.ndarray:
    """k distinct RGB colours, uint8 [k, 3] (golden-ratio hues, stable for a given index)."""
    cols = []
    for i in range(k):
        h = (i * 0.61803398875) % 1.0
        s = 0.65 + 0.35 * ((i // 7) % 2)
        v = 0.95 - 0.25 * ((i // 14) % 2)
        cols.append([int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v)])
    return np.array(cols, np.uint8).reshape(k, 3)


def segmentation_image(image: Image.Image, labels: np.ndarray, classes: list[str],
                       alpha: float = 0.55) -> Image.Image:
    """The image with each pixel tinted by its class, and a legend of the classes present.

    labels: int32 [H, W], -1 for background (shown untinted, listed as 'background').
    """
    cols = palette(len(classes))
    base = np.asarray(image.convert("RGB"), np.float32)
    tint = np.where(labels[..., None] >= 0, cols[np.maximum(labels, 0)], base).astype(np.float32)
    a = np.where(labels[..., None] >= 0, alpha, 0.0)
    body = Image.fromarray(np.clip((1 - a) * base + a * tint + 0.5, 0, 255).astype(np.uint8), "RGB")

    present, counts = np.unique(labels, return_counts=True)
    order = present[np.argsort(-counts)]
    total = labels.size
    font = ImageFont.load_default()
    row = 18
    entries = [(int(c), f"{classes[c] if c >= 0 else 'background'}  {100.0 * counts[present == c][0] / total:.1f}%")
               for c in order]
    probe = ImageDraw.Draw(body)
    text_w = max((probe.textlength(t, font=font) for _, t in entries), default=0)
    panel_w = int(text_w) + 40
    height = max(body.height, row * len(entries) + 12)
    canvas = Image.new("RGB", (body.width + panel_w, height), (255, 255, 255))
    canvas.paste(body, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (c, text) in enumerate(entries):
        y = 6 + i * row
        colour = tuple(int(v) for v in cols[c]) if c >= 0 else (0, 0, 0)
        draw.rectangle([body.width + 8, y + 2, body.width + 22, y + 14], fill=colour, outline=(0, 0, 0))
        draw.text((body.width + 28, y + 2), text, fill=(0, 0, 0), font=font)
    return canvas


def stamp(image: Image.Image, text: str) -> Image.Image:
    """A red banner with ``text`` across the top (used to label random-weight results)."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    draw.rectangle([0, 0, out.width, 16], fill=(200, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255), font=font)
    return out
