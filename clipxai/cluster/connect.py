"""Joining or starting a Ray cluster, with one-line errors (docs/scale.md).

``--ray`` alone starts a local Ray instance, unless ``$RAY_ADDRESS`` names a cluster to join;
``--ray ADDRESS`` joins that one (``host:port`` of a ``ray start --head`` node, ``ray://host:port``
for Ray Client, or ``auto`` for the cluster this machine belongs to). Ray's own client retries
an unreachable address for minutes, so the address is probed first (a TCP connect, 5 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Iterator

from clipxai.errors import ClipxaiError

LOCAL = "local"            # what a bare --ray means
PROBE_TIMEOUT_S = 5.0
RAY_EXTRA = "pip install 'clipxai[ray]'"


def import_ray():
    """The ray module with Ray Data, or a one-line error naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ClipxaiError(f"--ray needs Ray with Ray Data ({e.name} is missing): {RAY_EXTRA}") from None
    return ray


def resolve_address(address: str | None) -> str | None:
    """None for a new local instance; otherwise the address to join (``$RAY_ADDRESS`` for a bare --ray)."""
    if address in (None, LOCAL):
        return os.environ.get("RAY_ADDRESS") or None
    if Path(address).exists():
        raise ClipxaiError(f"--ray-address {address}: that is a file or folder, not a cluster address "
                           "(HOST:PORT, ray://HOST:PORT or auto)")
    return address


def probe(address: str) -> None:
    """A one-line error unless something listens at a host:port address (``auto`` is left to Ray)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClipxaiError(f"--ray-address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        raise ClipxaiError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with "
                           "`ray start --head` there, or check the address and port") from None


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[object]:
    """Connected Ray (the module), shut down on exit. num_cpus: for a new local instance only."""
    ray = import_ray()
    target = resolve_address(address)
    if target is not None:
        probe(target)
    quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if target is None:
            ray.init(num_cpus=num_cpus, **quiet)
        else:
            ray.init(address=target, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClipxaiError(f"cannot start or join Ray ({first[:200]})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray) -> int:
    return int(ray.cluster_resources().get("CPU", 0))
