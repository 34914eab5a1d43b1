"""Verification at export: onnxruntime against the PyTorch model on the same input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from clipxai.contract import INPUT_IMAGE, INPUT_REDUNDANCY, INPUT_TEXT
from clipxai.export.onnx_export import graph_output_names


def verification_images(size: int, mean, std, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic normalised test images [batch, 3, S, S]: smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    imgs = []
    for b in range(batch):
        base = np.stack([xx, yy, (xx + yy) / 2])[(np.arange(3) + b) % 3]
        img = np.clip(0.7 * base + 0.3 * rng.random((3, size, size)), 0, 1)
        imgs.append(img)
    x = np.stack(imgs).astype(np.float32)
    return ((x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]).astype(np.float32)


def verify_onnx(onnx_path: str | Path, model: nn.Module, mean, std, batch: int = 2,
                vocabulary: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Max abs errors {similarity, heatmaps, scores[, labels][, image_embedding]} of the ONNX graph vs torch,
    batch 2.

    vocabulary: (text [K, D], redundancy [D]) for a graph that takes them as inputs.
    """
    x = verification_images(model.image_size, mean, std, batch)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}  # a method without feature surgery has no redundancy input
    feeds = {INPUT_IMAGE: x}
    args = [torch.from_numpy(x)]
    if vocabulary is not None:
        feeds.update({INPUT_TEXT: vocabulary[0], INPUT_REDUNDANCY: vocabulary[1]})
        args += [torch.from_numpy(vocabulary[0]), torch.from_numpy(vocabulary[1])]
    names = graph_output_names(model)
    ours = sess.run(names, {k: v for k, v in feeds.items() if k in inputs})
    with torch.no_grad():
        theirs = [t.numpy() for t in model(*args)]
    errors = {name: float(np.abs(a - b).max()) for name, a, b in zip(names, ours, theirs)}
    return {**errors, "batch": batch}
