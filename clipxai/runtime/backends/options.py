"""The runtime option group (``RuntimeOptions``), the NVIDIA settings in it, and what a backend is."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

from clipxai.errors import ClipxaiError
from clipxai.runtime.providers import ProviderSpec
NATIVE_BACKENDS = ("onnxruntime", "tensorrt")  # NvidiaOptions.backend


@dataclass(frozen=True)
class NvidiaOptions:
    """Settings for NVIDIA GPUs (UNTESTED on a GPU; docs/deployment.md).

    backend: "onnxruntime" (its CUDA / TensorRT providers) or "tensorrt" (a native engine
        built by jetson/build_engine.sh; ``engine`` names one, else this machine's key is used).
    trt_fp16: let TensorRT build fp16 kernels for an fp32 bundle.
    trt_cache_dir: onnxruntime's TensorRT engine cache root (default: the user cache, keyed
        by TensorRT version, GPU, precision and graph; "off" disables it).
    device_id: the CUDA device, for machines with several GPUs.
    """

    backend: str = "onnxruntime"
    engine: str | Path | None = None
    trt_fp16: bool = False
    trt_cache_dir: str | None = None
    device_id: int = 0


@dataclass(frozen=True)
class OpenVINOOptions:
    """Settings of the OpenVINO backend (``providers="openvino"``; clipxai/runtime/backends/openvino.py).

    device: "CPU", "GPU", "NPU" or "AUTO", passed to OpenVINO (only the CPU is tested).
    precision: "fp32" or "bf16" (INFERENCE_PRECISION_HINT; bf16 only on a CPU with native bf16 and a
        bundle whose bf16 fidelity passed its gate at export).
    force_precision: bf16 on a bundle whose bf16 gate failed or was never measured.
    cache: OpenVINO's compiled-model cache under clipxai's cache root.
    """

    device: str = "CPU"
    precision: str = "fp32"
    force_precision: bool = False
    cache: bool = True


@dataclass(frozen=True)
class RuntimeOptions:
    """How to open a bundle's graphs, the same for every graph.

    providers: "auto" (TensorRT > CUDA > CPU, logged), "cpu", "cuda", "tensorrt", "openvino", or onnxruntime
        provider names / (name, options) pairs (kept as a tuple).
    threads: intra-op threads (None: one per core).
    nvidia: GPU settings (``NvidiaOptions``).
    graph_cache: the CPU graph cache mode: True (``$CLIPXAI_GRAPH_CACHE``, else "background"),
        "sync", False / "off" (clipxai/runtime/cpu/graph_cache.py).
    cache_dir: root of clipxai's caches (graphs, TensorRT engines, OpenVINO models, text encodings).
    openvino: OpenVINO settings (``OpenVINOOptions``), for ``providers="openvino"``.
    """

    providers: ProviderSpec = "auto"
    threads: int | None = None
    nvidia: NvidiaOptions = field(default_factory=NvidiaOptions)
    graph_cache: bool | str = True
    cache_dir: str | Path | None = None
    openvino: OpenVINOOptions = field(default_factory=OpenVINOOptions)

    def __post_init__(self):
        if not isinstance(self.providers, str):
            object.__setattr__(self, "providers", tuple(self.providers))


def runtime_options(options: RuntimeOptions | None = None, **settings) -> RuntimeOptions:
    """``options``, or the option group of ``from_bundle``'s separate keywords (``settings``: any
    ``RuntimeOptions`` field; ``nvidia=None`` is the default). Both at once (a keyword other than its
    default beside ``options``) is a ClipxaiError."""
    unknown = sorted(set(settings) - {f.name for f in fields(RuntimeOptions)})
    if unknown:
        raise TypeError(f"from_bundle() got an unexpected keyword argument {unknown[0]!r}")
    if settings.get("nvidia", ...) is None:
        settings["nvidia"] = NvidiaOptions()
    if settings.get("openvino", ...) is None:
        settings["openvino"] = OpenVINOOptions()
    loose = RuntimeOptions(**settings)
    if options is None:
        return loose
    if loose != RuntimeOptions():
        raise ClipxaiError("pass the runtime settings either as options=RuntimeOptions(...) or as providers=, "
                           "threads=, nvidia=, graph_cache=, cache_dir=, openvino=, not both")
    return options


class Backend(Protocol):
    """One way of running graphs. ``open`` returns an object with the slice of onnxruntime's
    InferenceSession the runtime uses: ``run``, ``get_inputs``, ``get_outputs``, ``get_providers``."""

    name: str

    def open(self, bundle, graph_file: str, options: RuntimeOptions, resolved: list | None): ...
