"""Bundles verified once per machine: what lets many workers on one node skip re-hashing a bundle.

After ``load_bundle`` has checked every file's sha256, it may record a *stamp* in a private
folder (0700, files 0600; ``cache_root()/verified`` by default): the bundle's resolved path,
its manifest digest, and each listed file's stat fingerprint (inode, size, mtime, ctime). A
later load with the same stamp folder skips the hashing when the manifest digest and every
fingerprint still match; any difference (a write, a replacement, a copy) means a full check and
a new stamp. ctime cannot be set by a user, so a file cannot be changed and keep its fingerprint
short of changing the clock. Used by clipxai.cluster (docs/scale.md): one verification per node,
not one per actor.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clipxai.common.cache import cache_root, private_dir
from clipxai.common.files import atomic_write_text, stat_fingerprint

FILE_MODE = 0o600


def default_stamp_dir(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "verified"


def _stamp_file(folder: Path, root: Path) -> Path:
    return folder / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32] + ".json")


def _fingerprints(root: Path, names) -> dict[str, list[int]]:
    return {name: stat_fingerprint(root / name) for name in sorted(names)}


def is_stamped(folder: Path, root: Path, digest: str, names) -> bool:
    """Whether ``root`` was verified with this manifest digest and its files are unchanged since."""
    try:
        private_dir(folder)
        record = json.loads(_stamp_file(folder, root).read_text())
        return (record.get("bundle") == str(root.resolve()) and record.get("digest") == digest
                and record.get("files") == _fingerprints(root, names))
    except (OSError, ValueError):
        return False


def stamp(folder: Path, root: Path, digest: str, names) -> None:
    """Record that ``root`` (manifest digest ``digest``, files ``names``) was just verified."""
    try:
        private_dir(folder)
        record = {"bundle": str(root.resolve()), "digest": digest, "files": _fingerprints(root, names)}
        atomic_write_text(_stamp_file(folder, root), json.dumps(record, indent=1), mode=FILE_MODE)
    except OSError:
        pass  # a stamp only saves time: without one the next load verifies again
