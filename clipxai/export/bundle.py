"""Atomic bundle writing (DESIGN section 8).

Files are written into a hidden staging directory next to the output, the
manifest (with a sha256 for every file) last, then the directory is renamed
into place. An error, Ctrl-C or SIGTERM removes the staging directory; a
SIGKILL can leave one behind, hidden, which the next export to the same
output removes. The output path itself never holds a partial bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Iterator

from clipxai.contract import MANIFEST_FILE, sha256_file
from clipxai.errors import ClipxaiError

_STAGING_TAG = ".clipxai-partial-"


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing output unless overwrite; refuse a non-directory in the way."""
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise ClipxaiError(f"output {str(output)!r} already exists; pass --overwrite to replace it")
        if not output.is_dir():
            raise ClipxaiError(f"output {str(output)!r} exists and is not a directory; remove it or choose another path")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ClipxaiError(f"cannot create {str(output)!r}: {str(parent)!r} is not a directory")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(output: Path) -> None:
    prefix = f".{output.name}{_STAGING_TAG}"
    for p in output.parent.glob(prefix + "*"):
        try:
            pid = int(p.name[len(prefix):].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so `kill` cleans up like Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def staged_bundle(output: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it becomes ``output``.

    The caller writes every file, then ``finalize_manifest``. Anything raised
    inside the block (including KeyboardInterrupt) removes the staging directory.
    """
    output = Path(output)
    check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(output)
    staging = output.parent / f".{output.name}{_STAGING_TAG}{os.getpid()}-{os.urandom(3).hex()}"
    staging.mkdir()
    try:
        with _sigterm_as_interrupt():
            yield staging
            if not (staging / MANIFEST_FILE).exists():
                raise RuntimeError("bundle staged without a manifest")
            _replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, output: Path) -> None:
    if output.exists():
        trash = output.parent / f".{output.name}{_STAGING_TAG}{os.getpid()}-old"
        os.replace(output, trash)
        os.replace(staging, output)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, output)


def finalize_manifest(staging: Path, manifest: dict) -> dict:
    """Add a sha256 and size for every file in the staging dir, write manifest.json last."""
    files = {}
    for p in sorted(staging.iterdir()):
        if p.name == MANIFEST_FILE or not p.is_file():
            continue
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        files[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest = dict(manifest, files=files)
    tmp = staging / (MANIFEST_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, staging / MANIFEST_FILE)
    return manifest


def bundle_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
