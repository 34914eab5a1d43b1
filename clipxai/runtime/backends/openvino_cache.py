"""OpenVINO's compiled models, cached with the guarantees of the CPU graph cache
(clipxai/runtime/cpu/graph_cache.py, docs/security.md):

- the compiled model as OpenVINO exports it (``export_model``), read back with ``import_model``; not
  OpenVINO's own ``CACHE_DIR``, whose entry names hash the model object, and that hash changes from one
  load to the next once the shared constants are unshared (openvino.py), so it never hit;
- one folder per key, ``cache_root()/openvino/<sha256 of the key>``; the key binds the entry to the digests
  of the bundle's graph files (checked by ``load_bundle``), the OpenVINO version, this CPU (model and
  instruction-set flags), the device and the compile settings (precision, threads);
- folders are created 0700 and files made 0600; a folder another user owns or may write is never used
  (clipxai.common.cache.private_dir): the graph is compiled without the cache;
- ``entry.json`` records the key and, per file OpenVINO wrote, its sha256 and stat fingerprint. Before
  OpenVINO reads the folder, every file is checked: same fingerprint, or else the same sha256; a file that
  changed, a file not recorded, or a record of another key -> a warning, the folder is emptied and the
  graph compiled again;
- one process fills an entry at a time (a file lock); a process that finds it locked compiles without
  the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

from clipxai.common.cache import FILE_MODE, UnsafeCacheError, cache_root, private_dir, report_once
from clipxai.common.files import atomic_write, atomic_write_text, sha256_steady, stat_fingerprint
from clipxai.runtime.bundle import files_digest

log = logging.getLogger("clipxai")

CACHE_FORMAT = 1
SUBFOLDER = "openvino"
RECORD = "entry.json"
BLOB = "model.blob"  # the compiled model, as OpenVINO exports it
LOCK_PATIENCE = 0.5  # seconds to wait for another process filling the same entry


def cache_key(bundle, graph_file: str, device: str, config: dict) -> dict:
    import openvino

    from clipxai.runtime.cpu.graph_cache import cpu_fingerprint
    files = bundle.graph_files(graph_file)
    return {"format": CACHE_FORMAT, "graph": graph_file, "graph_sha256": files_digest(files),
            "openvino": openvino.__version__, "cpu": cpu_fingerprint(), "device": device,
            "config": {k: str(v) for k, v in sorted(config.items())}}


def entry_dir(root: Path, key: dict) -> Path:
    return Path(root) / SUBFOLDER / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _blobs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name != RECORD and not p.name.startswith("."))


def check_entry(folder: Path, key: dict) -> bool:
    """True when ``folder`` holds only files recorded for ``key``, unchanged; else a warning, the folder
    emptied, and False (OpenVINO then compiles and writes it again)."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        record = None
    except (OSError, ValueError) as e:
        return _empty(folder, f"its record is unreadable ({e})")
    blobs = _blobs(folder)
    if record is None:
        return True if not blobs else _empty(folder, "it holds files no record vouches for")
    if not isinstance(record, dict) or record.get("key") != key:
        return _empty(folder, "its record is of another key")
    files = record.get("files") or {}
    for p in blobs:
        entry = files.get(p.name)
        if not isinstance(entry, dict):
            return _empty(folder, f"{p.name} is not recorded")
        if stat_fingerprint(p) == entry.get("stat"):
            continue
        try:
            digest, _ = sha256_steady(p)
        except OSError as e:
            return _empty(folder, f"{p.name} cannot be checked ({e.strerror or e})")
        if digest != entry.get("sha256"):
            return _empty(folder, f"{p.name} changed since it was written (sha256 mismatch)")
    return True


def _empty(folder: Path, why: str) -> bool:
    log.warning("OpenVINO cache entry %s: %s; discarding it (the graph is compiled again)", folder, why)
    for p in folder.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif not p.name.startswith("."):
            p.unlink(missing_ok=True)
    return False


def seal(folder: Path, key: dict) -> None:
    """Make OpenVINO's files private (0600) and record their digests and fingerprints."""
    files = {}
    for p in _blobs(folder):
        os.chmod(p, FILE_MODE)
        digest, fingerprint = sha256_steady(p)
        files[p.name] = {"sha256": digest, "stat": fingerprint}
    atomic_write_text(folder / RECORD, json.dumps({"key": key, "files": files}, indent=1), mode=FILE_MODE)


def compile_cached(core, bundle, graph_file: str, config: dict, options, compile_graph):
    """The compiled model of ``graph_file``, through its checked cache entry (module docstring);
    ``compile_graph(core, path, device, config)`` compiles it on a miss (openvino.py's)."""
    from filelock import FileLock, Timeout

    device = options.openvino.device
    path = bundle.path / graph_file
    root = cache_root(options.cache_dir)
    key = cache_key(bundle, graph_file, device, config)
    try:
        folder = private_dir(entry_dir(root, key))
    except UnsafeCacheError as e:
        report_once("openvino-cache:" + str(root), "OpenVINO cache not used: %s", e)
        return compile_graph(core, path, device, config)
    except OSError as e:
        report_once("openvino-cache:" + str(root), "OpenVINO cache %s cannot be written (%s); compiling without it",
                    root / SUBFOLDER, e.strerror or e)
        return compile_graph(core, path, device, config)
    lock = FileLock(str(folder / ".lock"), mode=FILE_MODE, thread_local=False)
    try:
        with lock.acquire(timeout=LOCK_PATIENCE):
            compiled = _import(core, folder, key, device, config)
            if compiled is not None:
                log.info("OpenVINO cache %s: loaded (%s)", folder, graph_file)
                return compiled
            compiled = compile_graph(core, path, device, config)
            with contextlib.suppress(OSError):
                atomic_write(folder / BLOB, lambda p: p.write_bytes(_exported(compiled)), mode=FILE_MODE)
                seal(folder, key)
                log.info("OpenVINO cache %s: filled (%s)", folder, graph_file)
            return compiled
    except Timeout:  # another process is filling this entry: do not read it half-written
        return compile_graph(core, path, device, config)


class KeptAlive:
    """A compiled model imported from a mapped blob, with the mapping it reads (freed with it)."""

    def __init__(self, compiled, mapped):
        self.compiled, self.mapped = compiled, mapped

    def __getattr__(self, name):
        return getattr(self.compiled, name)


def _exported(compiled) -> bytes:
    stream = io.BytesIO()
    compiled.export_model(stream)
    return stream.getvalue()


def _import(core, folder: Path, key: dict, device: str, config: dict):
    """The compiled model of a checked entry, or None (no entry, or one discarded with a warning)."""
    if not (check_entry(folder, key) and (folder / RECORD).exists() and (folder / BLOB).exists()):
        return None
    try:
        # Mapped, not read: measured on ViT-B/16 (a 359 MB blob), peak RSS 731 instead of 1081 MB and
        # 1.6 instead of 2.9 s. Copy-on-write: OpenVINO wants a writable buffer, the file is never written.
        # The compiled model keeps using the mapping: the session holds it (``KeptAlive``).
        import numpy as np
        from openvino import Tensor
        mapped = np.memmap(folder / BLOB, dtype=np.uint8, mode="c")
        return KeptAlive(core.import_model(Tensor(mapped, shared_memory=True), device, config), mapped)
    except Exception as e:  # noqa: BLE001 - an entry OpenVINO cannot import: compile again
        lines = str(e).strip().splitlines() or [type(e).__name__]
        _empty(folder, f"OpenVINO could not import it ({lines[-1][:200]})")
        return None
