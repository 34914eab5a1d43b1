"""On-disk cache of prompt-ensemble class embeddings (torch-free).

One ``.npz`` file per (text encoder, templates, class):

    <cache root>/text/<encoder digest>/<templates digest>/<entry digest>.npz

holding ``embedding`` (float32 [D]) and ``identity``: the text of
"<encoder digest> <templates digest> <class name> <sha256 of the embedding>".
An entry is used only if its identity names this encoder, these templates and
this class, and its embedding still has the recorded digest; anything else (a
swapped, scaled or truncated entry, another encoder's) is discarded with a
warning and encoded again. Files are read with ``allow_pickle=False``, written
atomically, 0600 in 0700 folders; a folder others may write is not used
(clipxai.common.cache). The whole folder is safe to delete at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from clipxai.common.cache import FILE_MODE, UnsafeCacheError, cache_root, private_dir, report_once
from clipxai.common.files import atomic_write_bytes

log = logging.getLogger("clipxai")


def default_cache_dir() -> Path:
    """``cache_root()/text``."""
    return cache_root() / "text"


def _digest(value: str | bytes) -> str:
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).hexdigest()


class EncodingCache:
    """Class-name embeddings [D] for one text encoder and one template list."""

    def __init__(self, root: str | Path, encoder_digest: str, templates: Sequence[str], dim: int):
        self.encoder = encoder_digest[:32]
        self.templates = _digest(json.dumps(list(templates)))[:32]
        self.dir = Path(root) / self.encoder / self.templates
        self.dim = dim
        self._usable: bool | None = None

    def path(self, name: str) -> Path:
        return self.dir / f"{_digest(name)[:40]}.npz"

    def _identity(self, name: str, vector: np.ndarray) -> str:
        return f"{self.encoder} {self.templates} {name} {_digest(vector.tobytes())}"

    def get(self, name: str) -> np.ndarray | None:
        """The cached float32 [D] embedding of ``name``, or None (missing, or discarded)."""
        p = self.path(name)
        try:
            with np.load(p, allow_pickle=False) as z:
                v, identity = z["embedding"], str(z["identity"])
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - a damaged entry is a miss, never an error
            return self._discard(p, f"unreadable ({type(e).__name__})")
        if v.dtype != np.float32 or v.shape != (self.dim,) or not np.isfinite(v).all():
            return self._discard(p, "not a finite float32 vector of the right length")
        if identity != self._identity(name, v):
            return self._discard(p, "written for another class, encoder or template list, or changed since")
        return v

    def _discard(self, p: Path, why: str) -> None:
        log.warning("text cache entry %s %s; discarding it", p, why)
        with contextlib.suppress(OSError):
            p.unlink()
        return None

    def put(self, name: str, vector: np.ndarray) -> None:
        """Write atomically; a cache that cannot be written is reported once and skipped."""
        if not self._ready():
            return
        v = np.ascontiguousarray(vector, np.float32)
        buf = io.BytesIO()
        np.savez(buf, embedding=v, identity=np.array(self._identity(name, v)))
        try:
            atomic_write_bytes(self.path(name), buf.getvalue(), mode=FILE_MODE)
        except OSError as e:
            report_once(f"text-cache:{self.dir}", "text cache %s cannot be written (%s); continuing without it",
                        self.dir, e.strerror or e)
            self._usable = False

    def _ready(self) -> bool:
        if self._usable is None:
            try:
                private_dir(self.dir)
                self._usable = True
            except (UnsafeCacheError, OSError) as e:
                report_once(f"text-cache:{self.dir}", "text cache not used: %s", e)
                self._usable = False
        return self._usable
