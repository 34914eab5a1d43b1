"""Atomic bundle writing (docs/design.md §8, docs/bundle-format.md).

Files are written into a hidden staging directory next to the output, the
manifest (with a sha256 for every file) last, then the directory is renamed
into place. An error, Ctrl-C or SIGTERM removes the staging directory; a
SIGKILL can leave one behind, hidden, which the next export to the same
folder removes once its writer is gone. The output path itself never holds a
partial bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

from clipxai.common.cli import terminate_as_interrupt
from clipxai.common.files import atomic_write, remove_orphans, sha256_file, staged_directory
from clipxai.contract import MANIFEST_FILE
from clipxai.errors import ClipxaiError


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing output unless overwrite; refuse a non-directory in the way."""
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise ClipxaiError(f"output {str(output)!r} already exists; pass --overwrite to replace it")
        if not output.is_dir() or output.is_symlink():
            raise ClipxaiError(f"output {str(output)!r} exists and is not a directory; remove it or choose another path")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ClipxaiError(f"cannot create {str(output)!r}: {str(parent)!r} is not a directory")


@contextlib.contextmanager
def staged_bundle(output: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it becomes ``output``.

    The caller writes every file, then ``finalize_manifest``. Anything raised
    inside the block (including KeyboardInterrupt, and SIGTERM) removes the staging directory.
    """
    output = Path(output)
    check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(output.parent, prefix=output.name)
    with terminate_as_interrupt(), staged_directory(output, mode=0o755) as staging:
        yield staging
        if not (staging / MANIFEST_FILE).exists():
            raise RuntimeError("bundle staged without a manifest")


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

    def write(path: Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    atomic_write(staging / MANIFEST_FILE, write)
    return manifest


def bundle_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
