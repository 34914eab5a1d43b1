"""int8 and fp16 bundles: conversion, fidelity against the torch reference, and the gate."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import clipxai.export.precision as precision
from clipxai.errors import VerificationError
from clipxai.export.fidelity import compare_outputs, pearson, synthetic_scenes
from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.runtime import Predictor

from clipxai.models import reference as ref
from helpers import leftovers, read_manifest, run_bundle
from tiny import TINY, TINY_HEADS, TINY_SURGERY_BLOCKS

CLASSES = ["person", "bench", "ground", "building", "sky"]
SIZE = 64


def _export(tmp_path, name="b", **kw):
    cfg = ExportConfig(output=tmp_path / name, classes=CLASSES, backbone=TINY.name, pretrained="random",
                       image_size=SIZE, **kw)
    return export_bundle(cfg)


def _scene_batch(mean, std, n=4):
    imgs = synthetic_scenes(n, SIZE, seed=7).astype(np.float32) / 255.0
    x = (imgs - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _torch_reference(tiny_model, bundle, x):
    sd = {k: v.detach() for k, v in tiny_model.model.state_dict().items()}
    text = torch.from_numpy(np.load(bundle / "text_embeddings.npy"))
    with torch.no_grad():
        return [t.numpy() for t in ref.pipeline(sd, torch.from_numpy(x), text, "classes", TINY_HEADS,
                                                TINY_SURGERY_BLOCKS, quick_gelu=True)]


@pytest.mark.parametrize("prec,min_corr", [("int8", 0.98), ("fp16", 0.995)])
def test_lower_precision_bundle_tracks_the_torch_reference(tmp_path, tiny_model, prec, min_corr):
    res = _export(tmp_path, precision=prec)
    m = read_manifest(res.path)
    assert m["precision"] == prec
    f = m["fidelity"]
    assert f["passed"] and f["images"] == 8 and f["provider"] == "CPUExecutionProvider"
    assert f["correlation"] >= min_corr and f["pixel_agreement"] >= 0.95
    # Independent check: the shipped graph against the plain-torch reference pipeline.
    x = _scene_batch(m["preprocess"]["mean"], m["preprocess"]["std"])
    got = run_bundle(res.path, x)
    want = _torch_reference(tiny_model, res.path, x)
    assert all(g.dtype == np.float32 for g in got)
    n, k, g, _ = want[2].shape
    corr = pearson(got[2].reshape(n * k, g * g), want[2].reshape(n * k, g * g))
    assert corr.mean() >= min_corr, corr
    assert (got[1].argmax(-1) == want[1].argmax(-1)).mean() >= 0.75
    # The runtime takes it as any other bundle.
    pred = Predictor.from_bundle(res.path, providers="cpu").predict(np.zeros((40, 50, 3), np.uint8))
    assert pred.heatmaps.shape == (len(CLASSES), 40, 50)


def test_int8_graph_quantizes_weight_matmuls_only(tmp_path):
    res = _export(tmp_path, precision="int8")
    g = onnx.load(str(res.path / "model.onnx")).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("MatMulInteger") >= 5 * 4  # qkv, out, fc, proj per block at least
    assert "MatMul" in ops  # attention products stay fp32
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in list(g.input) + list(g.output))
    # One scale and zero point per output channel: every quantized weight [K, N] has N zero points.
    inits = {i.name: i for i in g.initializer}
    quantized = [n for n in g.node if n.op_type == "MatMulInteger"]
    for n in quantized:
        w, zero = inits[n.input[1]], inits[n.input[3]]
        assert len(w.dims) == 2 and list(zero.dims) == [w.dims[1]], (n.name, w.dims, zero.dims)
    assert len(quantized) >= 5 * 4
    # The class row's key folding (a [H, d, C] weight) has no per-channel form: it stays fp32.
    kept = read_manifest(res.path)["fidelity"]["conversion"]["kept_fp32"]
    assert len(kept) == 1 and kept[0] in {n.name for n in g.node if n.op_type == "MatMul"}


def test_fp16_graph_keeps_unsafe_ops_in_fp32(tmp_path):
    res = _export(tmp_path, precision="fp16")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(res.path / "model.onnx")))
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
    checked = 0
    for node in g.node:
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceMin", "ReduceMax"):
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, (node.name, node.op_type)
            checked += 1
    assert checked >= 2 * 5
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in list(g.input) + list(g.output))


def _broken_int8(src, dst, exclude=()):
    """A deliberately broken 'quantizer': the real one, then every weight matrix scrambled."""
    desc = precision.to_int8(src, dst, exclude)
    model = onnx.load(str(dst))
    rng = np.random.default_rng(0)
    for t in model.graph.initializer:
        a = onnx.numpy_helper.to_array(t)
        if a.ndim == 2 and a.size > 1000:
            t.CopyFrom(onnx.numpy_helper.from_array(rng.permutation(a.reshape(-1)).reshape(a.shape), t.name))
    onnx.save(model, str(dst))
    return desc


def test_fidelity_gate_refuses_a_broken_graph(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(precision.CONVERTERS, "int8", _broken_int8)
    with pytest.raises(VerificationError, match=r"fails the fidelity gate: heatmap correlation -?0\.\d+ < 0\.98; segmentation pixel agreement"):
        _export(tmp_path, precision="int8")
    assert not (tmp_path / "b").exists() and leftovers(tmp_path) == []
    # --force writes it, and the manifest says it failed.
    res = _export(tmp_path, precision="int8", force=True)
    f = read_manifest(res.path)["fidelity"]
    assert f["passed"] is False and f["correlation"] < 0.98
    # ... and the runtime says so when it loads it.
    caplog.set_level(logging.WARNING, logger="clipxai")
    Predictor.from_bundle(res.path, providers="cpu")
    assert "FAILED its fidelity gate" in caplog.text


def test_cli_precision_reports_fidelity(tmp_path):
    from clipxai.export.cli import main
    out = tmp_path / "b"
    r = CliRunner().invoke(main, ["--backbone", TINY.name, "--pretrained", "random", "--classes", "cat,dog",
                                  "--image-size", str(SIZE), "--precision", "int8", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "int8 fidelity vs fp32 (8 images, CPUExecutionProvider): heatmap correlation" in r.output
    assert "PASSED gate" in r.output
    assert json.loads((out / "manifest.json").read_text())["precision"] == "int8"
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["--backbone", TINY.name, "--pretrained", "random", "--classes", "cat,dog",
                                  "--precision", "int8", "--fidelity-images", str(empty), "--output",
                                  str(tmp_path / "c")])
    assert r.exit_code == 2 and "no .jpg/.png" in r.output and not (tmp_path / "c").exists()


def test_fidelity_metrics():
    a = np.array([[0, 1, 2, 3], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 0, 1]], np.float32)
    b = np.array([[0, 2, 4, 6], [1, 1, 1, 1], [0, 1, 2, 3], [1, 0, 1, 0]], np.float32)
    assert np.allclose(pearson(a, b), [1.0, 1.0, 0.0, -1.0])
    rng = np.random.default_rng(0)
    outs = [rng.random((2, 16, 3)).astype(np.float32), rng.random((2, 3)).astype(np.float32),
            rng.random((2, 3, 4, 4)).astype(np.float32)]
    same = compare_outputs(outs, outs, 32)
    assert same["correlation"] == pytest.approx(1.0) and same["pixel_agreement"] == 1.0
    flipped = [-outs[0], outs[1][:, ::-1], 1 - outs[2]]
    worse = compare_outputs(outs, flipped, 32)
    assert worse["correlation"] == pytest.approx(-1.0) and worse["pixel_agreement"] < 0.9
    assert worse["top1_agreement"] <= 0.5
