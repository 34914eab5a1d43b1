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
import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

from clipxai.common.files import atomic_write, remove_orphans, sha256_file, staged_directory
from clipxai.contract import MANIFEST_FILE
from clipxai.errors import ClipxaiError
from clipxai.manifest import FileEntry, Manifest


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing output unless overwrite; with overwrite, refuse anything but a bundle
    (``not_a_bundle``) or an empty folder: --overwrite replaces a bundle, never other files."""
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise ClipxaiError(f"output {str(output)!r} already exists; pass --overwrite to replace it")
        if not output.is_dir() or output.is_symlink():
            raise ClipxaiError(f"output {str(output)!r} exists and is not a directory; remove it or choose another path")
        why = not_a_bundle(output)
        if why:
            raise ClipxaiError(f"output {str(output)!r} is not a bundle ({why}); --overwrite replaces only a bundle: "
                               "choose another path, or remove the folder yourself")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ClipxaiError(f"cannot create {str(output)!r}: {str(parent)!r} is not a directory")


def not_a_bundle(folder: Path) -> str | None:
    """Why ``folder`` is not a bundle that --overwrite may replace, or None: it is empty, or it holds
    a manifest.json (a JSON object with a schema_version and its files) and nothing else but those files."""
    entries = {p.name for p in folder.iterdir()}
    if not entries:
        return None
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no readable {MANIFEST_FILE}"
    if not (isinstance(manifest, dict) and "schema_version" in manifest and isinstance(manifest.get("files"), dict)):
        return f"its {MANIFEST_FILE} is not a bundle manifest"
    foreign = sorted(entries - set(manifest["files"]) - {MANIFEST_FILE})
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        return f"it also holds {foreign[0]!r}{more}, which its manifest does not list"
    return None


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
    with staged_directory(output, mode=0o755) as staging:  # the command turns SIGTERM into an interrupt
        yield staging
        if not (staging / MANIFEST_FILE).exists():
            raise RuntimeError("bundle staged without a manifest")
        check_output(output, overwrite)  # again: the folder may have changed during the export


def finalize_manifest(staging: Path, manifest: Manifest) -> Manifest:
    """Add a sha256 and size for every file in the staging dir, write manifest.json last. The JSON is
    read back through the manifest's schema first: an exporter never writes a manifest the runtime refuses.
    Returns the manifest as a reader gets it."""
    files = {}
    for p in sorted(staging.iterdir()):
        if p.name == MANIFEST_FILE or not p.is_file():
            continue
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        files[p.name] = FileEntry(sha256_file(p), p.stat().st_size)
    data = dataclasses.replace(manifest, files=files).to_dict()
    checked = type(manifest).from_dict(data)

    def write(path: Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    atomic_write(staging / MANIFEST_FILE, write)
    return checked


def bundle_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
