"""Where clipxai's caches live, and the rule every cache folder follows.

Root: the ``cache_dir`` argument, else ``$CLIPXAI_CACHE_DIR``, else the user
cache folder of the platform (``platformdirs``: ``$XDG_CACHE_HOME/clipxai`` or
``~/.cache/clipxai`` on Linux); ``~`` is expanded in every case. Each of the
five caches keeps a subfolder: ``graphs`` (CPU graph cache), ``text`` (class
encodings), ``engines`` (TensorRT engines), ``openvino`` (OpenVINO compiled models),
``verified`` (verification stamps of bundles, clipxai/runtime/stamps.py).

Permission rule (as ssh treats ``~/.ssh``): cache folders are created ``0700``
and files ``0600``; a folder that is not owned by the current user, or that
others may write, is refused (``UnsafeCacheError``) and the caller goes on
without the cache. See docs/security.md for what this protects against.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from clipxai.errors import ClipxaiError

log = logging.getLogger("clipxai")

ENV_CACHE_DIR = "CLIPXAI_CACHE_DIR"
DIR_MODE = 0o700
FILE_MODE = 0o600

_reported: set[str] = set()  # problems already logged by this process


class UnsafeCacheError(ClipxaiError):
    """A cache folder another user could write or owns: never used."""


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The root of clipxai's caches (module docstring), ``~`` expanded."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("clipxai", appauthor=False)).expanduser()


def check_private(folder: Path) -> None:
    """Refuse a folder that is a symlink, not ours, or writable by group or others."""
    try:
        st = os.lstat(folder)
    except OSError as e:
        raise UnsafeCacheError(f"cache folder {folder}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeCacheError(f"cache folder {folder} is a symbolic link; remove it or point "
                               f"{ENV_CACHE_DIR} at a real folder")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeCacheError(f"cache folder {folder} is not a folder; remove it")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise UnsafeCacheError(f"cache folder {folder} is owned by uid {st.st_uid}, not by you; "
                               f"use a cache folder of your own ({ENV_CACHE_DIR})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCacheError(f"cache folder {folder} is writable by other users (mode "
                               f"{stat.S_IMODE(st.st_mode):o}); run: chmod go-w {folder}")


def private_dir(folder: str | Path) -> Path:
    """Create ``folder`` and missing parents with mode 0700, then ``check_private`` it.
    Raises UnsafeCacheError (refused) or OSError (cannot be created)."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        _make(folder)
    check_private(folder)
    return folder


def _make(folder: Path) -> None:
    if folder.parent != folder and not folder.parent.exists():
        _make(folder.parent)
    try:
        folder.mkdir(mode=DIR_MODE)
    except FileExistsError:  # made by another process meanwhile: checked like any other
        pass


def report_once(key: str, message: str, *args) -> None:
    """Log a cache problem once per process (a read-only or unsafe cache is not news on every load)."""
    if key in _reported:
        return
    _reported.add(key)
    log.warning(message, *args)


# The caches under the root: subfolder -> what it keeps (``clipxai cache clear`` removes these).
CACHES = {
    "graphs": "CPU graph cache: onnxruntime's optimized graphs",
    "text": "class encodings made on the device",
    "engines": "TensorRT engines",
    "openvino": "OpenVINO compiled models (clipxai/runtime/backends/openvino_cache.py)",
    "verified": "verification stamps of bundles",
}


def clear_caches(root: Path, keep: tuple[str, ...] = ()) -> list[tuple[str, Path, int, str]]:
    """Remove every cache subfolder of ``root`` except those in ``keep``; per cache (name, folder, bytes
    freed, what happened: "removed", "absent", "kept", or why it was left alone). A symbolic link is
    never followed: it is reported, not removed."""
    import shutil
    results = []
    for name in CACHES:
        folder = root / name
        if name in keep:
            results.append((name, folder, 0, "kept"))
        elif folder.is_symlink():
            results.append((name, folder, 0, "left alone: a symbolic link, not a cache folder"))
        elif not folder.exists():
            results.append((name, folder, 0, "absent"))
        else:
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(folder, ignore_errors=True)
            results.append((name, folder, size, "removed" if not folder.exists() else "could not be removed"))
    return results
