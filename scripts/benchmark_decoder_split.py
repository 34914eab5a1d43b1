#!/usr/bin/env python
"""How much of SAM 2.1's prompt decoder a once-per-image part could take (issue: "the decoder split").

    python scripts/benchmark_decoder_split.py --model sam2.1-hiera-tiny --prompts 5

In the first two-way attention layer the image side has not yet seen the prompts: the token-to-image
attention's key and value projections and the image-to-token attention's query projection depend on the
image only, so a split decoder would compute them once per image instead of once per prompt set. This
times, in clipxai's exported decoder graph (onnxruntime, 2 threads, B prompt sets of 3 points), the whole
decoder against a graph of just those three projections for one image, and prints the share the split
would save: (B - 1) / B of the projections' time. Random weights (the time does not depend on them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from clipxai.export.onnx_export import export_module
from clipxai.mask_models import resolve_mask_model
from clipxai.models.sam import PromptDecoder, build_mask_model


class ImageSide(torch.nn.Module):
    """The three prompt-independent projections of the decoder's first layer, for one image."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image_embeddings):
        prompt, transformer = self.model.sam_prompt_encoder, self.model.sam_mask_decoder.transformer
        layer = transformer.layers[0]
        src = image_embeddings + prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)
        keys = src.flatten(2).permute(0, 2, 1)
        key_pe = prompt.get_dense_pe().flatten(2).permute(0, 2, 1)
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        return t2i.k_proj(keys + key_pe), t2i.v_proj(keys), i2t.q_proj(keys + key_pe)


def best_ms(session, feeds, runs):
    session.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sam2.1-hiera-tiny")
    p.add_argument("--prompts", type=int, default=5)
    p.add_argument("--runs", type=int, default=10)
    a = p.parse_args()
    model = build_mask_model(resolve_mask_model(a.model))
    emb = torch.randn(1, 256, 64, 64)
    hr = (torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128))
    coords, labels = torch.rand(a.prompts, 4, 2) * 1024, torch.tensor([[1.0, 1.0, 0.0, -1.0]] * a.prompts)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    with tempfile.TemporaryDirectory() as tmp:
        dec, side = Path(tmp) / "decoder.onnx", Path(tmp) / "side.onnx"
        names = ["image_embeddings", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels"]
        export_module(PromptDecoder(model, "sam2").eval(), (emb, *hr, coords, labels), dec, names,
                      ["low_res_masks", "iou_predictions"],
                      dynamic_axes={"point_coords": {0: "b", 1: "n"}, "point_labels": {0: "b", 1: "n"}})
        export_module(ImageSide(model).eval(), (emb,), side, ["image_embeddings"], ["k", "v", "q"])
        feeds = dict(zip(names, (emb.numpy(), hr[0].numpy(), hr[1].numpy(), coords.numpy(), labels.numpy())))
        whole = best_ms(ort.InferenceSession(str(dec), so, providers=["CPUExecutionProvider"]), feeds, a.runs)
        part = best_ms(ort.InferenceSession(str(side), so, providers=["CPUExecutionProvider"]),
                       {"image_embeddings": emb.numpy()}, a.runs)
    saved = part * (a.prompts - 1)
    print(f"{a.model}, {a.prompts} prompt sets: decoder {whole:.1f} ms; the image-only projections {part:.1f} ms "
          f"per set; a split saves {saved:.1f} ms ({100 * saved / whole:.1f} % of the decoder)")


if __name__ == "__main__":
    main()
