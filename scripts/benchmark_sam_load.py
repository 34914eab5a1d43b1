#!/usr/bin/env python
"""What the CPU graph cache gives a mask model's encoder: load time and peak RSS, with and without it.

    python scripts/benchmark_sam_load.py --models tiny-sam tiny-sam2 sam2.1-hiera-tiny --rounds 3

Random weights (the tiny models of tests/tiny_sam.py, or a real size saved in its official checkpoint
format), fp32 bundles. Every figure comes from its own process, which checks the bundle, then opens
``encoder.onnx`` with ``clipxai.runtime.backends.open_graph`` on the CPU (2 threads): "off" opens the
bundle's graph, "cached" the graph cache's entry (filled once beforehand, so every timed load is a hit).
The process then runs the encoder once on a zero image. Rounds alternate the two; each figure is the
median over rounds (scripts/harness.py). RSS figures are the process's own (Python, numpy and
onnxruntime included: "before" is the resident size just before the graph is opened).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import alternate, median_rows, run_json

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from harness import peak_rss_mb
bundle, mode, cache = sys.argv[1], sys.argv[2], sys.argv[3]
from clipxai.runtime.backends import RuntimeOptions, open_graph
from clipxai.runtime.bundle import load_bundle
b = load_bundle(bundle, kind="mask-model")
rss = lambda: int(next(l for l in Path("/proc/self/status").read_text().splitlines()
                       if l.startswith("VmRSS:")).split()[1]) / 1024
before = rss()
t = time.perf_counter()
s = open_graph(b, "encoder.onnx", RuntimeOptions(providers="cpu", threads=2, cache_dir=cache,
                                                 graph_cache=False if mode == "off" else "sync"))
load_ms = (time.perf_counter() - t) * 1000
after_load = peak_rss_mb()
t = time.perf_counter()
s.run(None, {"image": np.zeros((1, 3, 1024, 1024), np.float32)})
run_ms = (time.perf_counter() - t) * 1000
print(json.dumps({"rss_before_mb": before, "load_ms": load_ms, "peak_rss_load_mb": after_load,
                  "run_ms": run_ms, "peak_rss_mb": peak_rss_mb()}))
"""


def export(name: str, work: Path) -> Path:
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    from clipxai.mask_models import resolve_mask_model
    if name.startswith("tiny-"):
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_sam import save_checkpoint  # registers the tiny models
        row = resolve_mask_model(name)
        save_checkpoint(row, work / row.checkpoint, seed=3)
    else:
        from clipxai.models.sam import save_random_checkpoint
        row = resolve_mask_model(name)
        save_random_checkpoint(row, work / row.checkpoint, seed=3)
    return export_mask_bundle(SamExportConfig(model=name, checkpoint=work / row.checkpoint,
                                              output=work / name)).path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-sam", "tiny-sam2", "sam2.1-hiera-tiny"])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipxai-sam-load-"))
    rows = []
    try:
        for name in a.models:
            print(f"exporting {name} ...", file=sys.stderr)
            bundle = export(name, work)
            cache = work / f"cache-{name}"
            t = time.perf_counter()  # the first load fills the entry ("sync"): what a cache miss costs once
            fill = run_json([sys.executable, "-c", WORKER, str(bundle), "cached", str(cache)], "fill")
            fill_s = time.perf_counter() - t
            rounds = alternate({mode: (lambda mode=mode: run_json(
                [sys.executable, "-c", WORKER, str(bundle), mode, str(cache)], mode)) for mode in ("off", "cached")},
                a.rounds, name)
            size = sum(f.stat().st_size for f in bundle.glob("encoder.onnx*")) / 2 ** 20
            rows.append((name, size, median_rows(rounds), fill["load_ms"], fill_s))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| model | encoder MB | graph cache | load ms | peak RSS after load MB | peak RSS after one run MB "
          "| one run ms |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, size, med, fill_ms, fill_s in rows:
        for mode in ("off", "cached"):
            m = med[mode]
            print(f"| {name} | {size:.1f} | {mode} | {m['load_ms']:.0f} | {m['peak_rss_load_mb']:.0f} "
                  f"| {m['peak_rss_mb']:.0f} | {m['run_ms']:.0f} |")
        print(f"<!-- {name}: first load filling the entry (sync) {fill_ms:.0f} ms; process {fill_s:.1f} s; "
              f"RSS before opening {med['off']['rss_before_mb']:.0f} MB -->")


if __name__ == "__main__":
    main()
