"""The OpenVINO backend (clipxai/runtime/backends/openvino.py): every graph kind equals onnxruntime's
outputs within 1e-4 in fp32; bf16 only on a CPU with native bf16 and a bundle whose bf16 gate passed
(else refused, or fp32 with a note on a CPU without it, simulated); one-line errors; the compiled-model
cache is bound to its key and a tampered entry is discarded. Only OpenVINO's CPU device is tested."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from clipxai.common.system import CpuInfo  # noqa: E402
from clipxai.contract import (  # noqa: E402
    MASK_DECODER_FILE, MASK_ENCODER_FILE, MODEL_FILE, TEXT_ENCODER_FILE, TEXT_EXPLAINER_FILE,
)
from clipxai.errors import ClipxaiError  # noqa: E402
from clipxai.runtime import Predictor, RuntimeOptions, load_bundle  # noqa: E402
from clipxai.runtime import backends  # noqa: E402
from clipxai.runtime.backends import OpenVINOOptions, openvino_cache  # noqa: E402
from clipxai.runtime.backends import openvino as ovb  # noqa: E402
from tiny import TINY  # noqa: E402
from tiny_sam import TINY_SAM, TINY_SAM2, save_checkpoint  # noqa: E402

ROCKET = str(Path(__file__).parent.parent / "examples" / "rocket.jpg")
TOL = 1e-4


@pytest.fixture(scope="module")
def clip_bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("ov") / "tiny"
    export_bundle(ExportConfig(output=out, classes=["rocket", "sky"], backbone=TINY.name, method="grad-eclip",
                               pretrained="random", image_size=32, text_encoder=True, text_explainer=True))
    return out


@pytest.fixture(scope="module")
def sam_bundles(tmp_path_factory):
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    root = tmp_path_factory.mktemp("ov-sam")
    out = {}
    for row in (TINY_SAM, TINY_SAM2):
        save_checkpoint(row, root / row.checkpoint, seed=3)
        out[row.family] = export_mask_bundle(SamExportConfig(model=row.name, checkpoint=root / row.checkpoint,
                                                             output=root / row.name, bf16=False)).path
    return out


def _feeds(session, seed=0):
    """Inputs for any graph: floats in [0, 1) at its fixed dims (dynamic dims 2), integers in [0, 5)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in arg.shape]
        if arg.type == "tensor(float)":
            feeds[arg.name] = rng.random(shape, dtype=np.float32)
        else:
            feeds[arg.name] = rng.integers(0, 5, shape).astype(np.int64)
    return feeds


def _compare(bundle, graph, tmp_path, feeds=None):
    ort_s = backends.open_graph(bundle, graph, RuntimeOptions(providers="cpu", graph_cache=False))
    ov_s = backends.open_graph(bundle, graph, RuntimeOptions(providers="openvino", cache_dir=str(tmp_path)))
    assert ov_s.get_providers() == ["OpenVINO:CPU"]
    feeds = feeds or _feeds(ort_s)
    names = [o.name for o in ort_s.get_outputs()]
    for name, want, got in zip(names, ort_s.run(names, feeds), ov_s.run(names, feeds)):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert np.abs(got.astype(np.float64) - want).max() <= TOL, (graph, name)


@pytest.mark.parametrize("graph", [MODEL_FILE, TEXT_ENCODER_FILE])
def test_clip_graphs_equal_onnxruntime_in_fp32(clip_bundle, graph, tmp_path):
    _compare(load_bundle(clip_bundle), graph, tmp_path)


def test_the_word_explainer_equals_onnxruntime_and_stays_fp32(clip_bundle, tmp_path, monkeypatch):
    """The word explainer picks its end-token rows with Gather, not GatherElements, which OpenVINO 2026.4's
    CPU plugin could not compile on a slice of the qkv MatMul (clipxai/models/text_explainer.py: _row).
    Asked for bf16, it stays fp32 (only the image graph and mask encoder run bf16)."""
    b = load_bundle(clip_bundle)
    _compare(b, TEXT_EXPLAINER_FILE, tmp_path)
    ref = Predictor.from_bundle(clip_bundle, providers="cpu", graph_cache=False)
    ov = Predictor.from_bundle(clip_bundle, providers="openvino", cache_dir=str(tmp_path))
    texts = ["a red rocket launching into the blue sky", "sky"]
    for want, got in zip(ref.explain_text(ROCKET, texts), ov.explain_text(ROCKET, texts)):
        assert np.abs(got.weights - want.weights).max() <= TOL and abs(got.cosine - want.cosine) <= TOL
    monkeypatch.setattr(ovb, "cpu_info", lambda: _cpu(["avx512f", "avx512_bf16"]))
    passed = _with_bf16_record(b, {"passed": True, "correlation": 0.999, "pixel_agreement": 0.99})
    opts = RuntimeOptions(providers="openvino", cache_dir=str(tmp_path), openvino=OpenVINOOptions(precision="bf16"))
    assert backends.open_graph(passed, TEXT_EXPLAINER_FILE, opts).precision == "fp32"


def test_an_older_word_explainer_is_refused_with_what_to_do(tmp_path, monkeypatch):
    """A bundle whose explainer still takes its rows with GatherElements (as before the fix): one line that
    names the operator and says to export again or use the CPU provider."""
    import torch

    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.models import text_explainer
    monkeypatch.setattr(text_explainer, "_row", lambda t, i: t.gather(
        1, i.reshape(-1, 1, 1).expand(-1, 1, t.shape[2])).squeeze(1))
    torch.manual_seed(0)
    out = tmp_path / "old"
    export_bundle(ExportConfig(output=out, classes=["rocket", "sky"], backbone=TINY.name, method="grad-eclip",
                               pretrained="random", image_size=32, text_encoder=True, text_explainer=True))
    opts = RuntimeOptions(providers="openvino", cache_dir=str(tmp_path / "c"))
    with pytest.raises(ClipxaiError, match=r"operator GatherElements .*export the bundle again or use "
                                           r"--providers cpu") as e:
        backends.open_graph(load_bundle(out), TEXT_EXPLAINER_FILE, opts)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_mask_graphs_equal_onnxruntime_in_fp32(sam_bundles, family, tmp_path):
    b = load_bundle(sam_bundles[family], kind="mask-model")
    _compare(b, MASK_ENCODER_FILE, tmp_path)
    enc = backends.open_graph(b, MASK_ENCODER_FILE, RuntimeOptions(providers="cpu", graph_cache=False))
    features = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, _feeds(enc))))
    dec = backends.open_graph(b, MASK_DECODER_FILE, RuntimeOptions(providers="cpu", graph_cache=False))
    feeds = {a.name: features[a.name] for a in dec.get_inputs() if a.name in features}
    feeds["point_coords"] = np.array([[[10.0, 12.0], [40.0, 30.0]]], np.float32)
    feeds["point_labels"] = np.array([[1.0, 0.0]], np.float32)
    _compare(b, MASK_DECODER_FILE, tmp_path, feeds)


@pytest.mark.parametrize("graph", ["memory_attention.onnx", "memory_encoder.onnx", "track_decoder.onnx"])
def test_tracking_graphs_equal_onnxruntime_in_fp32(sam_bundles, graph, tmp_path):
    """SAM 2.1's tracking graphs (a bank of 2 memories and 2 pointers for 2 objects) on OpenVINO fp32."""
    _compare(load_bundle(sam_bundles["sam2"], kind="mask-model"), graph, tmp_path)


def test_the_predictor_on_openvino_equals_onnxruntime(clip_bundle, tmp_path):
    ref = Predictor.from_bundle(clip_bundle, providers="cpu", graph_cache=False)
    ov = Predictor.from_bundle(clip_bundle, providers="openvino", cache_dir=str(tmp_path))
    assert ov.provider == "OpenVINO:CPU"
    for p in (ref, ov):  # class encodings made by the text encoder, on the backend
        p.set_classes(["a red rocket", "blue sky"], cache=False)
    a, b = ref.predict(ROCKET), ov.predict(ROCKET)
    assert np.abs(a.heatmaps_grid - b.heatmaps_grid).max() <= TOL and np.abs(a.scores - b.scores).max() <= TOL
    assert np.abs(a.similarity - b.similarity).max() <= TOL


def test_openvino_is_one_backend_and_its_errors_are_one_line(clip_bundle, tmp_path, monkeypatch):
    assert backends.choose_backend(RuntimeOptions(providers="openvino")) == ("openvino", None)
    assert backends.choose_backend(RuntimeOptions(providers="OpenVINO")) == ("openvino", None)
    b = load_bundle(clip_bundle)
    with pytest.raises(ClipxaiError, match=r"OpenVINO could not compile the graph on NPU \(") as e:
        backends.open_graph(b, MODEL_FILE, RuntimeOptions(providers="openvino", cache_dir=str(tmp_path),
                                                          openvino=OpenVINOOptions(device="NPU")))
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    import openvino
    with pytest.raises(ClipxaiError, match="OpenVINO could not compile") as e:
        ovb.compile_graph(openvino.Core(), bad, "CPU", {})
    assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ClipxaiError, match=r"^OpenVINO is not installed; .*clipxai\[openvino\]"):
        backends.open_graph(b, MODEL_FILE, RuntimeOptions(providers="openvino"))


def _with_bf16_record(bundle, record):
    return dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, bf16_fidelity=record))


def _cpu(flags):
    return CpuInfo("x86_64", "simulated", tuple(flags))


def test_bf16_only_with_a_passed_gate_and_a_cpu_that_has_it(clip_bundle, tmp_path, monkeypatch, caplog):
    b = _with_bf16_record(load_bundle(clip_bundle), None)
    bf16 = OpenVINOOptions(precision="bf16")
    monkeypatch.setattr(ovb, "cpu_info", lambda: _cpu(["avx512f", "avx512_bf16"]))
    # never measured, or failed: refused in one line, unless forced
    with pytest.raises(ClipxaiError, match="bf16 refused: its bf16 fidelity was never measured") as e:
        ovb.precision_for(b, MODEL_FILE, bf16)
    assert "\n" not in str(e.value)
    failed = _with_bf16_record(b, {"passed": False, "correlation": 0.5, "pixel_agreement": 0.4})
    with pytest.raises(ClipxaiError, match="failed the fidelity gate"):
        ovb.precision_for(failed, MODEL_FILE, bf16)
    with caplog.at_level(logging.WARNING, logger="clipxai"):
        assert ovb.precision_for(failed, MODEL_FILE, dataclasses.replace(bf16, force_precision=True)) == "bf16"
    assert "forced" in caplog.text
    passed = _with_bf16_record(b, {"passed": True, "correlation": 0.999, "pixel_agreement": 0.99})
    assert ovb.precision_for(passed, MODEL_FILE, bf16) == "bf16"
    for graph in (TEXT_ENCODER_FILE, TEXT_EXPLAINER_FILE):  # text graphs stay fp32
        assert ovb.precision_for(passed, graph, bf16) == "fp32"
    # a CPU without native bf16 (simulated): a note and fp32, whatever the bundle says
    monkeypatch.setattr(ovb, "cpu_info", lambda: _cpu(["avx512f", "avx2"]))
    monkeypatch.setattr("clipxai.common.cache._reported", set())
    with caplog.at_level(logging.WARNING, logger="clipxai"):
        assert ovb.precision_for(passed, MODEL_FILE, bf16) == "fp32"
    assert "this CPU has no native bf16" in caplog.text
    with pytest.raises(ClipxaiError, match="unknown OpenVINO precision 'fp8'"):
        ovb.precision_for(passed, MODEL_FILE, OpenVINOOptions(precision="fp8"))


def test_bf16_outputs_pass_the_bf16_gate(clip_bundle, tmp_path, monkeypatch):
    if not ovb.native_bf16():
        pytest.skip("this CPU has no native bf16")
    from clipxai.export.fidelity import GATES, compare_outputs, gate_failures, synthetic_scenes
    from clipxai.export.fidelity import preprocess_images
    b = load_bundle(clip_bundle)
    # the exporter measured bf16 in OpenVINO (this CPU has it) and recorded the int8 gate's verdict
    record = b.manifest.bf16_fidelity
    assert record["provider"] == "OpenVINO:CPU bf16" and record["gate"] == {"correlation": 0.98,
                                                                             "pixel_agreement": 0.95}
    assert record["passed"] is (record["correlation"] >= 0.98 and record["pixel_agreement"] >= 0.95)
    passed = _with_bf16_record(b, {"passed": True, "correlation": 1.0, "pixel_agreement": 1.0})
    x = preprocess_images(synthetic_scenes(4, 32), b.manifest.preprocess.mean, b.manifest.preprocess.std)
    ref_p = Predictor.from_bundle(clip_bundle, providers="cpu", graph_cache=False)
    feeds = ref_p.graph_feeds(x)
    names = ["similarity", "scores", "heatmaps"]
    ref = ref_p.session.run(names, feeds)
    opts = RuntimeOptions(providers="openvino", cache_dir=str(tmp_path), openvino=OpenVINOOptions(precision="bf16"))
    s = backends.open_graph(passed, MODEL_FILE, opts)
    assert s.precision == "bf16"
    report = compare_outputs(ref, s.run(names, feeds), 32)
    assert not gate_failures(report, GATES["bf16"]), report


def test_the_compiled_model_cache_is_keyed_and_checked(clip_bundle, tmp_path, caplog):
    b = load_bundle(clip_bundle)
    opts = RuntimeOptions(providers="openvino", cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="clipxai"):
        first = backends.open_graph(b, MODEL_FILE, opts)
        assert "filled (model.onnx)" in caplog.text
        caplog.clear()
        loaded = backends.open_graph(b, MODEL_FILE, opts)
        assert "loaded (model.onnx)" in caplog.text
    import gc
    gc.collect()  # the imported model reads a mapped blob: the session must keep the mapping alive
    for x, y in zip(first.run(None, _feeds(first)), loaded.run(None, _feeds(first))):
        assert np.array_equal(x, y)
    folders = [p for p in (tmp_path / "openvino").iterdir()]
    assert len(folders) == 1 and oct(folders[0].stat().st_mode & 0o777) == "0o700"
    blobs = [p for p in folders[0].iterdir() if p.suffix == ".blob"]
    assert blobs and all(oct(p.stat().st_mode & 0o777) == "0o600" for p in blobs)
    with blobs[0].open("r+b") as f:  # tampered: the same size, other bytes
        f.seek(blobs[0].stat().st_size // 2)
        f.write(b"\x00\x01\x02\x03")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clipxai"):
        again = backends.open_graph(b, MODEL_FILE, opts)
    assert "sha256 mismatch); discarding it" in caplog.text and "filled (model.onnx)" in caplog.text
    feeds = _feeds(first)
    for x, y in zip(first.run(None, feeds), again.run(None, feeds)):
        assert np.array_equal(x, y)
    # an entry of another key (another bundle's digest, say) is never used
    record = folders[0] / openvino_cache.RECORD
    key = json.loads(record.read_text())["key"]
    assert openvino_cache.entry_dir(tmp_path, key) == folders[0]
    other = dict(key, graph_sha256="0" * 64)
    assert openvino_cache.entry_dir(tmp_path, other) != folders[0]
    record.write_text(record.read_text().replace(key["graph_sha256"], "0" * 64))
    with caplog.at_level(logging.WARNING, logger="clipxai"):
        assert not openvino_cache.check_entry(folders[0], key)
    assert "record is of another key" in caplog.text


def test_the_runtime_flags_build_the_openvino_options():
    from click.testing import CliRunner

    from clipxai.cli import options as opt
    from clipxai.cli.main import main
    key, value = opt._runtime("openvino", 2, None, False, None, "bf16", True, "GPU")
    assert key == "runtime" and value.providers == "openvino" and value.threads == 2
    assert value.openvino == OpenVINOOptions(device="GPU", precision="bf16", force_precision=True)
    with pytest.raises(ClipxaiError, match="OpenVINO's: add --providers openvino"):
        opt._runtime("cpu", None, None, False, None, "bf16", False, "CPU")
    r = CliRunner().invoke(main, ["segment", "--help"])
    assert r.exit_code == 0 and "--precision" in r.output and "--ov-device" in r.output and "openvino" in r.output


def test_the_exporter_records_no_bf16_fidelity_on_a_cpu_without_it(tmp_path, monkeypatch):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    monkeypatch.setattr(ovb, "cpu_info", lambda: _cpu(["avx512f", "avx2"]))  # simulated
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=["rocket", "sky"], backbone=TINY.name,
                                     pretrained="random", image_size=32))
    assert res.manifest.bf16_fidelity is None
    assert "bf16_fidelity" not in json.loads((tmp_path / "b" / "manifest.json").read_text())
    with pytest.raises(ClipxaiError, match="never measured"):
        monkeypatch.setattr(ovb, "cpu_info", lambda: _cpu(["avx512_bf16"]))
        backends.open_graph(load_bundle(tmp_path / "b"), MODEL_FILE, RuntimeOptions(
            providers="openvino", cache_dir=str(tmp_path), openvino=OpenVINOOptions(precision="bf16")))
