"""Bundle reader: checks everything the runtime will load before anything runs (docs/bundle-format.md).

``load_bundle`` refuses, with a one-line error naming the file and the problem:

- a manifest that is missing, not JSON, too large or too deeply nested, of an
  unknown schema version or kind, or whose fields fail the schema
  (clipxai/manifest.py: types, ranges, unique class names, non-zero std, and the
  fields that must agree: grid and patch size, classes and graph outputs, a mask
  model's family and its graphs);
- a manifest whose digest differs from the one the caller pinned (``expect_digest``);
- a file entry that points outside the bundle or through a symbolic link,
  a missing file, a digest mismatch;
- a graph that keeps tensor data in a file the manifest does not list;
- embeddings that are pickled, of the wrong shape or type, or not finite,
  or a class list whose length differs from them.

Once a graph is opened, clipxai/runtime/backends/graph_io.py compares the
session's inputs and outputs with the manifest. The bundle itself is never written to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipxai.common.files import sha256_file
from clipxai.contract import (
    KIND_CLIP, KIND_MASK, MANIFEST_FILE, MAX_MANIFEST_BYTES, MODEL_FILE, REDUNDANCY_FILE, SUPPORTED_SCHEMAS, TEXT_EMBEDDINGS_FILE,
)
from clipxai.errors import BundleError
from clipxai.manifest import ClipManifest, Manifest, ManifestError, parse
from clipxai.runtime.onnx_wire import external_data_locations
from clipxai.runtime.stamps import is_stamped, stamp, verify_files



@dataclass(frozen=True)
class Bundle:
    """A checked bundle on disk. Shapes: S = image_size, g = grid_size, N = g², K = len(classes), D = embed dim.

    manifest: the checked, typed manifest (clipxai/manifest.py: ClipManifest or MaskManifest).
    digest: sha256 of manifest.json (what ``clipxai export`` prints and ``expect_digest`` pins).
    graph_data_files: files the image graph keeps its weights in (empty for single-file graphs).
    """

    path: Path
    manifest: Manifest
    digest: str = ""
    graph_data: dict = field(default_factory=dict)  # {graph file: the files it keeps its weights in}
    _embeddings: np.ndarray | None = field(default=None, repr=False, compare=False)
    hashed: bool = True  # False: the digests were vouched for by a verification stamp (stamps.py)

    @property
    def graph_data_files(self) -> tuple[str, ...]:
        return tuple(self.graph_data.get(MODEL_FILE, ()))

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def classes(self) -> list[str]:
        """The exported vocabulary (CLIP bundles)."""
        return list(self.manifest.classes)

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    @property
    def grid_size(self) -> int:
        return self.manifest.grid_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.manifest.preprocess.mean)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.manifest.preprocess.std)

    @property
    def method(self) -> str:
        """The explanation method baked into the image graph (CLIP bundles)."""
        return self.manifest.method

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def backbone_name(self) -> str:
        """The CLIP backbone ("ViT-B/16"); a mask-model bundle's model ("sam2.1-hiera-tiny")."""
        m = self.manifest
        return m.backbone.name if isinstance(m, ClipManifest) else m.model

    @property
    def weights_source(self) -> str | None:
        """Where the weights came from ("open_clip", "file", "random"); None when the manifest does not say."""
        return self.manifest.weights.source if self.manifest.weights is not None else None

    @property
    def random_weights(self) -> bool:
        return self.weights_source == "random"

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def graph_files(self, graph: str = MODEL_FILE) -> dict[str, str]:
        """{file name: sha256} of a graph (default the image graph, model.onnx) and its weights' files."""
        files = self.manifest.files
        return {name: files[name].sha256 for name in (graph, *self.graph_data.get(graph, ()))}

    @property
    def graph_digest(self) -> str:
        """One digest for the image graph's files (keys the CPU graph cache and TensorRT engines)."""
        return files_digest(self.graph_files())

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


def load_bundle(path: str | Path, expect_digest: str | None = None, kind: str = KIND_CLIP,
                stamps: str | Path | None = None) -> Bundle:
    """Read and check a bundle directory (module docstring); raises BundleError with a one-line message.

    expect_digest: the sha256 of manifest.json the caller insists on (``clipxai export`` prints it).
    kind: the bundle kind the caller can use; another kind is refused.
    stamps: a private folder of verification stamps (clipxai/runtime/stamps.py): files unchanged
    since a stamped verification are not hashed again; a full verification leaves a stamp.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory (export one with clipxai export)")
    mpath = root / MANIFEST_FILE
    raw = _read_manifest_bytes(mpath)
    digest = hashlib.sha256(raw).hexdigest()
    if expect_digest is not None and digest != expect_digest.strip().lower():
        raise BundleError(f"{mpath}: digest {digest} is not the expected {expect_digest.strip()}; this is another "
                          "bundle (or it was changed) - use the bundle you tested, or update the expected digest")
    manifest = _check_schema(_parse(raw, mpath), mpath, kind)
    resolved_root = root.resolve()
    paths = {name: _inside(root, resolved_root, name, mpath) for name in manifest.files}
    names = [MANIFEST_FILE, *paths]
    hashed = not (stamps is not None and is_stamped(Path(stamps), root, digest, names))
    if hashed:  # fingerprints taken before each hash, checked after (stamps.py)
        seen = verify_files(root, {MANIFEST_FILE: digest, **{name: manifest.files[name].sha256 for name in paths}})
        if stamps is not None:
            stamp(Path(stamps), root, digest, seen)
    graph_data = _check_graph_data(root, manifest, mpath)
    clip = isinstance(manifest, ClipManifest)
    embeddings = _check_embeddings(root, manifest) if clip and TEXT_EMBEDDINGS_FILE in manifest.files else None
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


def _check_schema(manifest: dict, mpath: Path, kind: str) -> Manifest:
    """The typed manifest of ``kind``; a one-line BundleError for another schema version, kind or any field."""
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMAS or isinstance(version, bool):
        raise BundleError(
            f"{mpath}: schema version {version!r} is not supported by this clipxai "
            f"(supports {', '.join(map(str, SUPPORTED_SCHEMAS))}); use the clipxai version that exported it or re-export")
    have = manifest.get("kind", KIND_CLIP)
    if have != kind:
        raise BundleError(f"{mpath.parent}: this is a {have!r} bundle, not a {kind!r} bundle; "
                          f"pass a {kind} bundle here")
    try:
        return parse(manifest, kind)
    except ManifestError as e:
        raise BundleError(f"{mpath}: {e}; re-export the bundle") from None


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


def _check_graph_data(root: Path, manifest: Manifest, mpath: Path) -> dict[str, tuple[str, ...]]:
    """Every external-data file of every listed graph (``*.onnx``) must be listed (and so digest-checked).
    Returns {graph: its external-data files}."""
    listed = set(manifest.files)
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


def _check_embeddings(root: Path, manifest: ClipManifest) -> np.ndarray:
    text = read_vectors(root / TEXT_EMBEDDINGS_FILE, 2)
    k, d = len(manifest.classes), manifest.embed_dim or text.shape[1]
    if text.shape != (k, d):
        raise BundleError(f"{root / TEXT_EMBEDDINGS_FILE}: shape {list(text.shape)}, but the manifest lists "
                          f"{k} classes of dimension {d}; re-export the bundle")
    if REDUNDANCY_FILE in manifest.files:
        r = read_vectors(root / REDUNDANCY_FILE, 1)
        if r.shape != (d,):
            raise BundleError(f"{root / REDUNDANCY_FILE}: shape {list(r.shape)}, expected [{d}]; re-export the bundle")
    return text


def stated_kind(path: str | Path) -> str:
    """The kind a bundle's manifest says it is (KIND_CLIP when it cannot tell: ``load_bundle``, which
    checks it again, then reports what is wrong). For commands that take either kind."""
    try:
        kind = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8")).get("kind", KIND_CLIP)
    except (OSError, ValueError, AttributeError):
        return KIND_CLIP
    return kind if kind in (KIND_CLIP, KIND_MASK) else KIND_CLIP
