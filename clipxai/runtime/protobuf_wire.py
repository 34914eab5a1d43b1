"""Just enough of the protobuf wire format to walk an ONNX file without parsing it whole.

An ONNX file is one serialized ``ModelProto``. Reading it with ``onnx.load``
(or any protobuf parser) materialises every weight; the helpers here read the
tags and lengths only, so a caller can pick the few fields it needs and skip
the weights by their length. Used by onnx_nodes.py (node names for the
TensorRT build, without the ``onnx`` package) and onnx_light.py (the graph
cache builder's weight-free copy). No dependencies: torch- and onnx-free.
"""

from __future__ import annotations

import os

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


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return encode_varint(number << 3 | LEN) + encode_varint(len(payload)) + payload


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
