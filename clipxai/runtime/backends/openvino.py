"""OpenVINO (the native ``openvino`` runtime, ``clipxai[openvino]``): every graph of a bundle, no onnxruntime.

``providers="openvino"`` picks it; ``OpenVINOOptions`` (``RuntimeOptions.openvino``) holds its settings:

- ``device``: "CPU" (the default), "GPU", "NPU", "AUTO", passed to OpenVINO as given. Only the CPU is
  tested here (docs/performance.md#openvino-fp32-and-bf16).
- ``precision``: "fp32" or "bf16" (``INFERENCE_PRECISION_HINT``). fp32 is set explicitly: OpenVINO's CPU
  plugin otherwise runs bf16 by itself on a CPU that has it. bf16 applies to the bundle's precision graph
  (the image graph, a mask model's encoder); the text graphs and a mask decoder stay fp32. It is used only
  (``precision_for``)
  - where the CPU computes bf16 natively: ``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo's flags
    (clipxai.common.system.cpu_info; OpenVINO's OPTIMIZATION_CAPABILITIES is not used); elsewhere a
    one-line note and fp32 (bf16 without native arithmetic is not what the gate measured);
  - on a bundle whose bf16 fidelity was measured at export and passed its gate (manifest field
    ``bf16_fidelity``, the int8 gate: clipxai/export/fidelity.py), unless ``force_precision``.
  Another device (GPU, NPU) gets the hint as asked, unchecked (untested here).
- ``cache``: compiled models cached under clipxai's cache root (OpenVINO's exported blobs, one private
  folder per key: bundle graph digests, OpenVINO version, CPU, device, compile settings): openvino_cache.py.

The session object has the slice of onnxruntime's InferenceSession the runtime uses: ``run``,
``get_inputs``, ``get_outputs`` (name, type "tensor(float)", shape with ints and names), ``get_providers``
(``["OpenVINO:CPU"]``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipxai.common.cache import report_once
from clipxai.common.system import cpu_info
from clipxai.errors import ClipxaiError
from clipxai.contract import MASK_MEMORY_ATTENTION_FILE, TEXT_EXPLAINER_FILE
from clipxai.runtime.backends.graph_io import PRECISION_GRAPHS, expected_io
from clipxai.runtime.backends.options import OpenVINOOptions

log = logging.getLogger("clipxai")

PROVIDER_PREFIX = "OpenVINO"
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # clipxai's word -> INFERENCE_PRECISION_HINT
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 arithmetic
OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "i32": "tensor(int32)",
            "u8": "tensor(uint8)", "boolean": "tensor(bool)"}
# Graphs that run bf16 when asked: the image graph, a mask model's encoder, and SAM 2.1's memory attention (the
# tracker's largest cost); the decoders, memory encoder and text graphs stay fp32.
BF16_GRAPHS = (*PRECISION_GRAPHS, MASK_MEMORY_ATTENTION_FILE)
MISSING = "OpenVINO is not installed; install the extra: pip install 'clipxai[openvino]'"


def import_openvino():
    """The ``openvino`` module, or a one-line ClipxaiError naming the extra."""
    try:
        import openvino
    except ImportError:
        raise ClipxaiError(MISSING) from None
    return openvino


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo's flags."""
    return any(f in cpu_info().flags for f in NATIVE_BF16_FLAGS)


def precision_for(bundle, graph_file: str, ov: OpenVINOOptions) -> str:
    """The precision ``graph_file`` runs in (module docstring); a ClipxaiError when bf16 is refused."""
    if ov.precision not in OV_PRECISIONS:
        raise ClipxaiError(f"unknown OpenVINO precision {ov.precision!r}; use {' or '.join(OV_PRECISIONS)}")
    if ov.precision == "fp32" or graph_file not in BF16_GRAPHS:
        return "fp32"
    if ov.device.upper() == "CPU" and not native_bf16():
        report_once("openvino-bf16-cpu", "this CPU has no native bf16 (no %s in /proc/cpuinfo): running fp32 "
                    "on OpenVINO", " or ".join(NATIVE_BF16_FLAGS))
        return "fp32"
    check_bf16_gate(bundle, ov.force_precision)
    return "bf16"


def check_bf16_gate(bundle, force: bool) -> None:
    """Refuse bf16 for a bundle whose export-time bf16 fidelity failed its gate or was never measured,
    unless ``force`` (then a warning)."""
    record = getattr(bundle.manifest, "bf16_fidelity", None)
    if record is not None and record.get("passed") is True:
        return
    measured = (f"mean mask IoU {record.get('mean_iou')}" if record is not None and "mean_iou" in record else
                f"correlation {record.get('correlation')}, pixel agreement {record.get('pixel_agreement')}"
                if record is not None else "")
    why = ("its bf16 fidelity was never measured (export it with OpenVINO installed)" if record is None else
           f"its bf16 graph failed the fidelity gate at export ({measured})")
    if not force:
        raise ClipxaiError(f"{bundle.path}: bf16 refused: {why}; force it with force_precision "
                           "(--force-precision) or run fp32")
    log.warning("%s: running bf16 although %s (forced)", bundle.path, why)


@dataclass(frozen=True)
class Arg:
    """A graph input or output as onnxruntime describes it: name, type "tensor(float)", shape."""

    name: str
    type: str
    shape: list


def _arg(port, position: int, known: set[str]) -> Arg:
    """A port as an ``Arg``; its name the one of its names in ``known`` (the manifest's), since OpenVINO
    may give a graph output an inner tensor's name too."""
    kind = port.get_element_type().get_type_name()
    shape = [d.get_length() if d.is_static else f"d{position}_{i}" for i, d in enumerate(port.get_partial_shape())]
    names = sorted(port.get_names())
    name = next((n for n in names if n in known), port.get_any_name())
    return Arg(name, OV_TYPES.get(kind, f"tensor({kind})"), shape)


class OpenVINOSession:
    """A compiled model with onnxruntime's session interface (module docstring). One infer request,
    made on first use: one session serves one thread at a time, as the runtime uses it."""

    def __init__(self, compiled, device: str, precision: str, known: set[str] = frozenset()):
        self.compiled, self.device, self.precision = compiled, device, precision
        self._inputs = [_arg(p, i, known) for i, p in enumerate(compiled.inputs)]
        self._outputs = [_arg(p, i + len(self._inputs), known) for i, p in enumerate(compiled.outputs)]
        self._ports = {arg.name: port for arg, port in zip(self._outputs, compiled.outputs)}
        self._request = None

    def get_inputs(self) -> list[Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"{PROVIDER_PREFIX}:{self.device}"]

    def run(self, names, feeds: dict) -> list[np.ndarray]:
        """Outputs ``names`` (None: all) for ``feeds`` {input name: array}, as numpy arrays the caller owns."""
        if self._request is None:
            self._request = self.compiled.create_infer_request()
        result = self._request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        wanted = [o.name for o in self._outputs] if names is None else list(names)
        return [np.array(result[self._ports[n]], copy=True) for n in wanted]


class OpenVINOBackend:
    name = "openvino"

    def open(self, bundle, graph_file: str, options, resolved: None) -> OpenVINOSession:
        ov_mod = import_openvino()
        ov = options.openvino
        precision = precision_for(bundle, graph_file, ov)
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]}
        if ov.device.upper() == "CPU":
            config["PERFORMANCE_HINT"] = "LATENCY"
            if options.threads is not None:
                config["INFERENCE_NUM_THREADS"] = int(options.threads)
        core = ov_mod.Core()
        path = bundle.path / graph_file
        if ov.cache:
            from clipxai.runtime.backends import openvino_cache
            compiled = openvino_cache.compile_cached(core, bundle, graph_file, config, options, compile_graph)
        else:
            compiled = compile_graph(core, path, ov.device, config)
        log.info("OpenVINO %s: %s on %s, %s", ov_mod.__version__, graph_file, ov.device, precision)
        io = expected_io(bundle, graph_file)
        return OpenVINOSession(compiled, ov.device, precision, {*io.inputs, *io.outputs})


def compile_graph(core, path, device: str, config: dict):
    """OpenVINO's compiled model of the ONNX graph at ``path`` (its shared constants unshared); a one-line
    ClipxaiError when OpenVINO cannot read or compile it (its first line names the operator it rejected)."""
    try:
        model = core.read_model(str(path))
        unshare_constants(model)
        return core.compile_model(model, device, config)
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
        why = _why(e)[:300]
        raise ClipxaiError(f"{path}: OpenVINO could not compile the graph on {device} ({why}){_hint(path, why)}") \
            from None


def _hint(path, why: str) -> str:
    """What to do about a refusal clipxai knows: a word explainer exported before its end-token rows were
    taken with Gather (GatherElements there does not compile on OpenVINO 2026.4's CPU plugin)."""
    if Path(path).name == TEXT_EXPLAINER_FILE and "GatherElements" in why:
        return "; an older clipxai's word explainer: export the bundle again or use --providers cpu"
    return ""


def _why(error: Exception) -> str:
    """OpenVINO's reason in one line: the operator it rejected and why, where it names one."""
    text = str(error)
    node = re.search(r"While validating node '\w+::(\w+) (\S+)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("Exception from",
                                                                                                   "Check '"))]
    reason = lines[-1] if lines else type(error).__name__
    return f"operator {node.group(1)} {node.group(2)}: {reason}" if node else reason


def unshare_constants(model) -> int:
    """Give every consumer of a shared constant its own copy; returns the copies made.

    Measured with OpenVINO 2026.4 on the tiny bundle: a weight used both by a Gemm (transB=1) and a
    MatMul (the surgery path's out_proj) gave the MatMul wrong values (0.2 off, heatmaps wholly
    different); with the constant unshared the outputs equal onnxruntime's within 4e-6
    (tests/test_openvino.py). Costs the memory of the shared weights once more."""
    from openvino import opset13
    copies = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        for i, target in enumerate(list(op.output(0).get_target_inputs())[1:]):
            copy = opset13.constant(op.get_data())
            copy.set_friendly_name(f"{op.get_friendly_name()}/copy{i}")  # the same model hash on every load
            target.replace_source_output(copy.output(0))
            copies += 1
    return copies
