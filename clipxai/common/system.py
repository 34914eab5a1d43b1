"""Which CPU this is (for cache keys and benchmark reports)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class CpuInfo:
    """machine: e.g. "x86_64"; model: the model name; flags: the instruction-set flags (sorted)."""

    machine: str
    model: str
    flags: tuple[str, ...]


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """From /proc/cpuinfo on Linux (x86 "model name"/"flags", Arm "Features"), else ``platform``."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.strip()
    except OSError:
        pass
    return CpuInfo(platform.machine(), model or platform.processor() or "unknown", tuple(sorted(flags.split())))
