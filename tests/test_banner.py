"""The random-weights banner is a strip above a picture: it never covers the picture or its legend."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipxai.runtime.explain.render import words_image
from clipxai.runtime.explain.text import TextExplanation
from clipxai.runtime.visualize import (
    BANNER_COLOUR, BANNER_HEIGHT, mask_overlay, overlay, segmentation_image, stamp,
)

H, W = 60, 90


def _scene(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), np.uint8), "RGB")


def _pictures(seed: int) -> dict[str, Image.Image]:
    """Every kind of picture the tools stamp: heatmap overlay, segmentation with its legend, SAM
    mask picture, words picture."""
    image, rng = _scene(seed), np.random.default_rng(seed)
    labels = rng.integers(-1, 3, (H, W)).astype(np.int32)
    mask = rng.random((H, W)) > 0.5
    words = TextExplanation("a rocket in the sky", ["a", "rocket", "in", "the", "sky"],
                            rng.dirichlet(np.ones(5)).astype(np.float32), [True] * 5, 0.3)
    return {"overlay": overlay(image, rng.random((H, W)).astype(np.float32)),
            "segmentation": segmentation_image(image, labels, ["rocket", "sky", "smoke"]),
            "sam": mask_overlay(image, mask, np.array([[10, 20], [50, 30]]), np.array([1, 0])),
            "words": words_image(words, width=400)}


@pytest.mark.parametrize("kind", ["overlay", "segmentation", "sam", "words"])
def test_the_banner_is_a_strip_above_the_picture(kind):
    picture = _pictures(0)[kind]
    stamped = stamp(picture)
    assert stamped.size == (picture.width, picture.height + BANNER_HEIGHT) and stamped.mode == "RGB"
    pixels = np.asarray(stamped)
    assert np.array_equal(pixels[BANNER_HEIGHT:], np.asarray(picture))  # picture and legend untouched
    strip = pixels[:BANNER_HEIGHT]
    blank = stamp(Image.new("RGB", picture.size, (0, 0, 0)))
    assert np.array_equal(strip, np.asarray(blank)[:BANNER_HEIGHT])  # the strip holds nothing of the picture
    assert (strip == BANNER_COLOUR).all(-1).mean() > 0.7 and (strip != BANNER_COLOUR).any()  # red, with text


def test_the_strip_does_not_depend_on_the_picture_and_keeps_frames_one_size():
    a, b = stamp(_scene(0)), stamp(_scene(1))
    assert a.size == b.size == (W, H + BANNER_HEIGHT)
    assert np.array_equal(np.asarray(a)[:BANNER_HEIGHT], np.asarray(b)[:BANNER_HEIGHT])
    assert not np.array_equal(np.asarray(stamp(_scene(0), "other"))[:BANNER_HEIGHT], np.asarray(a)[:BANNER_HEIGHT])
    grey = stamp(_scene(0).convert("L"))
    assert grey.mode == "RGB" and grey.size == a.size

