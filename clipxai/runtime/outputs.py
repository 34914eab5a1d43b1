"""How result files are named and written as JSON (shared by the image and the video outputs)."""

from __future__ import annotations

import math
import re


def safe_name(name: str) -> str:
    """A class name as a file-name part: runs of other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def json_safe(value):
    """``value`` with every non-finite float replaced by None, so the JSON is valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
