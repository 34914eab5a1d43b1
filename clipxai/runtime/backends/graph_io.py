"""What each graph of a bundle must take and give, and the check of an opened session against it.

``expected_io`` is the one place that asks the manifest for a graph's inputs and outputs
(``Manifest.graph_io``, clipxai/manifest.py): the image graph's, the text encoder's, the word
explainer's, a mask model's encoder and decoder. Every graph must also have the names the runtime
feeds and reads (``REQUIRED``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipxai.contract import (
    EXPLAIN_INPUT_EMBEDDING, EXPLAIN_OUTPUT_COSINE, EXPLAIN_OUTPUT_WEIGHTS, INPUT_IMAGE, MASK_BINARIZE,
    MASK_CONDITIONED, MASK_DECODER_FILE, MASK_EMBEDDINGS, MASK_ENCODER_FILE, MASK_HIGH_RES, MASK_INPUT_IMAGE,
    MASK_IOU, MASK_LOW_RES, MASK_MASK_LOGITS, MASK_MEMORIES, MASK_MEMORY_ATTENTION_FILE, MASK_MEMORY_ENCODER_FILE,
    MASK_MEMORY_SLOTS, MASK_OBJECT_SCORE, MASK_POINT_COORDS, MASK_POINT_LABELS, MASK_POINTER_DISTANCES,
    MASK_POINTERS, MASK_TRACK_DECODER_FILE, MODEL_FILE, OUTPUTS, TEXT_ENCODER_FILE, TEXT_EXPLAINER_FILE, TEXT_INPUT_EOT, TEXT_INPUT_IDS,
    TEXT_OUTPUT,
)
from clipxai.errors import BundleError
from clipxai.manifest import ORT_TYPES, TensorSpec

# graph file -> (inputs, outputs) the runtime feeds and reads
REQUIRED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    MODEL_FILE: ((INPUT_IMAGE,), tuple(OUTPUTS)),
    TEXT_ENCODER_FILE: ((TEXT_INPUT_IDS, TEXT_INPUT_EOT), (TEXT_OUTPUT,)),
    TEXT_EXPLAINER_FILE: ((TEXT_INPUT_IDS, TEXT_INPUT_EOT, EXPLAIN_INPUT_EMBEDDING),
                          (EXPLAIN_OUTPUT_WEIGHTS, EXPLAIN_OUTPUT_COSINE)),
    MASK_ENCODER_FILE: ((MASK_INPUT_IMAGE,), (MASK_EMBEDDINGS,)),
    MASK_DECODER_FILE: ((MASK_EMBEDDINGS, MASK_POINT_COORDS, MASK_POINT_LABELS), (MASK_LOW_RES, MASK_IOU)),
    MASK_MEMORY_ATTENTION_FILE: ((MASK_EMBEDDINGS, MASK_MEMORIES, MASK_MEMORY_SLOTS, MASK_POINTERS,
                                  MASK_POINTER_DISTANCES), (MASK_CONDITIONED,)),
    MASK_MEMORY_ENCODER_FILE: ((MASK_EMBEDDINGS, MASK_MASK_LOGITS, MASK_OBJECT_SCORE, MASK_BINARIZE), (MASK_MEMORIES,)),
    MASK_TRACK_DECODER_FILE: ((MASK_CONDITIONED, *MASK_HIGH_RES, MASK_POINT_COORDS, MASK_POINT_LABELS),
                              (MASK_LOW_RES, MASK_IOU, MASK_POINTERS, MASK_OBJECT_SCORE)),
}
# graphs stored in the bundle's precision; the others are fp32 (text graphs, a mask model's decoder)
PRECISION_GRAPHS = (MODEL_FILE, MASK_ENCODER_FILE)


@dataclass(frozen=True)
class GraphIO:
    """inputs / outputs: {name: TensorSpec} the graph must have."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def expected_io(bundle, graph_file: str) -> GraphIO:
    """The inputs and outputs ``graph_file`` of ``bundle`` must have; BundleError for a file the
    manifest does not list (so its digest was never checked) or a graph clipxai does not run."""
    where = Path(bundle.path) / graph_file
    if graph_file not in REQUIRED:
        raise BundleError(f"{where}: not a graph clipxai runs (it runs {', '.join(REQUIRED)})")
    if graph_file not in bundle.manifest.files:
        raise BundleError(f"{where}: not listed in the manifest; re-export the bundle")
    try:
        inputs, outputs = bundle.manifest.graph_io(graph_file)
    except BundleError as e:
        raise BundleError(f"{bundle.path}: {e}") from None
    return GraphIO(dict(inputs), dict(outputs))


def graph_precision(bundle, graph_file: str) -> str:
    """The precision ``graph_file`` is stored in: the bundle's for its main graph, else fp32."""
    return bundle.manifest.precision if graph_file in PRECISION_GRAPHS else "fp32"


def check_io(bundle, graph_file: str, session, io: GraphIO | None = None) -> None:
    """The session's inputs and outputs must be the expected ones: names, element types, fixed dims."""
    io = io or expected_io(bundle, graph_file)
    where = Path(bundle.path) / graph_file
    need_in, need_out = REQUIRED[graph_file]
    ins = {i.name: i for i in session.get_inputs()}
    outs = {o.name: o for o in session.get_outputs()}
    if set(ins) != set(io.inputs) or not set(need_in) <= set(ins):
        raise BundleError(f"{where}: graph inputs {sorted(ins)} differ from the manifest's {sorted(io.inputs)}; "
                          "re-export the bundle")
    if set(outs) != set(io.outputs) or not set(need_out) <= set(outs):
        raise BundleError(f"{where}: graph outputs {sorted(outs)} differ from the manifest's {sorted(io.outputs)}; "
                          "re-export the bundle")
    for name, arg in {**ins, **outs}.items():
        _check_arg(where, name, arg, io.inputs.get(name) or io.outputs[name])


def _check_arg(where: Path, name: str, arg, spec: TensorSpec) -> None:
    want_type = ORT_TYPES.get(spec.dtype, f"tensor({spec.dtype})")
    if arg.type != want_type:
        raise BundleError(f"{where}: {name} is {arg.type}, the manifest says {spec.dtype}")
    shape, want = list(arg.shape), list(spec.shape)
    if len(shape) != len(want):
        raise BundleError(f"{where}: {name} has rank {len(shape)}, the manifest says {len(want)}")
    for got, dim in zip(shape, want):
        if isinstance(dim, int) and isinstance(got, int) and got != dim:
            raise BundleError(f"{where}: {name} has shape {shape}, the manifest says {want}")
