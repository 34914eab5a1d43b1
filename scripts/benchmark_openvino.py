#!/usr/bin/env python
"""onnxruntime fp32 against OpenVINO fp32 and bf16 on one bundle's image graph, side by side
(scripts/harness.py: every pipeline in its own process, alternated rounds, ratios within a round).

Graph only: the bundle's ``model.onnx`` opened through ``clipxai.runtime.backends.open_graph`` (onnxruntime
with the CPU graph cache filled first; OpenVINO with its compiled-model cache), fed one preprocessed
image batch. Each worker reports the median of --runs runs after a warm-up, its load time (cold: the
first load in a fresh cache; cached: the next) and its peak RSS. bf16 is forced when the bundle has no
passed bf16 gate (its fidelity is then printed from the same run: heatmap correlation against fp32).

    .venv/bin/python scripts/benchmark_openvino.py --bundle /tmp/ovb16 --threads 2 --rounds 3

A maintainer tool, not part of the installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import alternate, median_ms, median_rows, peak_rss_mb, ratio_text, ratios, run_json

PIPELINES = {"onnxruntime fp32": ("cpu", "fp32"), "OpenVINO fp32": ("openvino", "fp32"),
             "OpenVINO bf16": ("openvino", "bf16")}


def worker(a) -> None:
    import numpy as np

    from clipxai.contract import OUTPUTS
    from clipxai.runtime import Predictor, RuntimeOptions
    from clipxai.runtime.backends import OpenVINOOptions
    ov = OpenVINOOptions(precision=a.precision, force_precision=True)
    opts = RuntimeOptions(providers=a.providers, threads=a.threads, graph_cache="sync", cache_dir=a.cache_dir,
                          openvino=ov)
    t = time.perf_counter()
    p = Predictor.from_bundle(a.bundle, options=opts)
    load_ms = (time.perf_counter() - t) * 1000
    size = p.bundle.image_size
    x = np.random.default_rng(0).random((a.batch, 3, size, size), dtype=np.float32)
    feeds, names = p.graph_feeds(x), list(OUTPUTS)
    ms = median_ms(lambda: p.session.run(names, feeds), a.runs, warmup=2)
    heat = p.session.run(names, feeds)[names.index("heatmaps")]
    np.save(Path(a.cache_dir) / f"heat-{a.providers}-{a.precision}.npy", heat)
    print(json.dumps({"ms": ms, "load_ms": load_ms, "peak_rss_mb": peak_rss_mb()}))


def command(a, providers, precision, cache_dir):
    return [sys.executable, __file__, "--worker", "--bundle", a.bundle, "--providers", providers, "--precision",
            precision, "--threads", str(a.threads), "--runs", str(a.runs), "--batch", str(a.batch),
            "--cache-dir", cache_dir]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--providers", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-dir")
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        cold = {name: run_json(command(a, p, prec, tmp), name) for name, (p, prec) in PIPELINES.items()}
        rounds = alternate({name: (lambda p=p, prec=prec, n=name: run_json(command(a, p, prec, tmp), n))
                            for name, (p, prec) in PIPELINES.items()}, a.rounds, Path(a.bundle).name)
        ref = np.load(Path(tmp) / "heat-cpu-fp32.npy")
        bf16 = np.load(Path(tmp) / "heat-openvino-bf16.npy")
        ov32 = np.load(Path(tmp) / "heat-openvino-fp32.npy")
    rows = median_rows(rounds)
    print(f"\n{Path(a.bundle).name}: batch {a.batch}, {a.threads} threads, {a.rounds} rounds x median of {a.runs}")
    print("| | ms | × onnxruntime fp32 | load cold ms | load cached ms | peak RSS MB |\n|---|---:|---:|---:|---:|---:|")
    for name in PIPELINES:
        r = ratio_text(ratios(rounds, "onnxruntime fp32", name, "ms"))
        print(f"| {name} | {rows[name]['ms']:.0f} | {r} | {cold[name]['load_ms']:.0f} | {rows[name]['load_ms']:.0f} "
              f"| {rows[name]['peak_rss_mb']:.0f} |")
    corr = np.corrcoef(ref.ravel(), bf16.ravel())[0, 1]
    print(f"max |OpenVINO fp32 - onnxruntime fp32| heatmaps: {np.abs(ov32 - ref).max():.2g}; "
          f"bf16 heatmap correlation with fp32: {corr:.4f}")


if __name__ == "__main__":
    main()
