"""Bundle reader: checks everything the runtime will load before anything runs (docs/bundle-format.md).

``load_bundle`` refuses, with a one-line error naming the file and the problem:

- a manifest that is missing, not JSON, too large or too deeply nested, of an
  unknown schema version or kind, or whose fields fail the schema
  (manifest.py: types, ranges, unique class names, non-zero std);
- a manifest whose digest differs from the one the caller pinned (``expect_digest``);
- a file entry that points outside the bundle or through a symbolic link,
  a missing file, a digest mismatch;
- a graph that keeps tensor data in a file the manifest does not list;
- embeddings that are pickled, of the wrong shape or type, or not finite,
  or a class list whose length differs from them.

``check_graph_io`` then compares the session's inputs and outputs with the
manifest once onnxruntime has the graph. The bundle itself is never written to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipxai.common.files import sha256_file
from clipxai.contract import (
    INPUT_IMAGE, KIND_CLIP, MANIFEST_FILE, MAX_MANIFEST_BYTES, MODEL_FILE, OUTPUTS, REDUNDANCY_FILE,
    SUPPORTED_SCHEMAS, TEXT_EMBEDDINGS_FILE,
)
from clipxai.errors import BundleError
from clipxai.runtime import manifest as schema
from clipxai.runtime.onnx_wire import external_data_locations
from clipxai.runtime.stamps import is_stamped, stamp



@dataclass(frozen=True)
class Bundle:
    """A checked bundle on disk. Shapes: S = image_size, g = grid_size, N = g², K = len(classes), D = embed dim.

    digest: sha256 of manifest.json (what ``clipxai-export`` prints and ``expect_digest`` pins).
    graph_data_files: files the image graph keeps its weights in (empty for single-file graphs).
    """

    path: Path
    manifest: dict
    digest: str = ""
    graph_data: dict = field(default_factory=dict)  # {graph file: the files it keeps its weights in}
    _embeddings: np.ndarray | None = field(default=None, repr=False, compare=False)
    hashed: bool = True  # False: the digests were vouched for by a verification stamp (stamps.py)

    @property
    def graph_data_files(self) -> tuple[str, ...]:
        return tuple(self.graph_data.get(MODEL_FILE, ()))

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", KIND_CLIP)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def grid_size(self) -> int:
        return int(self.manifest["grid_size"])

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.manifest["preprocess"]["mean"])

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.manifest["preprocess"]["std"])

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def graph_files(self, graph: str = MODEL_FILE) -> dict[str, str]:
        """{file name: sha256} of a graph (default the image graph, model.onnx) and its weights' files."""
        files = self.manifest["files"]
        return {name: files[name]["sha256"] for name in (graph, *self.graph_data.get(graph, ()))}

    @property
    def graph_digest(self) -> str:
        """One digest for the image graph's files (keys the CPU graph cache and TensorRT engines)."""
        return files_digest(self.graph_files())

    @property
    def random_weights(self) -> bool:
        return (self.manifest.get("weights") or {}).get("source") == "random"

    def text_embeddings(self) -> np.ndarray:
        """float32 [K, D] class embeddings (checked at load: plain .npy, finite)."""
        if self._embeddings is not None:
            return self._embeddings
        return read_vectors(self.path / TEXT_EMBEDDINGS_FILE, 2)

    def redundancy(self) -> np.ndarray:
        """float32 [D] prompt-ensemble embedding of the empty class name (checked: finite)."""
        return read_vectors(self.path / REDUNDANCY_FILE, 1)


def files_digest(file_digests: dict[str, str]) -> str:
    """sha256 of a {file name: sha256} table (order-independent)."""
    return hashlib.sha256(json.dumps(file_digests, sort_keys=True).encode()).hexdigest()


def manifest_digest(path: str | Path) -> str:
    """sha256 of a bundle's manifest.json: the bundle's identity (every file's digest is in it)."""
    return sha256_file(Path(path) / MANIFEST_FILE)


def load_bundle(path: str | Path, verify_digests: bool = True, expect_digest: str | None = None,
                kind: str = KIND_CLIP, stamps: str | Path | None = None) -> Bundle:
    """Read and check a bundle directory (module docstring); raises BundleError with a one-line message.

    expect_digest: the sha256 of manifest.json the caller insists on (``clipxai-export`` prints it).
    kind: the bundle kind the caller can use; another kind is refused.
    stamps: a private folder of verification stamps (clipxai/runtime/stamps.py): files unchanged
    since a stamped verification are not hashed again; a full verification leaves a stamp.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory (export one with clipxai-export)")
    mpath = root / MANIFEST_FILE
    raw = _read_manifest_bytes(mpath)
    digest = hashlib.sha256(raw).hexdigest()
    if expect_digest is not None and digest != expect_digest.strip().lower():
        raise BundleError(f"{mpath}: digest {digest} is not the expected {expect_digest.strip()}; this is another "
                          "bundle (or it was changed) - use the bundle you tested, or update the expected digest")
    manifest = _parse(raw, mpath)
    _check_schema(manifest, mpath, kind)
    resolved_root = root.resolve()
    paths = {name: _inside(root, resolved_root, name, mpath) for name in manifest["files"]}
    names = [MANIFEST_FILE, *paths]
    hashed = verify_digests and not (stamps is not None and is_stamped(Path(stamps), root, digest, names))
    for name, fpath in paths.items():
        if hashed and sha256_file(fpath) != manifest["files"][name]["sha256"]:
            raise BundleError(f"{fpath}: sha256 does not match the manifest (corrupt or modified); re-export or re-copy")
    if hashed and stamps is not None:
        stamp(Path(stamps), root, digest, names)
    graph_data = _check_graph_data(root, manifest, mpath)
    embeddings = _check_embeddings(root, manifest) if TEXT_EMBEDDINGS_FILE in manifest["files"] else None
    return Bundle(root, manifest, digest, graph_data, embeddings, hashed)


def _read_manifest_bytes(mpath: Path) -> bytes:
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{mpath}: {mpath.stat().st_size} bytes, larger than any manifest "
                              f"({MAX_MANIFEST_BYTES >> 20} MB); this is not a clipxai bundle")
        return mpath.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{mpath}: missing; this directory is not a clipxai bundle") from None
    except OSError as e:
        raise BundleError(f"{mpath}: cannot be read ({e.strerror})") from None


def _parse(raw: bytes, mpath: Path) -> dict:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({e}); re-export the bundle") from None
    except RecursionError:
        raise BundleError(f"{mpath}: nested too deeply to be a manifest; re-export the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: not a JSON object; re-export the bundle")
    return manifest


def _check_schema(manifest: dict, mpath: Path, kind: str) -> None:
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMAS or isinstance(version, bool):
        raise BundleError(
            f"{mpath}: schema version {version!r} is not supported by this clipxai "
            f"(supports {', '.join(map(str, SUPPORTED_SCHEMAS))}); use the clipxai version that exported it or re-export")
    have = manifest.get("kind", KIND_CLIP)
    if have != kind:
        raise BundleError(f"{mpath.parent}: this is a {have!r} bundle, not a {kind!r} bundle; "
                          f"pass a {kind} bundle here")
    problem = schema.validate(manifest, kind)
    if problem:
        raise BundleError(f"{mpath}: {problem}; re-export the bundle")
    if kind == KIND_CLIP:
        _check_clip_consistency(manifest, mpath)


def _check_clip_consistency(manifest: dict, mpath: Path) -> None:
    """The numbers that must agree with each other (the graph's are checked once loaded)."""
    if MODEL_FILE not in manifest["files"]:
        raise BundleError(f"{mpath}: 'files' must list {MODEL_FILE} with its sha256; re-export the bundle")
    s, g = manifest["image_size"], manifest["grid_size"]
    patch = (manifest["backbone"] or {}).get("patch_size")
    if isinstance(patch, int) and not isinstance(patch, bool) and g * patch != s:
        raise BundleError(f"{mpath}: grid {g} x patch {patch} is not the image size {s}; re-export the bundle")
    k = len(manifest["classes"])
    for name, spec in manifest["graph"]["outputs"].items():
        dims = [d for d in spec["shape"] if isinstance(d, int)]
        if name in OUTPUTS and "text_encoder" not in manifest and k not in dims:
            raise BundleError(f"{mpath}: graph output {name} {spec['shape']} has no dimension of the "
                              f"{k} classes listed; re-export the bundle")


def _inside(root: Path, resolved_root: Path, name: str, mpath: Path) -> Path:
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts or len(p.parts) != 1:
        raise BundleError(f"{mpath}: file entry {name!r} points outside the bundle; refusing it")
    full = root / p
    if full.is_symlink() or full.resolve().parent != resolved_root:
        raise BundleError(f"{mpath}: file entry {name!r} is a symbolic link; a bundle holds its files itself")
    if not full.is_file():
        raise BundleError(f"{full}: listed in the manifest but missing")
    return full


def _check_graph_data(root: Path, manifest: dict, mpath: Path) -> dict[str, tuple[str, ...]]:
    """Every external-data file of every listed graph (``*.onnx``) must be listed (and so digest-checked).
    Returns {graph: its external-data files}."""
    listed = set(manifest["files"])
    graphs = sorted(name for name in listed if name.endswith(".onnx"))
    data: dict[str, tuple[str, ...]] = {}
    for graph in graphs:
        locations = external_data_locations(root / graph)
        unlisted = sorted(loc for loc in locations if loc not in listed or loc in graphs)
        if unlisted:
            raise BundleError(f"{root / graph}: keeps tensor data in {unlisted[0]!r}, which {mpath.name} does not "
                              "list with a digest; refusing it (re-export the bundle)")
        data[graph] = tuple(sorted(locations))
    return data


def read_vectors(path: Path, ndim: int) -> np.ndarray:
    """A plain .npy of finite numbers with ``ndim`` dimensions -> float32; BundleError otherwise."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise BundleError(f"{path}: not a plain numeric .npy ({e}); refusing it (re-export the bundle)") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot be read ({e}); re-export the bundle") from None
    if array.ndim != ndim or array.dtype.kind != "f" or 0 in array.shape:
        raise BundleError(f"{path}: expected a {ndim}-D float array, got {array.dtype} {list(array.shape)}; "
                          "re-export the bundle")
    if not np.isfinite(array).all():
        raise BundleError(f"{path}: holds NaN or infinite values; re-export the bundle")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_embeddings(root: Path, manifest: dict) -> np.ndarray:
    text = read_vectors(root / TEXT_EMBEDDINGS_FILE, 2)
    k, d = len(manifest["classes"]), manifest.get("embed_dim", text.shape[1])
    if text.shape != (k, d):
        raise BundleError(f"{root / TEXT_EMBEDDINGS_FILE}: shape {list(text.shape)}, but the manifest lists "
                          f"{k} classes of dimension {d}; re-export the bundle")
    if REDUNDANCY_FILE in manifest["files"]:
        r = read_vectors(root / REDUNDANCY_FILE, 1)
        if r.shape != (d,):
            raise BundleError(f"{root / REDUNDANCY_FILE}: shape {list(r.shape)}, expected [{d}]; re-export the bundle")
    return text


_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)",
              "int32": "tensor(int32)", "uint8": "tensor(uint8)"}


def check_graph_io(bundle: Bundle, session) -> None:
    """The session's inputs/outputs must be the manifest's: names, element types, fixed dims."""
    graph = bundle.manifest["graph"]
    where = bundle.path / MODEL_FILE
    ins = {i.name: i for i in session.get_inputs()}
    outs = {o.name: o for o in session.get_outputs()}
    want_in = graph.get("inputs", {})
    want_out = graph.get("outputs", {})
    if set(ins) != set(want_in) or INPUT_IMAGE not in ins:
        raise BundleError(f"{where}: graph inputs {sorted(ins)} differ from the manifest's {sorted(want_in)}")
    if set(outs) != set(want_out) or not set(OUTPUTS) <= set(outs):
        raise BundleError(f"{where}: graph outputs {sorted(outs)} differ from the manifest's {sorted(want_out)}")
    for name, arg in {**ins, **outs}.items():
        spec = (want_in.get(name) or want_out.get(name))
        want_type = _ORT_TYPES.get(spec["dtype"], f"tensor({spec['dtype']})")
        if arg.type != want_type:
            raise BundleError(f"{where}: {name} is {arg.type}, the manifest says {spec['dtype']}")
        shape = list(arg.shape)
        if len(shape) != len(spec["shape"]):
            raise BundleError(f"{where}: {name} has rank {len(shape)}, the manifest says {len(spec['shape'])}")
        for got, want in zip(shape, spec["shape"]):
            if isinstance(want, int) and isinstance(got, int) and got != want:
                raise BundleError(f"{where}: {name} has shape {shape}, the manifest says {spec['shape']}")
