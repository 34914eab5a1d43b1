"""onnxruntime sessions and execution providers.

``providers``: "auto" picks TensorRT, then CUDA, then CPU among the providers
this onnxruntime build has, and logs its choice. "cpu", "cuda", "tensorrt"
demand that provider: if it is missing, or onnxruntime cannot start it, that is
an error, never a silent fallback. A list of onnxruntime provider names (or
(name, options) pairs) is passed through, checked the same way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import onnxruntime as ort

from clipxai.errors import ClipxaiError
from clipxai.runtime.cpu.memory import large_blocks_returned

log = logging.getLogger("clipxai")

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ALIASES = {"tensorrt": TRT, "trt": TRT, "cuda": CUDA, "gpu": CUDA, "cpu": CPU}
AUTO_ORDER = (TRT, CUDA, CPU)

ProviderSpec = Union[str, Sequence[Union[str, tuple]]]


@dataclass(frozen=True)
class SessionOptions:
    """threads: intra-op threads (None: onnxruntime's default, one per core).
    trt_fp16: let TensorRT build fp16 kernels. trt_cache_dir: TensorRT engine cache."""

    threads: int | None = None
    trt_fp16: bool = False
    trt_cache_dir: str | None = None


def resolve_providers(providers: ProviderSpec, options: SessionOptions = SessionOptions()) -> list:
    """Turn "auto"/"cpu"/"cuda"/"tensorrt"/a list into onnxruntime's providers argument
    (``resolve_names``, then ``with_trt_options``)."""
    return with_trt_options(resolve_names(providers), options)


def resolve_names(providers: ProviderSpec) -> list:
    """The providers a spec asks for, each one checked to exist in this onnxruntime, the CPU provider
    last (nodes a GPU provider cannot take run on it); (name, options) pairs are kept as given."""
    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.lower()
        if key == "auto":
            chosen = [p for p in AUTO_ORDER if p in available]
            log.info("providers=auto: using %s (available: %s)", chosen[0], ", ".join(available))
        elif key in ALIASES:
            chosen = [ALIASES[key]]
        else:
            raise ClipxaiError(
                f"unknown provider {providers!r}; use auto, cpu, cuda, tensorrt, openvino or a list of onnxruntime providers"
            )
    else:
        chosen = list(providers)
        if not chosen:
            raise ClipxaiError("empty provider list; use 'auto' or name at least one provider")
    names = [provider_name(p) for p in chosen]
    for name in names:
        if name not in available:
            raise ClipxaiError(
                f"execution provider {name} is not available in this onnxruntime (available: {', '.join(available)}); "
                + ("install onnxruntime-gpu with a matching CUDA/TensorRT" if name in (CUDA, TRT) else
                   "choose another provider")
            )
    return chosen if CPU in names else [*chosen, CPU]


def with_trt_options(resolved: list, options: SessionOptions) -> list:
    """``resolved`` with clipxai's options on a plain TensorRT entry (fp16, engine cache)."""
    out = []
    for p in resolved:
        if p == TRT:
            opts = {"trt_fp16_enable": options.trt_fp16}
            if options.trt_fp16:  # keep LayerNorm's Pow/Reduce in fp32 (CLIP overflows in fp16)
                opts["trt_layer_norm_fp32_fallback"] = True
            if options.trt_cache_dir:  # a per-key folder (engine_cache.py): only this key's engines in it
                Path(options.trt_cache_dir).mkdir(parents=True, exist_ok=True)
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(options.trt_cache_dir),
                            trt_timing_cache_enable=True, trt_timing_cache_path=str(options.trt_cache_dir))
            out.append((TRT, opts))
        else:
            out.append(p)
    return out


def provider_name(p) -> str:
    """A provider entry's name (an entry is a name or a (name, options) pair)."""
    return p[0] if isinstance(p, tuple) else p


def max_threads() -> int:
    """The most intra-op threads a session may ask for: 4 x the CPU cores."""
    return 4 * (os.cpu_count() or 1)


def session_options(options: SessionOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if options.threads is not None:
        if not 1 <= options.threads <= max_threads():
            raise ClipxaiError(f"threads={options.threads} is out of range: use 1 to {max_threads()} "
                               f"(4 x this machine's {os.cpu_count()} cores), or leave it out for one per core")
        so.intra_op_num_threads = int(options.threads)
    so.inter_op_num_threads = 1  # the graph is one chain: no parallel branches to run
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No memory pattern: the arena then hands out and re-uses blocks as the graph runs instead of
    # one block planned for all activations at once. Measured on the CPU (ViT-B/16 at 448, batch 1):
    # peak RSS int8 290 -> 238 MB, fp32 469 -> 449 MB, speed unchanged, no page faults per call
    # either way (the arena keeps its blocks). GPU providers: not measured.
    so.enable_mem_pattern = False
    return so


def load_graph(path: Path, so: ort.SessionOptions, resolved: list) -> ort.InferenceSession:
    """An onnxruntime session for the graph file at ``path``; a one-line ClipxaiError if it cannot load."""
    try:
        with large_blocks_returned():  # memory.py: freed weights go back to the system
            return ort.InferenceSession(str(path), so, providers=resolved)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClipxaiError(f"{path}: onnxruntime could not load the graph ({first[:300]})")


def first_provider(resolved: list) -> str:
    return provider_name(resolved[0])


def started(session, resolved: list):
    """``session``, if its first provider is really the one asked for; else a one-line ClipxaiError
    (onnxruntime falls back to the CPU silently when it cannot start CUDA or TensorRT)."""
    wanted, got = first_provider(resolved), session.get_providers()[0]
    if got != wanted:
        raise ClipxaiError(f"onnxruntime could not start {wanted} (it fell back to {got}); "
                           "check the CUDA/TensorRT libraries, or pass providers='cpu'")
    return session


def create_session(model_path: Path, providers: ProviderSpec = "auto",
                   options: SessionOptions = SessionOptions()) -> ort.InferenceSession:
    """A plain session for a graph file that is not (yet) a checked bundle's, such as the exporter's
    staging graphs; a bundle's graphs open with ``clipxai.runtime.backends.open_graph``."""
    resolved = resolve_providers(providers, options)
    return started(load_graph(Path(model_path), session_options(options), resolved), resolved)
