"""Keep numpy's BLAS off onnxruntime's cores.

numpy's BLAS (OpenBLAS in the wheels) has its own thread pool. The runtime's
post-processing GEMMs are small (upsampling a token grid), but when BLAS
spreads them over every core, its threads and onnxruntime's intra-op threads
(which spin for a while after each run) compete for the same cores: measured
on 2 cores, that cost ~90 ms per 224 px prediction (279 ms instead of 191 ms).
``blas_single_thread()`` runs a block with BLAS on the calling thread only and
restores the user's setting afterwards (threadpoolctl; process-wide state is
never left changed).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

_controller = None


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency; degrade, don't fail
        yield
        return
    if _controller is None:
        _controller = ThreadpoolController()  # after numpy is imported: finds its BLAS
    with _controller.limit(limits=1, user_api="blas"):
        yield
