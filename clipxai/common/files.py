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


class FileChangedError(OSError):
    """A file that kept changing while it was being hashed: no digest vouches for it."""


def sha256_steady(path: str | Path, tries: int = 3) -> tuple[str, list[int]]:
    """(hex sha256, stat fingerprint) of a file, the fingerprint taken *before* the hash and checked
    after it, so it vouches only for the bytes that were hashed. A file that changed meanwhile is
    hashed again (``tries`` times in all), then FileChangedError."""
    for _ in range(tries):
        before = stat_fingerprint(path)
        digest = sha256_file(path)
        if stat_fingerprint(path) == before:
            return digest, before
    raise FileChangedError(f"{path}: changed while it was being hashed (is something writing it?)")


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


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create a results folder and prove it writable, else a one-line ClipxaiError naming --out."""
    import tempfile

    from clipxai.errors import ClipxaiError
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".clipxai-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ClipxaiError(f"cannot write results to {out} ({e.strerror or e}); choose a writable --out folder")
    return out


OUTPUT_LOCK = ".clipxai-run.lock"  # in a results folder while a run writes to it


@contextlib.contextmanager
def exclusive_output(out_dir: str | Path) -> Iterator[None]:
    """Hold ``out_dir``'s run lock for the block: a second clipxai run writing to the same folder at
    the same time is refused with a one-line ClipxaiError (never two runs overwriting each other)."""
    from filelock import FileLock, Timeout

    from clipxai.errors import ClipxaiError
    path = Path(out_dir) / OUTPUT_LOCK
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ClipxaiError(f"another clipxai run is writing to {out_dir}; wait for it to end or choose "
                           "another --out") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: no other run can be holding this file
        lock.release()
