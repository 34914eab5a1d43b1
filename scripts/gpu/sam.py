#!/usr/bin/env python
"""GPU check, mask model: clipxai's SAM 2.1 encoder (MaskPredictor.set_image) and prompt decoder
(masks_for, 5 classes' points from a CLIP prediction) on an onnxruntime provider, next to the
package's PyTorch predictor's set_image on the torch device.

    python scripts/gpu/sam.py --save-checkpoint sam2.1-hiera-tiny --checkpoint B/sam.pt   (random weights)
    python scripts/gpu/sam.py --bundle B/sam --checkpoint B/sam.pt --clip B/clip-448-fp32 --out sam.json --md summary.md

Each pipeline in its own process (scripts/harness.py); medians of --runs calls after --warmup.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import ROCKET, append_markdown, load_plugins, md_table, torch_device, write_json
from harness import median_ms, run_json


def image():
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(ROCKET).convert("RGB"))


def worker_torch(a) -> dict:
    import torch
    from clipxai.mask_models import resolve_mask_model
    from clipxai.models.sam import load_mask_model
    device = torch_device(a.device)
    m = json.loads((Path(a.bundle) / "manifest.json").read_text())
    model = load_mask_model(resolve_mask_model(m["model"]), a.checkpoint).to(device)
    if m["family"] == "sam":
        from segment_anything import SamPredictor as Wrapper
    else:
        from sam2.sam2_image_predictor import SAM2ImagePredictor as Wrapper
    p, img = Wrapper(model), image()

    def encode():
        with torch.no_grad():
            p.set_image(img)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return {"PyTorch predictor set_image": median_ms(encode, a.runs, a.warmup)}


def worker_clipxai(a) -> dict:
    from clipxai.runtime import Predictor
    from clipxai.runtime.sam import MaskPredictor
    sam = MaskPredictor.from_bundle(a.bundle, providers=a.provider)
    img = image()
    out = {"provider": sam.encoder.get_providers()[0] if hasattr(sam, "encoder") else a.provider,
           "clipxai encoder set_image": median_ms(lambda: sam.set_image(img), a.runs, a.warmup)}
    pred = Predictor.from_bundle(a.clip, providers=a.provider).predict(img)
    out["clipxai decoder masks_for, 5 classes"] = median_ms(lambda: sam.masks_for(pred), a.runs, a.warmup)
    return out


def command(a, kind: str) -> list[str]:
    return [sys.executable, __file__, "--worker", kind, "--bundle", str(a.bundle), "--checkpoint", str(a.checkpoint),
            "--clip", str(a.clip), "--runs", str(a.runs), "--warmup", str(a.warmup), "--device", a.device,
            "--provider", a.provider]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["torch", "clipxai"])
    ap.add_argument("--save-checkpoint", metavar="MODEL", help="only save MODEL's random weights to --checkpoint")
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--clip", type=Path, help="a CLIP bundle for the decoder's prompts")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--provider", default="cuda")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args()
    load_plugins()
    if a.save_checkpoint:
        from clipxai.mask_models import resolve_mask_model
        from clipxai.models.sam import save_random_checkpoint
        save_random_checkpoint(resolve_mask_model(a.save_checkpoint), a.checkpoint, seed=3)
        return
    if a.worker:
        print(json.dumps(worker_torch(a) if a.worker == "torch" else worker_clipxai(a)))
        return
    figures = {}
    for kind in ("torch", "clipxai"):
        try:
            figures.update(run_json(command(a, kind), kind))
        except SystemExit as e:  # one failing side leaves the other's figures
            print(f"{kind}: {e}", file=sys.stderr)
        write_json(a.out, {"model": json.loads((a.bundle / "manifest.json").read_text())["model"], **figures})
    model = json.loads((a.bundle / "manifest.json").read_text())["model"]
    rows = [[model, name, f"{ms:.2f}"] for name, ms in figures.items() if name != "provider"]
    append_markdown(a.md, f"## Mask model ({model}, random weights, examples/rocket.jpg; median of {a.runs} runs; "
                          f"clipxai on {figures.get('provider', a.provider)}, PyTorch on {a.device})\n\n"
                    + md_table(["model", "pipeline", "median ms"], rows))


if __name__ == "__main__":
    main()
