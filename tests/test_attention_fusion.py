"""The CPU graph cache's attention fusion (runtime/attention_fusion.py): exact, and only where it applies."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.runtime import Predictor
from clipxai.runtime.cpu import graph_cache as gc
from clipxai.runtime.cpu.attention_fusion import fuse_attention

from clipxai.models import reference as ref
from helpers import random_images
from tiny import TINY, TINY_HEADS, TINY_SURGERY_BLOCKS

CLASSES = ["person", "bench", "sky"]
SIZE = 48
LAYERS = 5  # tests/tiny.py
# Plain q-k attention in blocks 0..L-2 (the last block's original path is the keyless class row),
# plus the v-v attention of each surgery block.
SURGERY_FUSED = (LAYERS - 1) + TINY_SURGERY_BLOCKS


def _bundle(tmp_path_factory, method):
    root = tmp_path_factory.mktemp(method)
    return export_bundle(ExportConfig(output=root / "b", classes=CLASSES, backbone=TINY.name, method=method,
                                      pretrained="random", image_size=SIZE)).path


def _session(model: onnx.ModelProto | str):
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _reference(tiny_model, bundle, x, method):
    sd = {k: v.detach() for k, v in tiny_model.model.state_dict().items()}
    text = torch.from_numpy(np.load(bundle / "text_embeddings.npy"))
    xt = torch.from_numpy(x)
    if method == "grad-eclip":  # autograd inside
        h, maps = ref.grad_eclip(sd, xt, text, TINY_HEADS, True)
        return [h.detach().numpy(), None, maps.detach().numpy()]
    with torch.no_grad():
        if method == "surgery":
            red = torch.from_numpy(np.load(bundle / "redundancy.npy"))
            out = ref.pipeline(sd, xt, text, "classes", TINY_HEADS, TINY_SURGERY_BLOCKS, quick_gelu=True,
                               redundancy=red)
            return [t.numpy() for t in out]
        return [t.numpy() for t in ref.dense_pipeline(sd, xt, text, TINY_HEADS, True, method)]


@pytest.mark.parametrize("method", ["surgery", "grad-eclip", "vanilla", "maskclip", "sclip", "clearclip", "naclip"])
def test_fused_graph_matches_the_reference(tmp_path_factory, tiny_model, method):
    bundle = _bundle(tmp_path_factory, method)
    model = onnx.load(str(bundle / "model.onnx"))
    fused = fuse_attention(model)
    ops = [n.op_type for n in model.graph.node]
    assert fused == ops.count("MultiHeadAttention") >= LAYERS - 1  # at least the plain blocks, every method
    if method == "surgery":
        assert fused == SURGERY_FUSED
    x = random_images(2, SIZE, seed=5)  # batch 2: the dynamic batch survives the rewrite
    names = ["similarity", "scores", "heatmaps"]
    got = _session(model).run(names, {"image": x})
    plain = _session(str(bundle / "model.onnx")).run(names, {"image": x})
    want = _reference(tiny_model, bundle, x, method)
    for name, g, p, w in zip(names, got, plain, want):
        assert np.abs(g - p).max() <= 1e-5, (name, np.abs(g - p).max())
        if w is not None:
            assert np.abs(g - w).max() <= 1e-4, (name, np.abs(g - w).max())


def test_attention_with_added_scores_is_left_alone(tmp_path_factory):
    """NACLIP adds a Gaussian neighbourhood bias to its last block's scores: not plain attention."""
    model = onnx.load(str(_bundle(tmp_path_factory, "naclip") / "model.onnx"))
    softmax_before = sum(n.op_type == "Softmax" for n in model.graph.node)
    fused = fuse_attention(model)
    left = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert softmax_before - len(left) == fused
    producers = {o: n for n in model.graph.node for o in n.output}
    assert any(producers[s.input[0]].op_type == "Add" for s in left)  # the biased attention is still there


def test_a_graph_without_attention_is_unchanged():
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(g)
    before = model.SerializeToString()
    assert fuse_attention(model) == 0
    assert model.SerializeToString() == before


def test_the_cache_keeps_the_fused_graph(tmp_path_factory, tmp_path, tiny_model):
    bundle = _bundle(tmp_path_factory, "surgery")
    entry = gc.build(bundle / "model.onnx", _sha(bundle), tmp_path)
    done = json.loads((entry / gc.DONE_FILE).read_text())
    assert done["attention_fused"] == SURGERY_FUSED
    assert sorted(p.name for p in entry.iterdir()) == sorted([gc.GRAPH_FILE, gc.DATA_FILE, gc.DONE_FILE])
    cached = onnx.load(str(entry / gc.GRAPH_FILE), load_external_data=False)
    assert sum(n.op_type == "MultiHeadAttention" for n in cached.graph.node) == SURGERY_FUSED
    # The runtime on the cached graph against the reference and the uncached runtime.
    img = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    p = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(tmp_path))
    q = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False)
    a, b = p.predict(img), q.predict(img)
    assert np.abs(a.heatmaps_grid - b.heatmaps_grid).max() <= 1e-5
    x = p._buffer[:1].copy()  # the preprocessed image of the last prediction
    want = _reference(tiny_model, bundle, x, "surgery")
    assert np.abs(a.heatmaps_grid - want[2][0]).max() <= 1e-4
    assert np.abs(a.similarity - want[0][0]).max() <= 1e-4


def test_a_fusion_that_changes_the_outputs_is_not_cached(tmp_path_factory, tmp_path, monkeypatch, caplog):
    """The builder checks the fused graph against the bundle's before keeping it."""
    bundle = _bundle(tmp_path_factory, "surgery")
    def broken(model):
        n = fuse_attention(model)
        for node in model.graph.node:  # a wrong softmax scale: close, but not the same attention
            if node.op_type == "MultiHeadAttention":
                for a in node.attribute:
                    if a.name == "scale":
                        a.f *= 1.5
        return n

    monkeypatch.setattr("clipxai.runtime.cpu.attention_fusion.fuse_attention", broken)
    caplog.set_level(logging.WARNING, logger="clipxai")
    entry = gc.build(bundle / "model.onnx", _sha(bundle), tmp_path)
    assert "fused attention changed the outputs" in caplog.text
    assert json.loads((entry / gc.DONE_FILE).read_text())["attention_fused"] == 0
    cached = onnx.load(str(entry / gc.GRAPH_FILE), load_external_data=False)
    assert not any(n.op_type == "MultiHeadAttention" for n in cached.graph.node)
    img = np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    a = Predictor.from_bundle(bundle, providers="cpu", cache_dir=str(tmp_path)).predict(img)
    b = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False).predict(img)
    assert np.array_equal(a.heatmaps_grid, b.heatmaps_grid)  # the unfused graph, optimized and prepacked


def _sha(bundle):
    """The graph files' digests, as a checked bundle gives them to the cache builder."""
    from clipxai.runtime.bundle import load_bundle
    return load_bundle(bundle).graph_files()


def test_int8_graphs_are_cached_unfused(tmp_path_factory, tmp_path, caplog):
    """Dynamic activation quantization turns float rounding into visible differences
    (0.034 on an int8 ViT-B/16 at 448), so int8 graphs are not fused, and no warning is logged."""
    root = tmp_path_factory.mktemp("int8")
    bundle = export_bundle(ExportConfig(output=root / "b", classes=CLASSES, backbone=TINY.name, precision="int8",
                                        pretrained="random", image_size=SIZE)).path
    caplog.set_level(logging.INFO, logger="clipxai")
    entry = gc.build(bundle / "model.onnx", _sha(bundle), tmp_path)
    assert json.loads((entry / gc.DONE_FILE).read_text())["attention_fused"] == 0
    assert "int8 graph: caching it without attention fusion" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_sam2_memory_attention_is_fused_and_equal(tmp_path):
    """SAM 2.1's memory attention (3-D single-head attention, rotary keys, pointer tokens): every attention
    of the exported graph becomes a MultiHeadAttention node and the outputs stay within 1e-4."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    pytest.importorskip("sam2")
    from tiny_sam import TINY_SAM2

    from clipxai.export.sam_video import export_tracking
    from clipxai.models.sam import build_mask_model
    tracking = export_tracking(build_mask_model(TINY_SAM2, seed=2), tmp_path, 17)
    path = tmp_path / tracking.memory_attention.file
    model = onnx.load(str(path))
    layers = len(build_mask_model(TINY_SAM2).memory_attention.layers)
    assert fuse_attention(model) == 2 * layers                  # self- and cross-attention per layer
    assert sum(n.op_type == "MultiHeadAttention" for n in model.graph.node) == 2 * layers
    assert not any(n.op_type == "Softmax" for n in model.graph.node)
    rng = np.random.default_rng(0)
    feeds = {"image_embeddings": rng.standard_normal((1, 256, 64, 64), dtype=np.float32),
             "memories": rng.standard_normal((2, 3, 64, 64, 64), dtype=np.float32),
             "memory_slots": np.array([[6, 0, 5], [6, 4, 5]], np.int64),
             "object_pointers": rng.standard_normal((2, 4, 256), dtype=np.float32),
             "pointer_distances": rng.random((2, 4), dtype=np.float32)}
    want = _session(str(path)).run(None, feeds)[0]
    got = _session(model).run(None, feeds)[0]
    assert np.abs(got - want).max() <= 1e-4
