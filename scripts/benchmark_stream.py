#!/usr/bin/env python
"""Predictor.stream against a plain loop of decode + predict, on the same video, in the same run.

    python scripts/benchmark_stream.py --sizes 224 448 --rounds 3
    python scripts/benchmark_stream.py --sizes 224 --width 640 --height 480 --pipelines int8 openvino-bf16

--pipelines: onnxruntime on the fp32 or int8 bundle, OpenVINO fp32 or bf16 on the fp32 bundle (bf16 needs
the bundle's bf16 gate: the export here measures it where OpenVINO is installed and the CPU has bf16).

Makes a synthetic H.264 video (moving shapes, 1280x720 by default), exports a
ViT-B/16 bundle (random weights) per size, and in one process with one
Predictor (2 threads) alternates, round by round:

- plain: ``for frame in decode(video): p.predict(frame)``;
- stream: ``for pred in p.stream(video)``,

each consuming every prediction the same way (its segmentation at the
frame's size and its scores; with --heatmaps every class's heatmap at the
frame's size too: the camera case). Prints frames/s, the ratio stream /
plain per round, and what one frame costs in each stage (decode,
preprocess, graph, outputs), which says what limits the pipeline.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import alternate, median_of, ratio_text, ratios

CLASSES = "sky,road,car,tree,person"


def make_video(path: Path, n: int, w: int, h: int, fps: int = 30) -> None:
    import av
    rng = np.random.default_rng(0)
    base = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("h264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = base.copy()
            img[: h // 3] += np.uint8(120)
            x = (12 * i) % (w - 200)
            img[h // 2: h // 2 + 150, x: x + 200] = (200, 40, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decode(path: Path):
    import av
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def consume(pred, heatmaps: bool = False) -> None:
    pred.segmentation
    pred.scores
    if heatmaps:  # the camera case: every class's heatmap at the frame's size too
        pred.heatmaps


def plain(p, video: Path, heatmaps: bool) -> float:
    t, n = time.perf_counter(), 0
    for frame in decode(video):
        consume(p.predict(frame), heatmaps)
        n += 1
    return n / (time.perf_counter() - t)


def streamed(p, video: Path, heatmaps: bool) -> float:
    t, n = time.perf_counter(), 0
    for pred in p.stream(video):
        consume(pred, heatmaps)
        n += 1
    return n / (time.perf_counter() - t)


def stages(p, video: Path, heatmaps: bool) -> dict:
    """ms per frame of each stage alone (decode, preprocess, graph, outputs: segmentation, scores, heatmaps)."""
    from clipxai.runtime.preprocess import open_image
    frames, t0 = [], time.perf_counter()
    for f in decode(video):
        frames.append(f)
    out = {"decode": (time.perf_counter() - t0) / len(frames)}
    t0 = time.perf_counter()
    xs = [p.preprocess(open_image(f)) for f in frames]
    out["preprocess"] = (time.perf_counter() - t0) / len(frames)
    t0 = time.perf_counter()
    preds = [p.run_graph(x[None], [f.shape[:2]])[0] for x, f in zip(xs, frames)]
    out["graph"] = (time.perf_counter() - t0) / len(frames)
    t0 = time.perf_counter()
    for pred in preds:
        consume(pred, heatmaps)
    out["outputs"] = (time.perf_counter() - t0) / len(frames)
    return {k: 1000 * v for k, v in out.items()}


# --pipelines: name -> (bundle precision, providers, OpenVINO precision or None)
PIPELINES = {"fp32": ("fp32", "cpu", None), "int8": ("int8", "cpu", None),
             "openvino-fp32": ("fp32", "openvino", "fp32"), "openvino-bf16": ("fp32", "openvino", "bf16")}


def open_predictor(bundle: Path, pipeline: str, a, cache: Path):
    from clipxai.runtime import Predictor, RuntimeOptions
    from clipxai.runtime.backends import OpenVINOOptions
    _, providers, ov = PIPELINES[pipeline]
    opts = RuntimeOptions(providers=providers, threads=a.threads, graph_cache="sync", cache_dir=str(cache),
                          openvino=OpenVINOOptions(precision=ov or "fp32"))
    return Predictor.from_bundle(bundle, options=opts)


def export(bundle: Path, size: int, precision: str) -> None:
    if (bundle / "manifest.json").exists():
        return
    print(f"exporting ViT-B/16 {precision} at {size} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "clipxai.export.cli", "--backbone", "ViT-B/16", "--pretrained",
                    "random", "--classes", CLASSES, "--image-size", str(size), "--precision", precision,
                    "--output", str(bundle)], check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipelines", nargs="+", default=["fp32"], choices=list(PIPELINES))
    ap.add_argument("--heatmaps", action="store_true", help="also make every heatmap at the frame's size")
    ap.add_argument("--bundle-dir", help="reuse/keep exported bundles here (b<size>-<precision>)")
    a = ap.parse_args()
    if "openvino-bf16" in a.pipelines:
        from benchmark import openvino_rows
        openvino_rows(["bf16"])  # exits on a CPU without native bf16 (OpenVINO would run fp32)
    work = Path(tempfile.mkdtemp(prefix="clipxai-stream-bench-"))
    bundles = Path(a.bundle_dir) if a.bundle_dir else work
    rows = []
    try:
        video = work / "video.mp4"
        make_video(video, a.frames, a.width, a.height)
        for size in a.sizes:
            for name in a.pipelines:
                bundle = bundles / f"b{size}-{PIPELINES[name][0]}"
                export(bundle, size, PIPELINES[name][0])
                p = open_predictor(bundle, name, a, work / "cache")
                streamed(p, video, a.heatmaps)  # warm up both paths
                rounds = alternate({"plain": lambda p=p: {"fps": plain(p, video, a.heatmaps)},
                                    "stream": lambda p=p: {"fps": streamed(p, video, a.heatmaps)}}, a.rounds,
                                   f"{name} at {size}")
                rows.append((size, name, rounds, stages(p, video, a.heatmaps)))
                del p
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nViT-B/16 (random weights), {a.frames} frames of {a.width}x{a.height} H.264, "
          f"{a.threads} threads, one Predictor per pipeline, {a.rounds} alternated rounds; per frame: segmentation"
          f" and scores{' and every heatmap' if a.heatmaps else ''} at the frame's size\n")
    print("| size | pipeline | plain loop frames/s | stream() frames/s | stream / plain (median; min–max) | "
          "decode ms | preprocess ms | graph ms | outputs ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, name, rounds, st in rows:
        speed = ratio_text(ratios(rounds, "stream", "plain", "fps"))  # frames/s: stream's over plain's
        print(f"| {size} | {name} | {median_of(rounds, 'plain', 'fps'):.2f} | {median_of(rounds, 'stream', 'fps'):.2f} | "
              f"{speed} | {st['decode']:.1f} | {st['preprocess']:.1f} | {st['graph']:.1f} | {st['outputs']:.1f} |")


if __name__ == "__main__":
    main()
