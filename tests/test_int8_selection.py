"""Accuracy-aware int8 (clipxai/export/int8_selection.py): exact per-layer errors, the selection, and
int8 bundles that pass their gate on several random weights without --force."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from clipxai.export import int8_selection as sel
from clipxai.export.precision import to_int8
from helpers import read_manifest
from tiny import TINY


def _matmul_model(path, w):
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, w.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, w.shape[1]])],
                              initializer=[numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_simulated_error_is_onnxruntimes_int8_arithmetic(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(96, 40)).astype(np.float32)
    _matmul_model(tmp_path / "m.onnx", w)
    logging.getLogger().setLevel(logging.ERROR)
    to_int8(tmp_path / "m.onnx", tmp_path / "q.onnx")
    wq, wscale = sel._quantized_weights(onnx.load(str(tmp_path / "q.onnx")), [sel.Layer("mm", "w", (96, 40), 0)])["mm"]
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    for x in (rng.normal(size=(1, 17, 96)).astype(np.float32),              # both signs
              np.abs(rng.normal(size=(1, 5, 96))).astype(np.float32) + 1,  # all positive: zero point 0
              np.zeros((1, 3, 96), np.float32)):                           # constant: scale 0
        got = sess.run(["y"], {"x": x})[0]
        want = x @ w + sel.int8_error(x, w, wq, wscale)
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(got).max())
    assert np.abs(sel.int8_error(x, w, wq, wscale)).max() == 0  # zeros quantize exactly


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=tmp_path_factory.mktemp("i8") / "b", classes=["a", "b", "c", "d"],
                                      backbone=TINY.name, pretrained="random:5", image_size=48)).path


def test_injecting_the_error_equals_quantizing_that_layer_alone(fp32_bundle, tmp_path):
    """The measurement's premise: fp32 graph + δ at one layer = the graph with that layer alone int8."""
    from clipxai.export.fidelity import preprocess_images, run_outputs, synthetic_scenes
    src = fp32_bundle / "model.onnx"
    model = onnx.load(str(src), load_external_data=False)
    layers = sel.find_layers(model)
    logging.getLogger().setLevel(logging.ERROR)
    to_int8(src, tmp_path / "all.onnx")
    x = preprocess_images(synthetic_scenes(1, 48), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    groups = sel.group_layers(model, layers)
    # the class heads (scores, similarity, and the labels' global and local paths) share the text weights
    head = next(g for g in groups if not g.label.startswith("block") and len(g.layers) >= 2)
    for members in ([layers[1]], [layer for layer in layers if layer.name in head.layers]):
        names = [layer.name for layer in members]
        to_int8(src, tmp_path / "one.onnx", exclude=[layer.name for layer in layers if layer.name not in names])
        want = run_outputs(tmp_path / "one.onnx", x)
        # the injected outputs, through the measurement's own functions
        nodes = {n.name: n for n in model.graph.node}
        cap = ort.InferenceSession(str(sel._save_beside(sel.capture_graph(model, members), src, ".t-cap.onnx")))
        inj = ort.InferenceSession(str(sel._save_beside(sel.injection_graph(model, members), src, ".t-inj.onnx")))
        for name in (".t-cap.onnx", ".t-inj.onnx"):
            (fp32_bundle / name).unlink()
        wq = sel._quantized_weights(onnx.load(str(tmp_path / "all.onnx")), members)
        feeds = {"image": x}
        for i, layer in enumerate(members):
            xin = cap.run([nodes[layer.name].input[0]], {"image": x})[0]
            feeds[f"delta{i}"] = sel.int8_error(xin, _weight(model, layer.weight, fp32_bundle), *wq[layer.name])
        got = inj.run(["similarity", "scores", "heatmaps"], feeds)
        for g, w in zip(got, want):
            assert np.abs(g - w).max() <= 1e-4, names
    group = sel.Group(0, "head", head.layers, 0.0)
    sel.measure_sensitivity(src, tmp_path / "all.onnx", layers, [group], x, {}, run_outputs(src, x))
    assert group.figures["images"] == 1 and 0 <= group.figures["pixel_agreement"] <= 1 and group.damage >= 0


def _weight(model, name, folder):
    from onnx.external_data_helper import load_external_data_for_tensor
    t = onnx.TensorProto()
    t.CopyFrom(next(i for i in model.graph.initializer if i.name == name))
    if t.data_location == TensorProto.EXTERNAL:
        load_external_data_for_tensor(t, str(folder))
    return numpy_helper.to_array(t)


def _fake_groups(damages):
    layers, groups = [], []
    for i, d in enumerate(damages):
        layers.append(sel.Layer(f"mm{i}", f"w{i}", (8, 8), 100.0, group=i))
        groups.append(sel.Group(i, f"g{i}", [f"mm{i}"], 100.0, damage=d))
    return layers, groups


def _figures(pixel):
    return {"images": 8, "correlation": 0.999, "correlation_min": 0.99, "pixel_agreement": pixel,
            "top1_agreement": 1.0, "max_abs_heatmap_error": 0.01}


def test_selection_keeps_the_groups_that_break_the_margin_alone(tmp_path):
    layers, groups = _fake_groups([0.3, 2.5, 0.1, 1.4])
    made = []

    def quantize(dst, kept):
        made.append(sorted(kept))
        dst.write_text("candidate")

    def evaluate(path):  # passes once mm1 and mm3 stay fp32
        return _figures(0.97 if {"mm1", "mm3"} <= set(made[-1]) else 0.93)
    choice, path = sel.select(tmp_path, layers, groups, quantize, evaluate)
    assert made == [["mm1", "mm3"]]  # both alone exceed the slack: kept from the start, one candidate
    assert choice.kept_fp32 == ["mm1", "mm3"] and choice.passed_margin and path.exists()
    assert choice.int8_flop_share == 0.5 and len(choice.tried) == 1


def test_selection_adds_groups_until_the_margin_and_reports_a_miss(tmp_path):
    layers, groups = _fake_groups([0.6, 0.9, 0.2, 0.1, 0.05])
    made = []

    def quantize(dst, kept):
        made.append(set(kept))
        dst.write_text("c")
    choice, _ = sel.select(tmp_path, layers, groups, quantize, lambda p: _figures(0.97 if len(made[-1]) >= 2 else 0.94))
    assert made == [set(), {"mm1"}, {"mm1", "mm0"}] and choice.passed_margin
    assert [t["passed_margin"] for t in choice.tried] == [False, False, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8-k2.onnx"]  # the others removed
    # nothing helps: it stops before less than half the FLOPs would be int8, and says it missed
    layers, groups = _fake_groups([0.6, 0.9, 0.2, 0.1, 0.05])
    choice, _ = sel.select(tmp_path, layers, groups, lambda d, k: d.write_text("c"), lambda p: _figures(0.90))
    assert not choice.passed_margin and choice.int8_flop_share >= sel.MIN_INT8_SHARE
    assert len(choice.tried) == 3  # k = 0, 1, 2 (k = 3 would leave 40% in int8)


@pytest.mark.parametrize("seed, classes", [(1, "person,car,tree,road,sky"), (2, "dog,cat,grass,sofa,wall"),
                                           (3, "boat,water,bird,cloud,rock")])
def test_int8_passes_its_gate_on_other_weights_without_force(tmp_path, seed, classes):
    from clipxai.export.cli import main
    out = tmp_path / "b"
    r = CliRunner().invoke(main, ["--backbone", TINY.name, "--pretrained", f"random:{seed}", "--classes", classes,
                                  "--image-size", "48", "--precision", "int8", "--output", str(out), "--report"])
    assert r.exit_code == 0, r.output
    assert "| layer | group | weight |" in r.stdout and "int8 layers: " in r.stdout
    f = read_manifest(out)["fidelity"]
    conv = f["conversion"]
    assert f["passed"] and f["correlation"] >= 0.98 and f["pixel_agreement"] >= 0.95
    assert isinstance(conv["sensitive_fp32"], list) and set(conv["sensitive_fp32"]) <= set(conv["kept_fp32"])
    assert 0.5 <= conv["int8_flop_share"] <= 1.0 and conv["tried"] and conv["groups"]
    assert conv["passed_margin"] == (f["correlation"] >= sel.MARGIN.correlation
                                     and f["pixel_agreement"] >= sel.MARGIN.pixel_agreement)
    q = onnx.load(str(out / "model.onnx"), load_external_data=False)
    kept = {n.name for n in q.graph.node if n.op_type == "MatMul"}
    assert set(conv["sensitive_fp32"]) <= kept  # what the manifest says stayed fp32 did


def test_int8_layers_all_quantizes_every_weight_matmul(tmp_path):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=["a", "b"], backbone=TINY.name,
                                     pretrained="random:1", image_size=32, precision="int8", int8_layers="all",
                                     force=True))
    conv = res.manifest["fidelity"]["conversion"]
    assert "sensitive_fp32" not in conv
    m = json.loads((res.path / "manifest.json").read_text())
    assert m["precision"] == "int8"
