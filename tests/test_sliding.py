"""Sliding-window inference and segmentation options against the papers' slide inference in torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from torchvision import transforms as T

from clipxai.models import reference as ref
from clipxai.errors import ClipxaiError
from clipxai.runtime import Predictor, load_bundle
from clipxai.cli.segment import main as segment_main
from clipxai.runtime.postprocess import (
    DENSE_MAX, Thresholds, points_from_map, resize_bilinear, resize_matrix, segment,
)
from clipxai.runtime.sliding import window_offsets
from tiny import TINY, TINY_HEADS, TINY_SURGERY_BLOCKS

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"  # 640x427
CLASSES = ["rocket", "sky", "smoke", "tree"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("slide") / "b"
    return export_bundle(ExportConfig(output=out, classes=CLASSES, backbone=TINY.name, pretrained="random",
                                      image_size=32)).path


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor.from_bundle(bundle, providers="cpu")


def torch_slide(model, bundle_path, pil, short_side, stride):
    """Independent reference: torchvision resize, the papers' window loop, F.interpolate."""
    b = load_bundle(bundle_path)
    s = b.image_size
    h0, w0 = pil.height, pil.width
    scale = short_side / min(h0, w0)
    h, w = (short_side, round(w0 * scale)) if h0 <= w0 else (round(h0 * scale), short_side)
    x = T.Compose([T.Resize((h, w), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                   T.Normalize(b.mean, b.std)])(pil)[None]
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    text = torch.from_numpy(np.load(Path(bundle_path) / "text_embeddings.npy"))

    def run_crop(crop):
        feats = F.normalize(ref.surgery_tokens(sd, crop, TINY_HEADS, TINY_SURGERY_BLOCKS, True), dim=-1)
        return ref.feature_surgery(feats, text, "classes")[:, 1:]

    with torch.no_grad():
        logits, lo, hi = ref.slide_inference(run_crop, x, s, stride)
        heat = (logits - lo[None, :, None, None]) / (hi - lo)[None, :, None, None]
        heat = F.interpolate(heat, (h0, w0), mode="bilinear", align_corners=False)[0]
        up = F.interpolate(logits, (h0, w0), mode="bilinear", align_corners=False)[0]
    return logits[0], heat, up


@pytest.mark.parametrize("short_side,stride", [(40, 12), (70, 32), (32, 5)])  # 70: map sides > DENSE_MAX
def test_slide_matches_torch_reference(predictor, bundle, tiny_model, short_side, stride):
    pil = Image.open(ROCKET).convert("RGB")
    pred = predictor.predict_slide(ROCKET, stride=stride, short_side=short_side, batch_size=3)
    logits, heat, up = torch_slide(tiny_model.model, bundle, pil, short_side, stride)
    k, h, w = logits.shape
    assert h == short_side and pred.grid_shape == (h, w)
    assert np.abs(pred.similarity - logits.reshape(k, -1).T.numpy()).max() <= 1e-4
    assert pred.heatmaps.shape == (k, 427, 640)
    assert np.abs(pred.heatmaps - heat.numpy()).max() <= 1e-4
    assert pred.heatmaps.min() >= 0 and pred.heatmaps.max() <= 1
    # segmentation: argmax of the averaged logits upsampled to the image, where not a near-tie
    top2 = up.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-4).numpy()
    assert clear.mean() > 0.9
    assert np.array_equal(pred.segmentation[clear], up.argmax(0).numpy()[clear])
    # scores: one pass of the whole image, as predict
    np.testing.assert_allclose(pred.scores, predictor.predict(ROCKET).scores, atol=1e-6)
    # points: on cells of 2 patches, inside the image
    coords, labels = pred.points(0)
    assert len(coords) == len(labels) > 0 and (coords[:, 0] < 640).all() and (coords[:, 1] < 427).all()


def test_windows_cover_the_border_and_overlap():
    assert window_offsets(40, 32, 12) == [0, 8]
    assert window_offsets(60, 32, 12) == [0, 12, 24, 28]  # 60 - 32 = 28 is not a multiple of 12
    assert window_offsets(32, 32, 7) == [0]
    assert window_offsets(64, 32, 32) == [0, 32]


def test_one_window_equals_plain_inference(predictor):
    im = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    plain = predictor.predict(im)
    slid = predictor.predict_slide(im, stride=16, short_side=32)
    assert slid.grid_shape == (32, 32)
    assert np.abs(slid.heatmaps - plain.heatmaps).max() <= 1e-5
    np.testing.assert_array_equal(slid.segmentation, plain.segmentation)
    assert np.abs(slid.scores - plain.scores).max() <= 1e-6  # same pass, other batch composition
    up = resize_bilinear(plain.similarity.T.reshape(len(CLASSES), 4, 4), 32, 32)
    assert np.abs(slid.similarity - up.reshape(len(CLASSES), -1).T).max() <= 1e-5


def test_batch_size_does_not_change_the_result(predictor):
    a = predictor.predict_slide(ROCKET, 10, 36, batch_size=1)
    b = predictor.predict_slide(ROCKET, 10, 36, batch_size=64)
    assert np.abs(a.similarity - b.similarity).max() <= 1e-5


@pytest.mark.parametrize("stride,short_side,message", [
    (0, 40, "stride must be >= 1, got 0"),
    (-4, 40, "stride must be >= 1, got -4"),
    (33, 40, "stride 33 is larger than the window"),
    (8, 31, "short side 31 is smaller than the window"),
    (2.5, 40, "stride must be an integer"),
    (8, "40", "short side must be an integer"),
])
def test_bad_slide_values_are_one_line_errors(predictor, stride, short_side, message):
    with pytest.raises(ClipxaiError, match=message) as e:
        predictor.predict_slide(ROCKET, stride, short_side)
    assert "\n" not in str(e.value)


def test_slide_too_large_and_bad_batch(predictor, bundle):
    small = Predictor.from_bundle(bundle, max_pixels=400 * 400)
    with pytest.raises(ClipxaiError, match="above the 0 MP limit|MP limit; use a smaller short side"):
        small.predict_slide(np.zeros((100, 150, 3), np.uint8), 16, 1000)
    with pytest.raises(ClipxaiError, match="batch_size must be >= 1"):
        predictor.predict_slide(ROCKET, 16, 40, batch_size=0)


# ---- segmentation options -------------------------------------------------------------

def test_segmentation_options_match_torch(predictor, bundle, tiny_model):
    pil = Image.open(ROCKET).convert("RGB")
    pred = predictor.predict_slide(ROCKET, 12, 40)
    _, _, up = torch_slide(tiny_model.model, bundle, pil, 40, 12)
    scale = 20.0
    probs = (scale * up).softmax(0)
    maxp = probs.max(0).values.numpy()
    thd = float(np.quantile(maxp, 0.5))
    want = up.argmax(0).numpy().astype(np.int32)
    want[maxp < thd] = -1
    want[want == CLASSES.index("sky")] = -1
    got = pred.segment(logit_scale=scale, prob_threshold=thd, background_classes=["sky"])
    top2 = up.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > 1e-4).numpy() & (np.abs(maxp - thd) > 1e-4)
    assert clear.mean() > 0.9
    assert np.array_equal(got[clear], want[clear])
    assert (got == -1).any() and (got >= 0).any()
    assert not (got == CLASSES.index("sky")).any()
    # the scale alone never changes the argmax
    np.testing.assert_array_equal(pred.segment(logit_scale=scale), pred.segmentation)


def test_predictor_segmentation_settings_flow_into_predictions(bundle):
    p = Predictor.from_bundle(bundle)
    p.set_segmentation(logit_scale=50.0, prob_threshold=0.6, background_classes=["tree"])
    for pred in (p.predict(ROCKET), p.predict_slide(ROCKET, 16, 40)):
        np.testing.assert_array_equal(pred.segmentation,
                                      pred.segment(logit_scale=50.0, prob_threshold=0.6, background_classes=["tree"]))
        sub = pred.select(["rocket", "smoke"])  # "tree" is gone: its setting no longer applies
        assert sub.options.background_classes == ()
        assert set(np.unique(sub.segmentation)) <= {-1, 0, 1}


@pytest.mark.parametrize("kwargs,message", [
    ({"logit_scale": 0.0}, "logit_scale must be a positive number"),
    ({"logit_scale": float("nan")}, "logit_scale must be a positive number"),
    ({"logit_scale": 10.0, "prob_threshold": 1.5}, r"prob_threshold must be in \[0, 1\]"),
    ({"prob_threshold": 0.2}, "prob_threshold needs a logit_scale"),
    ({"background_classes": ["sea"]}, "background class 'sea' is not a class of the bundle"),
])
def test_bad_segmentation_options(predictor, kwargs, message):
    with pytest.raises(ClipxaiError, match=message):
        predictor.set_segmentation(**kwargs)
    with pytest.raises(ClipxaiError, match=message):
        predictor.predict(np.zeros((40, 40, 3), np.uint8)).segment(**kwargs)


def test_segment_on_a_rectangular_grid_and_its_probability():
    rng = np.random.default_rng(5)
    sim = rng.normal(size=(6 * 9, 3)).astype(np.float32)  # grid 6 x 9, row-major
    got = segment(sim, (6, 9), 50, 70, thresholds=Thresholds(logit_scale=3.0, prob_threshold=0.6, background=(2,)))
    up = F.interpolate(torch.from_numpy(sim.T.reshape(1, 3, 6, 9).copy()), (50, 70), mode="bilinear",
                       align_corners=False)[0]
    p = (3.0 * up).softmax(0)
    want = up.argmax(0).numpy()
    maxp = p.max(0).values.numpy()
    want[(maxp < 0.6) | (want == 2)] = -1
    top2 = up.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > 1e-5).numpy() & (np.abs(maxp - 0.6) > 1e-5)
    assert np.array_equal(got[clear], want[clear])
    with pytest.raises(ValueError, match="grid 5x9 needs 45"):
        segment(sim, (5, 9), 10, 10)


@pytest.mark.parametrize("h,w,height,width", [(100, 130, 157, 211), (70, 20, 41, 300), (66, 66, 66, 66)])
def test_resize_of_large_maps_by_taps_matches_torch(h, w, height, width):
    assert max(h, w) > DENSE_MAX  # the two-tap path
    m = np.random.default_rng(2).normal(size=(3, h, w)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(m)[None], (height, width), mode="bilinear", align_corners=False)[0]
    got = resize_bilinear(m, height, width)
    # torch computes source positions in float32 (~1e-5 off at a few hundred pixels), we in float64
    assert np.abs(got - want.numpy()).max() <= 1e-4
    dense = resize_matrix(h, height) @ m @ resize_matrix(w, width).T  # the small-grid path, same weights
    assert np.abs(got - dense).max() <= 1e-5


def test_segment_on_a_large_grid_matches_torch():
    rng = np.random.default_rng(6)
    sim = rng.normal(size=(80 * 90, 5)).astype(np.float32)
    heat = rng.random((5, 80, 90)).astype(np.float32)
    got = segment(sim, (80, 90), 97, 111, heatmaps_grid=heat, thresholds=Thresholds(background_threshold=0.5),
                  rows_per_chunk=13)
    up = F.interpolate(torch.from_numpy(sim.T.reshape(1, 5, 80, 90).copy()), (97, 111), mode="bilinear",
                       align_corners=False)[0]
    hu = F.interpolate(torch.from_numpy(heat)[None], (97, 111), mode="bilinear", align_corners=False)[0]
    want = up.argmax(0)
    conf = hu.gather(0, want[None])[0].numpy()
    want = want.numpy()
    want[conf < 0.5] = -1
    top2 = up.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > 1e-5).numpy() & (np.abs(conf - 0.5) > 1e-5)
    assert clear.mean() > 0.95 and np.array_equal(got[clear], want[clear])


def test_points_on_a_rectangular_map_follow_the_cells():
    m = np.zeros((8, 12), np.float32)
    m[0:2, 10:12] = 1.0  # hottest: top-right 2x2 block -> one cell after downsampling by 2
    coords, labels = points_from_map(m, 80, 120, threshold=0.9, down_sample=2)
    assert labels.tolist() == [1, 0]
    # a 4x6 grid of 20x20-pixel cells: hottest cell (0, 5) -> (5.5·20, 0.5·20); coldest (first) cell (0, 0)
    assert coords.tolist() == [[110, 10], [10, 10]]


# ---- CLI ----------------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(segment_main, [str(a) for a in args], catch_exceptions=False)


def test_cli_slide_and_segmentation_flags(bundle, tmp_path, predictor):
    out = tmp_path / "out"
    r = invoke(bundle, ROCKET, "--out", out, "--slide", 16, "--short-side", 48, "--no-overlays",
               "--logit-scale", 40, "--prob-threshold", 0.5, "--background-classes", "sky,tree")
    assert r.exit_code == 0, r.output
    from clipxai.runtime.visualize import BANNER_HEIGHT, segmentation_image, stamp
    seg = Image.open(out / "rocket_segmentation.png")
    assert seg.height == 427 + BANNER_HEIGHT  # the random-weights banner: a strip above the picture
    p = Predictor.from_bundle(bundle)
    want = p.predict_slide(ROCKET, 16, 48).segment(40.0, 0.5, ["sky", "tree"])
    ref_pic = stamp(segmentation_image(Image.open(ROCKET).convert("RGB"), want, CLASSES))
    assert np.array_equal(np.asarray(seg), np.asarray(ref_pic))


@pytest.mark.parametrize("args,message", [
    (["--slide", "16"], "--slide and --short-side go together"),
    (["--short-side", "40"], "--slide and --short-side go together"),
    (["--slide", "0", "--short-side", "40"], "stride must be >= 1, got 0"),
    (["--slide", "16", "--short-side", "20"], "short side 20 is smaller than the window"),
    (["--prob-threshold", "0.3"], "prob_threshold needs a logit_scale"),
    (["--background-classes", "sea"], "background class 'sea' is not a class of the bundle"),
])
def test_cli_bad_values(bundle, tmp_path, args, message):
    r = invoke(bundle, ROCKET, "--out", tmp_path / "out", *args)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
