"""On-disk cache of prompt-ensemble class embeddings (torch-free).

One ``.npy`` file per (text encoder, templates, class):

    <root>/<encoder digest>/<templates digest>/<class digest>.npy   float32 [D]

The encoder digest is the sha256 of the bundle's text graph and vocabulary
(their manifest digests), so a re-exported or different bundle never reads
another's entries. Files are written to a temporary name and renamed, so a
reader never sees half a file; an unreadable or malformed entry is ignored and
rewritten. The whole directory is safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger("clipxai")

ENV_CACHE_DIR = "CLIPXAI_CACHE_DIR"


def default_cache_dir() -> Path:
    """$CLIPXAI_CACHE_DIR, else $XDG_CACHE_HOME/clipxai, else ~/.cache/clipxai; then /text."""
    root = os.environ.get(ENV_CACHE_DIR)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "clipxai") if xdg else str(Path.home() / ".cache" / "clipxai")
    return Path(root) / "text"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class EncodingCache:
    """Class-name embeddings [D] for one text encoder and one template list."""

    def __init__(self, root: str | Path, encoder_digest: str, templates: Sequence[str], dim: int):
        self.dir = Path(root) / encoder_digest[:32] / _digest(json.dumps(list(templates)))[:32]
        self.dim = dim

    def path(self, name: str) -> Path:
        return self.dir / f"{_digest(name)[:40]}.npy"

    def get(self, name: str) -> np.ndarray | None:
        """The cached float32 [D] embedding of ``name``, or None (missing or unusable)."""
        p = self.path(name)
        try:
            v = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - a corrupt entry is a miss, never an error
            log.info("text cache: ignoring unreadable %s (%s)", p, e)
            return None
        if v.dtype != np.float32 or v.shape != (self.dim,) or not np.isfinite(v).all():
            log.info("text cache: ignoring malformed %s", p)
            return None
        return v

    def put(self, name: str, vector: np.ndarray) -> None:
        """Write atomically; a cache that cannot be written is skipped with a log line."""
        p = self.path(name)
        tmp = p.with_name(f".{p.stem}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(vector, np.float32), allow_pickle=False)
            os.replace(tmp, p)
        except OSError as e:
            log.warning("text cache: cannot write %s (%s); continuing without caching", p, e.strerror or e)
            try:
                tmp.unlink()
            except OSError:
                pass
