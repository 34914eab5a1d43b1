#!/usr/bin/env python
"""Predictor.stream against a plain loop of decode + predict, on the same video, in the same run.

    python scripts/benchmark_stream.py --sizes 224 448 --rounds 3

Makes a synthetic H.264 video (moving shapes, 1280x720 by default), exports a
ViT-B/16 bundle (random weights) per size, and in one process with one
Predictor (2 threads) alternates, round by round:

- plain: ``for frame in decode(video): p.predict(frame)``;
- stream: ``for pred in p.stream(video)``,

each consuming every prediction the same way (its segmentation at the
frame's size and its scores). Prints frames/s, the ratio stream / plain per
round, and what one frame costs in each stage (decode, preprocess, graph,
segmentation), which says what limits the pipeline.
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


def consume(pred) -> None:
    pred.segmentation
    pred.scores


def plain(p, video: Path) -> float:
    t, n = time.perf_counter(), 0
    for frame in decode(video):
        consume(p.predict(frame))
        n += 1
    return n / (time.perf_counter() - t)


def streamed(p, video: Path) -> float:
    t, n = time.perf_counter(), 0
    for pred in p.stream(video):
        consume(pred)
        n += 1
    return n / (time.perf_counter() - t)


def stages(p, video: Path) -> dict:
    """ms per frame of each stage alone (decode, preprocess, graph, segmentation)."""
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
        consume(pred)
    out["segmentation"] = (time.perf_counter() - t0) / len(frames)
    return {k: 1000 * v for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32")
    a = ap.parse_args()
    from clipxai.runtime import Predictor
    work = Path(tempfile.mkdtemp(prefix="clipxai-stream-bench-"))
    rows = []
    try:
        video = work / "video.mp4"
        make_video(video, a.frames, a.width, a.height)
        for size in a.sizes:
            bundle = work / f"b{size}"
            print(f"exporting ViT-B/16 at {size} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "clipxai.export.cli", "--backbone", "ViT-B/16", "--pretrained",
                            "random", "--classes", CLASSES, "--image-size", str(size), "--precision", a.precision,
                            "--output", str(bundle), "--no-verify"], check=True, stdout=subprocess.DEVNULL)
            p = Predictor.from_bundle(bundle, providers="cpu", threads=a.threads, graph_cache="sync",
                                      cache_dir=str(work / "cache"))
            streamed(p, video)  # warm up both paths
            rounds = alternate({"plain": lambda: {"fps": plain(p, video)},
                                "stream": lambda: {"fps": streamed(p, video)}}, a.rounds, f"at {size}")
            rows.append((size, rounds, stages(p, video)))
            del p
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nViT-B/16 {a.precision} (random weights), {a.frames} frames of {a.width}x{a.height} H.264, "
          f"{a.threads} threads, one Predictor, {a.rounds} alternated rounds\n")
    print("| size | plain loop frames/s | stream() frames/s | stream / plain (median; min–max) | "
          "decode ms | preprocess ms | graph ms | segmentation ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, rounds, st in rows:
        speed = ratio_text(ratios(rounds, "stream", "plain", "fps"))  # frames/s: stream's over plain's
        print(f"| {size} | {median_of(rounds, 'plain', 'fps'):.2f} | {median_of(rounds, 'stream', 'fps'):.2f} | "
              f"{speed} | {st['decode']:.1f} | {st['preprocess']:.1f} | {st['graph']:.1f} | {st['segmentation']:.1f} |")


if __name__ == "__main__":
    main()
