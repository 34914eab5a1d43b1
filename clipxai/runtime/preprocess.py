"""Image loading and CLIP preprocessing (docs/design.md §7), numpy + Pillow only.

Preprocessing matches torchvision's ``Resize((S, S), BICUBIC)`` on a PIL image,
``ToTensor`` and ``Normalize``: the whole image is resized to S×S (no centre
crop) with PIL's bicubic filter, scaled to [0, 1] and normalised.

Colour rule (applied after EXIF orientation):

- RGB: as is. Grayscale (``L``, ``1``): the gray value in all three channels.
- With alpha (``RGBA``, ``LA``, ``PA``, palette with transparency): composited
  on black, i.e. each channel multiplied by alpha/255.
- Palette (``P``) without transparency, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``:
  Pillow's conversion to RGB.
- 16-bit (``I;16*``, ``I``): scaled to 8 bit (value/257, rounded; 65535 -> 255),
  then treated as grayscale. Float (``F``): clipped to [0, 1] and scaled to 255.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from clipxai.errors import ClipxaiError

ImageInput = Union[str, Path, Image.Image, np.ndarray]

# Decompression-bomb guard: images above this many pixels are refused (the full
# image must be decoded to resize it exactly as CLIP does). It governs alone: Pillow's own guard
# (a warning above Image.MAX_IMAGE_PIXELS, 89.5 MP, an error above twice that) is silenced, or
# raised to the image's size while clipxai opens a file that max_pixels allows (``_pillow_guard``).
DEFAULT_MAX_PIXELS = 120_000_000
RAISE_LIMIT = ("raise the limit with max_pixels= (Predictor.from_bundle(..., max_pixels=N), or set "
               "the predictor's .max_pixels)")
_pillow_limit = threading.Lock()


def open_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A path, PIL image or HxWx3 uint8 RGB array -> an RGB PIL image, upright."""
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ClipxaiError(
                f"expected an HxWx3 uint8 RGB array, got shape {source.shape} dtype {source.dtype}; "
                "convert it (e.g. np.asarray(pil_image.convert('RGB')))"
            )
        _check_pixels(source.shape[1], source.shape[0], max_pixels, "array")
        return Image.fromarray(np.ascontiguousarray(source), "RGB")
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels, "image")
        return to_rgb(ImageOps.exif_transpose(source))
    if isinstance(source, (str, Path)):
        return _open_path(Path(source), max_pixels)
    raise ClipxaiError(f"cannot read an image from a {type(source).__name__}; pass a path, a PIL image or an array")


def _check_pixels(w: int, h: int, max_pixels: int, what: str) -> None:
    if w <= 0 or h <= 0:
        raise ClipxaiError(f"{what} is empty ({w}x{h})")
    if w * h > max_pixels:
        raise ClipxaiError(
            f"{what} is {w}x{h} = {w * h / 1e6:.3g} MP, above the {max_pixels / 1e6:.3g} MP limit "
            f"(decompression-bomb guard); downscale it, or {RAISE_LIMIT}"
        )


@contextlib.contextmanager
def _pillow_guard(pixels: int | None):
    """Pillow's own decompression-bomb guard made to agree with max_pixels, which clipxai checks
    itself: Pillow's warning is ignored; where ``pixels`` would trip its error (above twice
    Image.MAX_IMAGE_PIXELS), its threshold is raised to ``pixels`` (None: lifted) for the block,
    under a lock, and put back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or (pixels is not None and pixels <= 2 * limit):
            yield
            return
        with _pillow_limit:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _open_header(path: Path) -> Image.Image:
    """Image.open (the header only): a size Pillow refuses is read again with its guard lifted, so
    that max_pixels decides (_check_pixels)."""
    try:
        with _pillow_guard(0):  # 0: Pillow's threshold as it is, its warning ignored
            return Image.open(path)
    except Image.DecompressionBombError:
        with _pillow_guard(None):
            return Image.open(path)


def _open_path(path: Path, max_pixels: int) -> Image.Image:
    name = str(path)
    try:
        img = _open_header(path)
        try:
            _check_pixels(img.width, img.height, max_pixels, name)
            with _pillow_guard(img.width * img.height):
                img.load()
        except BaseException:
            img.close()
            raise
    except FileNotFoundError:
        raise ClipxaiError(f"{name}: no such file")
    except IsADirectoryError:
        raise ClipxaiError(f"{name}: is a directory, not an image")
    except Image.DecompressionBombError as e:  # a frame or tile inside the file larger than its header says
        raise ClipxaiError(f"{name}: refused as a decompression bomb ({e}); {RAISE_LIMIT}")
    except ClipxaiError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's "cannot identify", truncated files
        raise ClipxaiError(f"{name}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    return to_rgb(ImageOps.exif_transpose(img))


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply the colour rule of the module docstring."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        return to_rgb(img)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float64), 0, 1) * 255
        return Image.fromarray(np.rint(a).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def preprocess(img: Image.Image, size: int, mean, std, out: np.ndarray | None = None) -> np.ndarray:
    """RGB PIL image -> float32 [3, size, size], normalised. Writes into ``out`` if given."""
    resized = img.resize((size, size), Image.BICUBIC)
    a = np.asarray(resized, dtype=np.float32)  # [S, S, 3]
    if out is None:
        out = np.empty((3, size, size), np.float32)
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    for c in range(3):
        np.divide(a[..., c], np.float32(255.0), out=out[c])
        out[c] -= mean[c]
        out[c] /= std[c]
    return out
