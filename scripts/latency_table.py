#!/usr/bin/env python
"""Write a latency table (clipxai/runtime/latency.py) into a markdown file's marked block.

The block is the text between ``<!-- latency-table:start -->`` and
``<!-- latency-table:end -->`` (jetson/README.md has one); tests/test_gpu.py
fills it from a GPU run. A maintainer tool: not part of the installed package.
"""

from __future__ import annotations

from pathlib import Path

from clipxai.common.files import atomic_write_text
from clipxai.errors import ClipxaiError
from clipxai.runtime.latency import TABLE_HEADER

TABLE_START = "<!-- latency-table:start -->"
TABLE_END = "<!-- latency-table:end -->"


def write_table(readme: str | Path, lines: list[str], note: str) -> None:
    """Replace the block between TABLE_START and TABLE_END in ``readme`` with a table of ``lines``."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        raise ClipxaiError(f"{path}: no {TABLE_START} ... {TABLE_END} block to write the table into")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    block = "\n".join([TABLE_START, note, "", *TABLE_HEADER, *lines, TABLE_END])
    atomic_write_text(path, head + block + tail)
