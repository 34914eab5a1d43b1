"""torch -> ONNX, then an onnx-graphsurgeon clean-up pass and a full check."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
import torch

from torch import nn

import clipxai
from clipxai.contract import (
    INPUT_IMAGE, INPUT_REDUNDANCY, INPUT_TEXT, OUTPUT_EMBEDDING, OUTPUT_HEATMAPS, OUTPUT_LABELS, OUTPUT_SCORES,
    OUTPUT_SIMILARITY, MIN_OPSET, OUTPUTS,
)


def export_onnx(model: nn.Module, path: str | Path, opset: int = MIN_OPSET,
                embed_dim: int | None = None, data_file: str | None = None) -> onnx.ModelProto:
    """Export with a dynamic batch, fold constants, clean up, toposort, check, save
    (with the weights in ``data_file`` next to it, when given: ONNX external data).

    embed_dim: None for ``forward(image)`` (vocabulary baked in); D for a module
    ``forward(image, text [K, D], redundancy [D])`` exported with the vocabulary
    as inputs and a dynamic K. A model with ``with_labels`` set also outputs labels [B, K], one
    with ``with_embedding`` set image_embedding [B, D] (``graph_output_names``).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}")
    size = model.image_size
    dummy = (torch.zeros(2, 3, size, size),)
    names = [INPUT_IMAGE]
    dynamic = {INPUT_IMAGE: {0: "batch"}, OUTPUT_SIMILARITY: {0: "batch"}, OUTPUT_SCORES: {0: "batch"},
               OUTPUT_HEATMAPS: {0: "batch"}}
    if embed_dim is not None:
        text = torch.nn.functional.normalize(torch.randn(3, embed_dim, generator=torch.Generator().manual_seed(0)),
                                             dim=-1)
        dummy = (dummy[0], text, text.mean(0))
        names += [INPUT_TEXT, INPUT_REDUNDANCY]
        dynamic = {INPUT_IMAGE: {0: "batch"}, INPUT_TEXT: {0: "classes"},
                   OUTPUT_SIMILARITY: {0: "batch", 2: "classes"}, OUTPUT_SCORES: {0: "batch", 1: "classes"},
                   OUTPUT_HEATMAPS: {0: "batch", 1: "classes"}}
    outputs = graph_output_names(model)
    if OUTPUT_LABELS in outputs:
        dynamic[OUTPUT_LABELS] = {0: "batch"} if embed_dim is None else {0: "batch", 1: "classes"}
    if OUTPUT_EMBEDDING in outputs:
        dynamic[OUTPUT_EMBEDDING] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter is deprecated but fast and exports this
        # graph exactly; the dynamo exporter is the switch to flip when it is removed.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), dummy, str(path),
            input_names=names, output_names=outputs, dynamic_axes=dynamic,
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    return finish_graph(path, data_file)


def graph_output_names(model: nn.Module) -> list[str]:
    """The image graph's outputs in the order the module returns them (clipxai.export.graph)."""
    names = list(OUTPUTS)
    if getattr(model, "with_labels", False):
        names.append(OUTPUT_LABELS)
    if getattr(model, "with_embedding", False):
        names.append(OUTPUT_EMBEDDING)
    return names


def finish_graph(path: str | Path, data_file: str | None = None) -> onnx.ModelProto:
    """The pass every exported graph gets: fold constants, clean up, toposort, stamp, save, full check."""
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # its size notes are not for users
    import onnxruntime as ort
    ort.set_default_logger_severity(3)  # nor are onnxruntime's optimizer notes while it folds constants
    graph = gs.import_onnx(onnx.load(str(path)))
    graph.fold_constants().cleanup().toposort()
    proto = gs.export_onnx(graph)
    proto.producer_name = "clipxai"
    proto.producer_version = clipxai.__version__
    save_graph(proto, path, data_file)
    onnx.checker.check_model(str(path), full_check=True)
    return proto


def save_graph(proto: onnx.ModelProto, path: str | Path, data_file: str | None = None) -> None:
    """Save a graph; with ``data_file``, every tensor of 1 KB or more goes into that file next to it
    (replaced, not appended to), so a reader can open the graph without its weights."""
    path = Path(path)
    if data_file is None:
        onnx.save(proto, str(path))
        return
    (path.parent / data_file).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_file,
              size_threshold=1024)
    os.chmod(path.parent / data_file, (path.parent / path.name).stat().st_mode & 0o777)  # onnx makes it 0600


def export_module(module: nn.Module, args: tuple, path: str | Path, input_names: list[str], output_names: list[str],
                  dynamic_axes: dict | None = None, opset: int = MIN_OPSET, data_file: str | None = None) -> None:
    """Export any module (no clean-up pass: the mask graphs are exported as traced), then save it, with
    its weights in ``data_file`` when given, and check it."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or {}, opset_version=opset, do_constant_folding=True,
                          dynamo=False)
    proto = onnx.load(str(path))
    proto.producer_name, proto.producer_version = "clipxai", clipxai.__version__
    save_graph(proto, path, data_file)
    onnx.checker.check_model(str(path), full_check=True)
