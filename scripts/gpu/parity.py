#!/usr/bin/env python
"""GPU check, parity: clipxai on an onnxruntime provider against the PyTorch reference
(clipxai/models/reference.py) on the same device, same random weights, for each size's bundles.

    python scripts/gpu/parity.py --bundles B --sizes 224 448 --device cuda --out parity.json --md summary.md

fp32 bundles: similarity, scores and heatmaps (at the image's size) within --tol (1e-4) of the reference,
once per provider setting (CUDA as clipxai opens it, and CUDA with TF32 off, which tells a TF32 miss
from a real one). fp16 bundles: fidelity figures against the fp32 reference (smallest per-class
heatmap correlation, largest heatmap difference, largest score difference) next to the exporter's own
figures, measured on the CPU at export (manifest "fidelity"). Exit status 1 when an fp32 row fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import ROCKET, append_markdown, load_plugins, md_table, torch_device, write_json

CUDA = "CUDAExecutionProvider"
PROVIDERS = {  # name in the report -> what Predictor.from_bundle takes
    "cpu": "cpu",
    "cuda": "cuda",
    "cuda, TF32 off": ((CUDA, {"use_tf32": "0"}), "CPUExecutionProvider"),
}


def reference(a, bundle: Path, device):
    """(similarity [N, K], scores [K], heatmaps [K, H, W]) of examples/rocket.jpg by the PyTorch reference."""
    import torch
    from PIL import Image
    from clipxai.models import reference as ref
    from clipxai.models.backbones import resolve_backbone
    from clipxai.models.loading import load_clip
    from clipxai.runtime import load_bundle
    b = load_bundle(bundle)
    choice = resolve_backbone(a.backbone)
    loaded = load_clip(choice, a.pretrained)
    sd = {k: v.detach().to(device) for k, v in loaded.model.state_dict().items()}
    heads = loaded.model.visual.transformer.resblocks[0].attn.num_heads
    text = torch.from_numpy(np.load(bundle / "text_embeddings.npy")).to(device)
    pil = Image.open(ROCKET).convert("RGB")
    x = ref.clip_preprocess(pil, b.image_size, b.mean, b.std)[None].to(device)
    mode = json.loads((bundle / "manifest.json").read_text()).get("redundancy") or "classes"
    with torch.no_grad():
        sim, scores, _ = ref.pipeline(sd, x, text, mode, heads, choice.spec.surgery_blocks, loaded.quick_gelu)
        maps = ref.heatmaps(sim, (pil.height, pil.width))
    return sim[0].cpu().numpy(), scores[0].cpu().numpy(), maps[0].cpu().numpy()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest per-class Pearson correlation of two [K, H, W] heatmap stacks."""
    return min(float(np.corrcoef(x.ravel(), y.ravel())[0, 1]) for x, y in zip(a, b))


def compare(bundle: Path, providers, ref_out) -> dict:
    from clipxai.runtime import Predictor
    p = Predictor.from_bundle(bundle, providers=providers)
    pred = p.predict(ROCKET)
    sim, scores, maps = ref_out
    return {"provider": p.provider, "session": type(p.session).__name__,
            "similarity_max_abs": float(np.abs(pred.similarity - sim).max()),
            "scores_max_abs": float(np.abs(pred.scores - scores).max()),
            "heatmaps_max_abs": float(np.abs(pred.heatmaps - maps).max()),
            "heatmap_correlation_min": correlation(pred.heatmaps, maps),
            "finite": bool(np.isfinite(pred.heatmaps).all())}


def fp32_rows(a, size, ref_out) -> list[dict]:
    rows = []
    for name in a.providers:
        row = {"size": size, "precision": "fp32", "setting": name}
        try:
            row.update(compare(a.bundles / f"clip-{size}-fp32", PROVIDERS[name], ref_out))
            row["passed"] = max(row["similarity_max_abs"], row["scores_max_abs"], row["heatmaps_max_abs"]) <= a.tol
        except Exception as e:  # noqa: BLE001  (a provider that fails is a result, not the end of the run)
            row.update(passed=False, error=f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


def fp16_row(a, size, ref_out) -> dict:
    bundle = a.bundles / f"clip-{size}-fp16"
    row = {"size": size, "precision": "fp16", "setting": a.providers[0]}
    if not bundle.exists():
        return {**row, "error": "no fp16 bundle"}
    try:
        row.update(compare(bundle, PROVIDERS[a.providers[0]], ref_out))
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {e}"
    row["exporter_fidelity_cpu"] = json.loads((bundle / "manifest.json").read_text()).get("fidelity")
    return row


def markdown(a, rows) -> str:
    fmt = lambda v: f"{v:.2e}" if isinstance(v, float) else "—"  # noqa: E731
    body = []
    for r in rows:
        fid = r.get("exporter_fidelity_cpu") or {}
        verdict = ("passes" if r["passed"] else "FAILS") if "passed" in r else "—"
        body.append([r["size"], r["precision"], r["setting"], r.get("provider", r.get("error", "—")),
                     fmt(r.get("similarity_max_abs")), fmt(r.get("scores_max_abs")), fmt(r.get("heatmaps_max_abs")),
                     f"{r['heatmap_correlation_min']:.5f}" if "heatmap_correlation_min" in r else "—",
                     f"{fid['correlation']:.5f}" if fid.get("correlation") is not None else "—", verdict])
    return (f"## Parity against the PyTorch reference on {a.device} (fp32 tolerance {a.tol:g})\n\n"
            + md_table(["size", "bundle", "setting", "provider", "similarity max |Δ|", "scores max |Δ|",
                        "heatmaps max |Δ|", "min class correlation", "exporter's CPU correlation", "fp32 check"],
                       body))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundles", type=Path, required=True, help="folder with clip-SIZE-fp32 / clip-SIZE-fp16")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--backbone", default="ViT-B/16")
    ap.add_argument("--pretrained", default="random")
    ap.add_argument("--device", default="cuda", help="torch device of the reference")
    ap.add_argument("--providers", nargs="+", default=["cuda", "cuda, TF32 off"], choices=list(PROVIDERS))
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args()
    load_plugins()
    device = torch_device(a.device)
    rows = []
    for size in a.sizes:
        ref_out = reference(a, a.bundles / f"clip-{size}-fp32", device)
        rows += fp32_rows(a, size, ref_out) + [fp16_row(a, size, ref_out)]
        write_json(a.out, {"device": a.device, "tol": a.tol, "rows": rows})  # as it goes
    append_markdown(a.md, markdown(a, rows))
    sys.exit(0 if all(r.get("passed", True) for r in rows if r["precision"] == "fp32") else 1)


if __name__ == "__main__":
    main()
