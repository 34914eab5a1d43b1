"""onnxruntime IO binding for the CUDA and TensorRT providers.

``BoundSession`` wraps an InferenceSession whose first provider is CUDA or
TensorRT. Each run copies the input to the GPU once (into an OrtValue kept per
input shape and refreshed in place), lets the outputs be allocated on the GPU,
runs, and copies the outputs back: no hidden per-run host staging by
onnxruntime, and the three phases can be timed apart (``run_timed``). Every
other attribute is the wrapped session's, so the Predictor and
the IO check (backends/graph_io.py) use it unchanged. CPU sessions are never wrapped (there is
nothing to copy).
"""

from __future__ import annotations

import time

import numpy as np

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def maybe_bind(session, device_id: int = 0):
    """The session wrapped in a BoundSession when its first provider is CUDA or TensorRT."""
    if session.get_providers()[0] in GPU_PROVIDERS and not isinstance(session, BoundSession):
        return BoundSession(session, device_id)
    return session


class BoundSession:
    """An InferenceSession run through IO binding on CUDA device ``device_id``."""

    def __init__(self, session, device_id: int = 0, device: str = "cuda"):
        self._session = session
        self._device_id = int(device_id)
        self._device = device  # "cuda"; "cpu" only to test the binding logic without a GPU
        self._inputs: dict[tuple, object] = {}

    def __getattr__(self, name):
        return getattr(self._session, name)

    @property
    def session(self):
        return self._session

    def run(self, output_names, feeds: dict, run_options=None) -> list[np.ndarray]:
        """Same contract as InferenceSession.run: numpy feeds in, numpy outputs out."""
        return self.run_timed(output_names, feeds, run_options)[0]

    def run_timed(self, output_names, feeds: dict, run_options=None) -> tuple[list[np.ndarray], dict]:
        """(outputs, {"h2d_ms", "compute_ms", "d2h_ms"}) with each phase finished before the next."""
        import onnxruntime as ort
        names = list(output_names) if output_names else [o.name for o in self._session.get_outputs()]
        io = self._session.io_binding()
        t0 = time.perf_counter()
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            slot = (name, array.shape, array.dtype.str)
            value = self._inputs.get(slot)
            if value is not None and hasattr(value, "update_inplace"):
                value.update_inplace(array)  # host -> device copy into the existing buffer
            else:
                value = ort.OrtValue.ortvalue_from_numpy(array, self._device, self._device_id)
                if len(self._inputs) >= 8:  # a few batch shapes in use; don't hold device memory forever
                    self._inputs.clear()
                self._inputs[slot] = value
            io.bind_ortvalue_input(name, value)
        for name in names:
            io.bind_output(name, self._device, self._device_id)
        t1 = time.perf_counter()
        self._session.run_with_iobinding(io, run_options)
        io.synchronize_outputs()
        t2 = time.perf_counter()
        outs = io.copy_outputs_to_cpu()
        t3 = time.perf_counter()
        return list(outs), {"h2d_ms": (t1 - t0) * 1e3, "compute_ms": (t2 - t1) * 1e3, "d2h_ms": (t3 - t2) * 1e3}
