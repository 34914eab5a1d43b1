"""Give the weights onnxruntime frees while loading back to the operating system.

While a session is created, onnxruntime holds the bundle's weights and
their prepacked copies at once, then frees the originals. glibc serves blocks
of 128 KB and more with mmap (returned to the system on free) only until the
first such block is freed; from then on its "dynamic mmap threshold" climbs
to 32 MB and weight-sized blocks come from the heap, which keeps them. For
ViT-B/16 that left the first, uncached load at a peak RSS of 684-689 MB in
4 runs out of 6, against 430-456 MB in the other 2 and in all 6 runs with the
threshold fixed at 128 KB (measured; inference time unchanged).

``large_blocks_returned()`` fixes the threshold at 128 KB while a session is
created, then sets it to 32 MB and the heap's trim threshold to 64 MB: the
values glibc's dynamic adjustment reaches on its own (it sets the trim
threshold to twice the mmap threshold), so the app's own allocations
afterwards behave as they would have. The trim threshold matters: fixing the
mmap threshold with ``mallopt`` also stops that adjustment, and with the trim
threshold left at its 128 KB default every multi-megabyte array freed at the
top of the heap was handed back to the system and faulted in again by the
next one. Measured: upsampling 5 maps to 640x427 took 4.4 ms instead of 0.8,
preprocessing to 448 took 9.6 ms instead of 6.0. glibc only (Linux);
elsewhere it does nothing.

These are process-wide malloc settings of the host application. To keep the
application's own settings, opt out with ``CLIPXAI_MALLOC_TUNING=0`` or
``set_malloc_tuning(False)`` before loading a bundle (sessions then load with
glibc's defaults: a higher peak memory on a first load, see above).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from typing import Iterator

M_TRIM_THRESHOLD = -1           # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
LOADING_THRESHOLD = 128 * 1024  # glibc's default starting threshold
AFTER_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
AFTER_TRIM = 2 * AFTER_THRESHOLD    # what glibc's dynamic adjustment pairs with it

_libc = None
_enabled: bool | None = None  # None: $CLIPXAI_MALLOC_TUNING decides (on unless "0", "off", "false", "no")


def set_malloc_tuning(enabled: bool) -> None:
    """Turn the glibc settings on or off for this process (overrides $CLIPXAI_MALLOC_TUNING)."""
    global _enabled
    _enabled = bool(enabled)


def malloc_tuning() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get("CLIPXAI_MALLOC_TUNING", "1").strip().lower() not in ("0", "off", "false", "no")


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                _libc = lib
            except (OSError, AttributeError):
                pass
    return _libc or None


@contextlib.contextmanager
def large_blocks_returned() -> Iterator[None]:
    """Within the block, glibc serves large allocations with mmap; afterwards the module's settings."""
    libc = _glibc() if malloc_tuning() else None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, LOADING_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, AFTER_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, AFTER_TRIM)
