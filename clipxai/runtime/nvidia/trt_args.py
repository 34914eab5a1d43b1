"""Bundle manifest -> trtexec arguments (torch-free; used by jetson/build_engine.sh).

    python -m clipxai.cli.trt_args BUNDLE [--precision fp16] [--max-batch 4] [--emit args]

Shapes come from the manifest (input ``image`` [batch, 3, S, S]; a dynamic batch
gets a min/opt/max optimisation profile), the precision from the manifest
unless lowered with ``--precision fp16`` (fp32 bundle -> fp16 engine).

fp16 and int8 engines keep the numerically fragile layers in fp32: every node
whose op type is in ``FP32_OPS`` (LayerNorm, softmax, the L2 / min-max
normalisations and their reductions, pow/sqrt/div/sub) is pinned with
``--precisionConstraints=obey --layerPrecisions=NAME:fp32 --layerOutputTypes=NAME:fp32``.
TensorRT's ONNX parser names a layer after its ONNX node, so the node names
are the layer names. ``--fp32-layers none`` drops the constraints (user
override); ``--fp32-layers a,b`` pins exactly the named layers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from clipxai.contract import INPUT_IMAGE, KIND_MASK, MODEL_FILE
from clipxai.common.cache import FILE_MODE
from clipxai.common.files import atomic_write_text, sha256_file
from clipxai.errors import ClipxaiError
from clipxai.manifest import ClipManifest, Manifest, MaskManifest
from clipxai.runtime.nvidia import engine_cache
from clipxai.runtime.onnx_wire import Node, read_nodes

FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceL2", "ReduceSumSquare", "ReduceMin",
            "ReduceMax", "LpNormalization", "Pow", "Sqrt", "Div", "Sub")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class BuildPlan:
    """What trtexec is asked to build. Batch bounds are inclusive; fp32_layers are layer names."""

    onnx: Path
    precision: str
    image_size: int
    min_batch: int
    opt_batch: int
    max_batch: int
    fp32_layers: tuple[str, ...] = field(default=())
    # Other graphs (the mask models'): (input, min shape, opt shape, max shape) for every input.
    inputs: tuple[tuple[str, tuple, tuple, tuple], ...] = field(default=())

    def shape(self, batch: int) -> str:
        return f"{INPUT_IMAGE}:{batch}x3x{self.image_size}x{self.image_size}"

    def shapes(self, which: int) -> str:
        """trtexec's shape list for the min (0), opt (1) or max (2) profile."""
        if not self.inputs:
            return self.shape((self.min_batch, self.opt_batch, self.max_batch)[which])
        return ",".join(f"{name}:{'x'.join(map(str, bounds[which]))}" for name, *bounds in self.inputs)

    def trtexec_args(self) -> list[str]:
        """trtexec arguments (without --saveEngine, which the caller adds)."""
        args = [f"--onnx={self.onnx}", f"--minShapes={self.shapes(0)}", f"--optShapes={self.shapes(1)}",
                f"--maxShapes={self.shapes(2)}"]
        if self.precision == "fp16":
            args.append("--fp16")
        elif self.precision == "int8":
            args += ["--int8", "--fp16"]  # explicit Q/DQ graph; unquantized layers may use fp16
        if self.precision != "fp32" and self.fp32_layers:
            pinned = ",".join(f"{name}:fp32" for name in self.fp32_layers)
            args += ["--precisionConstraints=obey", f"--layerPrecisions={pinned}", f"--layerOutputTypes={pinned}"]
        return args


DEFAULT_MAX_BATCH = 4


def _batch_bounds(shape: tuple, min_batch: int | None, opt_batch: int | None,
                  max_batch: int | None) -> tuple[int, int, int]:
    if isinstance(shape[0], int):  # a graph exported with a fixed batch
        asked = {b for b in (min_batch, opt_batch, max_batch) if b is not None}
        if asked - {shape[0]}:
            raise ClipxaiError(f"the graph has a fixed batch of {shape[0]}; drop the batch options")
        return shape[0], shape[0], shape[0]
    lo = 1 if min_batch is None else min_batch
    hi = max(DEFAULT_MAX_BATCH, lo) if max_batch is None else max_batch
    opt = lo if opt_batch is None else opt_batch
    if not 1 <= lo <= opt <= hi:
        raise ClipxaiError(f"batch bounds must satisfy 1 <= min ({lo}) <= opt ({opt}) <= max ({hi})")
    return lo, opt, hi


def plan_from_manifest(manifest: ClipManifest, onnx_path: str | Path, precision: str | None = None,
                       min_batch: int | None = None, opt_batch: int | None = None, max_batch: int | None = None,
                       fp32_layers: str = "auto", nodes: list[Node] | None = None) -> BuildPlan:
    """Map a manifest (and the graph's nodes) to a BuildPlan; ClipxaiError on anything unbuildable.

    precision: None -> the manifest's; "fp16" may lower an fp32 bundle. fp32_layers: "auto"
    (nodes whose op type is in FP32_OPS), "none", or comma-separated layer names.
    """
    bundle_precision = manifest.precision
    if bundle_precision not in engine_cache.ENGINE_PRECISIONS:
        raise ClipxaiError(f"bundle precision {bundle_precision!r} cannot be built into an engine "
                           f"(supported: {', '.join(engine_cache.ENGINE_PRECISIONS)})")
    target = precision or bundle_precision
    if target not in engine_cache.ENGINE_PRECISIONS:
        raise ClipxaiError(f"--precision {target!r}: use one of {', '.join(engine_cache.ENGINE_PRECISIONS)}")
    allowed = {"fp32": ("fp32", "fp16"), "fp16": ("fp16",), "int8": ("int8",)}[bundle_precision]
    if target not in allowed:
        raise ClipxaiError(f"a {bundle_precision} bundle builds {' or '.join(allowed)} engines, not {target}; "
                           f"export a {target} bundle instead (clipxai export --precision {target})")
    s = manifest.image_size
    shape = list(manifest.graph.inputs[INPUT_IMAGE].shape)
    if shape[1:] != [3, s, s]:
        raise ClipxaiError(f"manifest input {INPUT_IMAGE} has shape {shape}, expected [batch, 3, {s}, {s}]; "
                           "re-export the bundle")
    lo, opt, hi = _batch_bounds(shape, min_batch, opt_batch, max_batch)
    if nodes is None and (target != "fp32" or fp32_layers == "auto"):
        nodes = read_nodes(onnx_path)
    if target == "int8" and not any(n.op_type in QDQ_OPS for n in nodes):
        raise ClipxaiError("this int8 bundle has no QuantizeLinear/DequantizeLinear nodes; TensorRT builds only "
                           "explicitly quantized (Q/DQ) int8 graphs. Use an fp16 engine, or export with Q/DQ")
    if target == "fp32" or fp32_layers == "none":
        pinned: tuple[str, ...] = ()
    elif fp32_layers == "auto":
        pinned = tuple(n.name for n in nodes if n.op_type in FP32_OPS and n.name)
    else:
        pinned = tuple(x.strip() for x in fp32_layers.split(",") if x.strip())
        known = {n.name for n in nodes}
        unknown = [x for x in pinned if x not in known]
        if unknown:
            raise ClipxaiError(f"--fp32-layers: no node named {unknown[0]!r} in the graph")
        if any(("," in x or ":" in x) for x in pinned):
            raise ClipxaiError("--fp32-layers: layer names with ',' or ':' cannot be passed to trtexec")
    if any(("," in x or ":" in x) for x in pinned):
        raise ClipxaiError("a graph node name contains ',' or ':', which trtexec cannot parse; re-export the bundle")
    return BuildPlan(Path(onnx_path), target, s, lo, opt, hi, pinned)


MASK_MAX_PROMPTS, MASK_OPT_PROMPTS, MASK_MAX_POINTS = 16, 5, 64


def mask_plan(manifest: MaskManifest, folder: Path, graph: str, precision: str | None = None, fp32_layers: str = "auto",
              max_batch: int | None = None) -> BuildPlan:
    """A mask-model bundle's encoder or decoder -> a BuildPlan: the encoder's shapes are fixed; the
    decoder takes 1..max_batch prompt sets (default 16, tuned for 5) of 1..64 points."""
    graphs = manifest.graphs.named()
    spec = graphs.get(graph)
    if spec is None:
        raise ClipxaiError(f"a mask-model bundle has the graphs {', '.join(graphs)}; --graph {graph!r} "
                           "is not one of them")
    target = precision or manifest.precision
    if target == "int8":
        raise ClipxaiError("TensorRT builds only explicitly quantized int8 graphs; build an fp16 engine instead")
    hi = max_batch or MASK_MAX_PROMPTS
    inputs = []
    for name, io in spec.inputs.items():
        dims = io.shape
        lo_shape = tuple(1 if isinstance(d, str) else d for d in dims)
        opt_shape = tuple(min(MASK_OPT_PROMPTS, hi) if d == "prompts" else MASK_OPT_PROMPTS if d == "points"
                          else 1 if isinstance(d, str) else d for d in dims)
        hi_shape = tuple(hi if d == "prompts" else MASK_MAX_POINTS if d == "points"
                         else 1 if isinstance(d, str) else d for d in dims)
        inputs.append((name, lo_shape, opt_shape, hi_shape))
    path = folder / spec.file
    nodes = read_nodes(path) if target != "fp32" and fp32_layers == "auto" else []
    pinned = tuple(n.name for n in nodes if n.op_type in FP32_OPS and n.name) if target != "fp32" else ()
    return BuildPlan(path, target, manifest.image_size, 1, 1, 1, pinned, tuple(inputs))


def graphs_of(manifest: Manifest) -> list[str]:
    """The graphs build_engine.sh builds: "model" for a CLIP bundle, "encoder decoder" for a mask model."""
    return list(manifest.graphs.named()) if isinstance(manifest, MaskManifest) else ["model"]


@dataclass(frozen=True)
class EngineRequest:
    """What ``build_engine.sh`` wants built: precision (None: the bundle's), batch range, the layers kept
    in fp32 ("auto", "none" or names), the engine folder root (None: the default), overrides of the
    detected TensorRT version and GPU label (cross-checks only), and the graph ("encoder" or "decoder"
    of a mask-model bundle; a CLIP bundle has one, "model")."""

    precision: str | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    fp32_layers: str = "auto"
    engine_root: str | Path | None = None
    trt_version: str | None = None
    gpu_label: str | None = None
    graph: str | None = None


def emit(bundle_path: str | Path, what: str, request: EngineRequest = EngineRequest()) -> str:
    """What ``build_engine.sh`` asks for, as text. what: "graphs" (the graphs to build), "args"
    (trtexec arguments, one a line), "engine-dir" (create and name the key's folder), "record"
    (write engine.json, with the engine's sha256, after a successful build; name the engine)."""
    r = request
    precision, min_batch, opt_batch, max_batch = r.precision, r.min_batch, r.opt_batch, r.max_batch
    fp32_layers, engine_root, trt_version, gpu_label, graph = (r.fp32_layers, r.engine_root, r.trt_version,
                                                                r.gpu_label, r.graph)
    from clipxai.runtime.bundle import load_bundle, stated_kind
    b = load_bundle(bundle_path, kind=stated_kind(bundle_path))
    if what == "graphs":
        return " ".join(graphs_of(b.manifest))
    graph = graph or graphs_of(b.manifest)[0]
    if b.kind == KIND_MASK:
        plan = mask_plan(b.manifest, b.path, graph, precision, fp32_layers, max_batch)
        graph_file = b.manifest.graphs.named()[graph].file
    elif graph != "model":
        raise ClipxaiError(f"a CLIP bundle has one graph, 'model'; --graph {graph!r} is not it")
    else:
        plan = plan_from_manifest(b.manifest, b.path / MODEL_FILE, precision, min_batch, opt_batch, max_batch,
                                  fp32_layers)
        graph_file = None
    if what == "args":
        return "\n".join(plan.trtexec_args())
    key = engine_cache.current_key(b, engine_cache.TRTEXEC, plan.precision, trt_version=trt_version,
                                   gpu_label=gpu_label, graph=graph_file)
    root = Path(engine_root) if engine_root else engine_cache.default_root(b)
    if what == "engine-dir":
        return str(engine_cache.key_dir(root, key))
    d = root / key.slug()
    if not (d / engine_cache.ENGINE_FILE).is_file() or not engine_cache.matches(d, key):
        raise ClipxaiError(f"{d}: no engine for this key to record; run build_engine.sh")
    record = {"key": key.as_dict(), "engine_sha256": sha256_file(d / engine_cache.ENGINE_FILE),
              "trtexec_args": plan.trtexec_args(), "min_batch": plan.min_batch,
              "opt_batch": plan.opt_batch, "max_batch": plan.max_batch, "fp32_layers": len(plan.fp32_layers),
              "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(d / engine_cache.RECORD_FILE, json.dumps(record, indent=2), mode=FILE_MODE)
    return str(d / engine_cache.ENGINE_FILE)
