"""Native TensorRT backend: run a ``.engine`` built by jetson/build_engine.sh, no onnxruntime.

``TensorRTSession`` has the slice of onnxruntime's InferenceSession API the
Predictor uses (``run``, ``get_inputs``, ``get_outputs``, ``get_providers``), so

    Predictor.from_bundle(path, nvidia=NvidiaOptions(backend="tensorrt"))   # engine of this machine's key
    Predictor.from_bundle(path, nvidia=NvidiaOptions(backend="tensorrt", trt_fp16=True))   # fp16, fp32 bundle

returns the same ``Prediction`` objects as the onnxruntime path (clipxai/runtime/backends/tensorrt.py
opens it). It needs TensorRT's Python API (``tensorrt``; on Jetson the ``python3-libnvinfer``
package) and cuda-python (``cuda.bindings.runtime`` or the older
``cuda.cudart``), imported only when this backend is used; without them it
raises a ClipxaiError saying what to install.

Batches larger than the engine's maximum batch are run in chunks. Inputs are
copied from pageable numpy memory (no pinned staging buffers).

UNTESTED ON A GPU: written against the TensorRT 8.5+ tensor-name API
(``execute_async_v3``, ``set_input_shape``, ``set_tensor_address``); the GPU
tests in tests/test_gpu.py exercise it where TensorRT is installed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from clipxai.common.cache import FILE_MODE
from clipxai.common.files import atomic_write_bytes
from clipxai.errors import ClipxaiError

log = logging.getLogger("clipxai")

PROVIDER_NAME = "TensorRT (native engine)"
_ORT_TYPE = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float16): "tensor(float16)",
             np.dtype(np.int32): "tensor(int32)", np.dtype(np.int64): "tensor(int64)",
             np.dtype(np.int8): "tensor(int8)", np.dtype(np.uint8): "tensor(uint8)", np.dtype(bool): "tensor(bool)"}


def import_tensorrt():
    """(tensorrt, cudart) or a ClipxaiError naming the missing package."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ClipxaiError(f"the tensorrt backend needs TensorRT's Python API ({e}); on Jetson install "
                           "python3-libnvinfer (JetPack), elsewhere pip install tensorrt; or use backend='onnxruntime'")
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise ClipxaiError(f"the tensorrt backend needs cuda-python ({e}); pip install 'cuda-python==<your CUDA "
                               "major>.*' (11.* on JetPack 5, 12.* on JetPack 6); or use backend='onnxruntime'")
    return trt, cudart


class _Arg:
    """name / type / shape of one engine tensor, shaped like onnxruntime's NodeArg."""

    def __init__(self, name: str, type_: str, shape: list):
        self.name, self.type, self.shape = name, type_, shape


class TensorRTSession:
    """A deserialized engine with its context, stream and device buffers (sized for the max batch)."""

    def __init__(self, engine_path: str | Path, device_id: int = 0):
        trt, cudart = import_tensorrt()
        self._trt, self._cudart = trt, cudart
        self.engine_path = Path(engine_path)
        self._check(cudart.cudaSetDevice(int(device_id)), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        try:
            blob = self.engine_path.read_bytes()
        except OSError as e:
            raise ClipxaiError(f"{self.engine_path}: cannot read the engine ({e})")
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise ClipxaiError(f"{self.engine_path}: TensorRT could not deserialize this engine (built with another "
                               "TensorRT version or GPU?); rebuild it with jetson/build_engine.sh")
        self._context = self._engine.create_execution_context()
        self._stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._events = [self._check(cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(4)]
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._in = [n for n in names if is_input[n]]
        self._out = [n for n in names if not is_input[n]]
        if len(self._in) != 1:
            raise ClipxaiError(f"{self.engine_path}: expected one input tensor, found {self._in}")
        self._dtype = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        x = self._in[0]
        lo, _opt, hi = (tuple(s) for s in self._engine.get_tensor_profile_shape(x, 0))
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self._context.set_input_shape(x, hi)
        self._buffers: dict[str, int] = {}
        for n in names:
            shape = tuple(self._context.get_tensor_shape(n))
            nbytes = int(np.prod(shape)) * self._dtype[n].itemsize
            self._buffers[n] = self._check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._context.set_tensor_address(n, int(self._buffers[n]))

        def arg(n):
            shape = [("batch" if d < 0 else int(d)) for d in self._engine.get_tensor_shape(n)]
            return _Arg(n, _ORT_TYPE.get(self._dtype[n], f"tensor({self._dtype[n]})"), shape)
        self._inputs = [arg(n) for n in self._in]
        self._outputs = [arg(n) for n in self._out]

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise ClipxaiError(f"CUDA call {what} failed ({err}); check the GPU and driver")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    # -- the InferenceSession slice the Predictor uses -----------------------------------------------------
    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def get_providers(self):
        return [PROVIDER_NAME]

    def run(self, output_names, feeds: dict, run_options=None) -> list[np.ndarray]:
        return self.run_timed(output_names, feeds)[0]

    def run_timed(self, output_names, feeds: dict, run_options=None) -> tuple[list[np.ndarray], dict]:
        """(outputs, {"h2d_ms", "compute_ms", "d2h_ms"}) measured with CUDA events on the stream."""
        names = list(output_names) if output_names else list(self._out)
        unknown = [n for n in names if n not in self._out]
        if unknown or set(feeds) != set(self._in):
            raise ClipxaiError(f"engine tensors are inputs {self._in}, outputs {self._out}; got feeds "
                               f"{sorted(feeds)} and outputs {names}")
        x = np.ascontiguousarray(feeds[self._in[0]], dtype=self._dtype[self._in[0]])
        if x.shape[0] < self.min_batch:
            raise ClipxaiError(f"engine needs a batch of at least {self.min_batch}, got {x.shape[0]}")
        chunks, total = [], {"h2d_ms": 0.0, "compute_ms": 0.0, "d2h_ms": 0.0}
        for start in range(0, x.shape[0], self.max_batch):
            outs, t = self._run_chunk(x[start:start + self.max_batch], names)
            chunks.append(outs)
            for k in total:
                total[k] += t[k]
        outs = chunks[0] if len(chunks) == 1 else [np.concatenate(parts) for parts in zip(*chunks)]
        return outs, total

    def _run_chunk(self, x: np.ndarray, names: list[str]) -> tuple[list[np.ndarray], dict]:
        cudart, ev = self._cudart, self._events
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if not self._context.set_input_shape(self._in[0], x.shape):
            raise ClipxaiError(f"engine rejects input shape {x.shape}")
        outs = [np.empty(tuple(self._context.get_tensor_shape(n)), self._dtype[n]) for n in names]
        self._check(cudart.cudaEventRecord(ev[0], self._stream), "cudaEventRecord")
        self._check(cudart.cudaMemcpyAsync(self._buffers[self._in[0]], x.ctypes.data, x.nbytes, h2d, self._stream),
                    "cudaMemcpyAsync")
        self._check(cudart.cudaEventRecord(ev[1], self._stream), "cudaEventRecord")
        if not self._context.execute_async_v3(int(self._stream)):
            raise ClipxaiError("TensorRT execute_async_v3 failed; see the TensorRT log above")
        self._check(cudart.cudaEventRecord(ev[2], self._stream), "cudaEventRecord")
        for n, host in zip(names, outs):
            self._check(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[n], host.nbytes, d2h, self._stream),
                        "cudaMemcpyAsync")
        self._check(cudart.cudaEventRecord(ev[3], self._stream), "cudaEventRecord")
        self._check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        ms = [self._check(cudart.cudaEventElapsedTime(ev[i], ev[i + 1]), "cudaEventElapsedTime") for i in range(3)]
        return outs, {"h2d_ms": float(ms[0]), "compute_ms": float(ms[1]), "d2h_ms": float(ms[2])}

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        for e in getattr(self, "_events", []):
            cudart.cudaEventDestroy(e)
        self._events = []
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def open_session(bundle, engine: str | Path | None = None, trt_fp16: bool = False, device_id: int = 0):
    """A TensorRTSession for ``bundle``: ``engine`` if given, else the engine build_engine.sh wrote
    for this machine's key (TensorRT version, GPU, precision, model digest)."""
    import_tensorrt()  # a missing dependency is reported before anything else
    from clipxai.runtime.nvidia import engine_cache
    if engine is None:
        precision = engine_cache.engine_precision(bundle.precision, trt_fp16)
        engine = engine_cache.find_engine(bundle, precision, device_id=device_id)
    return TensorRTSession(engine, device_id)


def build_engine_python(plan, engine_path: str | Path, workspace_mb: int = 2048) -> Path:
    """Build ``plan`` (a trt_args.BuildPlan) with the TensorRT Python API instead of trtexec.

    Same network, profile, precision flags and fp32 pins as the trtexec arguments;
    for machines with TensorRT's wheel but no trtexec (the pip wheel ships none).
    """
    trt, _ = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ClipxaiError(f"{plan.onnx}: TensorRT's ONNX parser failed ({errs[:300]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if plan.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    pinned = set(plan.fp32_layers)
    if pinned and plan.precision != "fp32":
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        hit = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name in pinned:
                hit += 1
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
        log.info("pinned %d of %d requested layers to fp32", hit, len(pinned))
    profile = builder.create_optimization_profile()
    s = plan.image_size
    profile.set_shape("image", (plan.min_batch, 3, s, s), (plan.opt_batch, 3, s, s), (plan.max_batch, 3, s, s))
    config.add_optimization_profile(profile)
    t = time.perf_counter()
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise ClipxaiError(f"TensorRT could not build an engine from {plan.onnx}; see the TensorRT log above")
    engine_path = atomic_write_bytes(engine_path, bytes(blob), mode=FILE_MODE)
    log.info("built %s in %.0f s", engine_path, time.perf_counter() - t)
    return engine_path
