"""Pictures of explanations: a sentence with each word shaded by its weight, and the side-by-side
figure ``clipxai explain`` writes (words above the image-side heatmap).

Words in any script: each word is drawn with the first font that has all its characters: the
``font=`` given, Pillow's default font, then the system fonts of ``FALLBACK_FONTS`` found under
``FONT_DIRS`` (DejaVu Sans has Latin, Greek, Cyrillic, Hebrew and Arabic; the Noto fonts the
rest). Pillow with libraqm shapes Arabic and lays out right-to-left words; without it a
right-to-left word is reversed by grapheme so that it still reads right (unshaped). A word that
no font here can draw is shown as its code points (``U+4E2D U+6587``), with a note under the
picture saying which font to install: never as a row of empty boxes.
"""

from __future__ import annotations

import os
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import regex
from PIL import Image, ImageDraw, ImageFont, features

from clipxai.runtime.explain.text import TextExplanation

PAD, GAP, LINE_GAP = 12, 6, 8
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts", "/Library/Fonts",
             "/System/Library/Fonts", "~/Library/Fonts", "C:/Windows/Fonts")
FALLBACK_FONTS = (  # tried in this order after the default font
    "DejaVuSans.ttf", "NotoSans-Regular.ttf", "NotoSansHebrew-Regular.ttf", "NotoSansArabic-Regular.ttf",
    "NotoSansDevanagari-Regular.ttf", "NotoSansThai-Regular.ttf", "NotoSansCJK-Regular.ttc",
    "NotoSansCJKsc-Regular.otf", "NotoSansCJKjp-Regular.otf", "DroidSansFallbackFull.ttf", "wqy-microhei.ttc",
    "wqy-zenhei.ttc", "Arial Unicode.ttf", "arialuni.ttf", "msyh.ttc", "YuGothM.ttc", "Symbola.ttf",
    "NotoEmoji-Regular.ttf",
)
NO_FONT_NOTE = "shown as U+ code points: no font here has their characters (install the Noto fonts, or pass font=)"
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})  # drawn by the layout, or not at all: no glyph needed
_NOT_A_CHARACTER = "\U0010FFFD"  # private use: every font draws its missing-glyph box for it


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


@lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """The FALLBACK_FONTS found under FONT_DIRS, in FALLBACK_FONTS order."""
    wanted, found = set(FALLBACK_FONTS), {}
    for folder in FONT_DIRS:
        for dirpath, _, names in os.walk(os.path.expanduser(folder)):
            for name in wanted.intersection(names) - set(found):
                found[name] = Path(dirpath) / name
    return tuple(found[name] for name in FALLBACK_FONTS if name in found)


@lru_cache(maxsize=8)
def _fonts(size: int, font: str | None = None) -> tuple:
    """The fonts to try at ``size``: the caller's, the default, the system fallbacks (unreadable ones skipped)."""
    out = []
    for path in ([font] if font else []) + [None] + [str(p) for p in font_files()]:
        try:
            out.append(_font(size) if path is None else ImageFont.truetype(path, size))
        except OSError:
            continue
    return tuple(out)


@lru_cache(maxsize=32)
def _missing_glyph(font) -> tuple:
    mask = font.getmask(_NOT_A_CHARACTER)
    return mask.size, bytes(mask)


def _has_glyphs(font, text: str) -> bool:
    """Whether ``font`` draws every visible character of ``text`` (not its missing-glyph box)."""
    missing = _missing_glyph(font)
    for ch in set(text):
        if unicodedata.category(ch) in _INVISIBLE:
            continue
        mask = font.getmask(ch)
        if (mask.size, bytes(mask)) == missing:
            return False
    return True


def code_points(word: str, most: int = 4) -> str:
    """"U+4E2D U+6587": what is drawn for a word no font here has (its visible characters)."""
    shown = [f"U+{ord(c):04X}" for c in word if unicodedata.category(c) not in _INVISIBLE]
    return " ".join(shown[:most]) + (" …" if len(shown) > most else "")


@lru_cache(maxsize=1)
def _raqm() -> bool:
    return bool(features.check("raqm"))


def _visual_order(word: str) -> str:
    """Without libraqm Pillow draws characters in memory order, left to right: a right-to-left word
    is reversed by grapheme (marks stay on their letter) so it reads right. With libraqm, as is."""
    if _raqm() or not any(unicodedata.bidirectional(c) in ("R", "AL") for c in word):
        return word
    return "".join(reversed(regex.findall(r"\X", word)))


def label(word: str, size: int, font: str | None = None) -> tuple[str, object, bool]:
    """(what to draw, the font to draw it with, whether it fell back to code points) for one word."""
    fonts = _fonts(size, font)
    for f in fonts:
        if _has_glyphs(f, word):
            return _visual_order(word), f, False
    return code_points(word), fonts[0], True


def shade(weight: float) -> tuple[int, int, int]:
    """0 -> white, 1 -> strong red (weights are divided by the largest one first)."""
    w = float(np.clip(weight, 0.0, 1.0))
    return 255, int(round(255 - 190 * w)), int(round(255 - 215 * w))


def words_image(explanation: TextExplanation, width: int = 800, font_size: int = 22,
                title: str | None = None, font: str | None = None) -> Image.Image:
    """The sentence, word by word, each on a box shaded by its weight relative to the largest,
    with the weight in % under it; wrapped to ``width`` pixels. Each word in the first font that
    has its characters (module docstring; ``font``: a font file tried first). Returns an RGB image."""
    words = explanation.words()
    small = _font(max(10, font_size // 2))
    top = max((w for _, w in words), default=0.0) or 1.0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = font_size + font_size // 2 + 10
    boxes, x, y, fell_back = [], PAD, PAD + (font_size + LINE_GAP if title else 0), False
    for word, weight in words:
        text, face, missing = label(word, font_size, font)
        fell_back |= missing
        w = max(int(probe.textlength(text, font=face)), int(probe.textlength("100%", font=small))) + 10
        if x + w > width - PAD and x > PAD:
            x, y = PAD, y + line_h + LINE_GAP
        boxes.append((x, y, w, text, face, weight))
        x += w + GAP
    note_h = font_size // 2 + LINE_GAP if fell_back else 0
    out = Image.new("RGB", (width, y + line_h + PAD + note_h), "white")
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((PAD, PAD), title, fill=(60, 60, 60), font=small)
    for x, y, w, text, face, weight in boxes:
        draw.rectangle([x, y, x + w, y + line_h], fill=shade(weight / top), outline=(200, 200, 200))
        draw.text((x + 5, y + 3), text, fill=(0, 0, 0), font=face)
        draw.text((x + 5, y + font_size + 6), f"{100 * weight:.0f}%", fill=(90, 90, 90), font=small)
    if fell_back:
        draw.text((PAD, out.height - PAD - font_size // 2), "Words " + NO_FONT_NOTE, fill=(150, 40, 40), font=small)
    return out


def stack(top: Image.Image, bottom: Image.Image) -> Image.Image:
    """Two pictures one above the other, centred, on white."""
    width = max(top.width, bottom.width)
    out = Image.new("RGB", (width, top.height + bottom.height), "white")
    out.paste(top, ((width - top.width) // 2, 0))
    out.paste(bottom, ((width - bottom.width) // 2, top.height))
    return out
