"""Atomic writes and file digests.

Every file clipxai writes (bundles, cache entries, results) goes to a temporary
name in the target's folder and is renamed into place, so a reader never sees
half a file and an interrupted writer leaves nothing behind. Temporary names
carry the process id and random bytes, so concurrent writers never collide.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

PARTIAL_TAG = ".partial-"  # in every temporary name: ".<name>.partial-<pid>-<random>"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stat_fingerprint(path: str | Path) -> list[int]:
    """[inode, size, mtime_ns, ctime_ns]: changes with any write, replacement or copy (ctime cannot be set
    by a user), so an unchanged fingerprint vouches for bytes that were hashed before."""
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def temporary_name(path: str | Path) -> Path:
    """A unique hidden sibling of ``path``: ``.<name>.partial-<pid>-<8 hex>``."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_TAG}{os.getpid()}-{os.urandom(4).hex()}")


def atomic_write(path: str | Path, write: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary sibling, then rename it to ``path``.

    mode: permission bits of the final file (e.g. 0o600), else the umask's default.
    Anything raised (KeyboardInterrupt included) removes the temporary file.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data), mode)


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"), mode)


@contextlib.contextmanager
def staged_directory(target: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling directory of ``target``; on a normal exit it replaces
    ``target`` (an existing one is removed after the swap). Anything raised removes it."""
    target = Path(target)
    staging = temporary_name(target)
    staging.mkdir(mode=0o700 if mode is None else mode)
    try:
        yield staging
        if mode is not None:
            os.chmod(staging, mode)
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_directory(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved aside first, then removed."""
    if target.exists() or target.is_symlink():
        old = temporary_name(target)
        os.replace(target, old)
        os.replace(source, target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(source, target)


def writer_pid(name: str) -> int | None:
    """The process id in a temporary name made by ``temporary_name``, or None."""
    _, tag, rest = name.partition(PARTIAL_TAG)
    if not tag:
        return None
    try:
        return int(rest.split("-", 1)[0])
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(folder: str | Path, prefix: str = "") -> list[Path]:
    """Remove temporary siblings in ``folder`` (names starting ``.<prefix>``) whose writer process is
    gone: what a SIGKILL left behind. Returns what was removed."""
    removed = []
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith("." + prefix):
            continue
        pid = writer_pid(p.name)
        if pid is None or pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed
