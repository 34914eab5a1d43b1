"""The runtime as an adversary, or bad luck, would treat it: each case reproduces the attack or the
accident and asserts the safe outcome (one-line errors, nothing foreign used, nothing lost)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipxai.common.files import sha256_file
from clipxai.errors import BundleError, ClipxaiError
from clipxai.runtime import Predictor, load_bundle
from clipxai.cli.segment import main as segment_main
from tiny import TINY

ROOT = Path(__file__).parent.parent
ROCKET = ROOT / "examples" / "rocket.jpg"
CLASSES = ["rocket", "sky", "smoke"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    root = tmp_path_factory.mktemp("hard")
    baked = export_bundle(ExportConfig(output=root / "baked", classes=CLASSES, backbone=TINY.name,
                                       pretrained="random", image_size=32))
    text = export_bundle(ExportConfig(output=root / "text", classes=CLASSES, backbone=TINY.name,
                                      pretrained="random", image_size=32, text_encoder=True))
    return {"baked": baked, "text": text}


@pytest.fixture
def copy(bundles, tmp_path):
    def make(kind="baked"):
        dst = tmp_path / f"copy-{kind}"
        shutil.copytree(bundles[kind].path, dst)
        return dst
    return make


def _rewrite(bundle: Path, edit=None) -> None:
    """Edit the manifest, then give every listed file its current digest: a bundle consistent with
    itself (an exporter bug, or someone who rewrote the manifest), so only the content checks remain."""
    m = json.loads((bundle / "manifest.json").read_text())
    if edit:
        edit(m)
    for name in m.get("files", {}):
        if (bundle / name).is_file():
            m["files"][name]["sha256"] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(m))


def _refused(bundle, pattern):
    with pytest.raises(BundleError) as e:
        Predictor.from_bundle(bundle, providers="cpu")
    msg = str(e.value)
    assert "\n" not in msg and re.search(pattern, msg), msg
    return msg


# ---- manifest fields: one schema, one line naming the field --------------------------------------------

@pytest.mark.parametrize("edit, pattern", [
    (lambda m: m.update(classes=m["classes"][:2]), r"graph output \w+ .* no dimension of the 2 classes"),
    (lambda m: m.update(classes=["rocket", "Rocket", "sky"]), r"field 'classes' lists 'Rocket' twice"),
    (lambda m: m["preprocess"].update(std=[0.2, 0.0, 0.2]), r"field 'preprocess.std' must hold positive numbers"),
    (lambda m: m["preprocess"].update(mean=[0.1, float("nan"), 0.1]), r"field 'preprocess.mean' must hold finite"),
    (lambda m: m.update(image_size="224"), r"field 'image_size' must be an integer, got '224'"),
    (lambda m: m.update(image_size=10 ** 9), r"field 'image_size' must be in 1..2048"),
    (lambda m: m.update(grid_size=7), r"grid 7 x patch 8 is not the image size 32"),
    (lambda m: m.update(classes=[]), r"field 'classes' must be a non-empty list"),
    (lambda m: m.update(classes=["rocket", 3, "sky"]), r"field 'classes' entry 1 must be a non-empty string"),
    (lambda m: m.update(method=["surgery"]), r"field 'method' must be one of"),
    (lambda m: m["graph"].update(outputs=[]), r"field 'graph.outputs' must map tensor names"),
    (lambda m: m.pop("precision"), r"missing field 'precision'"),
    (lambda m: m["files"]["model.onnx"].update(sha256="abc"), r"entry 'model.onnx' has no valid sha256"),
    (lambda m: m.update(kind="mask-model"), r"this is a 'mask-model' bundle, not a 'clip' bundle"),
])
def test_manifest_fields_are_validated(copy, edit, pattern):
    bundle = copy()
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))  # the file digests still hold: only the manifest changed
    _refused(bundle, pattern)


def test_deeply_nested_or_huge_manifests_are_refused(copy):
    bundle = copy()
    (bundle / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    _refused(bundle, r"nested too deeply")
    with open(bundle / "manifest.json", "wb") as f:
        f.truncate(20 << 20)
    _refused(bundle, r"larger than any manifest")


# ---- files the manifest does not list, and bad embeddings ----------------------------------------------

def test_external_data_the_manifest_does_not_list_is_refused(copy):
    bundle = copy()
    m = json.loads((bundle / "manifest.json").read_text())
    del m["files"]["model.onnx.data"]  # the graph still loads its weights from it, unchecked
    (bundle / "manifest.json").write_text(json.dumps(m))
    _refused(bundle, r"model.onnx: keeps tensor data in 'model.onnx.data', which manifest.json does not list")


def test_a_text_encoder_graph_with_unlisted_data_is_refused(copy):
    import onnx
    bundle = copy("text")
    model = onnx.load(str(bundle / "text_encoder.onnx"))
    onnx.save(model, str(bundle / "text_encoder.onnx"), save_as_external_data=True, location="extra.bin")
    _rewrite(bundle)
    _refused(bundle, r"text_encoder.onnx: keeps tensor data in 'extra.bin'")


@pytest.mark.parametrize("kind", ["baked", "text"])
@pytest.mark.parametrize("content, pattern", [
    ("pickle", r"text_embeddings.npy: not a plain numeric .npy"),
    ("nan", r"text_embeddings.npy: holds NaN or infinite values"),
    ("shape", r"text_embeddings.npy: shape \[3, 7\], but the manifest lists 3 classes of dimension 32"),
    ("ints", r"text_embeddings.npy: expected a 2-D float array, got int64"),
])
def test_bad_embeddings_are_refused(copy, kind, content, pattern):
    bundle = copy(kind)
    path = bundle / "text_embeddings.npy"
    good = np.load(path)
    if content == "pickle":
        np.save(path, np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    elif content == "nan":
        bad = good.copy()
        bad[1, 2] = np.nan
        np.save(path, bad)
    elif content == "shape":
        np.save(path, good[:, :7])
    else:
        np.save(path, np.ones(good.shape, np.int64))
    _rewrite(bundle)
    _refused(bundle, pattern)


def test_nan_never_reaches_the_json(copy, tmp_path, monkeypatch):
    """Were a NaN to come out of the graph anyway, the JSON stays valid (null), never NaN."""
    from clipxai.runtime import prediction
    real = prediction.Prediction.__init__

    def poisoned(self, classes, similarity, scores, *a, **k):
        scores = scores.copy()
        scores[0] = np.nan
        real(self, classes, similarity, scores, *a, **k)
    monkeypatch.setattr(prediction.Prediction, "__init__", poisoned)
    out = tmp_path / "out"
    r = CliRunner().invoke(segment_main, [str(copy()), str(ROCKET), "--out", str(out), "--no-overlays"])
    assert r.exit_code == 0, r.output
    text = (out / "rocket.json").read_text()
    assert "NaN" not in text and json.loads(text)["scores"]["rocket"] is None


# ---- digest pin -------------------------------------------------------------------------------------------

def test_a_pinned_digest_accepts_only_that_bundle(bundles, copy, tmp_path):
    bundle = copy()
    digest = bundles["baked"].digest
    assert digest == sha256_file(bundle / "manifest.json") and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert Predictor.from_bundle(bundle, providers="cpu", digest=digest).bundle.digest == digest
    with pytest.raises(BundleError, match=f"is not the expected {bundles['text'].digest}"):
        Predictor.from_bundle(bundle, providers="cpu", digest=bundles["text"].digest)
    r = CliRunner().invoke(segment_main, [str(bundle), str(ROCKET), "--out", str(tmp_path / "o"),
                                          "--expect-digest", "0" * 64])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "is not the expected" in r.stderr
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(segment_main, [str(bundle), str(ROCKET), "--out", str(tmp_path / "o"),
                                          "--expect-digest", digest.upper()])
    assert r.exit_code == 0, r.output


def test_the_exporter_prints_the_digest(tmp_path):
    from clipxai.export.cli import main as export_main
    r = CliRunner().invoke(export_main, ["--backbone", TINY.name, "--pretrained", "random", "--classes", "a,b",
                                         "--image-size", "32", "--output", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("digest: "))
    assert line.split()[1] == sha256_file(tmp_path / "b" / "manifest.json")


# ---- engines: never inside a bundle --------------------------------------------------------------------

def test_an_engines_symlink_in_a_bundle_is_never_followed(copy, tmp_path, monkeypatch):
    import onnxruntime as ort

    from clipxai.runtime.nvidia import engine_cache, gpu_info
    bundle = copy()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not yours")
    (bundle / "engines").symlink_to(outside, target_is_directory=True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(gpu_info, "tensorrt_version", lambda: "10.3.0")
    monkeypatch.setattr(gpu_info, "gpu", lambda device_id=0: gpu_info.Gpu("Orin", "8.7"))
    b = load_bundle(bundle)
    d = Path(engine_cache.ort_trt_cache_dir(b, "tensorrt", None, False, cache_dir=tmp_path / "cache"))
    assert tmp_path / "cache" in d.parents and sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    with pytest.raises(ClipxaiError, match="no TensorRT engine"):  # an engine in the bundle is not looked at
        (outside / engine_cache.current_key(b, "trtexec", "fp32").slug()).mkdir()
        engine_cache.find_engine(b, "fp32", root=None)


# ---- clipxai-segment loses nothing -----------------------------------------------------------------------

def _invoke(*args):
    return CliRunner().invoke(segment_main, [str(a) for a in args])


def test_inputs_that_share_a_name_never_overwrite_each_other(copy, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rgb = np.asarray(Image.open(ROCKET).convert("RGB"))
    Image.fromarray(rgb).save(src / "x.png")
    Image.fromarray(rgb[:, ::-1]).save(src / "x.jpg")  # another picture, same stem
    Image.fromarray(rgb[::-1]).save(src / "x_2.png")   # what the old de-duplication would have named x.jpg
    out = tmp_path / "out"
    r = _invoke(copy(), src, "--out", out, "--no-overlays")
    assert r.exit_code == 0, r.output
    recs = {p.name: json.loads(p.read_text())["image"] for p in out.glob("*.json")}
    assert recs == {"x.png.json": str(src / "x.png"), "x.jpg.json": str(src / "x.jpg"),
                    "x_2.json": str(src / "x_2.png")}
    assert len(list(out.glob("*_segmentation.png"))) == 3


def test_an_image_whose_results_cannot_be_written_is_skipped_and_listed(copy, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(ROCKET, src / name)
    out = tmp_path / "out"
    (out / "b.json").mkdir(parents=True)  # the file system refuses this name for b's JSON
    r = _invoke(copy(), src, "--out", out, "--no-overlays")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "1 input failed, 2 processed:" in r.stderr and "b.jpg: results not written" in r.stderr
    assert (out / "a.json").is_file() and (out / "c.json").is_file()
    assert not (out / "b_segmentation.png").exists()  # none of b's files: all or nothing per image
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]


def test_an_unwritable_output_folder_is_one_line(copy, tmp_path):
    (tmp_path / "file").write_text("x")
    bundle = copy()
    r = _invoke(bundle, ROCKET, "--out", tmp_path / "file" / "out")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "cannot write results to" in r.stderr and "Traceback" not in r.output
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        r = _invoke(bundle, ROCKET, "--out", ro)
        assert r.exit_code == 2 and "cannot write results to" in r.stderr


def test_threads_are_bounded(bundles, tmp_path):
    r = _invoke(bundles["baked"].path, ROCKET, "--out", tmp_path / "o", "--threads", "100000")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"threads=100000 is out of range: use 1 to {4 * os.cpu_count()}" in r.stderr
    with pytest.raises(ClipxaiError, match="out of range"):
        Predictor.from_bundle(bundles["baked"].path, providers="cpu", threads=10 ** 6)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_leaves_no_partial_file_and_prints_a_summary(copy, tmp_path, sig):
    """The signal comes while the second image is being written (a gate, not a timer): the run ends after
    it, with exactly those two images complete, a summary and exit 130."""
    from helpers import gated_segment, signal_at_gate
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        Image.open(ROCKET).convert("RGB").save(src / f"img{i:02d}.png")
    out = tmp_path / "out"
    proc = gated_segment("clipxai.apps.segment.writer:ResultWriter.write", 2, tmp_path / "gate",
                         [copy(), src, "--out", out, "--batch-size", 4, "--providers", "cpu"])
    stdout, stderr = signal_at_gate(proc, tmp_path / "gate", sig)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted: 2 images written" in stderr
    assert "4 not processed" in stderr and "nothing partial was left" in stderr
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]
    jsons = sorted(p.name[:-5] for p in out.glob("*.json"))
    assert jsons == ["img00", "img01"]
    for stem in jsons:  # every image written is complete; none half
        assert (out / f"{stem}_segmentation.png").is_file()
        assert len(list(out.glob(f"{stem}_heatmap_*.png"))) == len(CLASSES)
    assert len(list(out.glob("*_segmentation.png"))) == 2


def test_overlays_of_a_large_image_need_no_full_size_float_arrays(copy):
    """79 MP with 5 classes took 7.5 GB in full-size float temporaries; now a band at a time: the
    Python-side memory of drawing does not grow with the image (6 MP and 24 MP)."""
    from clipxai.runtime.visualize import overlay, segmentation_image
    p = Predictor.from_bundle(copy(), providers="cpu")
    peaks = []
    for size in ((3000, 2000), (6000, 4000)):
        image = Image.new("RGB", size, (40, 90, 160))
        pred = p.predict(image)
        labels = pred.segmentation
        tracemalloc.start()
        pic = overlay(image, lambda r0, r1: pred.heatmap_rows(0, r0, r1))
        seg = segmentation_image(image, labels, pred.classes)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert pic.size == size and seg.height == size[1]
    assert peaks[1] < 1.3 * peaks[0] + (1 << 20) and peaks[1] < 48 << 20, peaks  # a float32 RGB copy: 288 MB
    # the picture is what the one-shot formula gives
    want = np.clip(0.4 * np.asarray(image, np.float32)[:256] + 0.6 * _jet(pred.heatmap(0)[:256]) + 0.5, 0, 255)
    assert np.abs(np.asarray(pic)[:256].astype(np.int16) - want.astype(np.int16)).max() <= 1


def _jet(v):
    from clipxai.runtime.visualize import jet
    return jet(v).astype(np.float32)
