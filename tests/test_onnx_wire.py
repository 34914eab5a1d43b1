"""The onnx-free graph reader (external-data files, node names) and the weight-free cache builder."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clipxai.errors import BundleError
from clipxai.runtime.bundle import load_bundle
from clipxai.runtime.cpu import graph_cache as gc
from clipxai.runtime.onnx_wire import external_data_locations
from tiny import TINY


def _model_with_tensors_everywhere() -> onnx.ModelProto:
    """Weights as an initializer, in a Constant node's attribute and inside an If's subgraph."""
    big = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
        np.ones((64, 64), np.float32), "cval"))
    inner_w = numpy_helper.from_array(np.full((64, 64), 2.0, np.float32), "inner_w")
    branch = helper.make_graph([helper.make_node("MatMul", ["x", "inner_w"], ["y_then"])], "then", [],
                               [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [1, 64])],
                               initializer=[inner_w])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y_else"])], "else", [],
                              [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [1, 64])])
    nodes = [const, helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Add", ["a", "c"], ["b"]),
             helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
                                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 64])], initializer=[big])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _externalize(tensor: onnx.TensorProto, folder, location: str) -> None:
    """Move a tensor's bytes into ``folder/location`` in the ONNX external-data form."""
    (folder / location).write_bytes(tensor.raw_data)
    length = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def test_external_data_locations_in_graphs_attributes_and_subgraphs(tmp_path):
    model = _model_with_tensors_everywhere()
    g = model.graph
    _externalize(g.initializer[0], tmp_path, "w.bin")
    _externalize(next(n for n in g.node if n.op_type == "Constant").attribute[0].t, tmp_path, "const.bin")
    if_node = next(n for n in g.node if n.op_type == "If")
    then = next(a for a in if_node.attribute if a.name == "then_branch").g
    _externalize(then.initializer[0], tmp_path, "inner.bin")
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert external_data_locations(tmp_path / "m.onnx") == {"w.bin", "const.bin", "inner.bin"}
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.ones((1, 64), np.float32)
    y, b = sess.run(["y", "b"], {"x": x, "flag": np.array(True)})  # the files are what the graph loads
    assert np.allclose(y, 128.0) and np.allclose(b, np.arange(4096).reshape(64, 64).sum(0) + 1)
    onnx.save(_model_with_tensors_everywhere(), str(tmp_path / "single.onnx"))
    assert external_data_locations(tmp_path / "single.onnx") == set()
    (tmp_path / "bad.onnx").write_bytes(b"\x3a\xff\xff\xff")  # a graph field longer than the file
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        external_data_locations(tmp_path / "bad.onnx")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=tmp_path_factory.mktemp("wire") / "tiny", classes=["kite", "sea"],
                                      backbone=TINY.name, pretrained="random", image_size=48)).path


def test_bundles_keep_their_weights_beside_the_graph(bundle):
    b = load_bundle(bundle)
    assert b.graph_data_files == ("model.onnx.data",)
    assert set(b.manifest["files"]) >= {"model.onnx", "model.onnx.data"}
    assert (bundle / "model.onnx").stat().st_size < (bundle / "model.onnx.data").stat().st_size
    # readable like the graph beside it (onnx writes the data file 0600)
    assert (bundle / "model.onnx.data").stat().st_mode == (bundle / "model.onnx").stat().st_mode


def test_reading_a_graph_without_its_weights_holds_no_weights(tmp_path):
    """The library path the cache builder takes: onnx.load(load_external_data=False)."""
    w = numpy_helper.from_array(np.random.default_rng(0).random((2048, 2048), dtype=np.float32), "w")  # 16 MB
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2048])], initializer=[w])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data")
    tracemalloc.start()
    onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_the_cache_builder_fuses_without_loading_the_weights(bundle, tmp_path, monkeypatch):
    real = onnx.load

    def graph_only(path, *args, **kwargs):
        assert kwargs.get("load_external_data") is False, "the builder loaded the weights"
        return real(path, *args, **kwargs)
    monkeypatch.setattr(onnx, "load", graph_only)
    b = load_bundle(bundle)
    entry = gc.build(b.model_path, b.graph_files(), tmp_path / "cache")
    assert json.loads((entry / gc.DONE_FILE).read_text())["attention_fused"] > 0
    assert sorted(p.name for p in entry.iterdir()) == sorted([gc.GRAPH_FILE, gc.DATA_FILE, gc.DONE_FILE])


def test_an_older_single_file_bundle_is_cached_unfused(bundle, tmp_path):
    """Schema-2 bundles keep their weights in model.onnx: cached without attention fusion."""
    single = tmp_path / "single.onnx"
    onnx.save(onnx.load(str(bundle / "model.onnx")), str(single))
    from clipxai.common.files import sha256_file
    entry = gc.build(single, {single.name: sha256_file(single)}, tmp_path / "cache")
    assert json.loads((entry / gc.DONE_FILE).read_text())["attention_fused"] == 0
