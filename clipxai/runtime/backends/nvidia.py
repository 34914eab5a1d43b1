"""onnxruntime's CUDA and TensorRT providers: TensorRT engines in a keyed cache per graph
(clipxai/runtime/nvidia/engine_cache.py), sessions wrapped for IO binding (nvidia/iobinding.py).
Never touches the CPU graph cache. UNTESTED on a GPU (docs/deployment.md)."""

from __future__ import annotations

from clipxai.runtime.backends.graph_io import graph_precision
from clipxai.runtime.backends.ort import OnnxruntimeBackend
from clipxai.runtime.nvidia import engine_cache
from clipxai.runtime.nvidia.iobinding import maybe_bind
from clipxai.runtime.providers import SessionOptions, load_graph, session_options, started, with_trt_options


class NvidiaBackend(OnnxruntimeBackend):
    name = "nvidia"

    def open(self, bundle, graph_file: str, options, resolved: list):
        nv = options.nvidia
        precision = graph_precision(bundle, graph_file)
        engines = engine_cache.ort_trt_cache_dir(bundle, resolved, nv.trt_cache_dir, nv.trt_fp16, nv.device_id,
                                                 options.cache_dir, graph=graph_file, precision=precision)
        so = SessionOptions(threads=options.threads, trt_fp16=nv.trt_fp16 or precision != "fp32",
                            trt_cache_dir=engines)
        resolved = with_trt_options(resolved, so)
        session = started(load_graph(bundle.path / graph_file, session_options(so), resolved), resolved)
        return maybe_bind(session, nv.device_id)
