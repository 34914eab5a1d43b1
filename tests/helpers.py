"""Small helpers for the tests (no fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_manifest(bundle: Path) -> dict:
    return json.loads((Path(bundle) / "manifest.json").read_text())


def run_bundle(bundle: Path, x: np.ndarray):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(Path(bundle) / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(["similarity", "scores", "heatmaps"], {"image": x})


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, size, size)).astype(np.float32)


def leftovers(parent: Path) -> list[str]:
    """Staging directories the exporter may have left in parent."""
    return [p.name for p in Path(parent).iterdir() if ".partial-" in p.name]
