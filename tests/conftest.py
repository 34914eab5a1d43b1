"""Shared fixtures. Export-side tests need the export extra (torch, open_clip)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent / "scripts"))  # maintainer tools (latency_table.py)

try:  # the runtime tests run without torch; the export tests need it
    import torch  # noqa: F401
    import open_clip  # noqa: F401
    HAVE_TORCH = True
except ImportError:  # pragma: no cover - only in a runtime-only environment
    HAVE_TORCH = False

if HAVE_TORCH:
    from tiny import TINY, TINY_HEADS, TINY_SURGERY_BLOCKS  # noqa: F401  (registers the tiny backbone)


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Keep the runtime's graph cache out of the user's home during tests, and fill it while
    loading ("sync"): a background builder per test load would compete with the suite.
    tests/test_graph_cache.py tests the background mode explicitly."""
    import os
    old = {k: os.environ.get(k) for k in ("CLIPXAI_CACHE_DIR", "CLIPXAI_GRAPH_CACHE")}
    os.environ["CLIPXAI_CACHE_DIR"] = str(tmp_path_factory.mktemp("clipxai-cache"))
    os.environ["CLIPXAI_GRAPH_CACHE"] = "sync"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_choice():
    from clipxai.models.backbones import resolve_backbone
    return resolve_backbone(TINY.name)


@pytest.fixture(scope="session")
def tiny_model(tiny_choice):
    from clipxai.models.loading import load_clip
    return load_clip(tiny_choice, "random")
