"""GPU checks of the NVIDIA path (marked gpu; scripts/test.sh deselects them, run with -m gpu).

They run where an NVIDIA GPU and onnxruntime-gpu are present, TensorRT tests where TensorRT
(Python API, plus cuda-python for the native backend) is installed too, and skip otherwise.
Every figure is checked against the independent PyTorch reference (clipxai/models/reference.py) on the CPU.

NOT RUN YET: no GPU was available when they were written (see jetson/README.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipxai.runtime import NvidiaOptions, Predictor, load_bundle
from clipxai.runtime.nvidia import engine_cache
from test_runtime import CLASSES, ROCKET, reference_prediction
from tiny import TINY

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent
CUDA, TRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _has_cuda() -> bool:
    import onnxruntime as ort
    if CUDA not in ort.get_available_providers():
        return False
    try:
        from clipxai.runtime.nvidia import gpu_info
        gpu_info.gpu()
        return True
    except Exception:  # noqa: BLE001
        return False


def _has_trt_ep() -> bool:
    import onnxruntime as ort
    try:
        from clipxai.runtime.nvidia import gpu_info
        gpu_info.tensorrt_version()
    except Exception:  # noqa: BLE001
        return False
    return _has_cuda() and TRT in ort.get_available_providers()


def _has_native_trt() -> bool:
    try:
        from clipxai.runtime.nvidia.tensorrt_backend import import_tensorrt
        import_tensorrt()
    except Exception:  # noqa: BLE001
        return False
    return _has_cuda()


needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="no NVIDIA GPU with onnxruntime-gpu (CUDA provider)")
needs_trt_ep = pytest.mark.skipif(not _has_trt_ep(), reason="onnxruntime has no usable TensorRT provider")
needs_native = pytest.mark.skipif(not _has_native_trt(), reason="no TensorRT Python API + cuda-python + GPU")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=tmp_path_factory.mktemp("gpu") / "tiny32", classes=CLASSES,
                                      backbone=TINY.name, pretrained="random", image_size=32)).path


@pytest.fixture(scope="module")
def reference(tiny_bundle, tiny_model):
    return reference_prediction(tiny_model.model, tiny_bundle, Image.open(ROCKET).convert("RGB"))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest per-class Pearson correlation of two [K, H, W] heatmap stacks."""
    return min(float(np.corrcoef(x.ravel(), y.ravel())[0, 1]) for x, y in zip(a, b))


def native_engine(bundle: Path, precision: str, max_batch: int = 4) -> Path:
    """Build (TensorRT Python API, same plan as build_engine.sh) into this machine's key folder."""
    from clipxai.runtime.nvidia.tensorrt_backend import build_engine_python
    from clipxai.runtime.nvidia.trt_args import plan_from_manifest
    b = load_bundle(bundle)
    plan = plan_from_manifest(b.manifest, b.model_path, precision=precision, max_batch=max_batch)
    d = engine_cache.key_dir(engine_cache.default_root(b), engine_cache.current_key(b, engine_cache.TRTEXEC, precision))
    return build_engine_python(plan, d / engine_cache.ENGINE_FILE)


# ---- parity and fidelity ------------------------------------------------------------------------------------

@needs_cuda
def test_cuda_fp32_parity(tiny_bundle, reference):
    from clipxai.runtime.nvidia.iobinding import BoundSession
    p = Predictor.from_bundle(tiny_bundle, providers="cuda")
    assert p.provider == CUDA and isinstance(p.session, BoundSession)
    pred = p.predict(ROCKET)
    sim, scores, maps = reference
    assert np.abs(pred.heatmaps - maps).max() <= 1e-3
    assert np.abs(pred.similarity - sim).max() <= 1e-3 and np.abs(pred.scores - scores).max() <= 1e-3
    batch = p.predict_batch([ROCKET] * 3, batch_size=3)
    assert all(np.abs(q.heatmaps_grid - pred.heatmaps_grid).max() <= 1e-5 for q in batch)


@needs_trt_ep
def test_tensorrt_provider_parity_and_engine_cache(tiny_bundle, reference, tmp_path):
    cache = tmp_path / "cache"
    p = Predictor.from_bundle(tiny_bundle, providers="tensorrt", nvidia=NvidiaOptions(trt_cache_dir=str(cache)))
    assert p.provider == TRT
    pred = p.predict(ROCKET)
    assert np.abs(pred.heatmaps - reference[2]).max() <= 1e-3
    (key_dir,) = list(cache.iterdir())
    engines = sorted(key_dir.glob("*.engine"))
    assert engines, f"onnxruntime wrote no engine into {key_dir}"
    stamps = [e.stat().st_mtime_ns for e in engines]
    p2 = Predictor.from_bundle(tiny_bundle, providers="tensorrt", nvidia=NvidiaOptions(trt_cache_dir=str(cache)))
    assert np.abs(p2.predict(ROCKET).heatmaps - pred.heatmaps).max() <= 1e-5
    assert [e.stat().st_mtime_ns for e in engines] == stamps  # reused, not rebuilt
    # a foreign key.json (engine from another TensorRT): the folder is emptied and rebuilt
    (key_dir / "key.json").write_text('{"trt_version": "0.0.0"}')
    on_trt = NvidiaOptions(trt_cache_dir=str(cache))
    Predictor.from_bundle(tiny_bundle, providers="tensorrt", nvidia=on_trt).predict(ROCKET)
    key = engine_cache.EngineKey(**json.loads((key_dir / "key.json").read_text()))
    assert key.trt_version != "0.0.0" and engine_cache.matches(key_dir, key) and list(key_dir.glob("*.engine"))


@needs_native
def test_native_tensorrt_parity(tiny_bundle, reference, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    native_engine(bundle, "fp32", max_batch=2)
    p = Predictor.from_bundle(bundle, nvidia=NvidiaOptions(backend="tensorrt"))
    assert p.provider == "TensorRT (native engine)"
    pred = p.predict(ROCKET)
    sim, scores, maps = reference
    assert np.abs(pred.heatmaps - maps).max() <= 1e-3
    assert np.abs(pred.similarity - sim).max() <= 1e-3 and np.abs(pred.scores - scores).max() <= 1e-3
    many = p.predict_batch([ROCKET] * 5, batch_size=5)  # above the engine's max batch: run in chunks
    assert len(many) == 5 and all(np.abs(q.heatmaps - maps).max() <= 1e-3 for q in many)
    _, t = p.session.run_timed(None, {"image": np.zeros((1, 3, 32, 32), np.float32)})
    assert t["h2d_ms"] > 0 and t["compute_ms"] > 0 and t["d2h_ms"] > 0


FP16_PATHS = ["onnxruntime-tensorrt", "native-tensorrt", "fp16-bundle-cuda"]


@pytest.mark.parametrize("path", FP16_PATHS)
def test_fp16_fidelity(path, tiny_bundle, reference, tmp_path):
    """fp16 keeps CLIP's heatmaps: per-class correlation with the fp32 PyTorch reference >= 0.995."""
    maps = reference[2]
    if path == "onnxruntime-tensorrt":
        if not _has_trt_ep():
            pytest.skip("onnxruntime has no usable TensorRT provider")
        p = Predictor.from_bundle(tiny_bundle, providers="tensorrt",
                                  nvidia=NvidiaOptions(trt_fp16=True, trt_cache_dir=str(tmp_path)))
    elif path == "native-tensorrt":
        if not _has_native_trt():
            pytest.skip("no TensorRT Python API + cuda-python + GPU")
        bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
        native_engine(bundle, "fp16")
        p = Predictor.from_bundle(bundle, nvidia=NvidiaOptions(backend="tensorrt", trt_fp16=True))
    else:
        from clipxai.contract import PRECISIONS
        from clipxai.export.pipeline import ExportConfig, export_bundle
        if not _has_cuda():
            pytest.skip("no NVIDIA GPU with onnxruntime-gpu")
        if "fp16" not in PRECISIONS or "precision" not in {f.name for f in dataclasses.fields(ExportConfig)}:
            pytest.skip("this exporter has no fp16 bundles yet (issue 4)")
        b16 = export_bundle(ExportConfig(output=tmp_path / "b16", classes=CLASSES, backbone=TINY.name,
                                         pretrained="random", image_size=32, precision="fp16")).path
        p = Predictor.from_bundle(b16, providers="cuda")
    pred = p.predict(ROCKET)
    assert np.isfinite(pred.heatmaps).all()
    assert correlation(pred.heatmaps, maps) >= 0.995


# ---- latency table ------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_cuda
def test_latency_table(tmp_path):
    """ViT-B/16 (random weights) at 224 and 448, fp32 and fp16, batch 1 and 4, phase split, written into
    jetson/README.md when CLIPXAI_RECORD_LATENCY=1 (else into a copy, to check the writer)."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.runtime.latency import benchmark, describe_device, format_rows
    from latency_table import write_table
    if _has_native_trt():
        configs = [("tensorrt", "fp32"), ("tensorrt", "fp16")]
    elif _has_trt_ep():
        configs = [("ort-trt", "fp32"), ("ort-trt", "fp16")]
    else:
        pytest.skip("fp16 on the GPU needs TensorRT (native or onnxruntime's provider)")
    lines = []
    for size in (224, 448):
        bundle = export_bundle(ExportConfig(output=tmp_path / f"vitb16-{size}", classes=CLASSES, backbone="ViT-B/16",
                                            pretrained="random", image_size=size, verify=False)).path
        for backend, precision in configs:
            fp16 = precision == "fp16"
            if backend == "tensorrt":
                native_engine(bundle, precision)
                p = Predictor.from_bundle(bundle, nvidia=NvidiaOptions(backend="tensorrt", trt_fp16=fp16))
            else:
                p = Predictor.from_bundle(bundle, providers="tensorrt", nvidia=NvidiaOptions(trt_fp16=fp16))
            rows = benchmark(p, ROCKET, (1, 4), runs=30, warmup=5)
            assert all(r["h2d_ms"] is not None and r["d2h_ms"] is not None and r["compute_ms"] > 0 for r in rows)
            meta = {"device": describe_device(p), "power_mode": os.environ.get("CLIPXAI_POWER_MODE", "n/a"),
                    "backend": backend if backend == "tensorrt" else p.provider,
                    "precision": "fp32->fp16 engine" if fp16 else "fp32", "image_size": size}
            lines += format_rows(rows, meta)
    assert len(lines) == 8
    readme = ROOT / "jetson" / "README.md"
    if os.environ.get("CLIPXAI_RECORD_LATENCY") != "1":
        readme = Path(shutil.copy(readme, tmp_path / "README.md"))
    write_table(readme, lines, "Measured by tests/test_gpu.py::test_latency_table (medians of 30 runs, random "
                               "ViT-B/16 weights, examples/rocket.jpg).")
    assert all(line in readme.read_text() for line in lines)
