"""One way to open any graph of a bundle: ``open_graph(bundle, graph_file, options)``.

Every graph (the image graph, the text encoder, the word explainer, a mask model's encoder and
decoder) opens here with the same guarantees: a file the manifest lists (so ``load_bundle``
checked its digest), the provider choice resolved once, first, then exactly one backend, and the
session's inputs and outputs checked against the manifest (graph_io.py).

Backends, as data (``BACKENDS``: name -> "module:Class", imported only when chosen):

- ``cpu``: onnxruntime's CPU provider through the CPU graph cache (cpu.py);
- ``nvidia``: onnxruntime's CUDA / TensorRT providers, TensorRT engine cache, IO binding (nvidia.py);
- ``tensorrt``: a native TensorRT engine, ``NvidiaOptions(backend="tensorrt")`` (tensorrt.py);
- ``onnxruntime``: any other onnxruntime provider, a plain session (ort.py);
- ``openvino``: the native OpenVINO runtime, ``providers="openvino"``, no onnxruntime (openvino.py).

The first resolved provider picks the backend (``PROVIDER_BACKENDS``); a runtime other than
onnxruntime is named by its own providers word (``RUNTIME_PROVIDERS``). A CPU load never imports clipxai.runtime.nvidia, and a GPU
load never touches the CPU graph cache.
"""

from __future__ import annotations

import importlib
from dataclasses import replace

from clipxai.errors import ClipxaiError
from clipxai.runtime.backends.graph_io import check_io, expected_io
from clipxai.runtime.backends.options import (
    NATIVE_BACKENDS, Backend, NvidiaOptions, OpenVINOOptions, ProviderSpec, RuntimeOptions, runtime_options,
)
from clipxai.runtime.providers import CPU, CUDA, TRT, first_provider, resolve_names

BACKENDS: dict[str, str] = {
    "cpu": "clipxai.runtime.backends.cpu:CpuBackend",
    "nvidia": "clipxai.runtime.backends.nvidia:NvidiaBackend",
    "tensorrt": "clipxai.runtime.backends.tensorrt:TensorRTBackend",
    "onnxruntime": "clipxai.runtime.backends.ort:OnnxruntimeBackend",
    "openvino": "clipxai.runtime.backends.openvino:OpenVINOBackend",
}
RUNTIME_PROVIDERS: dict[str, str] = {"openvino": "openvino"}  # providers word -> backend (not onnxruntime)
PROVIDER_BACKENDS: dict[str, str] = {CPU: "cpu", CUDA: "nvidia", TRT: "nvidia"}  # else "onnxruntime"

__all__ = ["BACKENDS", "Backend", "NvidiaOptions", "OpenVINOOptions", "PROVIDER_BACKENDS", "RUNTIME_PROVIDERS", "ProviderSpec", "RuntimeOptions",
           "choose_backend", "load_backend", "open_graph", "runtime_options", "text_options"]


def choose_backend(options: RuntimeOptions) -> tuple[str, list | None]:
    """(backend name, resolved onnxruntime providers or None): the provider choice, made once."""
    nv = options.nvidia
    if nv.backend not in NATIVE_BACKENDS:
        raise ClipxaiError(f"unknown backend {nv.backend!r}; use {' or '.join(NATIVE_BACKENDS)}")
    if nv.backend == "tensorrt":
        return "tensorrt", None
    if isinstance(options.providers, str) and options.providers.lower() in RUNTIME_PROVIDERS:
        return RUNTIME_PROVIDERS[options.providers.lower()], None
    if nv.engine is not None:
        raise ClipxaiError("engine= is for backend='tensorrt'; onnxruntime builds its own engines (trt_cache_dir=)")
    resolved = resolve_names(options.providers)
    return PROVIDER_BACKENDS.get(first_provider(resolved), "onnxruntime"), resolved


def load_backend(name: str) -> Backend:
    """The backend called ``name`` in ``BACKENDS`` (its module is imported now)."""
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def open_graph(bundle, graph_file: str, options: RuntimeOptions = RuntimeOptions()):
    """A session for ``graph_file`` of a checked ``bundle`` (module docstring): an object with
    ``run``, ``get_inputs``, ``get_outputs`` and ``get_providers``, its IO the manifest's.
    ClipxaiError / BundleError (one line) otherwise."""
    io = expected_io(bundle, graph_file)  # an unlisted or unknown graph is refused before anything opens
    name, resolved = choose_backend(options)
    session = load_backend(name).open(bundle, graph_file, options, resolved)
    check_io(bundle, graph_file, session, io)
    return session


def text_options(options: RuntimeOptions, image_session) -> RuntimeOptions:
    """The options for a bundle's text-side graphs, after its image session's: the same device,
    except that TensorRT (provider or native engine) hands over to CUDA where the image session
    has it, else to the CPU. OpenVINO keeps OpenVINO (its text graphs run fp32: openvino.py)."""
    providers = image_session.get_providers()
    if str(providers[0]).startswith("OpenVINO:"):
        return options
    if providers[0] == CPU:
        chosen = (CPU,)
    else:
        chosen = (CUDA,) if CUDA in providers else (CPU,)
    return replace(options, providers=chosen, nvidia=replace(options.nvidia, backend="onnxruntime", engine=None))
