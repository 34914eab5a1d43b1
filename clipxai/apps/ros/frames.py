"""The node's hand-over between its callbacks and its worker thread, and its counters; no ROS.

The image callback ``put``s each frame into a ``Latest`` slot and returns at once; the worker
``take``s the newest one. A frame replaced before the worker took it is dropped (counted).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


class Latest:
    """A one-item slot: ``put`` replaces what is there (returns True if that was never taken)."""

    def __init__(self):
        self._item = None
        self._full = False
        self._cond = threading.Condition()

    def put(self, item) -> bool:
        with self._cond:
            replaced, self._item, self._full = self._full, item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float):
        """The item (the slot empties), or None after ``timeout`` seconds with nothing put."""
        with self._cond:
            if not self._full and not self._cond.wait(timeout):
                return None
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item


@dataclass
class Stats:
    """What the node did: frames in, processed, dropped (replaced before the worker took them),
    skipped (bad frames, by kind), failed (the graph or a publication raised); latency from the
    image's stamp to publication, in seconds, since the last ``period()``. Thread-safe."""

    frames_in: int = 0
    processed: int = 0
    dropped: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def skip(self, kind: str) -> int:
        """Count a bad frame of ``kind``; returns how many of that kind so far."""
        with self.lock:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return self.skipped[kind]

    def done(self, latency: float | None) -> None:
        with self.lock:
            self.processed += 1
            if latency is not None:
                self.latencies.append(latency)

    def period(self) -> dict[str, str]:
        """The diagnostics' key-value pairs (strings); the latency window starts again."""
        with self.lock:
            lat, self.latencies = self.latencies, []
            values = {"frames in": self.frames_in, "frames processed": self.processed,
                      "frames dropped": self.dropped, "frames skipped": sum(self.skipped.values()),
                      "frames failed": self.failed}
        out = {k: str(v) for k, v in values.items()}
        out["latency mean (ms)"] = f"{1000 * sum(lat) / len(lat):.1f}" if lat else "n/a"
        out["latency max (ms)"] = f"{1000 * max(lat):.1f}" if lat else "n/a"
        return out
