"""Lower-precision graphs made from the verified fp32 graph (one function per precision).

- ``int8`` (CPU): onnxruntime dynamic quantization of the weight MatMuls
  (signed 8-bit weights with one scale per output channel; activations
  quantized on the fly). Attention products (activation x activation),
  LayerNorm, softmax and MatMuls whose weight is not a matrix stay fp32, and
  so do the weight MatMuls the accuracy-aware selection keeps
  (int8_selection.py: measured, not listed by hand). Per-channel scales, measured on random ViT-B/16 weights: segmentation
  pixel agreement 96.1 % at 224 and 95.9 % at 448 against 94.6 % and 95.4 %
  with per-tensor scales, and a graph time within 2 % of per-tensor (224,
  alternating single-session processes). Unsigned weights (u8u8) agreed
  better (97.7 %) but ran 2.2x slower (this CPU's VNNI byte dot product,
  VPDPBUSD, multiplies unsigned by signed bytes, so u8u8 cannot use it); 7-bit weights
  (reduce_range) agreed worse (91.5 %).
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


def to_int8(src: Path, dst: Path, exclude: list[str] = ()) -> dict:
    """Dynamic int8 quantization of the weight MatMuls but ``exclude`` -> a description for the manifest."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel scales need a matrix weight: a MatMul with a weight of another rank (the
    # class-row key folding, [H, d, C]) stays fp32.
    model = onnx.load(str(src), load_external_data=False)
    ranks = {init.name: len(init.dims) for init in model.graph.initializer}
    keep_fp32 = [n.name for n in model.graph.node
                 if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and ranks.get(n.input[1], 2) != 2]
    keep_fp32 += [name for name in exclude if name not in keep_fp32]
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=keep_fp32)
    finally:
        logging.getLogger().setLevel(quiet)
    return {"scheme": "onnxruntime dynamic quantization", "weights": "int8 per output channel",
            "activations": "uint8 dynamic per call", "ops": ["MatMul (constant matrix weights)"],
            "kept_fp32": keep_fp32}


def to_fp16(src: Path, dst: Path) -> dict:
    """fp16 weights and activations, IO float32, unsafe ops kept in fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP16_KEEP_FP32))
    onnx.save(model, str(dst))
    return {"scheme": "onnxruntime float16 conversion", "io": "float32", "kept_fp32": list(FP16_KEEP_FP32)}


CONVERTERS: dict[str, Callable[[Path, Path], dict]] = {"int8": to_int8, "fp16": to_fp16}


def convert(precision: str, src: Path, dst: Path, **options) -> dict:
    """Convert ``src`` to ``precision`` into ``dst``; options go to the converter (int8: exclude=)."""
    try:
        fn = CONVERTERS[precision]
    except KeyError:
        raise ClipxaiError(f"unknown precision {precision!r}; choose fp32, {', '.join(CONVERTERS)}") from None
    return fn(Path(src), Path(dst), **options)
