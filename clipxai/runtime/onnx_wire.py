"""Read what the runtime needs from an ONNX file without the ``onnx`` package.

The runtime depends on numpy, onnxruntime and Pillow, not on ``onnx`` (nor on
torch), yet it needs two facts from a graph that onnxruntime does not expose:

- ``external_data_locations``: every file the graph's tensors keep their data
  in (ONNX external data), so the bundle check can refuse a graph that would
  load a file the manifest does not list (bundle.py);
- ``read_nodes``: the names and op types of the nodes, so the TensorRT build
  can pin the LayerNorm / softmax / normalisation layers to fp32 (trt_args.py).

An ONNX file is one serialized ``ModelProto``; this module walks its protobuf
wire format just far enough, reading tags and lengths and skipping every
weight by its length without decoding it (a few ms for a bundle graph with
external data, ~0.2 s for a 359 MB single-file graph). The field numbers are
those of onnx.proto3.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple

from clipxai.errors import BundleError

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5  # wire types (3 and 4, groups, are not used by ONNX)


def varint(buf, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos]`` and the position after it."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"varint too long at byte {pos}")


def fields(buf, start: int, end: int):
    """Each field of the message in ``buf[start:end]``, as (number, wire type, value start,
    value end, field start); a length-delimited value is ``buf[value start:value end]``, a
    varint's value is ``varint(buf, value start)[0]``. Raises ValueError on a malformed message."""
    pos = start
    while pos < end:
        begin = pos
        tag, pos = varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            _, stop = varint(buf, pos)
        elif wire == FIXED64:
            stop = pos + 8
        elif wire == LEN:
            size, pos = varint(buf, pos)
            stop = pos + size
        elif wire == FIXED32:
            stop = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {begin}")
        if stop > end:
            raise ValueError(f"truncated protobuf field at byte {begin}")
        yield number, wire, pos, stop, begin
        pos = stop


class FileReader:
    """A file's bytes by index and slice, read with ``os.pread`` through a small window.

    Unlike a memory map, pages next to the ones read never count in the process's
    RSS (a map's fault-around took ~120 MiB while walking a 359 MB model).
    """

    WINDOW = 1 << 14

    def __init__(self, fd: int):
        self.fd, self.start, self.window = fd, 0, b""

    def __getitem__(self, key):
        if isinstance(key, slice):
            data = os.pread(self.fd, key.stop - key.start, key.start)
            if len(data) != key.stop - key.start:
                raise ValueError(f"truncated protobuf: bytes {key.start}-{key.stop} past the end")
            return data
        if not self.start <= key < self.start + len(self.window):
            self.start, self.window = key, os.pread(self.fd, self.WINDOW, key)
            if not self.window:
                raise ValueError(f"truncated protobuf: no byte {key}")
        return self.window[key - self.start]


# onnx.proto3 field numbers used below.
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER = 1, 5, 15
NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE = 3, 4, 5
ATTR_T, ATTR_G, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_EXTERNAL_DATA = 13
ENTRY_KEY, ENTRY_VALUE = 1, 2


class Node(NamedTuple):
    name: str
    op_type: str


def _open_model(path: Path):
    f = open(path, "rb")
    return f, FileReader(f.fileno()), os.fstat(f.fileno()).st_size


def _graph_span(buf, size: int) -> tuple[int, int]:
    graphs = [(a, b) for number, wire, a, b, _ in fields(buf, 0, size) if number == MODEL_GRAPH and wire == LEN]
    if not graphs:
        raise ValueError("no graph in the model")
    return graphs[-1]


def _read_model(path: str | Path, reader):
    path = Path(path)
    try:
        f, buf, size = _open_model(path)
        with f:
            return reader(buf, _graph_span(buf, size))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not a readable ONNX model ({e}); re-export the bundle") from None


def read_nodes(path: str | Path) -> list[Node]:
    """The top-level graph's nodes, in file order, as (name, op_type)."""
    def nodes(buf, span):
        out = []
        for number, wire, a, b, _ in fields(buf, *span):
            if number == GRAPH_NODE and wire == LEN:
                text = {n: buf[na:nb].decode("utf-8") for n, w, na, nb, _ in fields(buf, a, b)
                        if w == LEN and n in (NODE_NAME, NODE_OP_TYPE)}
                out.append(Node(text.get(NODE_NAME, ""), text.get(NODE_OP_TYPE, "")))
        return out
    return _read_model(path, nodes)


def external_data_locations(path: str | Path) -> set[str]:
    """The ``location`` of every tensor kept as external data, in the graph and its subgraphs
    (initializers, sparse initializers, and tensors in node attributes)."""
    return _read_model(path, lambda buf, span: set(_graph_locations(buf, *span)))


def _graph_locations(buf, start: int, end: int) -> Iterator[str]:
    for number, wire, a, b, _ in fields(buf, start, end):
        if wire != LEN:
            continue
        if number == GRAPH_INITIALIZER:
            yield from _tensor_locations(buf, a, b)
        elif number == GRAPH_SPARSE_INITIALIZER:
            yield from _sparse_locations(buf, a, b)
        elif number == GRAPH_NODE:
            for n, w, na, nb, _ in fields(buf, a, b):
                if n == NODE_ATTRIBUTE and w == LEN:
                    yield from _attribute_locations(buf, na, nb)


def _attribute_locations(buf, start: int, end: int) -> Iterator[str]:
    for number, wire, a, b, _ in fields(buf, start, end):
        if wire != LEN:
            continue
        if number in (ATTR_T, ATTR_TENSORS):
            yield from _tensor_locations(buf, a, b)
        elif number in (ATTR_G, ATTR_GRAPHS):
            yield from _graph_locations(buf, a, b)
        elif number in (ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS):
            yield from _sparse_locations(buf, a, b)


def _sparse_locations(buf, start: int, end: int) -> Iterator[str]:
    for number, wire, a, b, _ in fields(buf, start, end):
        if wire == LEN and number in (SPARSE_VALUES, SPARSE_INDICES):
            yield from _tensor_locations(buf, a, b)


def _tensor_locations(buf, start: int, end: int) -> Iterator[str]:
    for number, wire, a, b, _ in fields(buf, start, end):
        if number == TENSOR_EXTERNAL_DATA and wire == LEN:
            entry = {n: buf[ea:eb].decode("utf-8") for n, w, ea, eb, _ in fields(buf, a, b) if w == LEN}
            if entry.get(ENTRY_KEY) == "location":
                yield entry.get(ENTRY_VALUE, "")
