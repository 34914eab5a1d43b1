"""Open an ONNX file's graph without holding its weights in memory.

``onnx.load`` reads the whole file into one bytes object and parses it: the
file and its parsed weights are in memory at once. For the ViT-B/16 bundle
(359 MB) that made the graph cache builder peak at 754 MiB while it fused
attention, over the runtime's memory budget of 1.5x the bundle + 150 MB.

``light_copy`` walks the file's protobuf encoding instead, reading only the
tags and the small fields, and never touches the weight bytes from Python: every initializer whose
``raw_data`` is at least ``min_bytes`` long is copied, by the kernel
(``os.copy_file_range``), into one external data file, and the returned
``ModelProto`` refers to it there, in the standard ONNX external-data form
(``location``, ``offset``, ``length``). Everything else (nodes, small
constants, inputs, metadata) is kept byte for byte. The copy sits next to the
data file, so a model saved into the same directory loads in onnxruntime with
the same weights, bit for bit (tested).

Only the fields this needs are decoded (protobuf_wire.py): ModelProto.graph (7),
GraphProto.initializer (5), TensorProto.raw_data (9) and data_location (14).
Needs the ``onnx`` package (``clipxai[fusion]``). Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from clipxai.runtime.protobuf_wire import LEN, VARINT, FileReader, fields, len_field, varint

MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_RAW_DATA = 9
TENSOR_DATA_LOCATION = 14
EXTERNAL = 1  # TensorProto.DataLocation: the data lies in a file next to the model
ALIGN = 4096  # offsets in the data file: page-aligned, so onnxruntime may map them


class _DataWriter:
    """Appends byte ranges of the source file to the data file, each at an aligned offset."""

    def __init__(self, src_fd: int, path: Path):
        self.src_fd, self.path = src_fd, path
        self.out = open(path, "wb")
        self.size = 0

    def copy(self, offset: int, length: int) -> int:
        start = -(-self.size // ALIGN) * ALIGN
        if start > self.size:
            self.out.write(b"\0" * (start - self.size))
        self.out.flush()
        done = 0
        while done < length:
            n = _copy_range(self.src_fd, self.out.fileno(), length - done, offset + done)
            if n <= 0:
                raise OSError(f"could not copy {length} bytes of weights into {self.path}")
            done += n
        self.out.seek(0, os.SEEK_END)
        self.size = start + length
        return start


def _copy_range(src: int, dst: int, count: int, offset: int) -> int:
    """Copy up to ``count`` bytes at ``offset`` of src to dst's current position; bytes copied."""
    count = min(count, 1 << 30)
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src, dst, count, offset)
        except OSError:  # another file system, an old kernel: copy through a small buffer
            pass
    chunk = os.pread(src, min(count, 1 << 22), offset)
    return os.write(dst, chunk) if chunk else 0


def _light_tensor(buf, start: int, end: int, data: _DataWriter, min_bytes: int) -> bytes | None:
    """The TensorProto in buf[start:end] with its raw data moved to ``data``, or None to keep it."""
    raw, kept = None, []
    for number, wire, vstart, vstop, begin in fields(buf, start, end):
        if number == TENSOR_DATA_LOCATION and wire == VARINT and varint(buf, vstart)[0] == EXTERNAL:
            raise ValueError("the model already keeps tensors in external data files; "
                             "light_copy reads single-file models only")
        if number == TENSOR_RAW_DATA and wire == LEN:
            raw = (vstart, vstop - vstart)
        else:
            kept.append(buf[begin:vstop])
    if raw is None or raw[1] < min_bytes:
        return None
    tensor = onnx.TensorProto.FromString(b"".join(kept))
    offset = data.copy(*raw)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", data.path.name), ("offset", offset), ("length", raw[1])):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    return tensor.SerializeToString()


def light_copy(src: str | Path, data_path: str | Path, min_bytes: int = 1024) -> onnx.ModelProto:
    """``src``'s model with each initializer of ``min_bytes`` or more moved into ``data_path``.

    Save the returned model into ``data_path``'s directory (its tensors name the data file
    relative to it). Peak memory: the graph without its weights. Raises ValueError if
    ``src`` is not a well-formed protobuf or already has external data (a bundle never has).
    """
    src, data_path = Path(src), Path(data_path)
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ValueError(f"{src} is empty")
        buf = FileReader(f.fileno())
        data = _DataWriter(f.fileno(), data_path)
        try:
            parts = []
            for number, wire, vstart, vstop, begin in fields(buf, 0, size):
                if number == MODEL_GRAPH and wire == LEN:
                    parts.append(len_field(MODEL_GRAPH, _light_graph(buf, vstart, vstop, data, min_bytes)))
                else:
                    parts.append(buf[begin:vstop])
            model = onnx.ModelProto.FromString(b"".join(parts))
        except BaseException as e:
            data.out.close()
            data_path.unlink(missing_ok=True)
            if isinstance(e, DecodeError):
                raise ValueError(f"{src} is not a readable ONNX model ({e})") from None
            raise
        data.out.close()
    return model


def _light_graph(buf, start: int, end: int, data: _DataWriter, min_bytes: int) -> bytes:
    parts = []
    for number, wire, vstart, vstop, begin in fields(buf, start, end):
        light = None
        if number == GRAPH_INITIALIZER and wire == LEN:
            light = _light_tensor(buf, vstart, vstop, data, min_bytes)
        parts.append(buf[begin:vstop] if light is None else len_field(GRAPH_INITIALIZER, light))
    return b"".join(parts)
