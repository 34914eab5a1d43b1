"""Images and points as SAM and SAM 2.1 take them (numpy + Pillow), equal to the packages' own.

- SAM (segment_anything's ``SamPredictor.set_image``): the longest side resized to 1024 with
  Pillow's bilinear filter on the uint8 image (``ResizeLongestSide``: the new sides are
  ``int(side * 1024 / longest + 0.5)``), normalised with the 0-255 mean and std, zero-padded to
  1024 x 1024 on the right and bottom. Bit for bit the same (tests/test_sam.py).
- SAM 2.1 (``SAM2ImagePredictor.set_image``): scaled to [0, 1], stretched to 1024 x 1024 (no
  padding) with an antialiased bilinear filter, normalised with ImageNet's mean and std. The
  package resizes float tensors with torchvision; here Pillow's "F" mode resizes each channel with
  the same triangle filter: equal within 1e-6 (float rounding of another summation order).

Point coordinates (x, y) in original pixels go into the 1024-pixel input frame: SAM scales x by
new_w / W and y by new_h / H (float64, as ``apply_coords``); SAM 2.1 divides by (W, H) and
multiplies by 1024 (float32, as ``transform_coords``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from clipxai.contract import MASK_IMAGE_SIZE
from clipxai.manifest import MaskPreprocess

INPUT_SIZE = MASK_IMAGE_SIZE


def longest_side_shape(height: int, width: int, size: int = INPUT_SIZE) -> tuple[int, int]:
    """(new_h, new_w) with the longest side ``size``, rounded as ResizeLongestSide does."""
    scale = size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def image_input(image: Image.Image, preprocess: MaskPreprocess) -> tuple[np.ndarray, tuple[int, int]]:
    """An RGB PIL image -> (float32 [1, 3, 1024, 1024], (h, w) of the resized image inside it).
    preprocess: the manifest's (checked at load: known resize, finite mean, positive std and scale)."""
    mean = np.asarray(preprocess.mean, np.float32)
    std = np.asarray(preprocess.std, np.float32)
    out = np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    if preprocess.resize == "longest-side":
        h, w = longest_side_shape(image.height, image.width)
        resized = image if (w, h) == image.size else image.resize((w, h), Image.BILINEAR)
        a = np.asarray(resized, np.float32) * np.float32(preprocess.scale)
        out[0, :, :h, :w] = ((a - mean) / std).transpose(2, 0, 1)
        return out, (h, w)
    a = np.asarray(image, np.float32) * np.float32(preprocess.scale)
    for c in range(3):
        channel = Image.fromarray(np.ascontiguousarray(a[..., c]), "F")
        if channel.size != (INPUT_SIZE, INPUT_SIZE):
            channel = channel.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
        out[0, c] = (np.asarray(channel, np.float32) - mean[c]) / std[c]
    return out, (INPUT_SIZE, INPUT_SIZE)


def point_input(coords: np.ndarray, size: tuple[int, int], input_size: tuple[int, int],
                resize: str) -> np.ndarray:
    """(x, y) pixels of the original (H, W) image [..., 2] -> float32 in the 1024-pixel input frame."""
    h, w = size
    if resize == "longest-side":
        c = np.array(coords, np.float64, copy=True)
        c[..., 0] *= input_size[1] / w
        c[..., 1] *= input_size[0] / h
        return c.astype(np.float32)
    c = np.array(coords, np.float32, copy=True)
    c[..., 0] = c[..., 0] / np.float32(w)
    c[..., 1] = c[..., 1] / np.float32(h)
    return c * np.float32(INPUT_SIZE)
