"""Bundle reader: checks everything before anything runs (DESIGN section 8).

Refuses, with a one-line error naming the file and the problem: a missing or
unparsable manifest, an unknown schema version, a file entry pointing outside
the bundle, a missing file, a digest mismatch, and (once the session exists)
graph inputs/outputs that differ from the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipxai.contract import (
    INPUT_IMAGE, MANIFEST_FILE, METHODS, MODEL_FILE, OUTPUTS, PRECISIONS, SUPPORTED_SCHEMAS,
    TEXT_EMBEDDINGS_FILE, sha256_file,
)
from clipxai.errors import BundleError

_REQUIRED = ("schema_version", "method", "image_size", "grid_size", "classes", "preprocess", "graph", "files",
             "precision")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk. Shapes: S = image_size, g = grid_size, N = g², K = len(classes)."""

    path: Path
    manifest: dict

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

    def text_embeddings(self) -> np.ndarray:
        """[K, D] float32 class embeddings (plain .npy, never unpickled)."""
        return np.load(self.path / TEXT_EMBEDDINGS_FILE, allow_pickle=False)


def load_bundle(path: str | Path, verify_digests: bool = True) -> Bundle:
    """Read and check a bundle directory; raises BundleError with a one-line message."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory (export one with clipxai-export)")
    mpath = root / MANIFEST_FILE
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{mpath}: missing; this directory is not a clipxai bundle")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({e}); re-export the bundle")
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: not a JSON object; re-export the bundle")
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMAS:
        raise BundleError(
            f"{mpath}: schema version {version!r} is not supported by this clipxai "
            f"(supports {', '.join(map(str, SUPPORTED_SCHEMAS))}); "
            "use the clipxai version that exported it or re-export"
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"{mpath}: missing field {missing[0]!r}; re-export the bundle")
    if manifest["method"] not in METHODS:
        raise BundleError(f"{mpath}: method {manifest['method']!r} is not supported (supports {', '.join(METHODS)})")
    if manifest["precision"] not in PRECISIONS:
        raise BundleError(f"{mpath}: precision {manifest['precision']!r} is not supported "
                          f"(supports {', '.join(PRECISIONS)})")

    files = manifest["files"]
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise BundleError(f"{mpath}: 'files' must list {MODEL_FILE} with its sha256")
    resolved_root = root.resolve()
    for name, info in files.items():
        fpath = _inside(root, resolved_root, name, mpath)
        if not fpath.is_file():
            raise BundleError(f"{root / name}: listed in the manifest but missing")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise BundleError(f"{mpath}: entry {name!r} has no sha256")
        if verify_digests and sha256_file(fpath) != info["sha256"]:
            raise BundleError(f"{fpath}: sha256 does not match the manifest (corrupt or modified); re-export or re-copy")
    return Bundle(root, manifest)


def _inside(root: Path, resolved_root: Path, name: str, mpath: Path) -> Path:
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts or len(p.parts) != 1:
        raise BundleError(f"{mpath}: file entry {name!r} points outside the bundle; refusing it")
    full = (root / p).resolve()
    if full.parent != resolved_root:
        raise BundleError(f"{mpath}: file entry {name!r} resolves outside the bundle (symlink?); refusing it")
    return root / p


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
