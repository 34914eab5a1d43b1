"""Bundles verified once per machine: what lets many workers on one node skip re-hashing a bundle.

After ``load_bundle`` has checked every file's sha256 (``verify_files``), it may record a *stamp*
in a private folder (0700, files 0600; ``cache_root()/verified`` by default): the bundle's
resolved path, its manifest digest, and each listed file's stat fingerprint (inode, size, mtime,
ctime). A later load with the same stamp folder skips the hashing when the manifest digest and
every fingerprint still match; any difference (a write, a replacement, a copy) means a full check
and a new stamp. ctime cannot be set by a user, so a file cannot be changed and keep its
fingerprint short of changing the clock. Each fingerprint is the one taken *before* its file was
hashed and found unchanged after (clipxai.common.files.sha256_steady): a file written during the
check is never stamped as verified. A stamp folder that is unsafe (clipxai.common.cache) is
reported once and the bundle loads without stamps. Used by clipxai.cluster (docs/scale.md): one
verification per node, not one per actor.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clipxai.common.cache import UnsafeCacheError, cache_root, private_dir, report_once
from clipxai.common.files import FileChangedError, atomic_write_text, sha256_steady, stat_fingerprint
from clipxai.errors import BundleError

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
    except UnsafeCacheError as e:
        report_once("stamps:" + str(folder), "verification stamps not used: %s", e)
        return False
    except (OSError, ValueError):
        return False


def verify_files(root: Path, digests: dict[str, str]) -> dict[str, list[int]]:
    """Hash each file ``root/name`` and compare it with ``digests[name]``; returns the fingerprints
    that vouch for the hashed bytes (taken before each hash, unchanged after). BundleError (one
    line) for a mismatch, or for a file that kept changing while it was hashed."""
    seen = {}
    for name in sorted(digests):
        path = root / name
        try:
            digest, seen[name] = sha256_steady(path)
        except FileChangedError:
            raise BundleError(f"{path}: changed while its sha256 was being checked (is something writing it?); "
                              "load the bundle once it is complete") from None
        if digest != digests[name]:
            raise BundleError(f"{path}: sha256 does not match the manifest (corrupt or modified); re-export or re-copy")
    return seen


def stamp(folder: Path, root: Path, digest: str, fingerprints: dict[str, list[int]]) -> None:
    """Record that ``root`` (manifest digest ``digest``) was just verified, with the ``fingerprints``
    ``verify_files`` took of its files."""
    try:
        private_dir(folder)
        record = {"bundle": str(root.resolve()), "digest": digest, "files": dict(sorted(fingerprints.items()))}
        atomic_write_text(_stamp_file(folder, root), json.dumps(record, indent=1), mode=FILE_MODE)
    except UnsafeCacheError as e:
        report_once("stamps:" + str(folder), "verification stamps not used: %s", e)
    except OSError:
        pass  # a stamp only saves time: without one the next load verifies again
