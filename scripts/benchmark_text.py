#!/usr/bin/env python
"""Benchmark on-device vocabulary encoding against open_clip's PyTorch encode_text.

Encodes CLASSES x 85 templates (default 59 classes, Pascal Context's count) with
the prompt ensemble of docs/design.md §5, twice:

- device: clipxai's torch-free tokenizer and the text-encoder ONNX graph
  (onnxruntime CPU), prompts sorted by length, each batch cut to its longest
  real sequence (at least 16 tokens);
- reference: open_clip's tokenizer and ``model.encode_text`` on full
  77-token batches, PyTorch CPU.

Same random weights (``--backbone``, default ViT-B-16: its text tower is the
real size), same thread count, same batch size. Both include tokenization.
Prints both times, the speed-up and the max abs difference of the ensembles.

    python scripts/benchmark_text.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

CONTEXT_59 = ("aeroplane bag bed bedclothes bench bicycle bird boat book bottle building bus cabinet car cat ceiling "
              "chair cloth computer cow cup curtain dog door fence floor flower food grass ground horse keyboard "
              "light motorbike mountain mouse person plate platform pottedplant road rock sheep shelves sidewalk "
              "sign sky snow sofa table track train tree truck tvmonitor wall water window wood").split()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="ViT-B-16", help="open_clip model name (random weights)")
    ap.add_argument("--classes", type=int, default=59)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()

    import onnxruntime as ort
    import open_clip
    import torch

    from clipxai.contract import BPE_VOCAB_FILE, TEXT_ENCODER_FILE
    from clipxai.export.text_graph import TextTowerOnnxModel, export_text_onnx
    from clipxai.runtime.bundle import Bundle
    from clipxai.runtime.providers import SessionOptions, create_session
    from clipxai.runtime.text.encoder import TextEncoder
    from clipxai.runtime.text.tokenizer import Tokenizer
    from clipxai.manifest import ClipManifest, FileEntry
    from clipxai.templates import TEMPLATES

    torch.set_num_threads(a.threads)
    classes = (CONTEXT_59 * (a.classes // len(CONTEXT_59) + 1))[:a.classes]
    torch.manual_seed(0)
    model = open_clip.create_model(a.backbone, pretrained=None).eval()
    tmp = Path(tempfile.mkdtemp(prefix="clipxai-bench-text-"))
    export_text_onnx(TextTowerOnnxModel(model).eval(), tmp / TEXT_ENCODER_FILE, 17)
    (tmp / BPE_VOCAB_FILE).write_bytes(Path(open_clip.tokenizer.default_bpe()).read_bytes())
    bundle = Bundle(tmp, ClipManifest(files={TEXT_ENCODER_FILE: FileEntry("bench"), BPE_VOCAB_FILE: FileEntry("bench")}))
    session = create_session(tmp / TEXT_ENCODER_FILE, "cpu", SessionOptions(threads=a.threads))
    encoder = TextEncoder(bundle, session, Tokenizer(tmp / BPE_VOCAB_FILE))
    encoder.encode_classes(["warm up"], TEMPLATES[:8])

    t = time.perf_counter()
    ours = encoder.encode_classes(classes, TEMPLATES, batch_size=a.batch_size)
    device_s = time.perf_counter() - t

    tokenizer = open_clip.get_tokenizer(a.backbone)
    t = time.perf_counter()
    with torch.no_grad():
        ids = tokenizer([tpl.format(c) for c in classes for tpl in TEMPLATES])
        rows = torch.cat([torch.nn.functional.normalize(model.encode_text(ids[i:i + a.batch_size]), dim=-1)
                          for i in range(0, len(ids), a.batch_size)])
        theirs = torch.nn.functional.normalize(rows.reshape(len(classes), len(TEMPLATES), -1).mean(1), dim=-1)
    torch_s = time.perf_counter() - t

    out = {
        "backbone": a.backbone, "prompts": len(classes) * len(TEMPLATES), "threads": a.threads,
        "device_s": round(device_s, 2), "torch_full_77_s": round(torch_s, 2), "speedup": round(torch_s / device_s, 2),
        "max_abs_diff": float(np.abs(ours - theirs.numpy()).max()),
        "torch": torch.__version__, "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine(),
    }
    print(f"{out['prompts']} prompts ({a.classes} classes x {len(TEMPLATES)} templates), {a.backbone} text tower, "
          f"{a.threads} threads")
    print(f"  device (tokenizer + onnxruntime, cut batches): {device_s:7.2f} s")
    print(f"  open_clip encode_text (77 tokens, PyTorch):    {torch_s:7.2f} s")
    print(f"  speed-up: {torch_s / device_s:.2f}x   max abs diff of the ensembles: {out['max_abs_diff']:.2e}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
