"""Native TensorRT: the engine jetson/build_engine.sh built for a CLIP bundle's image graph
(clipxai/runtime/nvidia/tensorrt_backend.py), no onnxruntime. UNTESTED on a GPU."""

from __future__ import annotations

from clipxai.contract import MODEL_FILE
from clipxai.errors import ClipxaiError


class TensorRTBackend:
    name = "tensorrt"

    def open(self, bundle, graph_file: str, options, resolved: None):
        if graph_file != MODEL_FILE:
            raise ClipxaiError(f"the native TensorRT backend runs a CLIP bundle's image graph only, not {graph_file}; "
                               "use backend='onnxruntime' (its TensorRT provider) for it")
        from clipxai.runtime.nvidia.tensorrt_backend import open_session
        nv = options.nvidia
        return open_session(bundle, nv.engine, nv.trt_fp16, nv.device_id)
