"""TensorRT engine cache: one subdirectory per cache key, so nothing foreign is ever loaded.

A serialized TensorRT engine is valid only for the TensorRT version and GPU it
was built on, the precision it was built in and the graph it was built from.
onnxruntime's TensorRT provider does not check all of that itself (its docs ask
the user to clear the cache when TensorRT changes), and a ``.engine`` copied
from another device fails or, worse, misbehaves. So every engine lives in

    <root>/<builder>__trt<version>__<gpu>__<precision>__<model sha256[:16]>/

with a ``key.json`` holding the full key. onnxruntime only ever gets the
directory of the current key (so a stale or foreign engine is rebuilt, never
loaded), and a directory whose ``key.json`` disagrees with its name's key is
emptied before use. ``root`` is the user cache,
``<cache root>/engines/<graph digest[:16]>`` (clipxai.common.cache), or a folder
the user names: never the bundle, which is read only. Cache folders follow the
permission rule of clipxai.common.cache (0700, refused when others may write).
A native engine is used only when ``engine.json`` (written after a successful
build) records its sha256 and the file still has it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from clipxai.common.cache import FILE_MODE, cache_root, private_dir
from clipxai.common.files import atomic_write_text, sha256_file
from clipxai.errors import ClipxaiError

log = logging.getLogger("clipxai")

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
ENGINES_DIR = "engines"
KEY_FILE = "key.json"
ENGINE_FILE = "model.engine"
RECORD_FILE = "engine.json"  # written after a successful build: the key, trtexec arguments, engine sha256
TRTEXEC = "trtexec"


@dataclass(frozen=True)
class EngineKey:
    """builder: "trtexec" (build_engine.sh, read by the native backend) or "ort<version>"
    (onnxruntime's TensorRT provider). gpu: ``Gpu.label`` (name and compute capability)."""

    builder: str
    trt_version: str
    gpu: str
    precision: str
    model_sha256: str

    def __post_init__(self):
        if self.precision not in ENGINE_PRECISIONS:
            raise ClipxaiError(f"engine precision {self.precision!r} is not one of {', '.join(ENGINE_PRECISIONS)}")

    def slug(self) -> str:
        parts = (self.builder, f"trt{self.trt_version}", self.gpu, self.precision, self.model_sha256[:16])
        return "__".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", p).strip("-") for p in parts)

    def as_dict(self) -> dict:
        return asdict(self)


def engine_precision(bundle_precision: str, trt_fp16: bool = False) -> str:
    """Precision the engine is built in: the bundle's, or fp16 for an fp32 bundle with trt_fp16."""
    if bundle_precision not in ENGINE_PRECISIONS:
        raise ClipxaiError(f"bundle precision {bundle_precision!r} is not one of {', '.join(ENGINE_PRECISIONS)}")
    return "fp16" if (trt_fp16 and bundle_precision == "fp32") else bundle_precision


def model_sha256(bundle, graph: str | None = None) -> str:
    """The digest of a graph of the bundle and its weights' files (default: the image graph, model.onnx;
    a mask-model bundle, which has two graphs, names one; without a name, its manifest's digest)."""
    from clipxai.contract import MODEL_FILE
    from clipxai.runtime.bundle import files_digest
    if graph is None:
        return bundle.graph_digest if MODEL_FILE in bundle.manifest.files else bundle.digest
    return files_digest(bundle.graph_files(graph))


def current_key(bundle, builder: str, precision: str, device_id: int = 0,
                trt_version: str | None = None, gpu_label: str | None = None, graph: str | None = None) -> EngineKey:
    """The key for this machine (TensorRT version and GPU detected unless given), for the bundle's image
    graph or the named one."""
    from clipxai.runtime.nvidia import gpu_info
    return EngineKey(builder=builder,
                     trt_version=trt_version or gpu_info.tensorrt_version(),
                     gpu=gpu_label or gpu_info.gpu(device_id).label,
                     precision=precision,
                     model_sha256=model_sha256(bundle, graph))


def default_root(bundle, cache_dir: str | Path | None = None) -> Path:
    """The user cache's engine folder for this bundle's graph (never inside the bundle)."""
    return cache_root(cache_dir) / ENGINES_DIR / model_sha256(bundle)[:16]


def key_dir(root: str | Path, key: EngineKey, create: bool = True) -> Path:
    """The directory for ``key`` under ``root``; a directory holding another key's files is emptied."""
    d = Path(root) / key.slug()
    want = key.as_dict()
    if d.is_dir() and not d.is_symlink():
        try:
            have = json.loads((d / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            have = None
        if have != want:
            if not create:
                return d
            log.warning("engine cache %s holds engines for another key (%s); rebuilding", d, have)
            shutil.rmtree(d)
    if create:
        try:
            private_dir(d)
            if not (d / KEY_FILE).is_file():
                atomic_write_text(d / KEY_FILE, json.dumps(want, indent=2, sort_keys=True), mode=FILE_MODE)
        except OSError as e:
            raise ClipxaiError(f"cannot create the TensorRT engine cache {d} ({e}); pass a writable cache folder")
    return d


def matches(d: Path, key: EngineKey) -> bool:
    """Whether directory ``d`` really holds engines for ``key``."""
    try:
        return json.loads((Path(d) / KEY_FILE).read_text(encoding="utf-8")) == key.as_dict()
    except (OSError, ValueError):
        return False


def uses_tensorrt(providers) -> bool:
    """Whether this provider spec puts onnxruntime's TensorRT provider (with our options) in the session.

    False when this onnxruntime has no TensorRT provider: resolve_providers then reports that.
    """
    import onnxruntime as ort

    from clipxai.runtime.providers import ALIASES, TRT
    if TRT not in ort.get_available_providers():
        return False
    if isinstance(providers, str):
        key = providers.lower()
        return key == "auto" or ALIASES.get(key) == TRT
    return any(p == TRT for p in providers)  # (name, options) tuples carry their own options


def ort_trt_cache_dir(bundle, providers, trt_cache: str | None, trt_fp16: bool,
                      device_id: int = 0, cache_dir: str | Path | None = None, graph: str | None = None,
                      precision: str | None = None) -> str | None:
    """Engine cache folder for onnxruntime's TensorRT provider, or None when it is not used.

    trt_cache: None (default root, see module docstring), "off" (no cache: engines are
    built at every start) or a folder to use as the root. graph: the bundle's graph file (default
    the image graph); precision: that graph's (default the manifest's).
    """
    if trt_cache == "off" or not uses_tensorrt(providers):
        return None
    import onnxruntime as ort
    root = default_root(bundle, cache_dir) if trt_cache is None else Path(trt_cache)
    stored = precision or bundle.precision
    key = current_key(bundle, f"ort{ort.__version__}", engine_precision(stored, trt_fp16), device_id, graph=graph)
    return str(key_dir(root, key))


def find_engine(bundle, precision: str, root: str | Path | None = None, device_id: int = 0) -> Path:
    """The engine build_engine.sh wrote for this machine's key; ClipxaiError if none or foreign."""
    key = current_key(bundle, TRTEXEC, precision, device_id)
    d = (default_root(bundle) if root is None else Path(root)) / key.slug()
    engine = d / ENGINE_FILE
    if not engine.is_file():
        raise ClipxaiError(f"no TensorRT engine for {key.gpu}, TensorRT {key.trt_version}, {precision} at {engine}; "
                           f"build it with: jetson/build_engine.sh {bundle.path}"
                           + (" --precision fp16" if precision == "fp16" and bundle.precision == "fp32"
                              else ""))
    if not matches(d, key):
        raise ClipxaiError(f"{engine}: its {KEY_FILE} does not match this machine's key; it was built elsewhere "
                           f"or for another model. Rebuild with jetson/build_engine.sh {bundle.path}")
    try:
        recorded = json.loads((d / RECORD_FILE).read_text(encoding="utf-8"))["engine_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded is None or sha256_file(engine) != recorded:
        raise ClipxaiError(f"{engine}: not the engine build_engine.sh recorded in {RECORD_FILE} (changed, or its build "
                           f"did not finish); rebuild with jetson/build_engine.sh {bundle.path}")
    return engine
