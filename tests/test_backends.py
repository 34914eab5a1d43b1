"""One way to open a graph (clipxai/runtime/backends): the provider is resolved once, one backend runs
it, the CPU path never touches clipxai.runtime.nvidia, a GPU path never the CPU graph cache, every
graph has its own cache entry and its IO checked against the manifest."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from clipxai.contract import MODEL_FILE, TEXT_ENCODER_FILE, TEXT_EXPLAINER_FILE
from clipxai.errors import BundleError, ClipxaiError
from clipxai.runtime import NvidiaOptions, Predictor, RuntimeOptions, load_bundle
from clipxai.runtime import backends
from clipxai.runtime.backends import nvidia as nvidia_backend
from clipxai.runtime.cpu import graph_cache as gc
from clipxai.runtime.providers import CPU, CUDA, TRT
from tiny import TINY

ROCKET = str(__import__("pathlib").Path(__file__).parent.parent / "examples" / "rocket.jpg")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny bundle with all three graphs: image, text encoder, word explainer."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("backends") / "tiny"
    export_bundle(ExportConfig(output=out, classes=["rocket", "sky"], backbone=TINY.name, method="grad-eclip",
                               pretrained="random", image_size=32, text_encoder=True, text_explainer=True))
    return out


@pytest.fixture(autouse=True)
def _fresh_process_state():
    gc._unwritable.clear()


def _entries(root):
    graphs = root / "graphs"
    return sorted(p for p in graphs.iterdir() if not p.name.startswith(".")) if graphs.exists() else []


def test_the_provider_picks_one_backend(monkeypatch):
    assert backends.choose_backend(RuntimeOptions(providers="cpu")) == ("cpu", [CPU])
    assert backends.choose_backend(RuntimeOptions(nvidia=NvidiaOptions(backend="tensorrt"))) == ("tensorrt", None)
    # a provider no backend claims: a plain onnxruntime session
    assert backends.choose_backend(RuntimeOptions(providers=["AzureExecutionProvider"]))[0] == "onnxruntime"
    monkeypatch.setattr("clipxai.runtime.providers.ort.get_available_providers", lambda: [TRT, CUDA, CPU])
    assert backends.choose_backend(RuntimeOptions(providers="cuda")) == ("nvidia", [CUDA, CPU])
    assert backends.choose_backend(RuntimeOptions()) == ("nvidia", [TRT, CUDA, CPU])
    assert set(backends.PROVIDER_BACKENDS.values()) < set(backends.BACKENDS)
    for name in backends.BACKENDS:
        assert backends.load_backend(name).name == name
    with pytest.raises(ClipxaiError, match="unknown backend 'tvm'; use onnxruntime or tensorrt"):
        backends.choose_backend(RuntimeOptions(nvidia=NvidiaOptions(backend="tvm")))
    with pytest.raises(ClipxaiError, match="unknown provider 'tpu'"):
        backends.choose_backend(RuntimeOptions(providers="tpu"))


def test_options_or_keywords_not_both(bundle):
    opts = RuntimeOptions(providers=["CPUExecutionProvider"], graph_cache=False)
    assert opts.providers == ("CPUExecutionProvider",)  # kept as a tuple: the options stay immutable
    assert backends.runtime_options(None, providers="cpu", threads=2, nvidia=None).threads == 2
    with pytest.raises(TypeError, match="unexpected keyword argument .trt_fp16."):
        Predictor.from_bundle(bundle, trt_fp16=True)
    assert Predictor.from_bundle(bundle, options=opts).options is opts
    with pytest.raises(ClipxaiError, match="either as options=RuntimeOptions"):
        Predictor.from_bundle(bundle, providers="cpu", options=opts)


def test_a_cpu_load_never_imports_the_nvidia_modules(bundle, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from clipxai.runtime import Predictor
        p = Predictor.from_bundle({str(bundle)!r}, providers="cpu", graph_cache="sync", cache_dir={str(tmp_path)!r})
        p.set_classes(["a red rocket", "blue sky"], cache=False)
        p.explain_text({ROCKET!r}, "a rocket in the sky")
        p.predict({ROCKET!r})
        print(sorted(m for m in sys.modules if m.startswith("clipxai.runtime.nvidia")
                     or m == "clipxai.runtime.backends.nvidia"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert len(_entries(tmp_path)) == 3  # image, text encoder, word explainer: an entry each


class _FakeGpuSession:
    """What onnxruntime would give on a GPU: the CPU session's IO, CUDA first."""

    def __init__(self, real, providers):
        self._real, self._providers = real, providers

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_providers(self):
        return self._providers


def test_a_gpu_load_never_touches_the_cpu_graph_cache(bundle, tmp_path, monkeypatch):
    from clipxai.runtime.nvidia.iobinding import BoundSession
    from clipxai.runtime.providers import SessionOptions, load_graph, session_options
    b = load_bundle(bundle)
    monkeypatch.setattr("clipxai.runtime.providers.ort.get_available_providers", lambda: [TRT, CUDA, CPU])
    for name in ("resolve_mode", "cache_key", "lookup", "build", "start_background_build"):
        monkeypatch.setattr(gc, name, lambda *a, **k: pytest.fail("the CPU graph cache was used on a GPU load"))
    opened = []

    def fake_load(path, so, resolved):
        opened.append((path.name, resolved))
        real = load_graph(path, session_options(SessionOptions()), [CPU])
        return _FakeGpuSession(real, [p[0] if isinstance(p, tuple) else p for p in resolved])

    monkeypatch.setattr(nvidia_backend, "load_graph", fake_load)
    engine_dirs = []

    def fake_engine_dir(bundle_, resolved, trt_cache, fp16, device_id, cache_dir, graph=None, precision=None):
        engine_dirs.append((graph, precision))
        return str(tmp_path / "engines" / graph) if TRT in resolved else None

    monkeypatch.setattr(nvidia_backend.engine_cache, "ort_trt_cache_dir", fake_engine_dir)
    s = backends.open_graph(b, MODEL_FILE, RuntimeOptions(providers="cuda"))
    assert isinstance(s, BoundSession) and s.get_providers()[0] == CUDA
    t = backends.open_graph(b, TEXT_ENCODER_FILE, RuntimeOptions(providers="tensorrt", cache_dir=str(tmp_path)))
    assert isinstance(t, BoundSession) and t.get_providers()[0] == TRT
    # the TensorRT provider gets this graph's own engine folder
    assert opened[0] == (MODEL_FILE, [CUDA, CPU])
    name, (trt, *_rest) = opened[1]
    assert name == TEXT_ENCODER_FILE and trt[0] == TRT
    assert trt[1]["trt_engine_cache_path"] == str(tmp_path / "engines" / TEXT_ENCODER_FILE)
    assert engine_dirs == [(MODEL_FILE, "fp32"), (TEXT_ENCODER_FILE, "fp32")]
    assert not (tmp_path / "graphs").exists()
    # text graphs follow the image session: CUDA where it has CUDA, else the CPU
    opts = backends.text_options(RuntimeOptions(providers="cuda", threads=2), s)
    assert opts.providers == (CUDA,) and opts.threads == 2
    native = SimpleNamespace(get_providers=lambda: ["TensorRT (native engine)"])
    opts = backends.text_options(RuntimeOptions(nvidia=NvidiaOptions(backend="tensorrt", engine="x.engine")), native)
    assert opts.providers == (CPU,) and opts.nvidia.backend == "onnxruntime" and opts.nvidia.engine is None


def test_every_graph_has_its_own_cache_entry(bundle, tmp_path, caplog):
    b = load_bundle(bundle)
    opts = RuntimeOptions(providers="cpu", graph_cache="sync", cache_dir=str(tmp_path))
    for graph in (MODEL_FILE, TEXT_ENCODER_FILE, TEXT_EXPLAINER_FILE):
        backends.open_graph(b, graph, opts)
    keys = {json.loads((e / gc.DONE_FILE).read_text())["key"]["graph_sha256"]: e for e in _entries(tmp_path)}
    assert len(keys) == 3
    for graph in (MODEL_FILE, TEXT_ENCODER_FILE, TEXT_EXPLAINER_FILE):
        entry = gc.entry_dir(tmp_path, gc.cache_key(b.graph_files(graph)))
        assert json.loads((entry / gc.DONE_FILE).read_text())["key"]["files"] == b.graph_files(graph)
    # the text encoder's entry copied under the image graph's key is refused, never opened
    image = gc.entry_dir(tmp_path, gc.cache_key(b.graph_files(MODEL_FILE)))
    text = gc.entry_dir(tmp_path, gc.cache_key(b.graph_files(TEXT_ENCODER_FILE)))
    for name in (gc.GRAPH_FILE, gc.DATA_FILE, gc.DONE_FILE):
        shutil.copyfile(text / name, image / name)
    caplog.set_level(logging.WARNING, logger="clipxai")
    s = backends.open_graph(b, MODEL_FILE, opts)
    assert "discarding it" in caplog.text and {i.name for i in s.get_inputs()} >= {"image"}
    # a graph is never cached under another graph's files
    with pytest.raises(ClipxaiError, match="not one of the graph files"):
        gc.build(b.path / TEXT_ENCODER_FILE, b.graph_files(MODEL_FILE), tmp_path)


def test_every_graph_is_checked_against_the_manifest(bundle):
    b = load_bundle(bundle)
    real = backends.open_graph(b, TEXT_EXPLAINER_FILE, RuntimeOptions(providers="cpu", graph_cache=False))
    fake = SimpleNamespace(get_inputs=real.get_inputs, get_outputs=lambda: real.get_outputs()[:1])
    kept = real.get_outputs()[0].name
    with pytest.raises(BundleError, match=rf"text_explainer.onnx: graph outputs \['{kept}'\] differ from the "
                                          r"manifest's"):
        backends.graph_io.check_io(b, TEXT_EXPLAINER_FILE, fake)
    arg = real.get_inputs()[0]
    other = SimpleNamespace(name=arg.name, type="tensor(float)", shape=arg.shape)
    fake = SimpleNamespace(get_inputs=lambda: [other, *real.get_inputs()[1:]], get_outputs=real.get_outputs)
    with pytest.raises(BundleError, match=f"{arg.name} is tensor\\(float\\), the manifest says int64"):
        backends.graph_io.check_io(b, TEXT_EXPLAINER_FILE, fake)
    with pytest.raises(BundleError, match="encoder.onnx: not listed in the manifest"):
        backends.open_graph(b, "encoder.onnx", RuntimeOptions(providers="cpu"))
    with pytest.raises(BundleError, match="bpe_simple_vocab_16e6.txt.gz: not a graph clipxai runs"):
        backends.open_graph(b, "bpe_simple_vocab_16e6.txt.gz", RuntimeOptions(providers="cpu"))


def test_the_native_tensorrt_backend_runs_image_graphs_only(bundle):
    b = load_bundle(bundle)
    with pytest.raises(ClipxaiError, match="image graph only, not text_encoder.onnx"):
        backends.open_graph(b, TEXT_ENCODER_FILE, RuntimeOptions(nvidia=NvidiaOptions(backend="tensorrt")))


def test_outputs_through_the_cache_equal_the_bundle_graphs(bundle, tmp_path):
    plain = Predictor.from_bundle(bundle, providers="cpu", graph_cache=False)
    cached = Predictor.from_bundle(bundle, providers="cpu", graph_cache="sync", cache_dir=str(tmp_path))
    for p in (plain, cached):
        p.set_classes(["a red rocket", "blue sky", "smoke"], cache=False)
    a, c = plain.predict(ROCKET), cached.predict(ROCKET)
    assert np.abs(a.heatmaps_grid - c.heatmaps_grid).max() <= 1e-5 and np.abs(a.scores - c.scores).max() <= 1e-5
    ea, ec = plain.explain_text(ROCKET, "a rocket"), cached.explain_text(ROCKET, "a rocket")
    assert np.abs(ea.weights - ec.weights).max() <= 1e-5 and abs(ea.cosine - ec.cosine) <= 1e-5
    assert len(_entries(tmp_path)) == 3
