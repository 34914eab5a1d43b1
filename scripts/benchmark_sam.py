#!/usr/bin/env python
"""Mask models on the CPU: clipxai's encoder (fp32, int8) and decoder against the package's PyTorch predictor.

    python scripts/benchmark_sam.py --models sam-vit-b sam2.1-hiera-tiny --runs 3 --rounds 2

Random weights (saved as the official checkpoint formats), examples/rocket.jpg (640x427), 2 threads
on both sides. Every figure comes from its own process (one session or model per process): the
PyTorch predictor's ``set_image``, clipxai's ``MaskPredictor.set_image`` with the fp32 and the int8
encoder, the encoder on OpenVINO fp32 and bf16 (where OpenVINO is installed; bf16 needs the fp32 bundle's
bf16 gate, measured at export on a CPU with native bf16), the decoder for 5 classes' point prompts (``masks_for`` a clipxai Prediction), and text ->
masks end to end (a CLIP ViT-B/16 bundle at 448 + the mask bundle: predict, set_image, masks_for).
Rounds alternate the rows; ratios are taken within a round (scripts/harness.py). Peak RSS is each
process's own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark import OV_ROWS, openvino_rows
from harness import alternate, median_of, ratio_text, ratios, run_json

ROOT = Path(__file__).resolve().parent.parent
ROCKET = str(ROOT / "examples" / "rocket.jpg")
CLASSES = "rocket,sky,smoke,tree,ground"

WORKER = r"""
import json, sys
import numpy as np
from PIL import Image
from harness import median_ms, peak_rss_mb
kind, bundle, clip, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
img = np.asarray(Image.open(sys.argv[5]).convert("RGB"))

def median(fn):
    return median_ms(fn, runs, warmup=1)

out = {}
if kind == "torch":
    import torch
    torch.set_num_threads(2)
    from clipxai.mask_models import resolve_mask_model
    from clipxai.models.sam import load_mask_model
    m = json.load(open(bundle + "/manifest.json"))
    model = load_mask_model(resolve_mask_model(m["model"]), sys.argv[6])
    if m["family"] == "sam":
        from segment_anything import SamPredictor
        p = SamPredictor(model)
    else:
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        p = SAM2ImagePredictor(model)
    with torch.no_grad():
        out["encoder_ms"] = median(lambda: p.set_image(img))
elif kind.startswith("openvino-"):  # the encoder on OpenVINO at that precision (the bundle's bf16 gate applies)
    from clipxai.runtime import RuntimeOptions
    from clipxai.runtime.backends import OpenVINOOptions
    from clipxai.runtime.sam import MaskPredictor
    ov = OpenVINOOptions(precision=kind.split("-")[1])
    sam = MaskPredictor.from_bundle(bundle, options=RuntimeOptions(providers="openvino", threads=2, openvino=ov))
    out["encoder_ms"] = median(lambda: sam.set_image(img))
else:
    from clipxai.runtime import Predictor
    from clipxai.runtime.sam import MaskPredictor
    sam = MaskPredictor.from_bundle(bundle, providers="cpu", threads=2)
    out["encoder_ms"] = median(lambda: sam.set_image(img))
    if kind == "clipxai+decoder":
        p = Predictor.from_bundle(clip, providers="cpu", threads=2, graph_cache="sync")
        pred = p.predict(img)
        out["decoder_ms"] = median(lambda: sam.masks_for(pred))
        def end_to_end():
            q = p.predict(img)
            sam.set_image(img)
            sam.masks_for(q)
        out["text_to_masks_ms"] = median(end_to_end)
out["peak_rss_mb"] = peak_rss_mb()
print(json.dumps(out))
"""


ENCODER_ROWS = {"torch": "PyTorch predictor (set_image)", "fp32": "onnxruntime fp32", "int8": "onnxruntime int8",
                "openvino-fp32": "OpenVINO fp32", "openvino-bf16": "OpenVINO bf16"}


def print_encoder_table(rows) -> None:
    """The encoder alone per backend and precision, against PyTorch within each round, with its gate."""
    print("\n| model | encoder (set_image) | ms | × PyTorch (median, min–max) | mean mask IoU vs fp32 (gate 0.95) | "
          "peak RSS MB |\n|---|---|---:|---:|---:|---:|")
    for name, rounds, fids, _ in rows:
        for key, label in ENCODER_ROWS.items():
            if key not in rounds[0]:
                continue
            f = fids.get(key)
            gate = f"{f['mean_iou']:.4f} ({'passed' if f['passed'] else 'FAILED'})" if f else "—"
            speed = "—" if key == "torch" else ratio_text(ratios(rounds, "torch", key, "encoder_ms"))
            print(f"| {name} | {label} | {median_of(rounds, key, 'encoder_ms'):.0f} | {speed} | {gate} | "
                  f"{median_of(rounds, key, 'peak_rss_mb'):.0f} |")


def worker(kind, bundle, clip, a, checkpoint=""):
    return run_json([sys.executable, "-c", WORKER, kind, str(bundle), str(clip), str(a.runs), ROCKET,
                     str(checkpoint)], kind)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["sam-vit-b", "sam2.1-hiera-tiny"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--openvino", nargs="*", default=None, choices=list(OV_ROWS),
                    help="OpenVINO encoder rows (default: fp32 where openvino is installed, and bf16 where the CPU "
                         "has it too; --openvino alone: none)")
    a = ap.parse_args()
    openvino = [f"openvino-{p}" for p in openvino_rows(a.openvino)]
    from clipxai.mask_models import resolve_mask_model
    from clipxai.models.sam import save_random_checkpoint
    work = Path(tempfile.mkdtemp(prefix="clipxai-sam-bench-"))
    rows = []
    try:
        clip = work / "clip448"
        print("exporting CLIP ViT-B/16 at 448 ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "clipxai.export.cli", "--backbone", "ViT-B/16", "--pretrained", "random",
                        "--classes", CLASSES, "--image-size", "448", "--output", str(clip), "--no-verify"],
                       check=True, stdout=subprocess.DEVNULL)
        for name in a.models:
            row = resolve_mask_model(name)
            ckpt = work / row.checkpoint
            save_random_checkpoint(row, ckpt, seed=3)
            bundles, export_s = {}, {}
            for prec in ("fp32", "int8"):
                print(f"exporting {name} {prec} ...", file=sys.stderr)
                bundles[prec] = work / f"{name}-{prec}"
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "clipxai.export.sam_cli", "--model", name, "--checkpoint",
                                str(ckpt), "--output", str(bundles[prec]), "--precision", prec, "--force",
                                "--no-video"],  # the encoders are measured here; tracking: benchmark_tracking.py
                               check=True, stdout=subprocess.DEVNULL)
                export_s[prec] = time.perf_counter() - t
            rounds = alternate({"torch": lambda: worker("torch", bundles["fp32"], clip, a, ckpt),
                                "fp32": lambda: worker("clipxai+decoder", bundles["fp32"], clip, a),
                                "int8": lambda: worker("clipxai+decoder", bundles["int8"], clip, a),
                                **{ov: (lambda ov=ov: worker(ov, bundles["fp32"], clip, a)) for ov in openvino}},
                               a.rounds, name)
            fid = json.loads((bundles["int8"] / "manifest.json").read_text())["fidelity"]
            bf16 = json.loads((bundles["fp32"] / "manifest.json").read_text()).get("bf16_fidelity")
            rows.append((name, rounds, {"int8": fid, "openvino-bf16": bf16}, export_s))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = lambda rounds, a_, b_: statistics.median(ratios(rounds, a_, b_, "encoder_ms"))  # noqa: E731
    print(f"\nrandom weights, {ROCKET.split('/')[-1]} (640x427), 2 threads, median of {a.runs} runs per process, "
          f"{a.rounds} alternated rounds\n")
    print("| model | PyTorch predictor set_image ms | clipxai fp32 encoder ms (vs PyTorch) | clipxai int8 encoder ms "
          "(vs fp32) | int8 mean mask IoU vs fp32 | decoder, 5 classes, ms (% of fp32 encoder) | "
          "text -> masks ms (CLIP ViT-B/16 448 + model, fp32 / int8) | peak RSS MB (PyTorch / fp32 / int8) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rounds, fids, _ in rows:
        fid = fids["int8"]
        enc = median_of(rounds, "fp32", "encoder_ms")
        dec = median_of(rounds, "fp32", "decoder_ms")
        print(f"| {name} | {median_of(rounds, 'torch', 'encoder_ms'):.0f} | {enc:.0f} "
              f"(**{ratio(rounds, 'torch', 'fp32'):.2f}×**) | {median_of(rounds, 'int8', 'encoder_ms'):.0f} "
              f"(**{ratio(rounds, 'fp32', 'int8'):.2f}×**) | {fid['mean_iou']:.3f} ({'passes' if fid['passed'] else 'FAILS'}) | "
              f"{dec:.0f} ({100 * dec / enc:.1f}%) | {median_of(rounds, 'fp32', 'text_to_masks_ms'):.0f} / "
              f"{median_of(rounds, 'int8', 'text_to_masks_ms'):.0f} | {median_of(rounds, 'torch', 'peak_rss_mb'):.0f} / "
              f"{median_of(rounds, 'fp32', 'peak_rss_mb'):.0f} / {median_of(rounds, 'int8', 'peak_rss_mb'):.0f} |")
    print_encoder_table(rows)
    for name, _, _, export_s in rows:
        print(f"\nexport {name}: fp32 {export_s['fp32']:.0f} s, int8 {export_s['int8']:.0f} s")


if __name__ == "__main__":
    main()
