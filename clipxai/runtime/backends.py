"""Which engine runs a bundle: onnxruntime (any provider) or a native TensorRT engine.

``open_session`` returns an object with the InferenceSession slice the
Predictor uses. For onnxruntime it wires in the keyed TensorRT engine cache
(``engine_cache``) and, on CUDA/TensorRT, IO binding (``iobinding``); for
"tensorrt" it loads the engine built by jetson/build_engine.sh
(``tensorrt_backend``).
"""

from __future__ import annotations

from pathlib import Path

from clipxai.contract import MODEL_FILE
from clipxai.errors import ClipxaiError

BACKENDS = ("onnxruntime", "tensorrt")


def open_session(bundle, backend: str = "onnxruntime", providers="auto", threads: int | None = None,
                 trt_fp16: bool = False, trt_cache: str | None = None, engine: str | Path | None = None,
                 device_id: int = 0, graph_cache: bool | str = True, cache_dir: str | None = None):
    """A session for ``bundle``. trt_cache: None (BUNDLE/engines or the user cache), "off", or a folder."""
    if backend == "tensorrt":
        from clipxai.runtime.tensorrt_backend import open_session as open_trt
        return open_trt(bundle, engine, trt_fp16, device_id)
    if backend != "onnxruntime":
        raise ClipxaiError(f"unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
    if engine is not None:
        raise ClipxaiError("engine= is for backend='tensorrt'; onnxruntime builds its own engines (trt_cache=)")
    from clipxai.runtime import engine_cache
    from clipxai.runtime.iobinding import maybe_bind
    from clipxai.runtime.providers import SessionOptions, create_session
    low_precision = bundle.manifest.get("precision", "fp32") != "fp32"
    cache = engine_cache.ort_trt_cache_dir(bundle, providers, trt_cache, trt_fp16, device_id)
    options = SessionOptions(threads=threads, trt_fp16=trt_fp16 or low_precision, trt_cache_dir=cache,
                             graph_cache=graph_cache, cache_dir=cache_dir)
    session = create_session(bundle.model_path, providers, options,
                             model_sha256=bundle.manifest["files"][MODEL_FILE]["sha256"])
    return maybe_bind(session, device_id)
