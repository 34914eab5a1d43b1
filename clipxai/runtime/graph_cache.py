"""A cache of onnxruntime's optimized CPU graph, produced on the first load of a bundle.

On the first load with the CPU provider, onnxruntime optimizes the bundle's
portable ``model.onnx`` and prepacks the weight matrices for this CPU's GEMM
kernels; both are saved (graph + external data, the prepacked weights included)
into a cache entry. Later loads open the entry instead: no graph optimization,
no prepacking, weights memory-mapped, so loading is faster and peak memory
lower. The outputs are bit-identical (tested).

Before onnxruntime optimizes it, the graph's explicit attention is fused into
onnxruntime's CPU attention kernel (attention_fusion.py; needs the optional
``onnx`` package, ``clipxai[fusion]``, else the entry is unfused); the builder runs the
fused graph and the bundle's graph on the same probe input and keeps the
fused one only if every output agrees within 1e-4, else it caches the
unfused graph.

The entry is keyed by the model's sha256, the onnxruntime version, the
provider and this CPU (model name and instruction-set flags): a bundle moved to
another machine or a new onnxruntime gets a new entry, never a foreign one.
The bundle itself is never written to. Entries are written to a temporary
directory and renamed into place, so a crash leaves no half entry; deleting
the cache directory is always safe.

Filling the entry means writing about twice the model's size (~700 MB for
ViT-B/16), which takes seconds. The builder reads the bundle's graph without
its weights (onnx_light.py) and runs one session at a time, so its peak
memory stays inside the runtime's budget of 1.5x the bundle + 150 MB
(ViT-B/16 fp32: 459 MiB at 224, 548 MiB at 448; measured). By default (mode ``background``) the first load
therefore does not wait for it: it opens the bundle's graph as usual and starts
a detached, low-priority process (``clipxai-cache build``, cache_cli.py) that
fills the entry and exits; the next load finds it. Mode ``sync`` fills
the entry inside the loading process (the first load is slower), mode ``off``
never caches. To fill the cache ahead of time (a Docker build step, a
provisioning script): ``clipxai-cache warm BUNDLE``.

Location: ``cache_dir`` argument, else ``$CLIPXAI_CACHE_DIR``, else
``$XDG_CACHE_HOME/clipxai`` (``~/.cache/clipxai``), subdirectory ``graphs``.
Each entry takes about twice the model's size on disk. The mode comes from the
``graph_cache`` argument, else ``$CLIPXAI_GRAPH_CACHE`` (``background``,
``sync``, ``off``/``0``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clipxai.runtime.memory import large_blocks_returned

try:  # POSIX; elsewhere the background mode falls back to "sync" (background_supported)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger("clipxai")

CACHE_FORMAT = 2  # 2: attention fused into MultiHeadAttention (attention_fusion.py)
GRAPH_FILE = "graph.onnx"
DATA_FILE = "graph.onnx.data"
DONE_FILE = "entry.json"
FUSED_FILE = "fused.onnx"  # staging only: the bundle graph with attention fused, before onnxruntime
FUSION_TOLERANCE = 1e-4    # max abs difference allowed between fused and bundle graph outputs
QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul",
                 "MatMulIntegerToFloat"}  # int8 graphs are cached unfused (see _fuse)


LOCK_PATIENCE = 0.5  # seconds a builder waits for the entry's lock before leaving it to its holder
LOCK_POLL = 0.02

MODES = ("background", "sync", "off")
_MODE_WORDS = {"background": "background", "1": "background", "on": "background", "true": "background",
               "yes": "background", "sync": "sync", "off": "off", "0": "off", "false": "off", "no": "off"}


def resolve_mode(graph_cache: bool | str | None = None) -> str:
    """The cache mode: the argument (True = the default, False = off), else $CLIPXAI_GRAPH_CACHE."""
    if graph_cache is False:
        return "off"
    if isinstance(graph_cache, str):
        word = graph_cache
    else:
        word = os.environ.get("CLIPXAI_GRAPH_CACHE", "background")
    mode = _MODE_WORDS.get(word.strip().lower())
    if mode is None:
        raise ValueError(f"unknown graph cache mode {word!r}; use one of {', '.join(MODES)}")
    return mode


def background_supported() -> bool:
    """Whether a builder process can be started: a POSIX system and a real Python
    interpreter (a frozen app's sys.executable cannot run ``-m``)."""
    return fcntl is not None and os.name == "posix" and not getattr(sys, "frozen", False)


def enabled() -> bool:
    return resolve_mode() != "off"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("CLIPXAI_CACHE_DIR"):
        return Path(os.environ["CLIPXAI_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clipxai"


def cpu_fingerprint() -> str:
    """CPU model name and instruction-set flags (the prepacked layout depends on them)."""
    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key == "model name" and not model:
                model = line.split(":", 1)[1].strip()
            elif key in ("flags", "Features") and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def cache_key(model_sha256: str, provider: str = "CPUExecutionProvider") -> dict:
    return {"format": CACHE_FORMAT, "model_sha256": model_sha256, "onnxruntime": ort.__version__,
            "provider": provider, "cpu": cpu_fingerprint()}


def entry_dir(root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return root / "graphs" / digest


def lookup(root: Path, key: dict) -> Path | None:
    """The cached graph for this key, or None (missing, incomplete or not ours)."""
    entry = entry_dir(root, key)
    try:
        done = json.loads((entry / DONE_FILE).read_text())
        ok = (done.get("key") == key
              and (entry / GRAPH_FILE).stat().st_size == done["sizes"][GRAPH_FILE]
              and (entry / DATA_FILE).stat().st_size == done["sizes"][DATA_FILE])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry / GRAPH_FILE if ok else None


def saving_options(so: ort.SessionOptions, staging: Path) -> None:
    """Make the session being created save its optimized, prepacked graph into ``staging``."""
    so.optimized_model_filepath = str(staging / GRAPH_FILE)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")


def new_staging(root: Path) -> Path:
    graphs = root / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    for old in graphs.glob(".partial-*"):  # left by a killed process
        try:
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=".partial-", dir=graphs))


def commit(staging: Path, root: Path, key: dict, notes: dict | None = None) -> Path | None:
    """Seal a staged entry and rename it into place (another process may have won: fine)."""
    try:
        sizes = {name: (staging / name).stat().st_size for name in (GRAPH_FILE, DATA_FILE)}
        (staging / DONE_FILE).write_text(json.dumps({"key": key, "sizes": sizes, **(notes or {})}, indent=1))
        target = entry_dir(root, key)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        return target
    except OSError as e:
        log.warning("could not write the graph cache entry in %s (%s); continuing without it", root, e)
        shutil.rmtree(staging, ignore_errors=True)
        return None


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- building in the background

_builders: list[subprocess.Popen] = []


def _lock_path(root: Path, key: dict) -> Path:
    return entry_dir(root, key).with_name("." + entry_dir(root, key).name + ".lock")


def _try_lock(path: Path, patience: float = 0.0):
    """An exclusive lock on ``path`` (an open file), or None if another process holds it for
    longer than ``patience`` seconds.

    The holder removes the file when it is done (``_unlock``), so no empty lock files pile up. A
    process that opened the file just before its holder removed it would lock a file nobody else
    sees any more: so a lock counts only while ``path`` is still the very file that was locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + patience
    while True:
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(LOCK_POLL)
            continue
        try:
            current = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return f
        f.close()  # removed or replaced meanwhile: lock the file that is there now


def _unlock(path: Path, f) -> None:
    """Release a lock from ``_try_lock`` and remove its file (still holding it, so no one else has it)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    f.close()


def building(root: Path, key: dict) -> bool:
    """Whether some process is filling this entry right now (creates no file)."""
    try:
        f = open(_lock_path(root, key))
    except OSError:  # no lock file: nobody is at it
        return False
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        f.close()
    return False  # a file left by a builder that crashed


def build(model_path: Path, model_sha256: str, root: Path, threads: int = 1) -> Path | None:
    """Fill the entry of ``model_path`` in this process (under a lock; a no-op if it exists).

    The model is hashed again, so a file that changed since its bundle was
    checked can never be cached under the old digest.
    """
    key = cache_key(model_sha256)
    found = lookup(root, key)
    if found is not None:
        return found.parent
    lock_path = _lock_path(root, key)
    # ``building()`` takes the lock for a few microseconds to ask; a builder holds it for seconds.
    lock = _try_lock(lock_path, patience=LOCK_PATIENCE)
    if lock is None:  # another process is at it
        return None
    try:
        found = lookup(root, key)  # filled by a builder that finished while we were getting here
        if found is not None:
            return found.parent
        digest = hashlib.sha256()
        with open(model_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        if digest.hexdigest() != model_sha256:
            log.warning("%s changed since it was checked; not caching it", model_path)
            return None
        staging = new_staging(root)
        try:
            fused = _save_optimized(model_path, staging, threads)
        except BaseException:
            discard(staging)
            raise
        return commit(staging, root, key, {"attention_fused": fused})
    finally:
        _unlock(lock_path, lock)


def _cpu_session(source: Path, threads: int, staging: Path | None = None,
                 prepack: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if staging is not None:
        saving_options(so, staging)
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
    for name in (FUSED_FILE, FUSED_FILE + ".data"):
        (staging / name).unlink(missing_ok=True)
    return fused


def _fuse(model_path: Path, staging: Path) -> tuple[Path, int]:
    """The graph to optimize: the bundle's with attention fused, written into ``staging``
    (path, blocks fused), or the bundle's own (model_path, 0) when nothing matched."""
    try:
        from clipxai.runtime.attention_fusion import fuse_attention
        from clipxai.runtime.onnx_light import light_copy
    except ImportError:  # an optional dependency (clipxai[fusion]): without it the cache is unfused
        log.info("caching the graph without attention fusion (install onnx, or clipxai[fusion], to fuse it)")
        return model_path, 0
    data = staging / (FUSED_FILE + ".data")
    try:
        # The graph with its weights moved to ``data`` by the kernel: onnx.load would hold the
        # file and its parsed weights at once (754 MiB for the 359 MB ViT-B/16 bundle).
        model = light_copy(model_path, data)
        if any(n.op_type in QUANTIZED_OPS for n in model.graph.node):
            # Measured on an int8 ViT-B/16 at 448: fusing moved the heatmaps by 0.034, because the
            # activations are quantized per call and float rounding flips quantization steps.
            log.info("int8 graph: caching it without attention fusion")
            fused = 0
        else:
            fused = fuse_attention(model)
    except Exception as e:  # noqa: BLE001 - an optimization: never a reason to fail the cache
        log.warning("attention fusion failed on %s (%s); caching the unfused graph", model_path, e)
        fused = 0
    if not fused:
        data.unlink(missing_ok=True)
        return model_path, 0
    (staging / FUSED_FILE).write_bytes(model.SerializeToString())
    return staging / FUSED_FILE, fused


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


def start_background_build(model_path: Path, model_sha256: str, root: Path) -> subprocess.Popen | None:
    """Start a detached, low-priority process that fills the entry; None if one is already at it."""
    key = cache_key(model_sha256)
    if building(root, key):
        return None
    cmd = [sys.executable, "-m", "clipxai.runtime.cache_cli", "build", str(model_path),
           "--sha256", model_sha256, "--cache-root", str(root)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Its own process group, so a Ctrl-C meant for the app does not kill it half-way; the same
    # session, so Linux's per-session scheduler groups (autogroup) let its low priority count.
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True, env=env, **group)
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
    try:
        os.nice(19)
    except OSError:
        pass
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
