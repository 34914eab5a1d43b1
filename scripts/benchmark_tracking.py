#!/usr/bin/env python
"""Tracking through video: clipxai's MaskTracker against sam2's SAM2VideoPredictor, per frame, on the CPU.

    python scripts/benchmark_tracking.py --bundle B --checkpoint sam2.1_hiera_tiny.pt --objects 1 3

The same weights on both sides (a SAM 2.1 bundle and the checkpoint it was exported from), 2 threads, a
synthetic 640x480 clip of moving shapes; the objects are prompted with one point each on frame 0 and tracked
forward. The first --warm frames fill the memory bank (7 memories); the frames after them are timed. Per
frame: total ms, split into image encoder, memory attention, mask decoder and memory encoder (the same four
modules on both sides; the PyTorch side's modules are timed by wrapping them). Each pipeline runs in its own
process; rounds alternate them and the ratios are taken within a round (scripts/harness.py). Peak RSS is
each process's own. With --rss-frames N, one more process tracks N frames with clipxai and prints its RSS
every N/10 frames (the memory of a long stream).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from harness import alternate, median_of, ratios, run_json

WORKER = r"""
import json, sys, time
import numpy as np
from harness import peak_rss_mb
kind, bundle, checkpoint = sys.argv[1], sys.argv[2], sys.argv[3]
objects, frames, warm = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
from clipxai.export.sam_video import moving_shapes
clip = moving_shapes(frames, 480, 640)
h, w = clip[0].shape[:2]
points = [[(w * (0.25 + 0.25 * i), h * (0.3 + 0.2 * i))] for i in range(objects)]
parts = {"encoder": 0.0, "memory_attention": 0.0, "decoder": 0.0, "memory_encoder": 0.0}

def timed(obj, attr, key):
    fn = getattr(obj, attr)
    def wrapper(*a, **k):
        t = time.perf_counter(); r = fn(*a, **k); parts[key] += time.perf_counter() - t; return r
    setattr(obj, attr, wrapper)

per_frame, split = [], []
def record(start):
    per_frame.append((time.perf_counter() - start) * 1e3)
    split.append({k: v * 1e3 for k, v in parts.items()})

if kind == "torch":
    import torch
    torch.set_num_threads(2)
    from PIL import Image
    from clipxai.export.sam_video import reference_tracks, video_predictor
    from clipxai.mask_models import resolve_mask_model
    from clipxai.models.sam import load_mask_model
    from clipxai.runtime.sam.preprocess import image_input
    from clipxai.manifest import MaskPreprocess
    from clipxai.mask_models import PREPROCESS
    row = resolve_mask_model(json.load(open(bundle + "/manifest.json"))["model"])
    ref = video_predictor(row, load_mask_model(row, checkpoint))
    pre = MaskPreprocess.from_dict(PREPROCESS["sam2"])
    images = torch.from_numpy(np.concatenate([image_input(Image.fromarray(f), pre)[0] for f in clip]))
    import sam2.sam2_video_predictor as vp
    vp.load_video_frames = lambda **_: (images, h, w)
    timed(ref, "forward_image", "encoder"); timed(ref.memory_attention, "forward", "memory_attention")
    timed(ref.sam_mask_decoder, "forward", "decoder"); timed(ref.memory_encoder, "forward", "memory_encoder")
    with torch.inference_mode():
        state = ref.init_state(video_path="<frames>")
        for i, p in enumerate(points):
            ref.add_new_points_or_box(state, 0, i + 1, points=np.array(p, np.float32), labels=np.array([1], np.int32))
        for k in parts: parts[k] = 0.0
        start = time.perf_counter()
        for _ in ref.propagate_in_video(state):
            record(start); start = time.perf_counter()
            for k in parts: parts[k] = 0.0
else:
    from clipxai.runtime.backends import OpenVINOOptions, RuntimeOptions
    from clipxai.runtime.sam.tracker import MaskTracker
    if kind == "ours-bf16":   # OpenVINO, the encoder and the memory attention bf16 (the bundle's gate passed)
        options = RuntimeOptions(providers="openvino", threads=2, openvino=OpenVINOOptions(precision="bf16"))
    else:                     # onnxruntime; graph cache entries built by WARM beforehand
        options = RuntimeOptions(providers="cpu", threads=2)
    tracker = MaskTracker(bundle, options)
    timed(tracker.sam.encoder, "run", "encoder"); timed(tracker.attention, "run", "memory_attention")
    timed(tracker.decoder, "run", "decoder"); timed(tracker.encoder, "run", "memory_encoder")
    for p in points:
        tracker.add(clip[0], p, [1])
    for f in clip:
        for k in parts: parts[k] = 0.0
        start = time.perf_counter()
        tracker.track(f)
        record(start)
timed_frames = per_frame[warm:]
out = {"frame_ms": float(np.median(timed_frames)), "frames_timed": len(timed_frames), "peak_rss_mb": peak_rss_mb()}
for k in parts:
    out[k + "_ms"] = float(np.median([s[k] for s in split[warm:]]))
print(json.dumps(out))
"""

WARM = r"""
import json, sys
from clipxai.runtime.backends import OpenVINOOptions, RuntimeOptions
from clipxai.runtime.sam.tracker import MaskTracker
MaskTracker(sys.argv[1], providers="cpu", threads=2, graph_cache="sync")
if sys.argv[2] == "bf16":   # OpenVINO's compiled-model cache, filled once
    MaskTracker(sys.argv[1], RuntimeOptions(providers="openvino", threads=2, openvino=OpenVINOOptions(precision="bf16")))
print(json.dumps({"warm": True}))
"""

RSS_WORKER = r"""
import json, sys, resource
import numpy as np
from clipxai.export.sam_video import moving_shapes
from clipxai.runtime.sam.tracker import MaskTracker
bundle, objects, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clip = moving_shapes(12, 480, 640)
tracker = MaskTracker(bundle, providers="cpu", threads=2)
for i in range(objects):
    tracker.add(clip[0], [[640 * (0.25 + 0.25 * i), 480 * (0.3 + 0.2 * i)]], [1])
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20
points = []
for t in range(frames):
    tracker.track(clip[t % 12] if t % 24 < 12 else clip[11 - t % 12])
    if (t + 1) % max(1, frames // 10) == 0:
        points.append([t + 1, round(rss_mb(), 1)])
print(json.dumps({"rss_mb_by_frame": points,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def worker(kind: str, a, objects: int, bundle: Path | None = None) -> dict:
    cmd = [sys.executable, "-c", WORKER, kind, str(bundle or a.bundle), str(a.checkpoint), str(objects),
           str(a.frames), str(a.warm)]
    return run_json(cmd, f"{kind} {objects}")


def pipelines(a, n: int) -> dict:
    """name -> a function running that pipeline's worker for n objects."""
    out = {"torch": lambda: worker("torch", a, n), "clipxai": lambda: worker("ours", a, n)}
    if a.int8_bundle:
        out["clipxai int8 encoder"] = lambda: worker("ours", a, n, a.int8_bundle)
    if a.bf16:
        out["clipxai OpenVINO bf16"] = lambda: worker("ours-bf16", a, n)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="A SAM 2.1 bundle with its tracking graphs.")
    p.add_argument("--checkpoint", type=Path, required=True, help="The checkpoint it was exported from.")
    p.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--warm", type=int, default=8, help="Frames before timing (the bank holds 7 memories).")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rss-frames", type=int, default=0)
    p.add_argument("--bf16", action="store_true",
                   help="Also OpenVINO with the encoder and memory attention in bf16 (needs the bundle's bf16 gate).")
    p.add_argument("--int8-bundle", type=Path, default=None,
                   help="The same model exported with --precision int8 (its encoder through the IoU gate).")
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    for bundle in filter(None, (a.bundle, a.int8_bundle)):   # graph caches built once, outside the timed runs
        run_json([sys.executable, "-c", WARM, str(bundle), "bf16" if a.bf16 and bundle == a.bundle else ""],
                 "graph cache")
    for n in a.objects:
        rounds = alternate(pipelines(a, n), a.rounds, f"{n} object(s)")
        print(f"\n{n} object(s), 640x480, ms per frame (median over rounds of the per-frame median):")
        print("| pipeline | frame | encoder | memory attention | decoder | memory encoder | not encoder | peak RSS MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name in rounds[0]:
            row = {k: median_of(rounds, name, k) for k in rounds[0][name]}
            rest = 100 * (1 - row["encoder_ms"] / row["frame_ms"])
            print(f"| {name} | {row['frame_ms']:.0f} | {row['encoder_ms']:.0f} | {row['memory_attention_ms']:.0f} | "
                  f"{row['decoder_ms']:.0f} | {row['memory_encoder_ms']:.0f} | {rest:.0f} % | {row['peak_rss_mb']:.0f} |")
        for name in list(rounds[0])[1:]:
            speed = ratios(rounds, "torch", name, "frame_ms")
            print(f"speed-up {name} vs torch per frame: {statistics.median(speed):.2f}x (rounds: "
                  f"{', '.join(f'{r:.2f}' for r in speed)})")
    if a.rss_frames:
        cmd = [sys.executable, "-c", RSS_WORKER, str(a.bundle), str(a.objects[0]), str(a.rss_frames)]
        print(json.dumps(run_json(cmd, "rss")))


if __name__ == "__main__":
    main()
