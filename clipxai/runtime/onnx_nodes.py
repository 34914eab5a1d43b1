"""Read the node names and op types of an ONNX file without the ``onnx`` package.

The runtime must not depend on ``onnx`` (or torch), yet the TensorRT build needs
the names of the graph's LayerNorm / softmax / normalisation nodes to pin them
to fp32. An ONNX file is a protobuf ``ModelProto``; this module walks its wire
format just far enough: ModelProto.graph (field 7) -> GraphProto.node (field 1)
-> NodeProto.name (field 3) and NodeProto.op_type (field 4). Everything else,
the weights included, is skipped by length without being decoded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from clipxai.errors import BundleError
from clipxai.runtime.protobuf_wire import LEN, FileReader, fields


class Node(NamedTuple):
    name: str
    op_type: str


def read_nodes(path: str | Path) -> list[Node]:
    """The top-level graph's nodes, in file order, as (name, op_type)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _read(FileReader(f.fileno()), os.fstat(f.fileno()).st_size)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not a readable ONNX model ({e}); re-export the bundle")


def _read(buf, size: int) -> list[Node]:
    nodes: list[Node] = []
    graphs = [(a, b) for number, wire, a, b, _ in fields(buf, 0, size) if number == 7 and wire == LEN]
    if not graphs:
        raise ValueError("no graph in the model")
    for number, wire, a, b, _ in fields(buf, *graphs[-1]):
        if number == 1 and wire == LEN:
            name = op = ""
            for nnum, nwire, na, nb, _ in fields(buf, a, b):
                if nwire == LEN and nnum in (3, 4):
                    text = buf[na:nb].decode("utf-8")
                    if nnum == 3:
                        name = text
                    else:
                        op = text
            nodes.append(Node(name, op))
    return nodes
