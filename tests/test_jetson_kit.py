"""NVIDIA / Jetson kit, the parts that run without a GPU: trtexec argument mapping, engine-cache
keys, provider options, backend selection and errors, IO binding logic, the benchmark's phase
split, and lint of the shell scripts and the Dockerfile."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from clipxai.errors import ClipxaiError
from clipxai.common.files import sha256_file
from clipxai.runtime import NvidiaOptions, Predictor, load_bundle
from clipxai.runtime.nvidia import engine_cache
from clipxai.runtime.onnx_wire import Node, read_nodes
from clipxai.manifest import ClipManifest, Graph, TensorSpec
from clipxai.runtime.nvidia.trt_args import FP32_OPS, plan_from_manifest
from tiny import TINY

ROOT = Path(__file__).resolve().parent.parent
JETSON = ROOT / "jetson"
ROCKET = ROOT / "examples" / "rocket.jpg"
TRT = "TensorrtExecutionProvider"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("kit") / "b"
    return export_bundle(ExportConfig(output=out, classes=["sky", "rocket"], backbone=TINY.name,
                                      pretrained="random", image_size=32)).path


@pytest.fixture
def bundle_copy(bundle, tmp_path):
    return Path(shutil.copytree(bundle, tmp_path / "b"))


@pytest.fixture
def fake_machine(monkeypatch):
    """Pretend TensorRT 10.3.0 on a Jetson AGX Orin; tests change the dict to change the machine."""
    from clipxai.runtime.nvidia import gpu_info
    machine = {"trt": "10.3.0", "gpu": gpu_info.Gpu("Orin", "8.7")}
    monkeypatch.setattr(gpu_info, "tensorrt_version", lambda: machine["trt"])
    monkeypatch.setattr(gpu_info, "gpu", lambda device_id=0: machine["gpu"])
    return machine


def manifest(size: int, precision: str = "fp32", batch="batch", shape=None) -> ClipManifest:
    """The fields plan_from_manifest reads (the constructor checks nothing; load_bundle's from_dict does)."""
    image = TensorSpec.of("float32", shape or [batch, 3, size, size])
    return ClipManifest(image_size=size, precision=precision, graph=Graph(inputs={"image": image}, outputs={}))


NODES = [Node("/conv/Conv", "Conv"), Node("/ln_pre/LayerNormalization", "LayerNormalization"),
         Node("/attn/MatMul", "MatMul"), Node("/attn/Softmax", "Softmax"), Node("/norm/ReduceL2", "ReduceL2"),
         Node("/norm/Div", "Div"), Node("/maps/ReduceMin", "ReduceMin"), Node("/maps/ReduceMax", "ReduceMax"),
         Node("/maps/Sub", "Sub"), Node("/mlp/Gelu", "Erf")]
PINNED = ["/ln_pre/LayerNormalization", "/attn/Softmax", "/norm/ReduceL2", "/norm/Div", "/maps/ReduceMin",
          "/maps/ReduceMax", "/maps/Sub"]


# ---- the ONNX node reader (no onnx package in the runtime) ------------------------------------------------

def test_node_reader_agrees_with_onnx(bundle):
    want = [(n.name, n.op_type) for n in onnx.load(str(bundle / "model.onnx")).graph.node]
    assert [tuple(n) for n in read_nodes(bundle / "model.onnx")] == want
    assert sum(op == "LayerNormalization" for _, op in want) > 0


def test_node_reader_refuses_garbage(tmp_path):
    from clipxai.errors import BundleError
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # field 7, length far past the end
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        read_nodes(bad)


# ---- manifest -> trtexec arguments --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [224, 448])
def test_fp32_args(size):
    args = plan_from_manifest(manifest(size), "/b/model.onnx", nodes=NODES).trtexec_args()
    assert args == ["--onnx=/b/model.onnx", f"--minShapes=image:1x3x{size}x{size}",
                    f"--optShapes=image:1x3x{size}x{size}", f"--maxShapes=image:4x3x{size}x{size}"]


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("source", ["fp16", "fp32"])
def test_fp16_args_pin_fragile_layers_to_fp32(size, source):
    plan = plan_from_manifest(manifest(size, source), "/b/model.onnx", precision="fp16", max_batch=8, opt_batch=2,
                              nodes=NODES)
    args = plan.trtexec_args()
    pins = ",".join(f"{n}:fp32" for n in PINNED)
    assert args == ["--onnx=/b/model.onnx", f"--minShapes=image:1x3x{size}x{size}",
                    f"--optShapes=image:2x3x{size}x{size}", f"--maxShapes=image:8x3x{size}x{size}", "--fp16",
                    "--precisionConstraints=obey", f"--layerPrecisions={pins}", f"--layerOutputTypes={pins}"]
    assert "/attn/MatMul" not in args[-1] and "/mlp/Gelu" not in args[-1]


def test_fp16_pins_can_be_overridden():
    none = plan_from_manifest(manifest(224, "fp16"), "m.onnx", fp32_layers="none", nodes=NODES).trtexec_args()
    assert "--fp16" in none and not any(a.startswith("--precisionConstraints") for a in none)
    some = plan_from_manifest(manifest(224, "fp16"), "m.onnx", fp32_layers="/attn/Softmax", nodes=NODES)
    assert some.trtexec_args()[-2:] == ["--layerPrecisions=/attn/Softmax:fp32", "--layerOutputTypes=/attn/Softmax:fp32"]
    with pytest.raises(ClipxaiError, match="no node named '/nope'"):
        plan_from_manifest(manifest(224, "fp16"), "m.onnx", fp32_layers="/nope", nodes=NODES)


def test_int8_needs_explicit_quantization():
    qdq = NODES + [Node("/q/QuantizeLinear", "QuantizeLinear"), Node("/q/DequantizeLinear", "DequantizeLinear")]
    args = plan_from_manifest(manifest(224, "int8"), "m.onnx", nodes=qdq).trtexec_args()
    assert "--int8" in args and "--fp16" in args and "--precisionConstraints=obey" in args
    with pytest.raises(ClipxaiError, match="QuantizeLinear/DequantizeLinear"):
        plan_from_manifest(manifest(224, "int8"), "m.onnx", nodes=NODES)


def test_precision_and_batch_errors():
    with pytest.raises(ClipxaiError, match="a fp16 bundle builds fp16 engines, not fp32"):
        plan_from_manifest(manifest(224, "fp16"), "m.onnx", precision="fp32", nodes=NODES)
    with pytest.raises(ClipxaiError, match="a fp32 bundle builds fp32 or fp16 engines, not int8"):
        plan_from_manifest(manifest(224), "m.onnx", precision="int8", nodes=NODES)
    with pytest.raises(ClipxaiError, match="bundle precision 'bf16'"):
        plan_from_manifest(manifest(224, "bf16"), "m.onnx", nodes=NODES)
    with pytest.raises(ClipxaiError, match="1 <= min"):
        plan_from_manifest(manifest(224), "m.onnx", min_batch=4, max_batch=2, nodes=NODES)
    fixed = plan_from_manifest(manifest(448, batch=2), "m.onnx", nodes=NODES)
    assert (fixed.min_batch, fixed.opt_batch, fixed.max_batch) == (2, 2, 2)
    with pytest.raises(ClipxaiError, match="fixed batch of 2"):
        plan_from_manifest(manifest(448, batch=2), "m.onnx", max_batch=8, nodes=NODES)
    bad = manifest(224, shape=["batch", 3, 224, 225])
    with pytest.raises(ClipxaiError, match="expected \\[batch, 3, 224, 224\\]"):
        plan_from_manifest(bad, "m.onnx", nodes=NODES)


def test_cli_args_for_a_real_bundle(bundle):
    r = subprocess.run([sys.executable, "-m", "clipxai.cli.trt_args", str(bundle), "--precision", "fp16",
                        "--max-batch", "2"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    args = r.stdout.splitlines()
    assert args[:5] == [f"--onnx={bundle / 'model.onnx'}", "--minShapes=image:1x3x32x32",
                        "--optShapes=image:1x3x32x32", "--maxShapes=image:2x3x32x32", "--fp16"]
    graph = onnx.load(str(bundle / "model.onnx")).graph.node
    pinned = {p.rsplit(":", 1)[0] for p in args[6].split("=", 1)[1].split(",")}
    assert pinned == {n.name for n in graph if n.op_type in FP32_OPS}
    assert {"LayerNormalization", "Softmax"} <= {n.op_type for n in graph if n.name in pinned}
    bad = subprocess.run([sys.executable, "-m", "clipxai.cli.trt_args", str(bundle), "--precision", "int8"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: a fp32 bundle builds") and "Traceback" not in bad.stderr


# ---- engine cache keys --------------------------------------------------------------------------------------

def test_key_changes_with_trt_version_gpu_precision_model_and_builder():
    base = dict(builder="trtexec", trt_version="8.5.2", gpu="Orin sm87", precision="fp16", model_sha256="a" * 64)
    slugs = {engine_cache.EngineKey(**base).slug()}
    for field, value in [("trt_version", "8.6.2"), ("gpu", "Orin sm72"), ("gpu", "NVIDIA H100 sm90"),
                         ("precision", "fp32"), ("precision", "int8"), ("model_sha256", "b" * 64),
                         ("builder", "ort1.20.0")]:
        slugs.add(engine_cache.EngineKey(**{**base, field: value}).slug())
    assert len(slugs) == 8
    assert engine_cache.EngineKey(**base).slug() == "trtexec__trt8.5.2__Orin-sm87__fp16__aaaaaaaaaaaaaaaa"
    with pytest.raises(ClipxaiError, match="engine precision 'bf16'"):
        engine_cache.EngineKey(**{**base, "precision": "bf16"})


def test_engine_precision():
    assert engine_cache.engine_precision("fp32") == "fp32"
    assert engine_cache.engine_precision("fp32", trt_fp16=True) == "fp16"
    assert engine_cache.engine_precision("fp16") == "fp16"
    assert engine_cache.engine_precision("int8", trt_fp16=True) == "int8"


def test_foreign_engine_is_never_reused(bundle_copy, fake_machine):
    b = load_bundle(bundle_copy)
    root = engine_cache.default_root(b)
    key = engine_cache.current_key(b, "trtexec", "fp16")
    d = engine_cache.key_dir(root, key)
    (d / "model.engine").write_bytes(b"engine for TensorRT 10.3 on Orin")
    with pytest.raises(ClipxaiError, match="not the engine build_engine.sh recorded"):  # no engine.json yet
        engine_cache.find_engine(b, "fp16")
    (d / "engine.json").write_text(json.dumps({"engine_sha256": sha256_file(d / "model.engine")}))
    assert engine_cache.find_engine(b, "fp16") == d / "model.engine"
    (d / "model.engine").write_bytes(b"engine for TensorRT 10.3 on Orin, changed")  # swapped after the build
    with pytest.raises(ClipxaiError, match="not the engine build_engine.sh recorded"):
        engine_cache.find_engine(b, "fp16")
    (d / "engine.json").write_text(json.dumps({"engine_sha256": sha256_file(d / "model.engine")}))
    # a new TensorRT, another GPU, another precision: another folder, and no engine there
    for change in ({"trt": "10.4.0"}, {"gpu": type(fake_machine["gpu"])("Orin", "7.2")}):
        saved = dict(fake_machine)
        fake_machine.update(change)
        other = engine_cache.current_key(b, "trtexec", "fp16")
        assert other.slug() != key.slug()
        with pytest.raises(ClipxaiError, match="no TensorRT engine for .*build it with: jetson/build_engine.sh"):
            engine_cache.find_engine(b, "fp16")
        assert not any(engine_cache.key_dir(root, other).glob("*.engine"))
        fake_machine.update(saved)
    with pytest.raises(ClipxaiError, match="no TensorRT engine"):
        engine_cache.find_engine(b, "fp32")
    # a folder copied in from elsewhere under this key's name: refused by find_engine, emptied by key_dir
    forged = dict(key.as_dict(), trt_version="8.5.2")
    (d / "key.json").write_text(json.dumps(forged))
    with pytest.raises(ClipxaiError, match="does not match this machine's key"):
        engine_cache.find_engine(b, "fp16")
    engine_cache.key_dir(root, key)
    assert not (d / "model.engine").exists() and engine_cache.matches(d, key)


def test_ort_tensorrt_cache_dir(bundle_copy, fake_machine, monkeypatch, tmp_path):
    import onnxruntime as ort
    b = load_bundle(bundle_copy)
    # without a TensorRT provider there is no cache (resolve_providers reports the missing provider)
    if TRT not in ort.get_available_providers():
        assert engine_cache.ort_trt_cache_dir(b, "tensorrt", None, False) is None
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, "CPUExecutionProvider"])
    assert engine_cache.ort_trt_cache_dir(b, "cpu", None, False) is None
    assert engine_cache.ort_trt_cache_dir(b, [TRT], "off", False) is None
    d32 = Path(engine_cache.ort_trt_cache_dir(b, [TRT, "CPUExecutionProvider"], None, False))
    d16 = Path(engine_cache.ort_trt_cache_dir(b, "tensorrt", None, True))
    assert d32.parent == d16.parent == engine_cache.default_root(b) and d32 != d16
    assert not (bundle_copy / "engines").exists()  # never inside the bundle
    assert d16.name.startswith(f"ort{ort.__version__}__trt10.3.0__Orin-sm87__fp16__")
    assert json.loads((d16 / "key.json").read_text())["model_sha256"] == b.graph_digest
    custom = Path(engine_cache.ort_trt_cache_dir(b, "trt", str(tmp_path / "cache"), False))
    assert custom.parent == tmp_path / "cache"
    # the user cache, one folder per graph digest
    monkeypatch.setenv("CLIPXAI_CACHE_DIR", str(tmp_path / "user"))
    user = Path(engine_cache.ort_trt_cache_dir(b, "tensorrt", None, False))
    assert user.parent == tmp_path / "user" / "engines" / b.graph_digest[:16]
    assert stat.S_IMODE(user.stat().st_mode) == 0o700


def test_tensorrt_provider_options(monkeypatch, tmp_path):
    from clipxai.runtime import providers
    monkeypatch.setattr(providers.ort, "get_available_providers",
                        lambda: [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"])
    out = providers.resolve_providers("auto", providers.SessionOptions(trt_fp16=True, trt_cache_dir=str(tmp_path)))
    assert [p[0] if isinstance(p, tuple) else p for p in out] == [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = out[0][1]
    assert opts["trt_fp16_enable"] and opts["trt_layer_norm_fp32_fallback"]
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_timing_cache_path"] == str(tmp_path)
    plain = providers.resolve_providers("tensorrt", providers.SessionOptions())[0][1]
    assert plain == {"trt_fp16_enable": False}


# ---- backends -----------------------------------------------------------------------------------------------

def test_native_backend_missing_dependencies(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ClipxaiError, match="needs TensorRT's Python API.*python3-libnvinfer"):
        Predictor.from_bundle(bundle, nvidia=NvidiaOptions(backend="tensorrt"))
    monkeypatch.setitem(sys.modules, "tensorrt", type(sys)("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ClipxaiError, match="needs cuda-python"):
        Predictor.from_bundle(bundle, nvidia=NvidiaOptions(backend="tensorrt"))


def test_backend_errors(bundle):
    with pytest.raises(ClipxaiError, match="unknown backend 'tvm'"):
        Predictor.from_bundle(bundle, nvidia=NvidiaOptions(backend="tvm"))
    with pytest.raises(ClipxaiError, match="engine= is for backend='tensorrt'"):
        Predictor.from_bundle(bundle, providers="cpu", nvidia=NvidiaOptions(engine="x.engine"))
    p = Predictor.from_bundle(bundle, providers="cpu")
    assert type(p.session).__name__ == "InferenceSession"  # CPU: never wrapped in IO binding
    assert not (bundle / "engines").exists()  # no TensorRT provider, no cache folder


def test_io_binding_matches_plain_run(bundle):
    """The binding logic (input slots reused per shape, outputs allocated by onnxruntime) on the CPU
    device; on a GPU the same code runs with device "cuda" (tests/test_gpu.py)."""
    from clipxai.runtime.nvidia.iobinding import BoundSession, maybe_bind
    p = Predictor.from_bundle(bundle, providers="cpu")
    assert maybe_bind(p.session) is p.session
    bound = BoundSession(p.session, device="cpu")
    rng = np.random.default_rng(0)
    names = ["similarity", "scores", "heatmaps"]
    for batch in (1, 3, 1):
        x = rng.normal(size=(batch, 3, 32, 32)).astype(np.float32)
        want = p.session.run(names, {"image": x})
        got, times = bound.run_timed(names, {"image": x})
        for w, g in zip(want, got):
            assert g.shape == w.shape and np.array_equal(g, w)
        assert set(times) == {"h2d_ms", "compute_ms", "d2h_ms"} and min(times.values()) >= 0
    assert bound.get_providers() == p.session.get_providers()
    p.session = bound  # the Predictor runs through it unchanged
    assert np.array_equal(p.predict(ROCKET).heatmaps_grid, Predictor.from_bundle(bundle, providers="cpu")
                          .predict(ROCKET).heatmaps_grid)


# ---- benchmark ----------------------------------------------------------------------------------------------

def test_benchmark_phases_on_cpu(bundle):
    from clipxai.runtime.latency import PHASES, benchmark, time_batch
    p = Predictor.from_bundle(bundle, providers="cpu")
    one = time_batch(p, [ROCKET, ROCKET])
    assert one["h2d_ms"] is None and one["d2h_ms"] is None  # no device copies on the CPU
    assert all(one[k] > 0 for k in ("pre_ms", "compute_ms", "post_ms"))
    assert one["total_ms"] >= one["pre_ms"] + one["compute_ms"] + one["post_ms"] - 1e-6
    rows = benchmark(p, ROCKET, (1, 2), runs=2, warmup=0)
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(set(PHASES) <= set(r) and r["images_per_s"] > 0 for r in rows)


def test_benchmark_uses_the_sessions_copy_timings(bundle):
    from clipxai.runtime.latency import time_batch

    class Timed:
        def __init__(self, session):
            self.session = session

        def run_timed(self, names, feeds):
            return self.session.run(names, feeds), {"h2d_ms": 1.5, "compute_ms": 2.5, "d2h_ms": 0.5}

    p = Predictor.from_bundle(bundle, providers="cpu")
    p.session = Timed(p.session)
    t = time_batch(p, [ROCKET])
    assert (t["h2d_ms"], t["compute_ms"], t["d2h_ms"]) == (1.5, 2.5, 0.5)


def test_latency_table_writer(tmp_path):
    from clipxai.runtime.latency import format_rows
    from latency_table import TABLE_END, TABLE_START, write_table
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{TABLE_START}\nold\n{TABLE_END}\nafter\n")
    rows = [{"batch": 4, "pre_ms": 1.0, "h2d_ms": None, "compute_ms": 3.25, "d2h_ms": None, "post_ms": 2.0,
             "total_ms": 6.25, "images_per_s": 640.0}]
    meta = {"device": "CPU", "power_mode": "n/a", "backend": "cpu", "precision": "fp32", "image_size": 224}
    write_table(readme, format_rows(rows, meta), "measured on a test")
    text = readme.read_text()
    assert "old" not in text and text.startswith("# x\n\nbefore\n") and text.endswith("after\n")
    assert "| CPU | n/a | cpu | fp32 | 224 | 4 | 1.00 | n/a | 3.25 | n/a | 2.00 | 6.25 | 640.0 |" in text
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(ClipxaiError, match="no <!-- latency-table:start -->"):
        write_table(tmp_path / "plain.md", [], "")


def test_benchmark_script_on_cpu(bundle):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    r = subprocess.run(["bash", str(JETSON / "benchmark.sh"), str(bundle), "--providers", "cpu", "--runs", "1",
                        "--warmup", "0", "--batch", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "n/a (not a Jetson)" in r.stdout and "H2D ms" in r.stdout
    assert "no device copies" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("| CPU ")


# ---- build_engine.sh with a stand-in trtexec ------------------------------------------------------------------

FAKE_TRTEXEC = """#!/usr/bin/env bash
set -euo pipefail
echo "[I] TensorRT version: ${FAKE_VERSION}"
printf '%s\\n' "$@" > "${FAKE_ARGS}"
[ "${FAKE_FAIL:-0}" = 1 ] && { echo "[E] parser error"; exit 1; }
for a in "$@"; do case "$a" in --saveEngine=*) echo serialized > "${a#--saveEngine=}";; esac; done
"""


def _build(bundle_dir, tmp_path, *extra, fail=False, version="10.3.0"):
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), TRTEXEC=str(fake), FAKE_VERSION=version,
               CLIPXAI_CACHE_DIR=str(tmp_path / "cache"),
               FAKE_ARGS=str(tmp_path / "args.txt"), FAKE_FAIL="1" if fail else "0")
    return subprocess.run(["bash", str(JETSON / "build_engine.sh"), str(bundle_dir), "--trt-version", "10.3.0",
                           "--gpu", "Orin sm87", *extra], capture_output=True, text=True, env=env, timeout=300)


def test_build_engine_script(bundle_copy, tmp_path):
    r = _build(bundle_copy, tmp_path, "--precision", "fp16", "--", "--workspace=1024")
    assert r.returncode == 0, r.stderr
    b = load_bundle(bundle_copy)
    dirs = list(engine_cache.default_root(b, tmp_path / "cache").iterdir())
    assert [d.name for d in dirs] == [f"trtexec__trt10.3.0__Orin-sm87__fp16__{b.graph_digest[:16]}"]
    assert not (bundle_copy / "engines").exists()
    d = dirs[0]
    assert (d / "model.engine").read_text() == "serialized\n" and not (d / "model.engine.partial").exists()
    passed = (tmp_path / "args.txt").read_text().splitlines()
    assert "--fp16" in passed and "--precisionConstraints=obey" in passed and passed[-1] == "--workspace=1024"
    assert f"--saveEngine={d / 'model.engine.partial'}" in passed
    record = json.loads((d / "engine.json").read_text())
    assert record["key"]["precision"] == "fp16" and record["key"]["gpu"] == "Orin sm87"
    assert record["engine_sha256"] == sha256_file(d / "model.engine")
    assert load_bundle(bundle_copy)  # the bundle itself still verifies


def test_build_engine_script_failures(bundle_copy, tmp_path):
    engines = engine_cache.default_root(load_bundle(bundle_copy), tmp_path / "cache")
    r = _build(bundle_copy, tmp_path, fail=True)
    assert r.returncode == 1 and "trtexec failed" in r.stderr and "[E] parser error" in r.stderr
    assert not list(engines.glob("*/model.engine*"))
    r = _build(bundle_copy, tmp_path, version="8.6.2")
    assert r.returncode == 1 and "trtexec is TensorRT 8.6.2 but Python sees TensorRT 10.3.0" in r.stderr
    assert not list(engines.glob("*/model.engine*"))
    r = _build(bundle_copy, tmp_path, "--precision", "int8")
    assert r.returncode != 0 and "a fp32 bundle builds fp32 or fp16 engines, not int8" in r.stderr
    r = _build(tmp_path / "missing", tmp_path)
    assert r.returncode == 1 and "not a bundle directory" in r.stderr


# ---- lint ---------------------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    """A linter from the test environment (the test extra installs it); missing is a failure, not a skip."""
    path = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert path, f"{name} is not installed; pip install -e '.[test]' (it is in the test extra)"
    return path


@pytest.mark.parametrize("script", sorted(str(p.relative_to(ROOT)) for p in [*JETSON.glob("*.sh"),
                                                                              *(ROOT / "scripts").glob("*.sh"),
                                                                              *(ROOT / "scripts" / "gpu").glob("*.sh")]))
def test_shell_scripts_pass_shellcheck(script):
    r = subprocess.run([_tool("shellcheck"), "--severity=style", script], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_jetson_scripts_are_strict_and_executable():
    for script in JETSON.glob("*.sh"):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text, script
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_dockerfile_passes_hadolint():
    r = subprocess.run([_tool("hadolint"), "jetson/Dockerfile"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (JETSON / "Dockerfile").read_text()
    assert "nvcr.io/nvidia/l4t-jetpack:" in text and "onnxruntime-gpu" in text
    assert "torch" not in text.replace("no torch", "")


def test_build_engine_script_builds_both_graphs_of_a_mask_model(tmp_path):
    """A mask-model bundle (clipxai-export-sam): an encoder engine with fixed shapes and a decoder engine
    whose prompt sets and points are dynamic, each under its own key (stand-in trtexec)."""
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    from clipxai.runtime.nvidia.trt_args import mask_plan
    from tiny_sam import TINY_SAM, save_checkpoint
    save_checkpoint(TINY_SAM, tmp_path / "t.pth")
    bundle = export_mask_bundle(SamExportConfig(model="tiny-sam", checkpoint=tmp_path / "t.pth",
                                                output=tmp_path / "sam", verify=False, bf16=False)).path
    b = load_bundle(bundle, kind="mask-model")
    dec = mask_plan(b.manifest, b.path, "decoder", precision="fp16").trtexec_args()
    assert "--minShapes=image_embeddings:1x256x64x64,point_coords:1x1x2,point_labels:1x1" in dec
    assert "--maxShapes=image_embeddings:1x256x64x64,point_coords:16x64x2,point_labels:16x64" in dec
    assert "--fp16" in dec
    enc = mask_plan(b.manifest, b.path, "encoder").trtexec_args()
    assert enc[1:4] == ["--minShapes=image:1x3x1024x1024"] * 1 + ["--optShapes=image:1x3x1024x1024",
                                                                   "--maxShapes=image:1x3x1024x1024"]
    r = _build(bundle, tmp_path, "--precision", "fp16")
    assert r.returncode == 0, r.stderr
    engines = sorted((tmp_path / "cache" / "engines").rglob("model.engine"))
    assert len(engines) == 2 and "(encoder)" in r.stdout and "(decoder)" in r.stdout
    for e in engines:
        assert json.loads((e.parent / "engine.json").read_text())["engine_sha256"] == sha256_file(e)
    assert engines[0].parent.name != engines[1].parent.name  # one key per graph
