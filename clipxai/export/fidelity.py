"""Fidelity of a lower-precision graph against the fp32 graph it was made from.

Both graphs run in onnxruntime on the same images; the report holds

- ``correlation``: mean Pearson correlation of the grid heatmaps over every
  (image, class) pair (``correlation_min``: the worst pair);
- ``pixel_agreement``: fraction of pixels whose segmentation (argmax of the
  upsampled similarity, at the graph's input size) is the same;
- ``top1_agreement``: fraction of images whose top zero-shot class is the same.

The images are synthetic scenes the exporter draws itself (no network, no
files), or the user's own images. numpy + onnxruntime only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from clipxai.contract import INPUT_IMAGE, OUTPUT_HEATMAPS, OUTPUT_SCORES, OUTPUT_SIMILARITY
from clipxai.runtime.postprocess import segment
from clipxai.runtime.preprocess import open_image, preprocess


@dataclass(frozen=True)
class Gate:
    correlation: float
    pixel_agreement: float


GATES = {"int8": Gate(correlation=0.98, pixel_agreement=0.95),
         "fp16": Gate(correlation=0.995, pixel_agreement=0.95),
         "bf16": Gate(correlation=0.98, pixel_agreement=0.95)}  # OpenVINO bf16: the int8 gate


def synthetic_scenes(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size, 3] deterministic scenes: a sky gradient over ground, a horizon,
    filled discs and boxes of random colours, and texture noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        sky, ground = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        horizon = rng.uniform(0.3, 0.7) + 0.1 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + rng.uniform()))
        img = np.where((yy < horizon)[..., None], sky * (0.6 + 0.4 * yy[..., None]), ground * (0.7 + 0.3 * xx[..., None]))
        for _ in range(rng.integers(2, 6)):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
            colour = rng.uniform(0, 255, 3)
            if rng.random() < 0.5:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            else:
                mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * rng.uniform(0.3, 1.5))
            img[mask] = colour
        img += rng.normal(0, 12, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def load_images(paths: Sequence[str | Path], size: int) -> np.ndarray:
    """The user's images, resized as the runtime does -> uint8 [n, size, size, 3]."""
    from PIL import Image
    return np.stack([np.asarray(open_image(p).resize((size, size), Image.BICUBIC)) for p in paths])


def _session(path: Path, provider: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=[provider])


def _run(sess: ort.InferenceSession, x: np.ndarray, extra: dict, batch: int = 4):
    inputs = {i.name for i in sess.get_inputs()}
    extra = {k: v for k, v in extra.items() if k in inputs}  # methods without feature surgery: no redundancy
    outs = [sess.run([OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS], {INPUT_IMAGE: x[i:i + batch], **extra})
            for i in range(0, len(x), batch)]
    return [np.concatenate(parts) for parts in zip(*outs)]


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of [M, P] arrays -> [M]. Two constant rows that are
    equal count as 1, any other pair involving a constant row as 0 (never NaN)."""
    a = a.astype(np.float64) - a.mean(1, keepdims=True)
    b = b.astype(np.float64) - b.mean(1, keepdims=True)
    na, nb = np.sqrt((a * a).sum(1)), np.sqrt((b * b).sum(1))
    r = (a * b).sum(1) / np.maximum(na * nb, 1e-300)
    const = (na == 0) | (nb == 0)
    both_equal = (na == 0) & (nb == 0)
    return np.where(const, np.where(both_equal, 1.0, 0.0), r)


def compare_outputs(ref, cand, size: int) -> dict:
    """Fidelity figures of candidate outputs against reference outputs (lists
    [similarity [n,N,K], scores [n,K], heatmaps [n,K,g,g]])."""
    sim_a, sc_a, map_a = ref
    sim_b, sc_b, map_b = cand
    n, k, g = map_a.shape[0], map_a.shape[1], map_a.shape[-1]
    corr = pearson(map_a.reshape(n * k, g * g), map_b.reshape(n * k, g * g))
    agree = [float((segment(sim_a[i], g, size, size) == segment(sim_b[i], g, size, size)).mean()) for i in range(n)]
    return {
        "images": n,
        "correlation": float(corr.mean()),
        "correlation_min": float(corr.min()),
        "pixel_agreement": float(np.mean(agree)),
        "top1_agreement": float((sc_a.argmax(-1) == sc_b.argmax(-1)).mean()),
        "max_abs_heatmap_error": float(np.abs(map_a - map_b).max()),
    }


def preprocess_images(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [n, S, S, 3] -> float32 [n, 3, S, S] as the runtime preprocesses them."""
    from PIL import Image
    return np.stack([preprocess(Image.fromarray(im), images.shape[1], mean, std) for im in images])


def run_outputs(path: Path, x: np.ndarray, extra: dict | None = None,
                provider: str = "CPUExecutionProvider") -> list[np.ndarray]:
    """[similarity, scores, heatmaps] of a graph on preprocessed images x [n, 3, S, S]."""
    return _run(_session(path, provider), x, extra or {})


def run_outputs_openvino(path: Path, x: np.ndarray, extra: dict | None = None,
                         precision: str = "bf16") -> list[np.ndarray]:
    """``run_outputs`` with the graph run in OpenVINO on the CPU at ``precision`` ("fp32" / "bf16"),
    compiled as the runtime's OpenVINO backend compiles it (clipxai/runtime/backends/openvino.py)."""
    import openvino

    from clipxai.runtime.backends.openvino import OV_PRECISIONS, OpenVINOSession, compile_graph
    compiled = compile_graph(openvino.Core(), path, "CPU", {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]})
    return _run(OpenVINOSession(compiled, "CPU", precision, {INPUT_IMAGE, OUTPUT_SIMILARITY, OUTPUT_SCORES,
                                                             OUTPUT_HEATMAPS, *(extra or {})}), x, extra or {})


def measure_fidelity(reference: list[np.ndarray], candidate: Path, x: np.ndarray, extra: dict | None = None,
                     provider: str = "CPUExecutionProvider") -> dict:
    """Fidelity figures (module docstring) of the graph at ``candidate`` on preprocessed images
    x [n, 3, S, S], against ``reference``: the fp32 graph's ``run_outputs`` on the same x.
    extra: other graph inputs (a text-encoder bundle's text and redundancy)."""
    return compare_outputs(reference, run_outputs(candidate, x, extra, provider), x.shape[-1])


def gate_failures(report: dict, gate: Gate) -> list[str]:
    """Human-readable reasons the report fails the gate (empty when it passes)."""
    out = []
    if not report["correlation"] >= gate.correlation:
        out.append(f"heatmap correlation {report['correlation']:.4f} < {gate.correlation}")
    if not report["pixel_agreement"] >= gate.pixel_agreement:
        out.append(f"segmentation pixel agreement {100 * report['pixel_agreement']:.1f}% < "
                   f"{100 * gate.pixel_agreement:.0f}%")
    return out


def bf16_measurable(rep) -> bool:
    """Whether OpenVINO bf16 can be measured here (OpenVINO installed, a CPU with native bf16); a note to
    ``rep`` (a Reporter) saying why not otherwise."""
    from clipxai.runtime.backends.openvino import native_bf16
    try:
        import openvino  # noqa: F401
    except ImportError:
        rep.note("bf16 fidelity not measured (OpenVINO not installed: clipxai[openvino])")
        return False
    if not native_bf16():
        rep.note("bf16 fidelity not measured (this CPU has no native bf16)")
        return False
    return True
