"""Pictures of explanations: a sentence with each word shaded by its weight, and the side-by-side
figure ``clipxai-explain`` writes (words above the image-side heatmap)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipxai.runtime.explain.text import TextExplanation

PAD, GAP, LINE_GAP = 12, 6, 8


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def shade(weight: float) -> tuple[int, int, int]:
    """0 -> white, 1 -> strong red (weights are divided by the largest one first)."""
    w = float(np.clip(weight, 0.0, 1.0))
    return 255, int(round(255 - 190 * w)), int(round(255 - 215 * w))


def words_image(explanation: TextExplanation, width: int = 800, font_size: int = 22,
                title: str | None = None) -> Image.Image:
    """The sentence, word by word, each on a box shaded by its weight relative to the largest,
    with the weight in % under it; wrapped to ``width`` pixels. Returns an RGB image."""
    words = explanation.words()
    font, small = _font(font_size), _font(max(10, font_size // 2))
    top = max((w for _, w in words), default=0.0) or 1.0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = font_size + font_size // 2 + 10
    boxes, x, y = [], PAD, PAD + (font_size + LINE_GAP if title else 0)
    for word, weight in words:
        w = max(int(probe.textlength(word, font=font)), int(probe.textlength("100%", font=small))) + 10
        if x + w > width - PAD and x > PAD:
            x, y = PAD, y + line_h + LINE_GAP
        boxes.append((x, y, w, word, weight))
        x += w + GAP
    out = Image.new("RGB", (width, y + line_h + PAD), "white")
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((PAD, PAD), title, fill=(60, 60, 60), font=small)
    for x, y, w, word, weight in boxes:
        draw.rectangle([x, y, x + w, y + line_h], fill=shade(weight / top), outline=(200, 200, 200))
        draw.text((x + 5, y + 3), word, fill=(0, 0, 0), font=font)
        draw.text((x + 5, y + font_size + 6), f"{100 * weight:.0f}%", fill=(90, 90, 90), font=small)
    return out


def stack(top: Image.Image, bottom: Image.Image) -> Image.Image:
    """Two pictures one above the other, centred, on white."""
    width = max(top.width, bottom.width)
    out = Image.new("RGB", (width, top.height + bottom.height), "white")
    out.paste(top, ((width - top.width) // 2, 0))
    out.paste(bottom, ((width - bottom.width) // 2, top.height))
    return out
