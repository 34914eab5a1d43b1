"""mIoU evaluation: the metric against hand-computed values, a synthetic dataset with known IoU,
and `clipxai evaluate segmentation` end to end on a tiny bundle (report checked against an independent count)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipxai.errors import ClipxaiError
from clipxai.runtime import Predictor
from clipxai.eval.segmentation import (
    class_mapping, confusion_matrix, evaluate, find_dataset, iou_per_class, mean_iou, pixel_accuracy, read_label,
)
from tiny import TINY

ROOT = Path(__file__).parent.parent


# ---- the metric -------------------------------------------------------------------------

LABEL = np.array([[0, 0, 1, 1],
                  [2, 255, 1, 0]])
PRED = np.array([[0, 1, 1, -1],
                 [0, 2, 1, 0]])  # -1: no class; the 2 sits on an ignored pixel


def test_confusion_and_iou_by_hand():
    conf = confusion_matrix(PRED, LABEL, 3)
    assert conf.tolist() == [[2, 1, 0, 0],   # label 0: 2 right, 1 as class 1
                             [0, 2, 0, 1],   # label 1: 2 right, 1 as no class
                             [1, 0, 0, 0]]   # label 2: 1 as class 0
    # class 0: TP 2, labelled 3, predicted 3 -> 2/4; class 1: 2/(3+3-2); class 2: 0/(1+0-0)
    np.testing.assert_allclose(iou_per_class(conf), [0.5, 0.5, 0.0])
    assert mean_iou(conf) == pytest.approx(1 / 3)
    assert pixel_accuracy(conf) == pytest.approx(4 / 7)


def test_absent_classes():
    # class 3 in neither labels nor predictions: no IoU, left out of the mean
    conf = confusion_matrix(PRED, LABEL, 4)
    iou = iou_per_class(conf)
    assert np.isnan(iou[3]) and mean_iou(conf) == pytest.approx(1 / 3)
    # class 3 predicted but never labelled: IoU 0, counted
    pred = PRED.copy()
    pred[0, 1] = 3
    iou = iou_per_class(confusion_matrix(pred, LABEL, 4))
    np.testing.assert_allclose(iou, [0.5, 2 / 3, 0.0, 0.0])
    # nothing labelled at all
    assert np.isnan(mean_iou(confusion_matrix(PRED, np.full_like(LABEL, 255), 3)))


def test_bad_label_values_and_shapes():
    with pytest.raises(ClipxaiError, match="label value 7 is neither a class id"):
        confusion_matrix(PRED, np.where(LABEL == 2, 7, LABEL), 3)
    with pytest.raises(ClipxaiError, match="differ in size"):
        confusion_matrix(PRED[:, :3], LABEL, 3)


# ---- a synthetic dataset with known IoU ----------------------------------------------------

def write_dataset(root: Path):
    """Two images; returns {stem: prediction in bundle ids} with the expected totals of the docstring of
    test_synthetic_dataset_known_iou."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    rng = np.random.default_rng(0)
    # a: 40x60, row 0 ignored, class 1 in rows 10:30 x cols 10:30; predicted shifted right by 5
    la = np.zeros((40, 60), np.uint8)
    la[0] = 255
    la[10:30, 10:30] = 1
    pa = np.full((40, 60), -1)
    pa[10:30, 15:35] = 1  # bundle class 1 = "dog"
    # b: 30x30, class 1 in rows 0:10; predicted in rows 0:5 and (wrongly) in rows 20:30 x cols 0:10
    lb = np.zeros((30, 30), np.uint8)
    lb[:10] = 1
    pb = np.full((30, 30), -1)
    pb[:5] = 1
    pb[20:, :10] = 1
    pal = Image.fromarray(la, "P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [224, 224, 192] * 254)
    pal.save(root / "SegmentationClass" / "a.png")
    Image.fromarray(lb, "L").save(root / "SegmentationClass" / "b.png")
    for stem, lab in (("a", la), ("b", lb)):
        Image.fromarray(rng.integers(0, 256, (*lab.shape, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
    (root / "classes.txt").write_text("background\ncat, dog\n")
    return {"a": pa, "b": pb}


def test_synthetic_dataset_known_iou(tmp_path):
    """a: class 1 TP 300 of 400 labelled / 400 predicted; class 0 TP 1840 of 1940 / 1940.
    b: class 1 TP 150 of 300 / 250; class 0 TP 500 of 600 / 650. Summed: class 1 450 / (700 + 650 - 450)
    = 0.5; class 0 2340 / (2540 + 2590 - 2340) = 2340 / 2790."""
    preds = write_dataset(tmp_path)
    ds = find_dataset(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", tmp_path / "classes.txt")
    assert [p[0].name for p in ds.pairs] == ["a.jpg", "b.jpg"] and ds.class_names == ["background", "cat"]
    bundle_classes = ["grass", "dog", "sky"]  # grass and sky stand in for the background
    mapping = class_mapping(bundle_classes, ds.names, background_classes=["grass", "sky"], background_id=0)
    assert mapping.tolist() == [0, 1, 0, 0]
    ticks = []
    res = evaluate(lambda p: preds[p.stem], ds, mapping, progress=lambda: ticks.append(1))
    rep = res.report()
    assert len(ticks) == 2 and rep["images"] == 2
    assert rep["per_class"]["cat"] == pytest.approx(0.5, abs=1e-6)
    assert rep["per_class"]["background"] == pytest.approx(2340 / 2790, abs=1e-6)
    assert rep["mIoU"] == pytest.approx((0.5 + 2340 / 2790) / 2, abs=1e-6)
    assert rep["aAcc"] == pytest.approx(2790 / 3240, abs=1e-6)
    assert rep["pixels"] == {"background": 2540, "cat": 700}
    # without a background id, background pixels are "no class" (mapping's last entry = C)
    assert class_mapping(["dog", "sky"], [["cat", "dog"]], ["sky"], None).tolist() == [0, 1, 1]
    # a split file keeps some stems
    (tmp_path / "val.txt").write_text("b\n")
    ds = find_dataset(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", tmp_path / "classes.txt",
                      split=tmp_path / "val.txt")
    assert [p[0].stem for p in ds.pairs] == ["b"]
    rep = evaluate(lambda p: preds[p.stem], ds, mapping).report()
    assert rep["per_class"]["cat"] == pytest.approx(150 / 400)


def test_reduce_zero_label(tmp_path):
    Image.fromarray(np.array([[0, 1, 2, 255]], np.uint8), "L").save(tmp_path / "l.png")
    assert read_label(tmp_path / "l.png", reduce_zero_label=True).tolist() == [[255, 0, 1, 255]]
    assert read_label(tmp_path / "l.png").tolist() == [[0, 1, 2, 255]]
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ClipxaiError, match="label map is RGB"):
        read_label(tmp_path / "rgb.png")


def test_class_mapping_errors():
    names = [["background"], ["cat", "dog"], ["car"]]
    with pytest.raises(ClipxaiError, match="bundle class 'sky' is on no line of the class file"):
        class_mapping(["dog", "car", "sky"], names, background_id=0)
    with pytest.raises(ClipxaiError, match=r"class file line 3 \(car\) names no class of the bundle"):
        class_mapping(["dog"], names, background_id=0)
    with pytest.raises(ClipxaiError, match="background id 3 is not a class id"):
        class_mapping(["dog", "car"], names, background_id=3)
    with pytest.raises(ClipxaiError, match="'dog' is on lines 2 and 3"):
        class_mapping(["dog"], [["background"], ["dog"], ["dog"]], background_id=0)


# ---- clipxai evaluate segmentation end to end ---------------------------------------------------------

CLASSES = ["rocket", "sky", "smoke"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("eval") / "b"
    return export_bundle(ExportConfig(output=out, classes=CLASSES, backbone=TINY.name, pretrained="random",
                                      image_size=32)).path


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "voc"
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(40, 56), (64, 48), (33, 70)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "img" / f"im{i}.jpg")
        lab = rng.integers(0, 4, (h, w)).astype(np.uint8)
        lab[rng.random((h, w)) < 0.1] = 255
        Image.fromarray(lab, "L").save(root / "lab" / f"im{i}.png")
    (root / "names.txt").write_text("background\nsmoke\nrocket\nsky\n")  # another order than the bundle's
    return root


def invoke(*args):
    from clipxai.cli.evaluate import evaluate
    return CliRunner().invoke(evaluate, ["segmentation", *[str(a) for a in args]], catch_exceptions=False)


def test_evaluate_script_against_an_independent_count(bundle, voc, tmp_path):
    out_dir = tmp_path / "rep"
    out = out_dir / "segmentation.json"
    r = invoke(bundle, "--images", voc / "img", "--labels", voc / "lab", "--class-names", voc / "names.txt",
               "--slide", 16, "--short-side", 40, "--logit-scale", 30, "--prob-threshold", 0.6, "--out", out_dir)
    assert r.exit_code == 0, r.output
    assert "mIoU" in r.stdout and "evaluating" in r.stderr and "RANDOM" in r.stderr
    rep = json.loads(out.read_text())
    assert rep["images"] == 3 and rep["settings"]["slide"] == {"stride": 16, "short_side": 40}
    assert rep["settings"]["background_id"] == 0
    # independent count: predictions from the Predictor, ids by name, IoU = |P∩G| / |P∪G| over labelled pixels
    p = Predictor.from_bundle(bundle)
    p.set_segmentation(logit_scale=30.0, prob_threshold=0.6)
    ids = {"background": 0, "smoke": 1, "rocket": 2, "sky": 3}
    inter, union = np.zeros(4), np.zeros(4)
    for i in range(3):
        seg = p.predict_slide(voc / "img" / f"im{i}.jpg", 16, 40).segmentation
        pred = np.array([ids[CLASSES[s]] if s >= 0 else 0 for s in seg.ravel()]).reshape(seg.shape)
        lab = np.asarray(Image.open(voc / "lab" / f"im{i}.png"))
        valid = lab != 255
        for c in range(4):
            inter[c] += np.sum((pred == c) & (lab == c) & valid)
            union[c] += np.sum(((pred == c) | (lab == c)) & valid)
    want = inter / union
    for name, c in ids.items():
        assert rep["per_class"][name] == pytest.approx(want[c], abs=1e-6)
    assert rep["mIoU"] == pytest.approx(want.mean(), abs=1e-6)
    assert (inter > 0).sum() >= 2  # not a degenerate all-miss case
    # plain (no slide) and --limit
    r = invoke(bundle, "--images", voc / "img", "--labels", voc / "lab", "--class-names", voc / "names.txt",
               "--limit", 1, "--out", out_dir)
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["images"] == 1


def test_evaluate_script_errors(bundle, voc, tmp_path):
    base = [bundle, "--images", voc / "img", "--labels", voc / "lab", "--out", tmp_path / "rep"]
    (voc / "bad.txt").write_text("background\nsmoke\nrocket\n")  # no line for "sky"
    Image.fromarray(np.zeros((10, 10), np.uint8), "L").save(tmp_path / "small.png")
    cases = [
        (["--class-names", voc / "bad.txt"], "bundle class 'sky' is on no line of the class file"),
        (["--class-names", voc / "names.txt", "--slide", 16], "--slide and --short-side go together"),
        (["--class-names", voc / "names.txt", "--slide", 16, "--short-side", 8], "short side 8 is smaller"),
        (["--class-names", voc / "missing.txt"], "no such file"),
        (["--class-names", voc / "names.txt", "--image-suffix", ".png"], "no image"),
    ]
    for args, message in cases:
        r = invoke(*base, *args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "RANDOM" not in ln]
        assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, r.stderr)
        assert not (tmp_path / "rep").exists()
    (voc / "lab" / "im1.png").write_bytes((tmp_path / "small.png").read_bytes())
    r = invoke(*base, "--class-names", voc / "names.txt")
    assert r.exit_code == 2 and "im1.jpg: image is 48x64 but its label map" in r.stderr
    assert not (tmp_path / "rep").exists()
