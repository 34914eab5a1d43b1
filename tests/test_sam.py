"""SAM and SAM 2.1 on the device: export, exactness against the packages' predictors, the text -> points
-> masks pipeline, the label map, RLE, clipxai-segment --sam, and bad input."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from clipxai.errors import BundleError, ClipxaiError
from clipxai.runtime import Predictor
from clipxai.runtime.sam import MaskPredictor, label_map, rle
from clipxai.runtime.sam.predictor import ObjectMask
from clipxai.runtime.visualize import BANNER_HEIGHT
from tiny import TINY
from tiny_sam import TINY_SAM, TINY_SAM2, save_checkpoint  # registers tiny-sam-wide too

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"
TOL = 1e-4


@pytest.fixture(scope="module")
def sam_models(tmp_path_factory):
    """{family: (torch model, checkpoint path, bundle path)} for tiny random SAM and SAM 2.1."""
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    root = tmp_path_factory.mktemp("sam")
    out = {}
    for row in (TINY_SAM, TINY_SAM2):
        ckpt = root / row.checkpoint
        model = save_checkpoint(row, ckpt, seed=7)
        res = export_mask_bundle(SamExportConfig(model=row.name, checkpoint=ckpt, output=root / row.name, bf16=False))
        assert res.verification["low_res_masks"] <= TOL and res.verification["iou_predictions"] <= TOL
        out[row.family] = (model, ckpt, res.path)
    return out


def _reference(family, model):
    if family == "sam":
        from segment_anything import SamPredictor
        return SamPredictor(model)
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    return SAM2ImagePredictor(model)


def _image(h=237, w=311, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (60, 110, 200), np.uint8)
    img[h // 2:] = (70, 160, 60)
    img[h // 4: h // 2, w // 3: w // 2] = (230, 40, 30)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def test_sam_preprocessing_is_the_packages_bit_for_bit(sam_models):
    from segment_anything.utils.transforms import ResizeLongestSide

    from clipxai.manifest import MaskPreprocess
    from clipxai.mask_models import PREPROCESS
    from clipxai.runtime.sam.preprocess import image_input
    model = sam_models["sam"][0]
    for h, w in ((237, 311), (640, 427), (1024, 1024), (50, 2000)):
        img = _image(h, w)
        resized = ResizeLongestSide(1024).apply_image(img)
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
        want = model.preprocess(x.float()).numpy()
        got, size = image_input(Image.fromarray(img), MaskPreprocess.from_dict(PREPROCESS["sam"]))
        assert size == resized.shape[:2] and np.array_equal(got, want), (h, w)


def test_sam2_preprocessing_equals_the_packages_within_float_rounding(sam_models):
    from sam2.utils.transforms import SAM2Transforms

    from clipxai.manifest import MaskPreprocess
    from clipxai.mask_models import PREPROCESS
    from clipxai.runtime.sam.preprocess import image_input
    transforms = SAM2Transforms(resolution=1024, mask_threshold=0.0)
    for h, w in ((237, 311), (640, 427), (1024, 1024), (1500, 900)):
        img = _image(h, w)
        want = transforms(img)[None].numpy()
        got, _ = image_input(Image.fromarray(img), MaskPreprocess.from_dict(PREPROCESS["sam2"]))
        assert np.abs(got - want).max() <= 1e-5, (h, w)


@pytest.mark.parametrize("family", ["sam", "sam2"])
@pytest.mark.parametrize("multimask", [True, False])
def test_masks_equal_the_packages_predictor(sam_models, family, multimask):
    model, _, bundle = sam_models[family]
    ref = _reference(family, model)
    ours = MaskPredictor.from_bundle(bundle, providers="cpu")
    img = _image()
    with torch.no_grad():
        ref.set_image(img)
    ours.set_image(img)
    prompts = [([[40, 60]], [1]), ([[200, 50], [250, 200]], [1, 0]), ([[10, 10], [300, 230], [150, 120]], [1, 1, 0])]
    for coords, labels in prompts:
        coords, labels = np.array(coords, np.float64), np.array(labels)
        with torch.no_grad():
            want_masks, want_iou, want_low = ref.predict(coords, labels, multimask_output=multimask)
            want_logits = ref.predict(coords, labels, multimask_output=multimask, return_logits=True)[0]
        masks, iou, low = ours.predict(coords, labels, multimask_output=multimask)
        logits = ours.predict(coords, labels, multimask_output=multimask, return_logits=True)[0]
        assert masks.dtype == bool and masks.shape == want_masks.shape == (3 if multimask else 1, 237, 311)
        assert np.abs(low - want_low).max() <= TOL and np.abs(iou - want_iou).max() <= TOL
        assert np.abs(logits - want_logits).max() <= 1e-3
        differ = masks != want_masks.astype(bool)
        assert not (differ & (np.abs(logits) >= TOL)).any()  # identical except at |logit| < 1e-4


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_prompt_sets_in_one_decoder_run_equal_one_run_each(sam_models, family):
    ours = MaskPredictor.from_bundle(sam_models[family][2], providers="cpu")
    ours.set_image(_image(seed=2))
    coords = np.array([[[30, 40], [100, 100]], [[250, 60], [20, 200]], [[150, 150], [151, 40]]], np.float64)
    labels = np.array([[1, 0], [1, 1], [1, 0]])
    masks, iou, low = ours.predict_batch(coords, labels)
    for i in range(3):
        m, s, lo = ours.predict(coords[i], labels[i])
        assert np.abs(lo - low[i]).max() <= 1e-5 and np.abs(s - iou[i]).max() <= 1e-5
    with pytest.raises(ClipxaiError, match="no image set"):
        MaskPredictor.from_bundle(sam_models[family][2], providers="cpu").predict(coords[0], labels[0])


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_the_mask_graphs_use_the_cpu_graph_cache(sam_models, family, tmp_path, caplog):
    """Encoder and decoder each get their own entry, filled by the background builder (a mask-model
    bundle), then loaded; the masks equal those of the bundle's own graphs."""
    import logging

    from clipxai.runtime.bundle import load_bundle
    from clipxai.runtime.cpu import graph_cache as gc
    bundle = sam_models[family][2]
    plain = MaskPredictor.from_bundle(bundle, providers="cpu", graph_cache=False)
    MaskPredictor.from_bundle(bundle, providers="cpu", graph_cache="background", cache_dir=str(tmp_path))
    assert gc.wait_for_builds(timeout=300)
    b = load_bundle(bundle, kind="mask-model")
    for graph in ("encoder.onnx", "decoder.onnx"):
        entry = gc.lookup(tmp_path, gc.cache_key(b.graph_files(graph)))
        assert entry is not None, graph
        assert json.loads((entry.parent / gc.DONE_FILE).read_text())["key"]["files"] == b.graph_files(graph)
    caplog.set_level(logging.INFO, logger="clipxai")
    cached = MaskPredictor.from_bundle(bundle, providers="cpu", cache_dir=str(tmp_path))
    assert caplog.text.count("loaded the optimized graph from") == 2
    img, coords, labels = _image(seed=4), np.array([[40.0, 60.0], [200.0, 120.0]]), np.array([1, 0])
    for p in (plain, cached):
        p.set_image(img)
    (_, s0, low0), (_, s1, low1) = plain.predict(coords, labels), cached.predict(coords, labels)
    assert np.abs(low0 - low1).max() <= 1e-4 and np.abs(s0 - s1).max() <= 1e-5


def official_points(similarity: torch.Tensor, shape, t=0.8):
    """The CLIP Surgery demo's similarity map -> points rule (its clip.similarity_map_to_points), on one
    class's patch similarity [N], written here from its description."""
    side = int(similarity.shape[0] ** 0.5)
    down = side // 2
    sm = F.interpolate(similarity.reshape(1, 1, side, side), (down, down), mode="bilinear")[0, 0].reshape(-1)
    sm = (sm - sm.min()) / (sm.max() - sm.min())
    rank = sm.sort(0)[1]
    h, w = shape
    num = int(min((sm >= t).sum(), sm.shape[0] // 2))
    labels = np.ones(2 * num, np.uint8)
    labels[num:] = 0
    points = []
    for idx in [*rank[-num:], *rank[:num]]:
        x = min((int(idx) % down + 0.5) * (w / down), w - 1)
        y = min((int(idx) // down + 0.5) * (h / down), h - 1)
        points.append([int(x), int(y)])
    return np.array(points), labels


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_text_to_points_to_masks_equals_the_official_pipeline(sam_models, tmp_path, family):
    """CLIP Surgery's point rule on the surgery similarity, then the package's predictor's best mask
    (multimask, highest predicted IoU), per class: equal to clipxai's masks_for."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    classes = ["sky", "grass", "box", "rocket"]
    clip = export_bundle(ExportConfig(output=tmp_path / "clip", classes=classes, backbone=TINY.name,
                                      pretrained="random", image_size=64)).path
    img = np.asarray(Image.open(ROCKET).convert("RGB"))
    pred = Predictor.from_bundle(clip, providers="cpu").predict(img)
    model, _, bundle = sam_models[family]
    sam = MaskPredictor.from_bundle(bundle, providers="cpu")
    sam.set_image(img)
    got = sam.masks_for(pred)
    ref = _reference(family, model)
    with torch.no_grad():
        ref.set_image(img)
    for k, name in enumerate(classes):
        points, labels = official_points(torch.from_numpy(pred.similarity[:, k].copy()), img.shape[:2])
        assert np.array_equal(points, got[name].points) and np.array_equal(labels, got[name].labels)
        with torch.no_grad():
            masks, scores, _ = ref.predict(point_coords=points, point_labels=labels, multimask_output=True)
            logits = ref.predict(point_coords=points, point_labels=labels, multimask_output=True,
                                 return_logits=True)[0]
        best = int(np.argmax(scores))
        want = masks[best].astype(bool)
        assert got[name].token == best + 1 and abs(got[name].score - float(scores[best])) <= TOL
        assert not ((got[name].mask != want) & (np.abs(logits[best]) >= TOL)).any(), name
        assert got[name].area == int(got[name].mask.sum())


def _object(mask, score):
    return ObjectMask(mask, score, (0, 0, 0, 0), int(mask.sum()), np.zeros((0, 2), np.int32), np.zeros(0, np.uint8), 1)


def test_label_map_rule_higher_score_wins_and_ties_go_to_the_higher_heatmap():
    from clipxai.runtime.prediction import Prediction
    heat = np.zeros((3, 2, 2), np.float32)
    heat[1, :, 1], heat[2, :, 0] = 1.0, 1.0  # class b hotter on the right, c on the left
    pred = Prediction(["a", "b", "c"], np.zeros((4, 3), np.float32), np.ones(3, np.float32) / 3, heat, (4, 4))
    left = np.zeros((4, 4), bool)
    left[:, :2] = True
    everything = np.ones((4, 4), bool)
    masks = {"a": _object(left, 0.9), "b": _object(everything, 0.5), "c": _object(everything, 0.5)}
    lm = label_map(masks, pred)
    assert (lm[:, :2] == 0).all()                    # a: highest score
    assert (lm[:, 2:] == 1).all()                    # b and c tie: b's heatmap is higher on the right
    masks = {"a": None, "b": _object(left, 0.5), "c": _object(left & False, 0.7)}
    lm = label_map(masks, pred)
    assert (lm[:, :2] == 1).all() and (lm[:, 2:] == -1).all()


def test_rle_loads_in_coco_tools():
    from pycocotools import mask as coco
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    r = rle(m)
    assert r["size"] == [37, 53] and isinstance(r["counts"], str)
    back = coco.decode({"size": r["size"], "counts": r["counts"].encode()})
    assert np.array_equal(back.astype(bool), m) and int(coco.area({"size": r["size"], "counts": r["counts"].encode()})) == m.sum()
    tiny = np.zeros((4, 5), bool)
    tiny[1:3, 2:4] = True
    assert rle(tiny)["counts"] == "92203"  # COCO's compressed counts: column-major runs from a zero run


def test_segment_cli_writes_masks_overlays_objects_and_rle(sam_models, tmp_path):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.cli.segment import main
    classes = ["sky", "rocket", "smoke"]
    clip = export_bundle(ExportConfig(output=tmp_path / "clip", classes=classes, backbone=TINY.name,
                                      pretrained="random", image_size=32)).path
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [str(clip), str(ROCKET), "--out", str(out), "--sam", str(sam_models["sam2"][2]),
                                  "--sam-classes", "sky,rocket", "--no-overlays"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "rocket.json").read_text())
    assert set(rec["masks"]) == {"sky", "rocket"} and set(rec["scores"]) == set(classes)
    for name in ("sky", "rocket"):
        m = rec["masks"][name]
        png = np.asarray(Image.open(out / f"rocket_mask_{name}.png"))
        assert png.shape == (427, 640) and set(np.unique(png)) <= {0, 255}
        from pycocotools import mask as coco
        decoded = coco.decode({"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), png == 255) and m["area"] == int((png == 255).sum())
        assert Image.open(out / f"rocket_sam_{name}.png").size == (640, 427 + BANNER_HEIGHT)  # random weights
    assert (out / "rocket_objects.png").is_file() and not (out / "rocket_mask_smoke.png").exists()
    r = CliRunner().invoke(main, [str(clip), str(ROCKET), "--out", str(out), "--sam", str(clip)])
    assert r.exit_code == 2 and re.search(r"this is a 'clip' bundle, not a 'mask-model' bundle", r.stderr)
    r = CliRunner().invoke(main, [str(sam_models["sam"][2]), str(ROCKET), "--out", str(out)])
    assert r.exit_code == 2 and "this is a 'mask-model' bundle, not a 'clip' bundle" in r.stderr
    r = CliRunner().invoke(main, [str(clip), str(ROCKET), "--out", str(out), "--sam-classes", "sky"])
    assert r.exit_code == 2 and "--sam-classes needs --sam" in r.stderr


def test_a_class_without_points_gets_no_mask(sam_models):
    from clipxai.runtime.prediction import Prediction
    img = _image()
    # a constant map for class 'flat': min-max gives 0 everywhere, no cell reaches 0.8: no points
    heat = np.stack([np.zeros((4, 4), np.float32), np.eye(4, dtype=np.float32)])
    pred = Prediction(["flat", "diag"], np.zeros((16, 2), np.float32), np.full(2, 0.5, np.float32), heat, img.shape[:2])
    sam = MaskPredictor.from_bundle(sam_models["sam"][2], providers="cpu")
    sam.set_image(img)
    got = sam.masks_for(pred)
    assert got["flat"] is None and got["diag"] is not None and got["diag"].mask.shape == img.shape[:2]


# ---- clipxai-export-sam: bad input, precision --------------------------------------------------------

def _export(*args):
    from clipxai.export.sam_cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def test_export_sam_bad_input_is_one_line_and_writes_nothing(sam_models, tmp_path):
    out = tmp_path / "b"
    r = _export("--model", "tiny-sam", "--output", out)
    assert r.exit_code == 2 and "no checkpoint given" in r.stderr and "https://example.invalid/tiny_sam.pth" in r.stderr
    r = _export("--model", "sam-vit-x", "--checkpoint", sam_models["sam"][1], "--output", out)
    assert r.exit_code == 2 and "unknown mask model 'sam-vit-x'" in r.stderr and "sam2.1-hiera-tiny" in r.stderr
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    r = _export("--model", "tiny-sam", "--checkpoint", tmp_path / "garbage.pth", "--output", out)
    assert r.exit_code == 2 and "not a readable tiny-sam checkpoint" in r.stderr
    r = _export("--model", "tiny-sam-wide", "--checkpoint", sam_models["sam"][1], "--output", out)
    assert r.exit_code == 2 and "does not fit tiny-sam-wide" in r.stderr and "another model size" in r.stderr
    r = _export("--model", "tiny-sam", "--checkpoint", sam_models["sam2"][1], "--output", out)
    assert r.exit_code == 2 and "does not fit tiny-sam" in r.stderr
    marker = tmp_path / "CODE-RAN"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"image_encoder.x": Evil()}))
    r = _export("--model", "tiny-sam", "--checkpoint", tmp_path / "evil.pth", "--output", out)
    assert r.exit_code == 2 and "not a readable tiny-sam checkpoint" in r.stderr and not marker.exists()
    assert "weights_only=False" not in r.stderr
    for res in (r,):
        assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_tampered_sam_bundle_is_refused(sam_models, tmp_path):
    bundle = tmp_path / "copy"
    shutil.copytree(sam_models["sam"][2], bundle)
    with open(bundle / "decoder.onnx", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    with pytest.raises(BundleError, match="decoder.onnx: sha256 does not match"):
        MaskPredictor.from_bundle(bundle, providers="cpu")


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_lower_precision_encoders_pass_their_iou_gate(sam_models, tmp_path, precision):
    r = _export("--model", "tiny-sam", "--checkpoint", sam_models["sam"][1], "--output", tmp_path / "b",
                "--precision", precision)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    f = m["fidelity"]
    assert m["precision"] == precision and f["passed"] and f["mean_iou"] >= 0.95 and f["masks"] == 12
    assert f"{precision} encoder vs fp32" in r.stdout
    sam = MaskPredictor.from_bundle(tmp_path / "b", providers="cpu")
    sam.set_image(_image())
    masks, _, _ = sam.predict(np.array([[40.0, 60.0]]), np.array([1]))
    assert masks.shape == (3, 237, 311)
