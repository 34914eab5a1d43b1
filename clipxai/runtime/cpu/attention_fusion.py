"""Fuse the bundle graph's explicit attention into onnxruntime's CPU attention kernel.

The exported graph spells attention out in standard ONNX ops, so every provider
(TensorRT included) can run it::

    Y [B,T,n·C] -> Reshape [B,T,n,H,d] -> Transpose(2,0,3,1,4) -> Split/Squeeze or Gather -> q, k, v [B,H,T,d]
    softmax((q · s) @ kᵀ) @ v -> Transpose(0,2,1,3) -> Reshape [B,T,C]

On the CPU, onnxruntime's ``com.microsoft.MultiHeadAttention`` computes the same
thing from q, k, v in [B,T,C] layout with a tiled (flash-style) kernel: no
[B,H,T,T] score tensor in memory and no head transposes. At 785 tokens
(ViT-B/16 at 448) one attention took 11.0-12.6 ms instead of 12.9-14.5
(measured on this project's 2-core machine); at 197 tokens the two are equal.

``fuse_attention`` rewrites every match in place: q, k and v are taken as slices
of Y along its last axis, and the MultiHeadAttention node (``scale`` = the
graph's own s, checked to be a constant) produces the Reshape's output. The
rest of the graph is left as it is, and nodes left without consumers are
removed. Attention that does not match exactly (a mask or bias added to the
scores, softmax weights used elsewhere, the class-row attention that has no
keys) is not touched. The contrib op runs on onnxruntime's CPU and CUDA
providers only, so this is applied to the CPU graph cache only
(graph_cache.py), never to the bundle, and the cache builder checks the fused
graph's outputs against the bundle's before keeping it.

Needs the ``onnx`` package, an optional runtime dependency (``clipxai[fusion]``;
the export extra has it): without it the cache is built unfused. Torch-free.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
SMALL_INITIALIZER = 1024  # bytes: kept with its data for shape inference (shape vectors, scalars)


class _Graph:
    """Producers, consumers, constants and inferred shapes of a model's main graph."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.init = {t.name: t for t in g.initializer}
        self.shapes = _static_shapes(model)

    def only_consumer(self, name: str, node) -> bool:
        return name not in self.outputs and [c is node for c in self.consumers.get(name, [])] == [True]

    def const(self, name: str, depth: int = 0):
        """The value of ``name`` as a numpy array if it is a compile-time constant, else None."""
        if depth > 12:
            return None
        if name in self.init:
            t = self.init[name]
            if t.data_location == onnx.TensorProto.EXTERNAL:  # weights on disk (not loaded): never a constant here
                return None
            return numpy_helper.to_array(t)
        node = self.producer.get(name)
        if node is None:
            return None
        op = node.op_type
        if op == "Constant":
            attr = {a.name: a for a in node.attribute}
            if "value" in attr:
                return numpy_helper.to_array(attr["value"].t)
            if "value_float" in attr:
                return np.array(attr["value_float"].f, np.float32)
            if "value_int" in attr:
                return np.array(attr["value_int"].i, np.int64)
            return None
        if op == "Shape":
            shape = self.shapes.get(node.input[0])
            if shape is None or any(d is None for d in shape) or node.attribute:
                return None
            return np.array(shape, np.int64)
        args = [self.const(i, depth + 1) for i in node.input]
        if any(a is None for a in args):
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op == "Gather":
            return np.take(args[0], args[1], axis=attrs.get("axis", 0))
        if op == "Cast":
            return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        if op in ("Pow", "Mul", "Div", "Add", "Sub"):
            f = {"Pow": np.power, "Mul": np.multiply, "Div": np.divide, "Add": np.add, "Sub": np.subtract}[op]
            return f(args[0], args[1]).astype(args[0].dtype)
        if op == "Sqrt":
            return np.sqrt(args[0])
        if op == "Reciprocal":
            return (1 / args[0]).astype(args[0].dtype)
        return None


def _static_shapes(model: onnx.ModelProto) -> dict:
    """name -> list of dims (int, or None where unknown) from onnx shape inference, run on a
    copy of the graph whose large initializers are declared as inputs (no weight bytes copied)
    and whose dynamic input dims are 1: the matches do not depend on the batch size."""
    g = model.graph
    small, declared = [], []
    for t in g.initializer:
        size = int(np.prod(t.dims, dtype=np.int64)) * 4 if t.dims else 4
        if size <= SMALL_INITIALIZER:
            small.append(t)
        else:
            declared.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    inputs = []
    for vi in g.input:  # dynamic dims (batch, classes) pinned to 1, so every shape is static
        fixed = onnx.ValueInfoProto()
        fixed.CopyFrom(vi)
        for d in fixed.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1
        inputs.append(fixed)
    light = helper.make_graph(list(g.node), g.name, inputs + declared, list(g.output), small)
    light_model = helper.make_model(light, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(light_model, strict_mode=False, data_prop=True)
    except Exception:  # inference is an aid: without it nothing is fused
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _heads_source(gr: _Graph, name: str):
    """For a per-head tensor [B,H,T,d] cut from a packed projection, (Y, slot, n, H, d)
    such that it equals Y[..., slot·C:(slot+1)·C] split into heads; else None."""
    node = gr.producer.get(name)
    if node is None:
        return None
    slot = None
    if node.op_type == "Squeeze":  # Squeeze(Split(t, axis 0)[slot], axes [0])
        axes = gr.const(node.input[1]) if len(node.input) > 1 else _attr(node, "axes")
        split = gr.producer.get(node.input[0])
        if axes is None or list(np.atleast_1d(axes)) != [0] or split is None or split.op_type != "Split":
            return None
        if _attr(split, "axis", 0) != 0:
            return None
        sizes = gr.const(split.input[1]) if len(split.input) > 1 and split.input[1] else None
        if sizes is not None and any(int(s) != 1 for s in sizes):
            return None
        slot = list(split.output).index(node.input[0])
        packed = split.input[0]
    elif node.op_type == "Gather":  # Gather(t, scalar slot, axis 0)
        idx = gr.const(node.input[1])
        if _attr(node, "axis", 0) != 0 or idx is None or np.ndim(idx) != 0:
            return None
        slot = int(idx)
        packed = node.input[0]
    else:
        return None
    transpose = gr.producer.get(packed)
    if transpose is None or transpose.op_type != "Transpose" or list(_attr(transpose, "perm", [])) != [2, 0, 3, 1, 4]:
        return None
    reshape = gr.producer.get(transpose.input[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    five = gr.shapes.get(reshape.output[0])
    y = reshape.input[0]
    y_shape = gr.shapes.get(y)
    if not five or len(five) != 5 or any(d is None for d in five[2:]) or not y_shape or len(y_shape) != 3:
        return None
    n, heads, d = five[2:]
    if y_shape[2] != n * heads * d or not 0 <= slot < n:
        return None
    return y, slot, n, heads, d


def _match(gr: _Graph, softmax):
    """The attention around one Softmax node, as a dict, or None if it is not plain attention."""
    if _attr(softmax, "axis", -1) not in (-1, 3):
        return None
    scores = gr.producer.get(softmax.input[0])
    if scores is None or scores.op_type != "MatMul" or not gr.only_consumer(softmax.input[0], softmax):
        return None
    consumers = gr.consumers.get(softmax.output[0], [])
    if softmax.output[0] in gr.outputs or len(consumers) != 1 or consumers[0].op_type != "MatMul":
        return None
    weighted = consumers[0]
    if weighted.input[0] != softmax.output[0]:
        return None
    scaled, keys_t = (gr.producer.get(i) for i in scores.input)
    if keys_t is None or keys_t.op_type != "Transpose" or list(_attr(keys_t, "perm", [])) != [0, 1, 3, 2]:
        return None
    if scaled is None or scaled.op_type != "Mul":
        return None
    scale, q_name = None, None
    for a, b in ((0, 1), (1, 0)):
        s = gr.const(scaled.input[b])
        if s is not None and np.size(s) == 1:
            scale, q_name = float(np.asarray(s).reshape(())), scaled.input[a]
            break
    if scale is None:
        return None
    sources = [_heads_source(gr, t) for t in (q_name, keys_t.input[0], weighted.input[1])]
    if any(s is None for s in sources) or len({s[3:] for s in sources}) != 1:
        return None
    heads, d = sources[0][3:]
    # The output side: Transpose(0,2,1,3) then Reshape to [B, T, C].
    outs = [c for c in gr.consumers.get(weighted.output[0], []) if c.op_type != "Shape"]
    if weighted.output[0] in gr.outputs or len(outs) != 1 or outs[0].op_type != "Transpose":
        return None
    merge_t = outs[0]
    if list(_attr(merge_t, "perm", [])) != [0, 2, 1, 3]:
        return None
    outs = [c for c in gr.consumers.get(merge_t.output[0], []) if c.op_type != "Shape"]
    if merge_t.output[0] in gr.outputs or len(outs) != 1 or outs[0].op_type != "Reshape":
        return None
    merge = outs[0]
    merged = gr.shapes.get(merge.output[0])
    if not merged or len(merged) != 3 or merged[2] != heads * d:
        return None
    return {"sources": sources, "heads": heads, "scale": scale, "output": merge.output[0], "replaces": merge}


def _match_3d(gr: _Graph, softmax):
    """Single-head attention on 3-D tensors, as SAM 2.1's memory attention is exported
    (clipxai/models/sam_video.py)::

        softmax((q [B,N,d] @ Transpose(k [B,L,d], perm 0,2,1)) · s) @ v [B,L,d]

    -> {"qkv", "scale", "output"} (MultiHeadAttention with one head computes the same), or None."""
    if _attr(softmax, "axis", -1) not in (-1, 2):
        return None
    scaled = gr.producer.get(softmax.input[0])
    if scaled is None or scaled.op_type != "Mul" or not gr.only_consumer(softmax.input[0], softmax):
        return None
    scale, scores = None, None
    for a, b in ((0, 1), (1, 0)):
        producer = gr.producer.get(scaled.input[a])
        keys = gr.producer.get(producer.input[1]) if producer is not None and producer.op_type == "MatMul" else None
        if keys is None or keys.op_type != "Transpose":
            continue
        s = gr.const(scaled.input[b])
        if s is not None and np.size(s) == 1:
            scale, scores = float(np.asarray(s).reshape(())), producer
            break
    if scores is None or not gr.only_consumer(scores.output[0], scaled):
        return None
    consumers = gr.consumers.get(softmax.output[0], [])
    if softmax.output[0] in gr.outputs or len(consumers) != 1 or consumers[0].op_type != "MatMul":
        return None
    weighted = consumers[0]
    keys_t = gr.producer.get(scores.input[1])
    if weighted.input[0] != softmax.output[0] or keys_t is None or keys_t.op_type != "Transpose" \
            or list(_attr(keys_t, "perm", [])) != [0, 2, 1]:
        return None
    q, k, v = scores.input[0], keys_t.input[0], weighted.input[1]
    shapes = [gr.shapes.get(t) for t in (q, k, v)]
    if any(not sh or len(sh) != 3 for sh in shapes):   # rank 3 (dims may be dynamic: the MatMuls fix them)
        return None
    return {"qkv": (q, k, v), "scale": scale, "output": weighted.output[0]}


def fuse_attention(model: onnx.ModelProto) -> int:
    """Rewrite the model's plain attention blocks into MultiHeadAttention nodes, in place.

    Returns the number of attention blocks fused (0: the model is unchanged).
    """
    gr = _Graph(model)
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    matches = [m for m in (_match(gr, n) for n in softmaxes) if m]
    single = [m for m in (_match_3d(gr, n) for n in softmaxes) if m]
    if not matches and not single:
        return 0
    new_nodes, slices = [], {}

    def bsd(source):
        """Y[..., slot·C:(slot+1)·C] (one Split per packed projection, shared)."""
        y, slot, n, heads, d = source
        if n == 1:
            return y
        if y not in slices:
            c = heads * d
            names = [f"{y}/clipxai_bsd_{i}" for i in range(n)]
            sizes = f"{y}/clipxai_bsd_sizes"
            new_nodes.append((gr.producer.get(y), [
                helper.make_node("Constant", [], [sizes], value=numpy_helper.from_array(np.full(n, c, np.int64))),
                helper.make_node("Split", [y, sizes], names, axis=2, name=f"{y}/clipxai_bsd_split")]))
            slices[y] = names
        return slices[y][slot]

    replaced = {}
    for i, m in enumerate(matches):
        q, k, v = (bsd(s) for s in m["sources"])
        replaced[m["output"]] = helper.make_node(
            "MultiHeadAttention", [q, k, v], [m["output"]], domain=MS_DOMAIN, name=f"clipxai_attention_{i}",
            num_heads=m["heads"], scale=m["scale"])
    for i, m in enumerate(single):
        replaced[m["output"]] = helper.make_node(
            "MultiHeadAttention", list(m["qkv"]), [m["output"]], domain=MS_DOMAIN,
            name=f"clipxai_attention_3d_{i}", num_heads=1, scale=m["scale"])
    # Keep a topological order: each new Split right after its projection, each MHA where its Reshape
    # was. Nodes are keyed by their first output (names are unique) and copied, never moved.
    after = {p.output[0]: nodes for p, nodes in new_nodes if p is not None}
    ordered = [nd for p, nodes in new_nodes if p is None for nd in nodes]
    for node in model.graph.node:
        key = node.output[0] if node.output else None
        fresh = replaced.get(key)
        if fresh is None:
            fresh = onnx.NodeProto()
            fresh.CopyFrom(node)
        ordered.append(fresh)
        ordered.extend(after.get(key, []))
    live = _live(ordered, {o.name for o in model.graph.output})
    del model.graph.node[:]
    model.graph.node.extend(live)
    used = {i for n in live for i in n.input} | {o.name for o in model.graph.output}
    for i in reversed(range(len(model.graph.initializer))):  # the dropped shape constants
        if model.graph.initializer[i].name not in used:
            del model.graph.initializer[i]
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(matches) + len(single)


def _live(nodes: list, outputs: set) -> list:
    """The nodes that some graph output depends on, in their order."""
    needed = set(outputs)
    keep = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for a in node.attribute:  # subgraphs (If/Loop) read outer names too
                if a.type == onnx.AttributeProto.GRAPH:
                    needed.update(i for n in a.g.node for i in n.input)
    keep.reverse()
    return keep
