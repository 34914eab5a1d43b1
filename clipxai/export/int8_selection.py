"""Accuracy-aware int8: which weight MatMuls to quantize, chosen by measuring what each does to the outputs.

onnxruntime's dynamic quantization (``quantize_dynamic``: int8 weights per output
channel, uint8 activations per tensor, quantized on every call) is the tool;
this module only decides its ``nodes_to_exclude``:

1. **Layers**: every MatMul with a constant matrix weight, in graph order, with
   its FLOPs at batch 1 (ONNX shape inference).
2. **Groups**: the layers of one transformer block (a block starts at a packed
   q/k/v projection, weight ``[C, 3C]``); every layer after the graph's last
   LayerNormalization (the projection and the class heads) is a group of its
   own, except that layers sharing one weight are one group: onnxruntime's
   quantizer gives a layer it was told to leave alone the *dequantized* int8
   weight when another layer shares it (measured), so they are int8 or fp32 together.
3. **Sensitivity**, on the first ``SENSITIVITY_IMAGES`` fidelity images:

   - *local*: each layer's output error when it alone is int8, relative to its
     output, ``||δ|| / ||Y||``;
   - *output*: the graph's outputs (heatmap correlation, pixel agreement, top-1
     agreement, max heatmap error against fp32) when only that group is int8.

   "Only that group int8" is computed exactly, without a graph per group: the
   fp32 graph with each MatMul output moved by δ, the error that onnxruntime's
   arithmetic makes on that layer's fp32 input (activation quantized as
   ``DynamicQuantizeLinear`` does; the int8 weights and scales the quantizer
   itself wrote), fed through extra graph inputs. Interactions between the
   layers of one group are second order and left out; every selection is
   checked on real quantized graphs anyway.
4. **Selection**: each group's *damage* is the largest share of the margin's
   slack it uses alone (pixel agreement against 1 − 0.96, correlation against
   1 − 0.985, top-1 agreement against 1/8: the zero-shot scores are outputs too).
   Groups are sorted by damage; the first k stay fp32, starting with k = the
   number of groups that alone use more than the whole slack (damage > 1).
   That candidate is quantized with ``quantize_dynamic`` (``nodes_to_exclude``)
   and measured on every fidelity image; while it misses the margin gate
   (``MARGIN``: correlation ≥ 0.985, pixel agreement ≥ 96 %), one more group
   stays fp32. If none passes before int8 would cover less than
   ``MIN_INT8_SHARE`` of the weight-MatMul FLOPs, the best candidate is
   returned, failing, with its figures.

Measured (docs/performance.md): on random ViT-B/16 weights the class-head
MatMuls (image features x text embeddings, K columns) are where int8 hurts;
the transformer blocks barely move the outputs. Static (QDQ) quantization with
calibration on the fidelity images was measured and not kept: worse fidelity
and 1.5-1.7x slower than dynamic quantization on this CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from clipxai.contract import INPUT_IMAGE, OUTPUTS
from clipxai.export.fidelity import Gate, compare_outputs, gate_failures

MARGIN = Gate(correlation=0.985, pixel_agreement=0.96)  # what the selection aims for (the gate is lower)
TOP1_SLACK = 1 / 8     # one image in eight may change its top class: the damage unit of the scores
SENSITIVITY_IMAGES = 1
MIN_INT8_SHARE = 0.5     # below this share of FLOPs in int8 the graph is no longer worth being int8


@dataclass
class Layer:
    name: str              # the MatMul node
    weight: str            # its weight initializer
    shape: tuple[int, int]
    flops: float           # at batch 1
    group: int = -1
    local_error: float = float("nan")


@dataclass
class Group:
    index: int
    label: str             # "block 3", or the layer's name for a tail layer
    layers: list[str]
    flops: float
    figures: dict = field(default_factory=dict)   # output fidelity with only this group int8
    damage: float = 0.0    # largest share of the margin's slack it uses alone


@dataclass
class Selection:
    kept_fp32: list[str]               # MatMul nodes left in fp32 (on purpose: sensitive)
    int8_flop_share: float             # FLOPs in int8 / FLOPs of every weight MatMul (the quantizable ones)
    report: dict                       # fidelity of the chosen candidate on all fidelity images
    passed_margin: bool
    layers: list[Layer]
    groups: list[Group]
    tried: list[dict]                  # every candidate: k, kept, figures


# ---------------------------------------------------------------- layers and groups

def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """The MatMuls onnxruntime would quantize (a constant matrix weight), in graph order. Their FLOPs
    are filled from the real activation shapes by ``measure_sensitivity``."""
    inits = {i.name: i for i in model.graph.initializer}
    return [Layer(n.name, inits[n.input[1]].name, (int(inits[n.input[1]].dims[0]), int(inits[n.input[1]].dims[1])),
                  0.0)
            for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def group_layers(model: onnx.ModelProto, layers: list[Layer]) -> list[Group]:
    """Blocks (a new one at each [C, 3C] weight), then each layer after the last LayerNorm alone."""
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    last_norm = max((i for i, n in enumerate(model.graph.node) if n.op_type == "LayerNormalization"), default=-1)
    groups: list[Group] = []
    block = -1
    by_weight: dict[str, Group] = {}
    for layer in sorted(layers, key=lambda x: order[x.name]):
        if layer.weight in by_weight:  # shares its weight with a layer already placed: same group
            by_weight[layer.weight].layers.append(layer.name)
            layer.group = by_weight[layer.weight].index
            continue
        if order[layer.name] > last_norm:
            groups.append(Group(len(groups), layer.name, [layer.name], layer.flops))
        else:
            if layer.shape[1] == 3 * layer.shape[0] or not groups:
                block += 1
                groups.append(Group(len(groups), f"block {block}", [], 0.0))
            groups[-1].layers.append(layer.name)
            groups[-1].flops += layer.flops
        layer.group = groups[-1].index
        by_weight[layer.weight] = groups[-1]
    return groups


# ---------------------------------------------------------------- exact "only this layer int8" errors

def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.float32, int]:
    """ONNX DynamicQuantizeLinear: uint8 values, scale and zero point of a float32 tensor."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255.0)
    if scale == 0:
        return np.zeros(x.shape, np.uint8), np.float32(0.0), 0
    zp = int(np.clip(np.rint(np.float32(-lo) / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return q, scale, zp


def int8_error(x: np.ndarray, w: np.ndarray, wq: np.ndarray, wscale: np.ndarray) -> np.ndarray:
    """δ = (int8 MatMul as onnxruntime computes it) - (fp32 MatMul), for input x [..., K] and weight
    w [K, N] with its int8 per-column weights wq [K, N] and scales wscale [N]."""
    q, scale, zp = dynamic_quantize(x)
    a = q.reshape(-1, q.shape[-1]).astype(np.float32) - np.float32(zp)
    acc = a.astype(np.float64) @ wq.astype(np.float64)  # integers: exact in float64
    y_int8 = (acc.astype(np.float32) * (scale * wscale.astype(np.float32)))
    y = x.reshape(-1, x.shape[-1]) @ w
    return (y_int8 - y).reshape(*x.shape[:-1], w.shape[1]).astype(np.float32)


# ---------------------------------------------------------------- graphs for the measurement

def _save_beside(model: onnx.ModelProto, source: Path, name: str) -> Path:
    """Save a graph-only variant of ``model`` next to ``source``, whose weights file it reads (onnx
    refuses external data reached through a hard link, and a copy would cost the model's size)."""
    target = source.parent / name
    onnx.save(model, str(target))
    return target


def capture_graph(model: onnx.ModelProto, layers: list[Layer]) -> onnx.ModelProto:
    """The model with each layer's input as an extra output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = {n.name: n for n in m.graph.node}
    have = {o.name for o in m.graph.output}
    for layer in layers:
        x = nodes[layer.name].input[0]
        if x not in have:
            m.graph.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, None))
            have.add(x)
    return m


def injection_graph(model: onnx.ModelProto, layers: list[Layer]) -> onnx.ModelProto:
    """The model with an input ``delta{i}`` added to the output of layer i."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = {n.name: n for n in m.graph.node}
    extra = []
    for i, layer in enumerate(layers):
        node = nodes[layer.name]
        y = node.output[0]
        node.output[0] = y + "__fp32"
        m.graph.input.append(helper.make_tensor_value_info(f"delta{i}", TensorProto.FLOAT, None))
        extra.append(helper.make_node("Add", [y + "__fp32", f"delta{i}"], [y], name=f"{layer.name}__delta"))
    m.graph.node.extend(extra)
    return _toposorted(m)


def _toposorted(m: onnx.ModelProto) -> onnx.ModelProto:
    produced = {i.name for i in m.graph.input} | {i.name for i in m.graph.initializer} | {""}
    pending, ordered = list(m.graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle or an unknown input")
        pending = rest
    del m.graph.node[:]
    m.graph.node.extend(ordered)
    return m


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_prepacking", "1")  # few runs: packing would cost memory and time
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _quantized_weights(int8_model: onnx.ModelProto, layers: list[Layer]) -> dict[str, tuple]:
    inits = {i.name: i for i in int8_model.graph.initializer}
    out = {}
    for layer in layers:
        q, s = inits.get(layer.weight + "_quantized"), inits.get(layer.weight + "_scale")
        if q is not None and s is not None:
            out[layer.name] = (numpy_helper.to_array(q), numpy_helper.to_array(s))
    return out


def measure_sensitivity(fp32_path: Path, int8_path: Path, layers: list[Layer], groups: list[Group],
                        x: np.ndarray, extra: dict, reference: list[np.ndarray],
                        margin: Gate = MARGIN) -> None:
    """Fill each layer's local error and each group's output figures (module docstring, step 3).

    x: preprocessed images [n, 3, S, S]; reference: the fp32 outputs on them."""
    model = onnx.load(str(fp32_path), load_external_data=False)
    weights = {i.name: i for i in model.graph.initializer}
    wq = _quantized_weights(onnx.load(str(int8_path)), layers)
    layers = [layer for layer in layers if layer.name in wq]
    graphs = [_save_beside(capture_graph(model, layers), fp32_path, ".int8-capture.onnx"),
              _save_beside(injection_graph(model, layers), fp32_path, ".int8-inject.onnx")]
    try:
        capture, inject = (_session(p) for p in graphs)
    finally:  # the sessions hold what they need; the files must not stay in the bundle
        for p in graphs:
            p.unlink(missing_ok=True)
    nodes = {n.name: n for n in model.graph.node}
    names = [nodes[layer.name].input[0] for layer in layers]
    outs_by_group: dict[int, list] = {g.index: [] for g in groups}
    local: dict[str, list[float]] = {layer.name: [] for layer in layers}
    from onnx.external_data_helper import load_external_data_for_tensor
    w_fp32 = {}
    for layer in layers:
        t = onnx.TensorProto()
        t.CopyFrom(weights[layer.weight])
        if t.data_location == TensorProto.EXTERNAL:
            load_external_data_for_tensor(t, str(fp32_path.parent))
        w_fp32[layer.name] = numpy_helper.to_array(t)
    for i in range(len(x)):
        feeds = {INPUT_IMAGE: x[i:i + 1], **extra}
        captured = dict(zip(names, capture.run(names, feeds)))
        deltas = {}
        for layer, xname in zip(layers, names):
            xin = captured.pop(xname) if names.count(xname) == 1 else captured[xname]
            d = int8_error(xin, w_fp32[layer.name], *wq[layer.name])
            ref_out = xin.reshape(-1, xin.shape[-1]) @ w_fp32[layer.name]
            local[layer.name].append(float(np.linalg.norm(d) / max(np.linalg.norm(ref_out), 1e-30)))
            layer.flops = 2.0 * ref_out.shape[0] * layer.shape[0] * layer.shape[1] / max(xin.shape[0], 1)
            deltas[layer.name] = d
        del captured
        shared: dict[tuple, np.ndarray] = {}  # one zero array per shape, for the layers left fp32
        zeros = {name: shared.setdefault(d.shape, np.zeros(d.shape, np.float32)) for name, d in deltas.items()}
        for g in groups:
            members = set(g.layers)
            inject_feeds = {f"delta{j}": (deltas if layer.name in members else zeros)[layer.name]
                            for j, layer in enumerate(layers)}
            outs_by_group[g.index].append(inject.run(list(OUTPUTS), {**feeds, **inject_feeds}))
    for layer in layers:
        layer.local_error = float(np.mean(local[layer.name]))
    size = x.shape[-1]
    ref = [r[:len(x)] for r in reference]
    by_name = {layer.name: layer for layer in layers}
    for g in groups:
        cand = [np.concatenate(parts) for parts in zip(*outs_by_group[g.index])]
        g.figures = compare_outputs(ref, cand, size)
        g.flops = sum(by_name[name].flops for name in g.layers if name in by_name)
        g.damage = max((1 - g.figures["pixel_agreement"]) / (1 - margin.pixel_agreement),
                       (1 - g.figures["correlation"]) / (1 - margin.correlation),
                       (1 - g.figures["top1_agreement"]) / TOP1_SLACK)


# ---------------------------------------------------------------- selection

def select(work: Path, layers: list[Layer], groups: list[Group],
           quantize: Callable[[Path, list[str]], None], evaluate: Callable[[Path], dict],
           margin: Gate = MARGIN, log: Callable[[str], None] = lambda s: None) -> tuple[Selection, Path]:
    """Keep the most damaging groups in fp32 (module docstring, step 4). quantize(dst, nodes_to_exclude)
    writes a candidate; evaluate(path) measures it on every fidelity image. Returns the selection and
    the chosen candidate's path."""
    by_name = {layer.name: layer for layer in layers}
    order = sorted(groups, key=lambda g: g.damage, reverse=True)
    total = sum(layer.flops for layer in layers) or 1.0
    start = sum(1 for g in order if g.damage > 1.0)  # each of these alone breaks the margin
    share = [1.0 - sum(by_name[n].flops for g in order[:k] for n in g.layers) / total for k in range(len(order) + 1)]
    ks = [k for k in range(start, len(order) + 1) if share[k] >= MIN_INT8_SHARE]
    if not ks:  # even the groups that must stay fp32 leave too little in int8: the best it may try
        ks = [max(k for k in range(len(order) + 1) if share[k] >= MIN_INT8_SHARE)]
    tried, best = [], None
    for k in ks:
        kept = [name for g in order[:k] for name in g.layers]
        candidate = work / f"int8-k{k}.onnx"
        quantize(candidate, kept)
        figures = evaluate(candidate)
        ok = not gate_failures(figures, margin)
        tried.append({"kept_groups": [g.label for g in order[:k]], "int8_flop_share": share[k], **figures,
                      "passed_margin": ok})
        log(f"int8 with {k} most sensitive group{'s' if k != 1 else ''} in fp32 "
            f"({', '.join(g.label for g in order[:k]) or 'none'}): correlation {figures['correlation']:.4f}, "
            f"pixel agreement {100 * figures['pixel_agreement']:.1f}%, top-1 agreement "
            f"{100 * figures['top1_agreement']:.0f}%, {100 * share[k]:.1f}% of the FLOPs in int8"
            + (" -> margin reached" if ok else " -> below the margin"))
        score = (ok, figures["pixel_agreement"] + figures["correlation"])
        if best is None or score > best[0]:
            best = (score, kept, share[k], figures, candidate)
        if ok:
            break
    (ok, _), kept, int8_share, figures, candidate = best
    for other in work.glob("int8-k*.onnx"):
        if other != candidate:
            other.unlink()
    return Selection(kept, int8_share, figures, ok, layers, groups, tried), candidate


def report_table(sel: Selection) -> list[str]:
    """The per-layer table ``clipxai export --report`` prints (markdown)."""
    kept = set(sel.kept_fp32)
    groups = {g.index: g for g in sel.groups}
    lines = ["| layer | group | weight | MFLOP | local error | group alone: correlation | pixel agreement | "
             "top-1 | max heatmap error | int8 |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for layer in sel.layers:
        g = groups.get(layer.group)
        f = g.figures if g else {}
        lines.append(f"| {layer.name} | {g.label if g else '-'} | {layer.shape[0]}x{layer.shape[1]} | "
                     f"{layer.flops / 1e6:.1f} | {layer.local_error:.4f} | {f.get('correlation', float('nan')):.4f} | "
                     f"{100 * f.get('pixel_agreement', float('nan')):.1f}% | {100 * f.get('top1_agreement', float('nan')):.0f}% | "
                     f"{f.get('max_abs_heatmap_error', float('nan')):.3f} | {'fp32 (kept)' if layer.name in kept else 'int8'} |")
    return lines

