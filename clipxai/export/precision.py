"""Lower-precision graphs made from the verified fp32 graph (one function per precision).

- ``int8`` (CPU): onnxruntime dynamic quantization of the weight MatMuls
  (signed 8-bit weights, per-tensor scales; activations quantized on the fly).
  Attention products (activation x activation), LayerNorm, softmax and the
  heads stay fp32.
- ``fp16`` (GPU / TensorRT): weights and activations in fp16, except the ops in
  ``FP16_KEEP_FP32`` (LayerNorm, softmax, reductions and the min-max
  normalisation), which run in fp32 behind casts. Graph inputs and outputs stay
  float32 in every precision.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import onnx

from clipxai.errors import ClipxaiError

# Ops that overflow or lose too much in fp16: kept in fp32 in fp16 graphs.
FP16_KEEP_FP32 = ("LayerNormalization", "Softmax", "ReduceL2", "ReduceMin", "ReduceMax", "ReduceMean",
                  "ReduceSum", "Div", "Sub", "Pow", "Sqrt", "Where", "Greater", "Equal", "Clip")


def to_int8(src: Path, dst: Path) -> dict:
    """Dynamic int8 quantization of the weight MatMuls -> a description for the manifest."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.getLogger().setLevel(quiet)
    return {"scheme": "onnxruntime dynamic quantization", "weights": "int8 per-tensor",
            "activations": "uint8 dynamic per call", "ops": ["MatMul (constant weights)"]}


def to_fp16(src: Path, dst: Path) -> dict:
    """fp16 weights and activations, IO float32, unsafe ops kept in fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP16_KEEP_FP32))
    onnx.save(model, str(dst))
    return {"scheme": "onnxruntime float16 conversion", "io": "float32", "kept_fp32": list(FP16_KEEP_FP32)}


CONVERTERS: dict[str, Callable[[Path, Path], dict]] = {"int8": to_int8, "fp16": to_fp16}


def convert(precision: str, src: Path, dst: Path) -> dict:
    try:
        fn = CONVERTERS[precision]
    except KeyError:
        raise ClipxaiError(f"unknown precision {precision!r}; choose fp32, {', '.join(CONVERTERS)}") from None
    return fn(Path(src), Path(dst))
