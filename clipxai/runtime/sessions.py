"""Which engine runs a bundle's image graph, and how: ``open_session``.

- onnxruntime with any provider; on the CPU the optimized graph is cached
  (cpu/graph_cache.py); on CUDA/TensorRT the session is wrapped for IO binding
  (nvidia/iobinding.py) and TensorRT engines are kept in a keyed cache
  (nvidia/engine_cache.py);
- ``NvidiaOptions(backend="tensorrt")``: a native TensorRT engine built by
  jetson/build_engine.sh (nvidia/tensorrt_backend.py).

The returned object has the InferenceSession slice the Predictor uses.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from clipxai.common.cache import cache_root, report_once
from clipxai.errors import ClipxaiError
from clipxai.runtime.cpu import graph_cache as gc
from clipxai.runtime.providers import CPU, ProviderSpec, SessionOptions, create_session, first_provider, open_graph

log = logging.getLogger("clipxai")

BACKENDS = ("onnxruntime", "tensorrt")


@dataclass(frozen=True)
class NvidiaOptions:
    """Settings for NVIDIA GPUs (UNTESTED on a GPU; docs/deployment.md).

    backend: "onnxruntime" (its CUDA / TensorRT providers) or "tensorrt" (a native engine
        built by jetson/build_engine.sh; ``engine`` names one, else this machine's key is used).
    trt_fp16: let TensorRT build fp16 kernels for an fp32 bundle.
    trt_cache_dir: onnxruntime's TensorRT engine cache root (default: the user cache, keyed
        by TensorRT version, GPU, precision and model; "off" disables it).
    device_id: the CUDA device, for machines with several GPUs.
    """

    backend: str = "onnxruntime"
    engine: str | Path | None = None
    trt_fp16: bool = False
    trt_cache_dir: str | None = None
    device_id: int = 0


def open_session(bundle, providers: ProviderSpec = "auto", threads: int | None = None,
                 nvidia: NvidiaOptions = NvidiaOptions(), graph_cache: bool | str = True,
                 cache_dir: str | None = None):
    """A session for ``bundle``'s image graph (module docstring)."""
    if nvidia.backend == "tensorrt":
        from clipxai.runtime.nvidia.tensorrt_backend import open_session as open_trt
        return open_trt(bundle, nvidia.engine, nvidia.trt_fp16, nvidia.device_id)
    if nvidia.backend != "onnxruntime":
        raise ClipxaiError(f"unknown backend {nvidia.backend!r}; use {' or '.join(BACKENDS)}")
    if nvidia.engine is not None:
        raise ClipxaiError("engine= is for backend='tensorrt'; onnxruntime builds its own engines (trt_cache_dir=)")
    from clipxai.runtime.nvidia import engine_cache
    from clipxai.runtime.nvidia.iobinding import maybe_bind
    low_precision = bundle.manifest.get("precision", "fp32") != "fp32"
    engines = engine_cache.ort_trt_cache_dir(bundle, providers, nvidia.trt_cache_dir, nvidia.trt_fp16,
                                             nvidia.device_id, cache_dir)
    options = SessionOptions(threads=threads, trt_fp16=nvidia.trt_fp16 or low_precision, trt_cache_dir=engines)
    mode = gc.resolve_mode(graph_cache)
    if mode == "background" and not gc.background_supported():
        mode = "sync"

    def opener(path, so, resolved):
        if mode == "off" or first_provider(resolved) != CPU:
            return open_graph(path, so, resolved)
        return _open_cpu_cached(bundle, so, resolved, mode, cache_root(cache_dir), threads)

    session = create_session(bundle.model_path, providers, options, opener)
    return maybe_bind(session, nvidia.device_id)


def _open_cpu_cached(bundle, so, resolved: list, mode: str, root: Path, threads: int | None):
    """The cached optimized graph; on a miss the bundle's graph, with the entry filled in a background
    process (mode "background") or now (mode "sync")."""
    files = bundle.graph_files()
    key = gc.cache_key(files)
    cached = gc.lookup(root, key)
    if cached is not None:
        try:
            sess = open_graph(cached, so, resolved)
            log.info("loaded the optimized graph from %s", cached.parent)
            return sess
        except ClipxaiError as e:
            log.warning("discarding an unreadable graph cache entry %s (%s)", cached.parent, e)
            gc.discard(cached.parent)
    if mode == "background":
        sess = open_graph(bundle.model_path, so, resolved)
        try:
            proc = gc.start_background_build(bundle.path, files, root)
        except OSError as e:
            log.warning("could not start filling the graph cache in %s (%s); loading without it", root, e)
        else:
            if proc is not None:
                log.info("filling the graph cache in %s in the background (pid %d); later loads are faster",
                         gc.graphs_dir(root), proc.pid)
        return sess
    try:
        entry = gc.build(bundle.model_path, files, root, threads=int(threads or os.cpu_count() or 1))
    except OSError as e:  # a full disk, a folder removed meanwhile: loading goes on without the cache
        report_once(f"graph-cache-build:{root}", "could not fill the graph cache in %s (%s); loading without it",
                    root, e.strerror or e)
        entry = None
    cached = gc.lookup(root, key) if entry is not None else None
    if cached is None:  # not writable, or another process is filling it right now
        return open_graph(bundle.model_path, so, resolved)
    log.info("cached the optimized graph in %s (next loads are faster)", gc.graphs_dir(root))
    return open_graph(cached, so, resolved)
