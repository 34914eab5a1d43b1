"""Runtime: end-to-end parity with the PyTorch reference, bundle checks, providers, API."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipxai.models import reference as ref
from clipxai.errors import BundleError, ClipxaiError
from clipxai.runtime import Predictor, load_bundle
from tiny import TINY, TINY_HEADS, TINY_SURGERY_BLOCKS

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"
CLASSES = ["rocket", "sky", "smoke", "tree", "ground"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for size in (32, 48):
        out[size] = export_bundle(ExportConfig(output=root / f"tiny{size}", classes=CLASSES, backbone=TINY.name,
                                               pretrained="random", image_size=size)).path
    return out


def reference_prediction(model, bundle_path, pil, mode="classes"):
    """preprocess -> surgery -> feature surgery -> heatmap at original size, all in torch."""
    b = load_bundle(bundle_path)
    x = ref.clip_preprocess(pil, b.image_size, b.mean, b.std)[None]
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    text = torch.from_numpy(np.load(Path(bundle_path) / "text_embeddings.npy"))
    with torch.no_grad():
        feats = torch.nn.functional.normalize(ref.surgery_tokens(sd, x, TINY_HEADS, TINY_SURGERY_BLOCKS, True), dim=-1)
        sim = ref.feature_surgery(feats, text, mode)[:, 1:]
        scores = (100.0 * feats[:, 0] @ text.t()).softmax(-1)
        maps = ref.heatmaps(sim, (pil.height, pil.width))
    return sim[0].numpy(), scores[0].numpy(), maps[0].numpy()


@pytest.mark.parametrize("size", [32, 48])
def test_end_to_end_parity_non_square_image(bundles, tiny_model, size):
    pil = Image.open(ROCKET).convert("RGB")  # 640x427
    pred = Predictor.from_bundle(bundles[size], providers="cpu").predict(ROCKET)
    sim, scores, maps = reference_prediction(tiny_model.model, bundles[size], pil)
    assert pred.heatmaps.shape == (len(CLASSES), 427, 640) and pred.heatmaps.dtype == np.float32
    assert np.abs(pred.similarity - sim).max() <= 1e-4
    assert np.abs(pred.scores - scores).max() <= 1e-4
    assert np.abs(pred.heatmaps - maps).max() <= 1e-4
    assert pred.heatmaps.min() >= 0 and pred.heatmaps.max() <= 1
    assert abs(float(pred.scores.sum()) - 1) < 1e-5
    # segmentation: argmax of the upsampled similarity
    up = torch.nn.functional.interpolate(torch.from_numpy(sim.T.reshape(1, len(CLASSES), size // 8, size // 8).copy()),
                                         (427, 640), mode="bilinear", align_corners=False)[0]
    top2 = up.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-5).numpy()
    assert pred.segmentation.dtype == np.int32 and pred.segmentation.shape == (427, 640)
    assert np.array_equal(pred.segmentation[clear], up.argmax(0).numpy()[clear])


def test_points_follow_the_reference(bundles):
    pred = Predictor.from_bundle(bundles[48]).predict(ROCKET)
    for k in range(len(CLASSES)):
        coords, labels = pred.points(k)
        want_pts, want_labels = ref.similarity_map_to_points(torch.from_numpy(pred.heatmaps_grid[k].reshape(-1)),
                                                             (427, 640))
        assert coords.dtype == np.int32 and labels.dtype == np.uint8
        assert coords.tolist() == want_pts
        assert labels.tolist() == want_labels.tolist()
        assert (coords[:, 0] < 640).all() and (coords[:, 1] < 427).all() and (coords >= 0).all()


def test_input_kinds_agree(bundles):
    p = Predictor.from_bundle(bundles[32])
    pil = Image.open(ROCKET)
    a = p.predict(ROCKET)
    b = p.predict(pil)
    c = p.predict(np.asarray(pil.convert("RGB")))
    for other in (b, c):
        assert np.array_equal(a.similarity, other.similarity)
    assert p.classes == CLASSES


def test_predict_batch_equals_single(bundles, tmp_path):
    p = Predictor.from_bundle(bundles[32])
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 70), (64, 64), (20, 90)]]
    batch = p.predict_batch(imgs, batch_size=2)
    for im, pb in zip(imgs, batch):
        ps = p.predict(im)
        np.testing.assert_allclose(pb.similarity, ps.similarity, atol=1e-5)
        assert pb.heatmaps.shape[1:] == im.shape[:2]


def test_background_threshold(bundles):
    p = Predictor.from_bundle(bundles[32], background_threshold=0.5)
    pred = p.predict(ROCKET)
    seg = pred.segmentation
    assert (seg == -1).any() and (seg >= 0).any()
    winners = np.take_along_axis(pred.heatmaps, np.maximum(seg, 0)[None], 0)[0]
    assert (winners[seg >= 0] >= 0.5 - 1e-5).all()
    with pytest.raises(ClipxaiError, match=r"background_threshold must be in \[0, 1\]"):
        Predictor.from_bundle(bundles[32], background_threshold=2.0)


def test_select_subset(bundles):
    pred = Predictor.from_bundle(bundles[32]).predict(ROCKET)
    sub = pred.select(["sky", "rocket"])
    assert sub.classes == ["sky", "rocket"] and sub.heatmaps.shape[0] == 2
    np.testing.assert_array_equal(sub.similarity[:, 0], pred.similarity[:, 1])
    assert set(np.unique(sub.segmentation)) <= {0, 1}


# ---- providers ----------------------------------------------------------------------------

def test_auto_provider_logs_its_choice(bundles, caplog):
    with caplog.at_level(logging.INFO, logger="clipxai"):
        p = Predictor.from_bundle(bundles[32], providers="auto")
    assert p.provider == "CPUExecutionProvider"
    assert "providers=auto: using CPUExecutionProvider" in caplog.text


def test_missing_provider_is_an_error_not_a_fallback(bundles):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():  # pragma: no cover - GPU machines
        pytest.skip("this onnxruntime has CUDA; the error path needs a CPU-only build")
    with pytest.raises(ClipxaiError, match="CUDAExecutionProvider is not available.*onnxruntime-gpu"):
        Predictor.from_bundle(bundles[32], providers="cuda")
    with pytest.raises(ClipxaiError, match="TensorrtExecutionProvider is not available"):
        Predictor.from_bundle(bundles[32], providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ClipxaiError, match="unknown provider 'npu'"):
        Predictor.from_bundle(bundles[32], providers="npu")
    assert Predictor.from_bundle(bundles[32], providers=["CPUExecutionProvider"], threads=1).provider == \
        "CPUExecutionProvider"


# ---- bundle checks ------------------------------------------------------------------------

@pytest.fixture
def bundle_copy(bundles, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundles[32], dst)
    return dst


def _edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _one_line_error(path, pattern):
    with pytest.raises(BundleError) as e:
        Predictor.from_bundle(path)
    msg = str(e.value)
    assert "\n" not in msg
    import re
    assert re.search(pattern, msg), msg
    return msg


def test_tampered_file_is_refused(bundle_copy):
    with open(bundle_copy / "text_embeddings.npy", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    _one_line_error(bundle_copy, r"text_embeddings.npy: sha256 does not match the manifest")


def test_unknown_schema_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(schema_version=99))
    _one_line_error(bundle_copy, r"manifest.json: schema version 99 is not supported by this clipxai \(supports 1, 2, 3\)")


def test_schema_1_bundles_still_load(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(schema_version=1))
    assert Predictor.from_bundle(bundle_copy, providers="cpu").predict(np.zeros((8, 8, 3), np.uint8)).scores.shape


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/passwd", "sub/dir.npy"])
def test_paths_outside_the_bundle_are_refused(bundle_copy, name):
    _edit_manifest(bundle_copy, lambda m: m["files"].update({name: {"sha256": "0" * 64}}))
    _one_line_error(bundle_copy, r"points outside the bundle")


def test_symlink_out_of_the_bundle_is_refused(bundle_copy, tmp_path):
    (tmp_path / "secret.npy").write_bytes(b"x")
    (bundle_copy / "link.npy").symlink_to(tmp_path / "secret.npy")
    _edit_manifest(bundle_copy, lambda m: m["files"].update({"link.npy": {"sha256": "0" * 64}}))
    _one_line_error(bundle_copy, r"link.npy' is a symbolic link")


def test_missing_file_and_bad_manifest(bundle_copy, tmp_path):
    (bundle_copy / "redundancy.npy").unlink()
    _one_line_error(bundle_copy, r"redundancy.npy: listed in the manifest but missing")
    (bundle_copy / "manifest.json").write_text("{not json")
    _one_line_error(bundle_copy, r"manifest.json: not valid JSON")
    _one_line_error(tmp_path / "nope", r"not a bundle directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(empty, r"manifest.json: missing")


def test_graph_io_must_match_manifest(bundle_copy):
    def rename(m):
        m["graph"]["outputs"]["sim"] = m["graph"]["outputs"].pop("similarity")
    _edit_manifest(bundle_copy, rename)
    _one_line_error(bundle_copy, r"model.onnx: graph outputs .* differ from the manifest's")


def test_graph_shape_must_match_manifest(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["graph"]["inputs"]["image"].update(shape=["batch", 3, 64, 64]))
    _one_line_error(bundle_copy, r"model.onnx: image has shape .* the manifest says")


def test_session_is_tuned_and_a_warm_predict_faults_in_no_memory(bundles):
    """Session options as documented (threads, one inter-op thread, no memory pattern), and the hot
    path re-uses its memory: after warm-up a prediction touches no page the system had to hand out
    again (minor faults per call, counted over 5 calls). The image is large enough that its full-size
    heatmaps (several MB) would be faulted in every call if glibc trimmed the heap at its default
    threshold (memory.py): 0 faults as it is, ~2,000 with the trim threshold at 128 KB."""
    import resource
    p = Predictor.from_bundle(bundles[48], providers="cpu", threads=2)
    so = p.session.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1 and not so.enable_mem_pattern
    image = np.random.default_rng(0).integers(0, 255, (1000, 1500, 3), dtype=np.uint8)
    for _ in range(3):
        p.predict(image).heatmaps
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        p.predict(image).heatmaps
    per_call = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    assert per_call < 20, per_call
