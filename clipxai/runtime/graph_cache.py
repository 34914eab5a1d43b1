"""A cache of onnxruntime's optimized CPU graph, produced on the first load of a bundle.

On the first load with the CPU provider, onnxruntime optimizes the bundle's
portable ``model.onnx`` and prepacks the weight matrices for this CPU's GEMM
kernels; both are saved (graph + external data, the prepacked weights included)
into a cache entry. Later loads open the entry instead: no graph optimization,
no prepacking, weights memory-mapped, so loading is faster and peak memory
lower. The outputs are bit-identical (tested).

The entry is keyed by the model's sha256, the onnxruntime version, the
provider and this CPU (model name and instruction-set flags): a bundle moved to
another machine or a new onnxruntime gets a new entry, never a foreign one.
The bundle itself is never written to. Entries are written to a temporary
directory and renamed into place, so a crash leaves no half entry; deleting
the cache directory is always safe.

Location: ``cache_dir`` argument, else ``$CLIPXAI_CACHE_DIR``, else
``$XDG_CACHE_HOME/clipxai`` (``~/.cache/clipxai``), subdirectory ``graphs``.
Each entry takes about twice the model's size on disk. ``CLIPXAI_GRAPH_CACHE=0``
turns the cache off (as does ``graph_cache=False``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger("clipxai")

CACHE_FORMAT = 1
GRAPH_FILE = "graph.onnx"
DATA_FILE = "graph.onnx.data"
DONE_FILE = "entry.json"


def enabled() -> bool:
    return os.environ.get("CLIPXAI_GRAPH_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("CLIPXAI_CACHE_DIR"):
        return Path(os.environ["CLIPXAI_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clipxai"


def cpu_fingerprint() -> str:
    """CPU model name and instruction-set flags (the prepacked layout depends on them)."""
    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key == "model name" and not model:
                model = line.split(":", 1)[1].strip()
            elif key in ("flags", "Features") and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def cache_key(model_sha256: str, provider: str = "CPUExecutionProvider") -> dict:
    return {"format": CACHE_FORMAT, "model_sha256": model_sha256, "onnxruntime": ort.__version__,
            "provider": provider, "cpu": cpu_fingerprint()}


def entry_dir(root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return root / "graphs" / digest


def lookup(root: Path, key: dict) -> Path | None:
    """The cached graph for this key, or None (missing, incomplete or not ours)."""
    entry = entry_dir(root, key)
    try:
        done = json.loads((entry / DONE_FILE).read_text())
        ok = (done.get("key") == key
              and (entry / GRAPH_FILE).stat().st_size == done["sizes"][GRAPH_FILE]
              and (entry / DATA_FILE).stat().st_size == done["sizes"][DATA_FILE])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry / GRAPH_FILE if ok else None


def saving_options(so: ort.SessionOptions, staging: Path) -> None:
    """Make the session being created save its optimized, prepacked graph into ``staging``."""
    so.optimized_model_filepath = str(staging / GRAPH_FILE)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")


def new_staging(root: Path) -> Path:
    graphs = root / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    for old in graphs.glob(".partial-*"):  # left by a killed process
        try:
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=".partial-", dir=graphs))


def commit(staging: Path, root: Path, key: dict) -> Path | None:
    """Seal a staged entry and rename it into place (another process may have won: fine)."""
    try:
        sizes = {name: (staging / name).stat().st_size for name in (GRAPH_FILE, DATA_FILE)}
        (staging / DONE_FILE).write_text(json.dumps({"key": key, "sizes": sizes}, indent=1))
        target = entry_dir(root, key)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        return target
    except OSError as e:
        log.warning("could not write the graph cache entry in %s (%s); continuing without it", root, e)
        shutil.rmtree(staging, ignore_errors=True)
        return None


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
