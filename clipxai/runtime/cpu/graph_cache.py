"""A cache of onnxruntime's optimized CPU graph, produced on the first load of a bundle's graph.

Every graph of a bundle (the image graph, the text encoder, the word explainer,
a mask model's encoder and decoder) has its own entry, keyed by that graph's
files. On the first load with the CPU provider, onnxruntime optimizes the
portable graph and prepacks the weight matrices for this CPU's GEMM kernels;
both are saved (graph + external data, the prepacked weights included) into a
cache entry. Later loads open the entry instead: no graph optimization, no
prepacking, weights memory-mapped, so loading is faster and peak memory lower.

Before onnxruntime optimizes it, the graph's explicit attention is fused into
onnxruntime's CPU attention kernel (attention_fusion.py; needs the optional
``onnx`` package, ``clipxai[fusion]``). The builder runs the fused graph and the
bundle's graph on the same probe input and keeps the fused one only if every
output agrees within ``FUSION_TOLERANCE`` (1e-4; measured differences are
around 1e-7, float rounding of another summation order), else it caches the
unfused graph, whose outputs equal the bundle graph's bit for bit. int8 graphs
and single-file graphs (bundles of schema 1 and 2) are cached unfused.

Trust (docs/security.md):

- The entry's key binds it to what produced it: the digests of the bundle's
  graph files, the onnxruntime version, the provider and this CPU (model name
  and instruction-set flags). Entries live in a folder named after the key.
- ``entry.json`` records the sha256 and a stat fingerprint (inode, size, mtime
  and ctime in ns) of each file when it is written. A load whose files still
  have their fingerprints uses them at once (a few microseconds); a file with
  another fingerprint (replaced, edited, copied, touched) is hashed and must
  match its recorded sha256, else the entry is discarded with a warning and
  rebuilt. Every recorded fingerprint is taken before its file is hashed and
  checked after (``sha256_steady``): a file written during the hash is never
  recorded as the bytes that were hashed. The fingerprint cannot be kept by a write short of changing the
  system clock, so the fast path only skips hashing a file no one wrote.
- Folders are created 0700, files 0600; a cache folder that another user owns
  or may write is never used (clipxai.common.cache).
- A cache that cannot be written is reported once per process and not tried
  again by that process.

Building: by default (mode ``background``) a first load does not wait: it
opens the bundle's graph and starts a detached, low-priority process
(``builder_main``), isolated from the caller's working directory and
environment (``python -I`` with an explicit path), that fills the entry.
Mode ``sync`` fills the entry while loading, ``off`` never caches;
``clipxai cache warm BUNDLE`` fills it ahead of time. An entry is written into
a staging folder whose name carries the builder's pid, then renamed into
place: a crash leaves no half entry, and a staging folder whose builder is
gone is removed by the next builder. One builder per entry (a file lock).
The builder's peak memory stays inside 1.5x the bundle + 150 MB (it reads the
graph without its weights, and runs one session at a time).

Location: ``clipxai.common.cache.cache_root()/graphs``. Mode: the
``graph_cache`` argument, else ``$CLIPXAI_GRAPH_CACHE`` (``background``,
``sync``, ``off``/``0``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clipxai.common.cache import FILE_MODE, UnsafeCacheError, private_dir, report_once
from clipxai.common.files import atomic_write_text, remove_orphans, sha256_steady, staged_directory, stat_fingerprint
from clipxai.common.system import cpu_info
from clipxai.contract import KIND_CLIP, MODEL_FILE
from clipxai.errors import ClipxaiError
from clipxai.runtime.bundle import files_digest
from clipxai.runtime.cpu.memory import large_blocks_returned

log = logging.getLogger("clipxai")

CACHE_FORMAT = 3  # 3: keyed by every graph file's digest; files bound by sha256 and fingerprint
GRAPH_FILE = "graph.onnx"
DATA_FILE = "graph.onnx.data"
DONE_FILE = "entry.json"
FUSED_FILE = "fused.onnx"  # staging only: the bundle graph with attention fused, before onnxruntime
FUSION_TOLERANCE = 1e-4    # max abs difference allowed between fused and bundle graph outputs
QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul",
                 "MatMulIntegerToFloat"}  # int8 graphs are cached unfused (see _fuse)
LOCK_PATIENCE = 0.5  # seconds a builder waits for the entry's lock before leaving it to its holder

MODES = ("background", "sync", "off")
_MODE_WORDS = {"background": "background", "1": "background", "on": "background", "true": "background",
               "yes": "background", "sync": "sync", "off": "off", "0": "off", "false": "off", "no": "off"}

_unwritable: set[str] = set()  # cache roots this process found unusable: not tried again


def resolve_mode(graph_cache: bool | str | None = None) -> str:
    """The cache mode: the argument (True = the default, False = off), else $CLIPXAI_GRAPH_CACHE."""
    if graph_cache is False:
        return "off"
    word = graph_cache if isinstance(graph_cache, str) else os.environ.get("CLIPXAI_GRAPH_CACHE", "background")
    mode = _MODE_WORDS.get(word.strip().lower())
    if mode is None:
        raise ClipxaiError(f"unknown graph cache mode {word!r}; use one of {', '.join(MODES)}")
    return mode


def background_supported() -> bool:
    """Whether a builder process can be started: a POSIX system and a real Python interpreter
    (a frozen app's sys.executable cannot run Python code)."""
    return os.name == "posix" and not getattr(sys, "frozen", False)


# ---------------------------------------------------------------- keys and entries

def cpu_fingerprint() -> str:
    """CPU model name and instruction-set flags (the prepacked layout depends on them)."""
    cpu = cpu_info()
    return f"{cpu.machine}|{cpu.model}|{hashlib.sha256(' '.join(cpu.flags).encode()).hexdigest()[:16]}"


def cache_key(file_digests: dict[str, str], provider: str = "CPUExecutionProvider") -> dict:
    return {"format": CACHE_FORMAT, "graph_sha256": files_digest(file_digests), "files": dict(file_digests),
            "onnxruntime": ort.__version__, "provider": provider, "cpu": cpu_fingerprint()}


def graphs_dir(root: Path) -> Path:
    return Path(root) / "graphs"


def entry_dir(root: Path, key: dict) -> Path:
    return graphs_dir(root) / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _seal(folder: Path, names=(GRAPH_FILE, DATA_FILE)) -> dict:
    """Make the files private (0600), then record their digests and fingerprints."""
    for name in names:
        os.chmod(folder / name, FILE_MODE)
    return {name: dict(zip(("sha256", "stat"), sha256_steady(folder / name))) for name in names}


def lookup(root: Path, key: dict) -> Path | None:
    """The cached graph for this key, or None. An entry whose files changed since they were written
    is discarded with a warning (module docstring)."""
    entry = entry_dir(root, key)
    try:
        done = json.loads((entry / DONE_FILE).read_text())
        if done.get("key") != key:
            raise ValueError("key")
        files = done["files"]
        changed = [name for name in (GRAPH_FILE, DATA_FILE) if stat_fingerprint(entry / name) != files[name]["stat"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        _discard(entry, "its record is missing or malformed")
        return None
    seen = {}
    for name in changed:  # written, replaced or copied since: only its digest can vouch for it
        try:
            digest, seen[name] = sha256_steady(entry / name)  # the fingerprint of the bytes hashed
        except OSError as e:
            _discard(entry, f"{name} cannot be checked ({e.strerror or e})")
            return None
        if digest != files[name]["sha256"]:
            _discard(entry, f"{name} changed since it was written (sha256 mismatch)")
            return None
    if changed:  # same bytes (a copied or restored cache): remember the new fingerprints
        with contextlib.suppress(OSError):
            _write_record(entry, key, {**done, "files": {**files, **{
                n: {"sha256": files[n]["sha256"], "stat": seen[n]} for n in changed}}})
    return entry / GRAPH_FILE


def _write_record(folder: Path, key: dict, record: dict) -> None:
    atomic_write_text(folder / DONE_FILE, json.dumps({**record, "key": key}, indent=1), mode=FILE_MODE)


def _discard(entry: Path, why: str) -> None:
    log.warning("graph cache entry %s: %s; discarding it (it is rebuilt)", entry, why)
    discard(entry)


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def usable_root(root: Path) -> Path | None:
    """``root/graphs`` created 0700 and checked, or None (reported once) when it is unsafe or
    cannot be created; a root found unusable is not tried again by this process."""
    key = str(root)
    if key in _unwritable:
        return None
    try:
        folder = private_dir(graphs_dir(root))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(folder))
        return folder
    except UnsafeCacheError as e:
        report_once("graph-cache:" + key, "graph cache not used: %s", e)
    except OSError as e:
        report_once("graph-cache:" + key, "graph cache %s cannot be written (%s); loading without it",
                    graphs_dir(root), e.strerror or e)
    _unwritable.add(key)
    return None


# ---------------------------------------------------------------- building

def _lock(root: Path, key: dict):
    from filelock import FileLock
    entry = entry_dir(root, key)
    return FileLock(str(entry.with_name(f".{entry.name}.lock")), mode=FILE_MODE, thread_local=False)


def building(root: Path, key: dict) -> bool:
    """Whether some process is filling this entry right now."""
    from filelock import Timeout
    lock = _lock(root, key)
    if not Path(lock.lock_file).exists():
        return False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def build(model_path: Path, file_digests: dict[str, str], root: Path, threads: int = 1) -> Path | None:
    """Fill the entry of a graph already checked against ``file_digests`` (under a lock; a no-op if
    the entry exists, None if another process is filling it or the cache cannot be written)."""
    from filelock import Timeout
    if Path(model_path).name not in file_digests:  # the entry would hold another graph than its key names
        raise ClipxaiError(f"{model_path}: not one of the graph files {sorted(file_digests)} it is cached under")
    key = cache_key(file_digests)
    found = lookup(root, key)
    if found is not None:
        return found.parent
    folder = usable_root(root)
    if folder is None:
        return None
    remove_orphans(folder)  # staging folders of builders that were killed
    try:
        with _lock(root, key).acquire(timeout=LOCK_PATIENCE):
            found = lookup(root, key)  # filled by a builder that finished while we were getting here
            if found is not None:
                return found.parent
            target = entry_dir(root, key)
            with staged_directory(target) as staging:
                fused = _save_optimized(Path(model_path), staging, threads)
                _write_record(staging, key, {"files": _seal(staging), "attention_fused": fused})
            return target
    except Timeout:
        return None


def _cpu_session(source: Path, threads: int, staging: Path | None = None,
                 prepack: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if staging is not None:  # save the optimized, prepacked graph into the staging folder
        so.optimized_model_filepath = str(staging / GRAPH_FILE)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    if not prepack:  # a session that runs once: packing its GEMM weights costs more than it saves
        so.add_session_config_entry("session.disable_prepacking", "1")
    with large_blocks_returned():  # memory.py: the weights freed while loading go back to the system
        return ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])


def _save_optimized(model_path: Path, staging: Path, threads: int) -> int:
    """Save the optimized, prepacked graph into ``staging``, with attention fused where the
    fused graph agrees with the bundle's; returns the number of attention blocks fused."""
    source, fused = _fuse(model_path, staging)
    sess = _cpu_session(source, threads, staging)
    if fused:
        feeds = probe_feeds(sess)
        got = sess.run(None, feeds)
        del sess
        # ViT-B/16 at 224: 0.5 s to create without prepacking instead of 0.9 s, same run time
        want = _cpu_session(model_path, threads, prepack=False).run(None, feeds)
        error = max(float(np.max(np.abs(np.asarray(g, np.float64) - w))) for g, w in zip(got, want))
        if not error <= FUSION_TOLERANCE:
            log.warning("fused attention changed the outputs of %s (max abs difference %.2g > %g); "
                        "caching the unfused graph", model_path, error, FUSION_TOLERANCE)
            for name in (GRAPH_FILE, DATA_FILE):
                (staging / name).unlink(missing_ok=True)
            fused = 0
            _cpu_session(model_path, threads, staging)
    for p in staging.iterdir():  # the fused graph and its data: staging only
        if p.name not in (GRAPH_FILE, DATA_FILE):
            p.unlink()
    return fused


def _fuse(model_path: Path, staging: Path) -> tuple[Path, int]:
    """The graph to optimize: the bundle's with attention fused, written into ``staging``
    (path, blocks fused), or the bundle's own (model_path, 0) when nothing was fused."""
    try:
        import onnx

        from clipxai.runtime.cpu.attention_fusion import fuse_attention
        from clipxai.runtime.onnx_wire import external_data_locations
    except ImportError:  # an optional dependency (clipxai[fusion]): without it the cache is unfused
        log.info("caching the graph without attention fusion (install onnx, or clipxai[fusion], to fuse it)")
        return model_path, 0
    locations = external_data_locations(model_path)
    if not locations:
        # A single-file graph (schema 1-2 bundles): onnx.load would hold the whole file and its parsed
        # weights at once (731 MiB for ViT-B/16), over the builder's memory budget.
        log.info("%s keeps its weights inside the graph file (an older bundle): caching it unfused; "
                 "re-export the bundle for fused attention", model_path)
        return model_path, 0
    try:
        # Measured (ViT-B/16, 359 MB of weights as external data): 64 MiB peak for load + fuse + save.
        model = onnx.load(str(model_path), load_external_data=False)
        if any(n.op_type in QUANTIZED_OPS for n in model.graph.node):
            # Measured on an int8 ViT-B/16 at 448: fusing moved the heatmaps by 0.034, because the
            # activations are quantized per call and float rounding flips quantization steps.
            log.info("int8 graph: caching it without attention fusion")
            return model_path, 0
        fused = fuse_attention(model)
        if not fused:
            return model_path, 0
        for name in locations:  # the weights, next to the fused graph (a hard link where possible)
            _link_or_copy(model_path.parent / name, staging / name)
        onnx.save(model, str(staging / FUSED_FILE))
    except Exception as e:  # noqa: BLE001 - an optimization: never a reason to fail the cache
        log.warning("attention fusion failed on %s (%s); caching the unfused graph", model_path, e)
        for p in staging.iterdir():
            p.unlink()
        return model_path, 0
    return staging / FUSED_FILE, fused


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system: a kernel-side copy (no memory)
        shutil.copyfile(src, dst)


def probe_feeds(sess: ort.InferenceSession, seed: int = 0) -> dict:
    """Deterministic inputs for any graph: dynamic dims 1, floats uniform in [0, 1), integers 0."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if inp.type == "tensor(float)":
            feeds[inp.name] = rng.random(shape, dtype=np.float32)
        elif inp.type == "tensor(float16)":
            feeds[inp.name] = rng.random(shape, dtype=np.float32).astype(np.float16)
        elif inp.type == "tensor(bool)":
            feeds[inp.name] = np.zeros(shape, bool)
        else:
            feeds[inp.name] = np.zeros(shape, np.int64 if "int64" in inp.type else np.int32)
    return feeds


# ---------------------------------------------------------------- the background builder

_builders: list[subprocess.Popen] = []


def builder_command(bundle_path: Path, root: Path, graph: str = MODEL_FILE, kind: str = KIND_CLIP) -> list[str]:
    """``python -I -c ...`` running ``builder_main``: isolated mode (no working directory, no user
    site, no PYTHON* variables on the path), with the folders clipxai and its dependencies were
    imported from as the only additions to the interpreter's own path."""
    import filelock
    import platformdirs

    import clipxai
    paths = list(dict.fromkeys(str(Path(m.__file__).resolve().parent.parent)
                               for m in (clipxai, np, ort, filelock, platformdirs)))
    code = ("import sys; sys.path[:0] = " + repr(paths) + "; "
            "from clipxai.runtime.cpu.graph_cache import builder_main; builder_main(sys.argv[1:])")
    return [sys.executable, "-I", "-c", code, str(Path(bundle_path).resolve()), str(Path(root).resolve()),
            graph, kind]


def builder_main(argv: list[str]) -> None:
    """The background builder (argv: bundle, cache root, graph file, bundle kind): check the bundle
    again (nothing is cached from a bundle that changed since), then fill the graph's entry at the
    lowest priority. Exits 1 on any failure: the next load simply tries again."""
    from clipxai.runtime.bundle import load_bundle
    lower_priority()
    try:
        bundle_path, root, graph, kind = argv
        b = load_bundle(bundle_path, kind=kind)
        build(b.path / graph, b.graph_files(graph), Path(root))
    except Exception:  # noqa: BLE001 - a background helper
        sys.exit(1)


def start_background_build(bundle_path: Path, file_digests: dict[str, str], root: Path, graph: str = MODEL_FILE,
                           kind: str = KIND_CLIP) -> subprocess.Popen | None:
    """Start a detached, low-priority process that fills the entry of the bundle's ``graph``; None if
    one is already at it or the cache cannot be used."""
    key = cache_key(file_digests)
    folder = usable_root(root)
    if folder is None or building(root, key):
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["OMP_NUM_THREADS"] = "1"
    # Its own process group, so a Ctrl-C meant for the app does not kill it half-way; the same
    # session, so Linux's per-session scheduler groups (autogroup) let its low priority count.
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    proc = subprocess.Popen(builder_command(bundle_path, root, graph, kind), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, env=env,
                            cwd=folder, **group)
    _builders.append(proc)
    # Reap it when it ends (no zombie in a long-lived app); the thread never keeps the app alive.
    threading.Thread(target=proc.wait, name="clipxai-graph-cache-reaper", daemon=True).start()
    return proc


def started_builds() -> int:
    """How many background builds this process has started."""
    return len(_builders)


def wait_for_builds(timeout: float | None = None) -> bool:
    """Wait for the background builds this process started; True if all have ended."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for proc in list(_builders):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            proc.wait(left)
        except subprocess.TimeoutExpired:
            return False
    return True


def lower_priority() -> None:
    """Run only on CPU time the app leaves idle: SCHED_IDLE where Linux has it, else nice 19."""
    with contextlib.suppress(OSError):
        os.nice(19)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

