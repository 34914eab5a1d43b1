"""runtime/onnx_light.py: a model's graph read without its weights, the weights copied by the kernel."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from clipxai.runtime import graph_cache as gc
from clipxai.runtime.attention_fusion import fuse_attention
from clipxai.runtime.onnx_light import ALIGN, light_copy
from tiny import TINY

WEIGHT_MB = 16


def _model(path):
    """y = relu(x @ W + b) @ W2 + c and z = s * small: W is 16 MB, b and W2 16 KB each, small
    64 B (under light_copy's 1024 B threshold), c a Constant node."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1024, WEIGHT_MB * 256)).astype(np.float32)
    b = rng.standard_normal(WEIGHT_MB * 256).astype(np.float32)[:16].repeat(WEIGHT_MB * 16)
    w2 = rng.standard_normal((WEIGHT_MB * 256, 1)).astype(np.float32)
    small = rng.standard_normal(16).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["o"]),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32([0.5]))),
        helper.make_node("Add", ["o", "c"], ["y"]),
        helper.make_node("Mul", ["s", "small"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes, "light", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1024]),
                         helper.make_tensor_value_info("s", TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [16])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(w2, "W2"),
         numpy_helper.from_array(small, "small")])
    graph.initializer[0].data_location = TensorProto.DEFAULT  # written out explicitly, as quantization does
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    model.ir_version = 8
    model.metadata_props.add(key="clipxai", value="kept")
    onnx.save_model(model, str(path))
    return model


def _run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_light_copy_gives_the_same_model_without_holding_its_weights(tmp_path):
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    full = _model(src)
    out = tmp_path / "out"
    out.mkdir()
    tracemalloc.start()
    try:
        light = light_copy(src, out / "weights.data")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The weights never pass through Python (onnx.load would read all 16 MB into one bytes object).
    assert peak < 1 << 20, f"light_copy held {peak / 2 ** 20:.1f} MiB in Python"
    by_name = {t.name: t for t in light.graph.initializer}
    for name in ("W", "b", "W2"):
        t = by_name[name]
        assert t.data_location == TensorProto.EXTERNAL and not t.raw_data
        info = {e.key: e.value for e in t.external_data}
        assert info["location"] == "weights.data" and int(info["offset"]) % ALIGN == 0
    assert by_name["small"].data_location == TensorProto.DEFAULT  # 64 bytes: kept inline
    assert light.ByteSize() < 4096
    # Everything but the weights' storage is the model as onnx reads it.
    assert [n.SerializeToString() for n in light.graph.node] == [n.SerializeToString() for n in full.graph.node]
    assert light.metadata_props[0].value == "kept" and light.producer_name == "test"
    assert [(t.name, list(t.dims), t.data_type) for t in light.graph.initializer] == \
        [(t.name, list(t.dims), t.data_type) for t in full.graph.initializer]
    (out / "model.onnx").write_bytes(light.SerializeToString())
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 1024)).astype(np.float32),
             "s": np.arange(16, dtype=np.float32)}
    for got, want in zip(_run(out / "model.onnx", feeds), _run(src, feeds)):
        assert np.array_equal(got, want)


def test_light_copy_refuses_what_it_cannot_read_and_leaves_no_data_file(tmp_path):
    src = tmp_path / "model.onnx"
    _model(src)
    data = src.read_bytes()
    for name, content, words in (("empty.onnx", b"", "empty"),
                                 ("cut.onnx", data[: len(data) // 2], "truncated"),
                                 ("text.onnx", b"\x3f" * 64, "wire type")):
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=words):
            light_copy(bad, tmp_path / "w.data")
        assert not (tmp_path / "w.data").exists()
    # A model that already keeps its weights beside it: refused (a bundle is one file).
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save_model(onnx.load(str(src)), str(ext / "m.onnx"), save_as_external_data=True, location="m.data")
    with pytest.raises(ValueError, match="external data"):
        light_copy(ext / "m.onnx", tmp_path / "w.data")
    assert not (tmp_path / "w.data").exists()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    root = tmp_path_factory.mktemp("light")
    return export_bundle(ExportConfig(output=root / "tiny", classes=["kite", "sea"], backbone=TINY.name,
                                      pretrained="random", image_size=48)).path


def test_a_bundle_fuses_the_same_from_its_light_copy(bundle, tmp_path):
    light = light_copy(bundle / "model.onnx", tmp_path / "w.data")
    full = onnx.load(str(bundle / "model.onnx"))
    assert fuse_attention(light) == fuse_attention(full) > 0
    assert [n.SerializeToString() for n in light.graph.node] == [n.SerializeToString() for n in full.graph.node]
    (tmp_path / "fused.onnx").write_bytes(light.SerializeToString())
    (tmp_path / "full.onnx").write_bytes(full.SerializeToString())
    feeds = gc.probe_feeds(ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"]))
    for got, want in zip(_run(tmp_path / "fused.onnx", feeds), _run(tmp_path / "full.onnx", feeds)):
        assert np.array_equal(got, want)


def test_the_cache_builder_fuses_without_loading_the_whole_model(bundle, tmp_path, monkeypatch):
    def no_full_load(*args, **kwargs):
        raise AssertionError("the builder read the whole model with onnx.load")
    monkeypatch.setattr(onnx, "load", no_full_load)
    monkeypatch.setattr(onnx, "load_model", no_full_load)
    sha = json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    entry = gc.build(bundle / "model.onnx", sha, tmp_path / "cache")
    done = json.loads((entry / gc.DONE_FILE).read_text())
    assert done["attention_fused"] > 0
    assert sorted(p.name for p in entry.iterdir()) == sorted([gc.GRAPH_FILE, gc.DATA_FILE, gc.DONE_FILE])
