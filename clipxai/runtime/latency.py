"""Latency split of the runtime: preprocessing, host-to-device, compute, device-to-host, postprocessing.

    python -m clipxai.cli.latency BUNDLE --providers cuda --batch 1 --batch 4 --runs 50

Every phase uses the functions ``Predictor._run`` uses, on the Predictor's own
session: ``open_image`` + ``preprocess`` into a batch buffer; the session's
``run_timed`` (IO binding on CUDA/TensorRT: ``iobinding.BoundSession``; CUDA
events in the native TensorRT backend), which times the two copies and the
compute apart; then ``Prediction`` with its full-size heatmaps and
segmentation. On the CPU provider there are no device copies: those columns
read "n/a" and compute is the whole ``session.run``. Figures are medians over
``runs`` timed runs after ``warmup`` untimed ones, per batch (not per image).
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np

from clipxai.contract import OUTPUT_HEATMAPS, OUTPUT_SCORES, OUTPUT_SIMILARITY
from clipxai.errors import ClipxaiError

PHASES = ("pre_ms", "h2d_ms", "compute_ms", "d2h_ms", "post_ms")
OUTPUTS = [OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS]


def time_batch(predictor, images: list) -> dict:
    """One batch through the Predictor's pipeline, phase by phase (ms; None where not applicable)."""
    from clipxai.runtime.preprocess import open_image, preprocess
    b, s = predictor.bundle, predictor.bundle.image_size
    t0 = time.perf_counter()
    pil = [open_image(im, predictor.max_pixels) for im in images]
    x = np.empty((len(pil), 3, s, s), np.float32)
    for i, im in enumerate(pil):
        preprocess(im, s, b.mean, b.std, out=x[i])
    t1 = time.perf_counter()
    session = predictor.session
    if hasattr(session, "run_timed"):
        (sim, scores, maps), copy = session.run_timed(OUTPUTS, predictor.graph_feeds(x))
    else:
        tc = time.perf_counter()
        sim, scores, maps = session.run(OUTPUTS, predictor.graph_feeds(x))
        copy = {"h2d_ms": None, "compute_ms": (time.perf_counter() - tc) * 1e3, "d2h_ms": None}
    t2 = time.perf_counter()
    for i, im in enumerate(pil):
        pred = predictor.prediction(sim[i], scores[i], maps[i], (im.height, im.width))
        _ = pred.heatmaps, pred.segmentation
    t3 = time.perf_counter()
    return {"pre_ms": (t1 - t0) * 1e3, **copy, "post_ms": (t3 - t2) * 1e3, "total_ms": (t3 - t0) * 1e3}


def benchmark(predictor, image, batch_sizes=(1, 4), runs: int = 20, warmup: int = 3) -> list[dict]:
    """Median phase times per batch size: [{"batch", "pre_ms", ..., "total_ms", "images_per_s"}]."""
    if runs < 1 or warmup < 0:
        raise ClipxaiError("runs must be >= 1 and warmup >= 0")
    rows = []
    for bs in batch_sizes:
        images = [image] * bs
        for _ in range(warmup):
            time_batch(predictor, images)
        samples = [time_batch(predictor, images) for _ in range(runs)]
        row = {"batch": bs}
        for k in (*PHASES, "total_ms"):
            vals = [smp[k] for smp in samples if smp[k] is not None]
            row[k] = statistics.median(vals) if vals else None
        row["images_per_s"] = 1000.0 * bs / row["total_ms"]
        rows.append(row)
    return rows


def describe_device(predictor) -> str:
    provider = predictor.provider
    if provider == "CPUExecutionProvider":
        return f"CPU {platform.machine()} ({platform.processor() or 'unknown model'})"
    try:
        from clipxai.runtime.nvidia import gpu_info
        return gpu_info.gpu().label
    except ClipxaiError:
        return "unknown GPU"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def format_rows(rows: list[dict], meta: dict) -> list[str]:
    """Markdown table lines, one per (configuration, batch)."""
    return [f"| {meta['device']} | {meta['power_mode']} | {meta['backend']} | {meta['precision']} | "
            f"{meta['image_size']} | {r['batch']} | " + " | ".join(_fmt(r[k]) for k in PHASES)
            + f" | {_fmt(r['total_ms'])} | {r['images_per_s']:.1f} |" for r in rows]


TABLE_HEADER = [
    "| device | power mode | backend / provider | precision | size | batch | pre ms | H2D ms | compute ms "
    "| D2H ms | post ms | total ms | img/s |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
