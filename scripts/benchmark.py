#!/usr/bin/env python
"""Benchmark the runtime against the PyTorch reference surgery pipeline, side by side.

Both pipelines take the same image (examples/rocket.jpg, 640x427) and return
per-class heatmaps at the original size:

- reference: torchvision preprocessing, the reference formulation of CLIP
  Surgery in PyTorch (tests/reference.py: both paths in full through the
  surgery blocks, element-wise feature surgery), torch bilinear upsampling;
- runtime: clipxai.runtime.Predictor on an exported fp32 bundle (onnxruntime CPU).

Each pipeline runs in its own subprocess (for honest peak RSS and cold start),
with the same weights and thread count. Figures are medians of --runs runs.

    .venv/bin/python scripts/benchmark.py --sizes 224 448 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROCKET = ROOT / "examples" / "rocket.jpg"
CLASSES = "rocket,sky,smoke,tree,ground"


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def worker_runtime(a):
    t0 = time.perf_counter()
    from clipxai.runtime import Predictor
    from clipxai.runtime.postprocess import resize_bilinear
    from clipxai.runtime.preprocess import open_image, preprocess
    t_import = time.perf_counter()
    p = Predictor.from_bundle(a.bundle, providers="cpu", threads=a.threads)
    t_session = time.perf_counter()
    pred = p.predict(ROCKET)
    _ = pred.heatmaps
    t_first = time.perf_counter()
    b = p.bundle
    s = b.image_size
    x = preprocess(open_image(ROCKET), s, b.mean, b.std)[None]
    out = {}
    out["pre_ms"] = median_ms(lambda: preprocess(open_image(ROCKET), s, b.mean, b.std), a.runs)
    out["infer_ms"] = median_ms(lambda: p.session.run(None, {"image": x}), a.runs)
    maps = p.session.run(None, {"image": x})[2][0]
    out["post_ms"] = median_ms(lambda: resize_bilinear(maps, 427, 640), a.runs)
    out["total_ms"] = median_ms(lambda: p.predict(ROCKET).heatmaps, a.runs)
    imgs = [ROCKET] * 4
    for bs in (1, 4):
        ms = median_ms(lambda: [q.heatmaps for q in p.predict_batch(imgs, batch_size=bs)], max(a.runs // 2, 3))
        out[f"ips_b{bs}"] = 4000.0 / ms
    out.update(cold_import_s=t_import - t0, cold_session_s=t_session - t_import, cold_first_s=t_first - t_session)
    return out


def worker_torch(a):
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from PIL import Image
    sys.path.insert(0, str(ROOT / "tests"))
    import reference as ref
    from clipxai.models.backbones import resolve_backbone
    from clipxai.models.loading import load_clip
    t_import = time.perf_counter()
    torch.set_num_threads(a.threads)
    choice = resolve_backbone(a.backbone)
    loaded = load_clip(choice, a.pretrained)
    sd = {k: v.detach() for k, v in loaded.model.state_dict().items()}
    text = torch.from_numpy(np.load(Path(a.bundle) / "text_embeddings.npy"))
    heads = loaded.model.visual.transformer.resblocks[0].attn.num_heads
    blocks = choice.spec.surgery_blocks
    t_session = time.perf_counter()
    s = a.size

    def pre():
        return ref.clip_preprocess(Image.open(ROCKET), s, loaded.mean, loaded.std)[None]

    def infer(x):
        with torch.no_grad():
            feats = torch.nn.functional.normalize(ref.surgery_tokens(sd, x, heads, blocks, loaded.quick_gelu), dim=-1)
            return ref.feature_surgery(feats, text, "classes")[:, 1:]

    def post(sim):
        with torch.no_grad():
            return ref.heatmaps(sim, (427, 640))

    def pipeline(n=1):
        x = torch.cat([pre() for _ in range(n)])
        return post(infer(x))

    pipeline()
    t_first = time.perf_counter()
    x = pre()
    sim = infer(x)
    out = {"pre_ms": median_ms(pre, a.runs), "infer_ms": median_ms(lambda: infer(x), a.runs),
           "post_ms": median_ms(lambda: post(sim), a.runs), "total_ms": median_ms(pipeline, a.runs)}
    for bs in (1, 4):
        ms = median_ms(lambda: [pipeline(bs) for _ in range(4 // bs)], max(a.runs // 2, 3))
        out[f"ips_b{bs}"] = 4000.0 / ms
    out.update(cold_import_s=t_import - t0, cold_session_s=t_session - t_import, cold_first_s=t_first - t_session)
    return out


def run_worker(kind, a, bundle, size):
    cmd = [sys.executable, __file__, "--worker", kind, "--bundle", str(bundle), "--size", str(size),
           "--runs", str(a.runs), "--threads", str(a.threads), "--backbone", a.backbone, "--pretrained", a.pretrained]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
    if r.returncode:
        sys.exit(f"{kind} worker failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["runtime", "torch"])
    ap.add_argument("--bundle")
    ap.add_argument("--size", type=int)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--backbone", default="ViT-B/16")
    ap.add_argument("--pretrained", default="random", help="weights for both pipelines (random needs no network)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bundle-dir", help="reuse/keep exported bundles here")
    a = ap.parse_args()

    if a.worker:
        out = worker_runtime(a) if a.worker == "runtime" else worker_torch(a)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return

    bundle_dir = Path(a.bundle_dir or tempfile.mkdtemp(prefix="clipxai-bench-"))
    rows = []
    for size in a.sizes:
        bundle = bundle_dir / f"{a.backbone.replace('/', '-')}-{size}"
        if not (bundle / "manifest.json").exists():
            print(f"exporting {bundle} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "clipxai.export.cli", "--backbone", a.backbone, "--pretrained",
                            a.pretrained, "--classes", CLASSES, "--image-size", str(size), "--output", str(bundle),
                            "--force"], check=True, stdout=subprocess.DEVNULL)
        print(f"measuring {size} ...", file=sys.stderr)
        t = run_worker("torch", a, bundle, size)
        r = run_worker("runtime", a, bundle, size)
        rows.append((size, t, r))

    print(f"\n{a.backbone} ({a.pretrained} weights), {len(CLASSES.split(','))} classes, 640x427 input, "
          f"{a.threads} threads, median of {a.runs} runs")
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}\n")
    hdr = ("| size | pipeline | pre ms | infer ms | post ms | image→heatmaps ms | img/s b1 | img/s b4 | "
           "peak RSS MB | cold: import / load / 1st image s |")
    print(hdr)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for size, t, r in rows:
        for name, d in (("torch reference", t), ("clipxai runtime", r)):
            print(f"| {size} | {name} | {d['pre_ms']:.1f} | {d['infer_ms']:.1f} | {d['post_ms']:.1f} | "
                  f"{d['total_ms']:.1f} | {d['ips_b1']:.2f} | {d['ips_b4']:.2f} | {d['peak_rss_mb']:.0f} | "
                  f"{d['cold_import_s']:.2f} / {d['cold_session_s']:.2f} / {d['cold_first_s']:.2f} |")
        print(f"| {size} | **ratio (reference / runtime)** | {t['pre_ms'] / r['pre_ms']:.2f}× | "
              f"{t['infer_ms'] / r['infer_ms']:.2f}× | {t['post_ms'] / r['post_ms']:.2f}× | "
              f"**{t['total_ms'] / r['total_ms']:.2f}×** | {r['ips_b1'] / t['ips_b1']:.2f}× | "
              f"{r['ips_b4'] / t['ips_b4']:.2f}× | {t['peak_rss_mb'] / r['peak_rss_mb']:.2f}× | "
              f"{sum(t[k] for k in t if k.startswith('cold')) / sum(r[k] for k in r if k.startswith('cold')):.2f}× |")


if __name__ == "__main__":
    main()
