#!/usr/bin/env python
"""int8 on the CPU: the accuracy-aware selection against every-MatMul int8 and fp32, side by side.

    python scripts/benchmark_int8.py --sizes 224 448 --pretrained random:2 --rounds 3

Exports, for each size, an fp32 bundle, an int8 bundle with the default
accuracy-aware selection (``--int8-layers auto``) and one with every weight
MatMul in int8 (``--int8-layers all``, written with --force if it fails the
gate), all from the same weights. Then each bundle is timed in its own process
(two onnxruntime sessions in one process slow each other down), image file to
full-size heatmaps, batch 1, the rows alternating over ``--rounds`` rounds;
the speed-up over fp32 is taken within each round (scripts/harness.py). The fidelity figures, the
share of FLOPs in int8 and the export time come from the manifests and the
exporter. Prints a markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import alternate, median_of, ratio_text, ratios, run_json

ROOT = Path(__file__).resolve().parent.parent
ROCKET = ROOT / "examples" / "rocket.jpg"
CLASSES = "dog,cat,grass,sofa,wall"
VARIANTS = (("fp32", ["--precision", "fp32"]), ("int8 auto", ["--precision", "int8", "--int8-layers", "auto"]),
            ("int8 all", ["--precision", "int8", "--int8-layers", "all", "--force"]))

WORKER = """
import json, sys
from harness import median_ms
from clipxai.runtime import Predictor
p = Predictor.from_bundle(sys.argv[1], providers="cpu", threads=int(sys.argv[2]), graph_cache="sync")
print(json.dumps({"ms": median_ms(lambda: p.predict(sys.argv[3]).heatmaps, int(sys.argv[4]), warmup=2)}))
"""


def export(a, out: Path, size: int, flags: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipxai.export.cli", "--backbone", a.backbone, "--pretrained", a.pretrained,
                    "--classes", CLASSES, "--image-size", str(size), "--output", str(out), "--overwrite",
                    "--no-verify", *flags], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def time_bundle(a, bundle: Path, cache: Path) -> dict:
    """{"ms": median ms per image} of ``bundle``, in its own process."""
    env = dict(os.environ, CLIPXAI_CACHE_DIR=str(cache))
    return run_json([sys.executable, "-c", WORKER, str(bundle), str(a.threads), str(ROCKET), str(a.runs)],
                    bundle.name, env)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--backbone", default="ViT-B/16")
    ap.add_argument("--pretrained", default="random:2", help="random:2 failed the gate with every MatMul in int8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipxai-int8-bench-"))
    rows = []
    try:
        for size in a.sizes:
            bundles, export_s = {}, {}
            for name, flags in VARIANTS:
                print(f"exporting {name} at {size} ...", file=sys.stderr)
                bundles[name] = work / f"{size}-{name.replace(' ', '-')}"
                export_s[name] = export(a, bundles[name], size, flags)
            rounds = alternate({name: (lambda b=bundles[name]: time_bundle(a, b, work / "cache"))
                                for name, _ in VARIANTS}, a.rounds, f"at {size}")
            for name, _ in VARIANTS:
                m = json.loads((bundles[name] / "manifest.json").read_text())
                rows.append((size, name, median_of(rounds, name, "ms"), ratios(rounds, "fp32", name, "ms"),
                             m.get("fidelity"), export_s[name]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{a.backbone} ({a.pretrained} weights), 5 classes, 640x427 image -> heatmaps, batch 1, {a.threads} threads, "
          f"median of {a.runs} runs per process, {a.rounds} alternated rounds, each bundle in its own process\n")
    print("| size | graph | ms / image | speed vs fp32 (median; min–max over rounds) | FLOPs in int8 | "
          "kept fp32 by measurement | heatmap correlation | pixel agreement | top-1 agreement | export s |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for size, name, med, speed, fid, secs in rows:
        conv = (fid or {}).get("conversion") or {}
        share = conv.get("int8_flop_share", 1.0 if name == "int8 all" else 0.0)
        kept = ", ".join(conv.get("sensitive_fp32", [])) or ("—" if name != "int8 auto" else "none")
        fig = (lambda k: f"{fid[k]:.4f}" if fid else "—")
        pct = (lambda k: f"{100 * fid[k]:.1f}%" if fid else "—")
        print(f"| {size} | {name} | {med:.0f} | "
              + ("—" if name == "fp32" else ratio_text(speed))
              + f" | {100 * share:.1f}% | {kept} | {fig('correlation')} | {pct('pixel_agreement')} | "
              f"{pct('top1_agreement')} | {secs:.0f} |")


if __name__ == "__main__":
    main()
