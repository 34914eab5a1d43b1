"""Read the node names and op types of an ONNX file without the ``onnx`` package.

The runtime must not depend on ``onnx`` (or torch), yet the TensorRT build needs
the names of the graph's LayerNorm / softmax / normalisation nodes to pin them
to fp32. An ONNX file is a protobuf ``ModelProto``; this module walks its wire
format just far enough: ModelProto.graph (field 7) -> GraphProto.node (field 1)
-> NodeProto.name (field 3) and NodeProto.op_type (field 4). Everything else,
the weights included, is skipped by length without being decoded.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import NamedTuple

from clipxai.errors import BundleError


class Node(NamedTuple):
    name: str
    op_type: str


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf, start: int, end: int):
    """Yield (field number, wire type, value or (start, end) for length-delimited)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("length-delimited field runs past its message")
            yield field, wire, (pos, pos + length)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("message ends inside a field")


def read_nodes(path: str | Path) -> list[Node]:
    """The top-level graph's nodes, in file order, as (name, op_type)."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                return _read(buf)
            finally:
                buf.release()
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not a readable ONNX model ({e}); re-export the bundle")


def _read(buf) -> list[Node]:
    nodes: list[Node] = []
    graphs = [v for f, w, v in _fields(buf, 0, len(buf)) if f == 7 and w == 2]
    if not graphs:
        raise ValueError("no graph in the model")
    g0, g1 = graphs[-1]
    for f, w, v in _fields(buf, g0, g1):
        if f == 1 and w == 2:
            name = op = ""
            for nf, nw, nv in _fields(buf, *v):
                if nw == 2 and nf in (3, 4):
                    text = bytes(buf[nv[0]:nv[1]]).decode("utf-8")
                    if nf == 3:
                        name = text
                    else:
                        op = text
            nodes.append(Node(name, op))
    return nodes
