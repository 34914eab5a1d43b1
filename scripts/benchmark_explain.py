#!/usr/bin/env python
"""Benchmark the word explainer graph against the PyTorch autograd reference.

Both explain the same sentences against the same image embedding, on the same random
weights (``--backbone``, default ViT-B-16: its text tower is the real size, 12 blocks,
the last 8 re-run), with the same thread count:

- device: clipxai's tokenizer and the exported explainer graph (onnxruntime CPU), the
  gradient in closed form; one sentence per run, and all sentences in one batch;
- reference: clipxai/models/reference.py's ``grad_eclip_text``, the notebook's computation with
  ``torch.autograd.grad`` (n backward passes, as the notebook asks), one sentence at a time,
  PyTorch CPU; and the same with one backward pass for all n blocks.

Prints ms per sentence for each, the speed-up and the max abs difference of the weights.

    python scripts/benchmark_explain.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import median_ms

SENTENCES = [
    "a dog in a car waiting for traffic lights",
    "a photo of a rocket launching into a clear blue sky, with smoke below it",
    "two cats sleeping on a red sofa next to a window",
    "a man riding a bicycle down a busy street in the rain",
    "a plate of pasta with tomato sauce and basil on a wooden table",
    "an aerial view of a harbour full of small boats at sunset",
    "a child holding a yellow umbrella",
    "a snowy mountain road with a truck",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="ViT-B-16", help="open_clip model name (random weights)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()

    import open_clip
    import torch
    import torch.nn.functional as F

    from clipxai.export.text_graph import export_explainer_onnx
    from clipxai.models import reference as ref
    from clipxai.models.text_explainer import TextExplainer
    from clipxai.runtime.explain.text import WordExplainer
    from clipxai.runtime.providers import SessionOptions, create_session
    from clipxai.runtime.text.tokenizer import load_tokenizer

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = open_clip.create_model(a.backbone, pretrained=None).eval()
    heads = model.transformer.resblocks[0].attn.num_heads
    quick = model.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    dim = model.text_projection.shape[1]
    image = F.normalize(torch.randn(dim, generator=torch.Generator().manual_seed(1)), dim=0)
    explainer = TextExplainer(model).eval()
    sd = {k: v.detach() for k, v in model.state_dict().items()}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "text_explainer.onnx"
        t0 = time.perf_counter()
        export_explainer_onnx(explainer, path, 17, dim)
        export_s = time.perf_counter() - t0
        session = create_session(path, "cpu", SessionOptions(threads=a.threads))
        device = WordExplainer(session, load_tokenizer())
        img = image.numpy()
        one = median_ms(lambda: [device.explain(img, [s]) for s in SENTENCES], a.runs, warmup=1) / len(SENTENCES)
        batch = median_ms(lambda: device.explain(img, SENTENCES), a.runs, warmup=1) / len(SENTENCES)
        ours = device.explain(img, SENTENCES)

    tokens = open_clip.tokenize(SENTENCES)

    def reference(one_pass=False):
        return [ref.grad_eclip_text(sd, tokens[i], image, heads, quick, one_pass=one_pass)[0]
                for i in range(len(SENTENCES))]
    theirs = reference()
    torch_ms = median_ms(reference, a.runs, warmup=1) / len(SENTENCES)
    torch_one_ms = median_ms(lambda: reference(True), a.runs, warmup=1) / len(SENTENCES)
    err = max(float(np.abs(o.weights - t.numpy()).max()) for o, t in zip(ours, theirs))
    figures = {"backbone": a.backbone, "blocks": explainer.n, "threads": a.threads, "sentences": len(SENTENCES),
               "export_s": round(export_s, 1), "torch_autograd_ms": round(torch_ms, 2),
               "torch_autograd_one_pass_ms": round(torch_one_ms, 2),
               "onnx_one_ms": round(one, 2), "onnx_batch_ms": round(batch, 2),
               "speedup_one": round(torch_ms / one, 2), "speedup_batch": round(torch_ms / batch, 2),
               "max_abs_weight_error": err}
    print(f"{a.backbone} text tower, last {explainer.n} blocks, {a.threads} threads, {len(SENTENCES)} sentences")
    print(f"  PyTorch autograd reference  {torch_ms:8.1f} ms/sentence  (the notebook: one backward per block)")
    print(f"  ... one backward pass       {torch_one_ms:8.1f} ms/sentence")
    print(f"  explainer graph, 1 per run  {one:8.1f} ms/sentence  ({torch_ms / one:.2f}x, {torch_one_ms / one:.2f}x)")
    print(f"  explainer graph, batch {len(SENTENCES)}    {batch:8.1f} ms/sentence  ({torch_ms / batch:.2f}x, "
          f"{torch_one_ms / batch:.2f}x)")
    print(f"  max abs weight difference   {err:.2e}")
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
