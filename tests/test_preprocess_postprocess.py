"""Preprocessing against torchvision, the colour rule, bombs; upsampling against torch."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from clipxai.models import reference as ref
from clipxai.errors import ClipxaiError
from clipxai.runtime.postprocess import resize_bilinear, segment
from clipxai.runtime.preprocess import open_image, preprocess, to_rgb

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def _rgb(h=37, w=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [32, 224, 448])
def test_preprocess_matches_torchvision_bit_for_bit(size):
    pil = Image.fromarray(_rgb(427, 640))
    ours = preprocess(pil, size, MEAN, STD)
    theirs = ref.clip_preprocess(pil, size, MEAN, STD).numpy()
    assert ours.dtype == np.float32 and ours.shape == (3, size, size)
    assert np.array_equal(ours, theirs)


def test_exif_orientation_is_honoured(tmp_path):
    a = _rgb(20, 40)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes(), quality=100)
    out = open_image(path)
    assert out.size == (20, 40)  # width and height swapped


def test_colour_rule():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 128
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert out.shape == (4, 4, 3) and int(out[0, 0, 0]) == round(200 * 128 / 255)  # on black
    gray = np.asarray(to_rgb(Image.fromarray(np.full((3, 3), 77, np.uint8), "L")))
    assert (gray == 77).all() and gray.shape == (3, 3, 3)
    pal = Image.fromarray(_rgb(8, 8)).convert("P")
    assert to_rgb(pal).mode == "RGB"
    cmyk = Image.new("CMYK", (5, 5), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = to_rgb(cmyk).getpixel((0, 0))
    assert r > 200 and g < 50 and b < 50
    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert np.asarray(to_rgb(sixteen)).max() == 255 and to_rgb(sixteen).mode == "RGB"
    half = Image.fromarray(np.full((4, 4), 32896, np.uint16))  # 128 * 257
    assert int(np.asarray(to_rgb(half))[0, 0, 0]) == 128
    la = Image.fromarray(np.stack([np.full((2, 2), 100, np.uint8), np.zeros((2, 2), np.uint8)], -1), "LA")
    assert (np.asarray(to_rgb(la)) == 0).all()  # fully transparent -> black


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(path)
    with pytest.raises(ClipxaiError, match=r"4000x3000 = 12 MP, above the 10 MP limit"):
        open_image(path, max_pixels=10_000_000)
    with pytest.raises(ClipxaiError, match="above the"):
        open_image(np.zeros((100, 100, 3), np.uint8), max_pixels=1000)


def test_bad_inputs_are_clear(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ClipxaiError, match="junk.jpg: not a readable image"):
        open_image(tmp_path / "junk.jpg")
    with pytest.raises(ClipxaiError, match="no such file"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ClipxaiError, match=r"expected an HxWx3 uint8 RGB array, got shape \(4, 4\)"):
        open_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ClipxaiError, match="dtype float32"):
        open_image(np.zeros((4, 4, 3), np.float32))
    buf = io.BytesIO()
    Image.fromarray(_rgb()).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:100])
    with pytest.raises(ClipxaiError, match="cut.png: not a readable image"):
        open_image(tmp_path / "cut.png")


@pytest.mark.parametrize("g,h,w", [(14, 427, 640), (28, 224, 224), (14, 7, 7), (6, 3, 3), (5, 1000, 3), (1, 4, 4)])
def test_resize_matches_torch_bilinear(g, h, w):
    m = np.random.default_rng(g).random((3, g, g)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(m)[None], (h, w), mode="bilinear",
                                           align_corners=False)[0].numpy()
    got = resize_bilinear(m, h, w)
    assert got.shape == (3, h, w)
    assert np.abs(got - want).max() <= 1e-5


def test_segment_chunks_equal_whole():
    sim = np.random.default_rng(1).normal(size=(49, 4)).astype(np.float32)
    a = segment(sim, 7, 300, 200, rows_per_chunk=7)
    b = segment(sim, 7, 300, 200, rows_per_chunk=1000)
    assert np.array_equal(a, b)
    up = resize_bilinear(sim.T.reshape(4, 7, 7), 300, 200)
    assert (a == up.argmax(0)).mean() > 0.999
