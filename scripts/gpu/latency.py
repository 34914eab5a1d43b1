#!/usr/bin/env python
"""GPU check, latency: the PyTorch reference (fp32 and autocast fp16) against clipxai's fp32 and fp16
bundles on an onnxruntime provider, with and without IO binding, per size and batch.

    python scripts/gpu/latency.py --bundles B --sizes 224 448 --batches 1 8 --runs 20 --out latency.json --md summary.md

What is timed: preprocessed images in host memory [B, 3, S, S] -> the graph's outputs in host memory
(the reference: to the device, surgery tokens, feature surgery, grid heatmaps, back; clipxai: the
bundle's graph, through its IO-binding session (clipxai/runtime/nvidia/iobinding.py) or the plain
onnxruntime session under it). Each figure is the median of --runs calls after --warmup; every
pipeline runs in its own process (scripts/harness.py), rounds alternate them. Ratios: the reference's
time over the row's (> 1: the row is faster), per round, median over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import append_markdown, load_plugins, md_table, torch_device, write_json
from harness import alternate, median_ms, run_json

TORCH32, TORCH16 = "PyTorch fp32", "PyTorch autocast fp16"
HEADER = ["size", "pipeline", "batch", "median ms", "images/s", "vs PyTorch fp32", "vs PyTorch autocast fp16"]


def inputs(bundle: Path, batch: int):
    """examples/rocket.jpg preprocessed as the bundle takes it, repeated: float32 [batch, 3, S, S]."""
    import numpy as np
    from clipxai.runtime import load_bundle
    from clipxai.runtime.preprocess import open_image, preprocess
    from common import ROCKET
    b = load_bundle(bundle)
    return np.repeat(preprocess(open_image(ROCKET), b.image_size, b.mean, b.std)[None], batch, 0)


def worker_torch(a) -> dict:
    load_plugins()  # only the reference needs the backbone table (and torch)
    import numpy as np
    import torch
    from clipxai.models import reference as ref
    from clipxai.models.backbones import resolve_backbone
    from clipxai.models.loading import load_clip
    device = torch_device(a.device)
    choice = resolve_backbone(a.backbone)
    loaded = load_clip(choice, a.pretrained)
    sd = {k: v.detach().to(device) for k, v in loaded.model.state_dict().items()}
    heads = loaded.model.visual.transformer.resblocks[0].attn.num_heads
    text = torch.from_numpy(np.load(Path(a.bundle) / "text_embeddings.npy")).to(device)

    def run(x, fp16):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            out = ref.pipeline(sd, torch.from_numpy(x).to(device), text, "classes", heads,
                               choice.spec.surgery_blocks, loaded.quick_gelu)
        return [o.float().cpu() for o in out]  # .cpu() waits for the device

    out = {}
    for bs in a.batches:
        x = inputs(Path(a.bundle), bs)
        out[f"{TORCH32}|{bs}"] = median_ms(lambda: run(x, False), a.runs, a.warmup)
        if device.type == "cuda" or a.cpu_autocast:
            out[f"{TORCH16}|{bs}"] = median_ms(lambda: run(x, True), a.runs, a.warmup)
    return out


def worker_clipxai(a) -> dict:
    from clipxai.runtime import Predictor
    from clipxai.runtime.nvidia.iobinding import BoundSession
    p = Predictor.from_bundle(a.bundle, providers=a.provider)
    if isinstance(p.session, BoundSession):
        bound, plain = p.session, p.session.session
    else:  # the CPU: IO binding on the CPU device (the binding logic, not a GPU figure)
        bound, plain = BoundSession(p.session, device="cpu"), p.session
    out = {"provider": p.provider}
    for bs in a.batches:
        feeds = p.graph_feeds(inputs(Path(a.bundle), bs))
        out[f"{a.name}, IO binding|{bs}"] = median_ms(lambda: bound.run(None, feeds), a.runs, a.warmup)
        out[f"{a.name}, no IO binding|{bs}"] = median_ms(lambda: plain.run(None, feeds), a.runs, a.warmup)
    return out


def survive(fn, name: str) -> dict:
    """A worker's figures, or {} (and its error on stderr) when it failed: one failing pipeline
    leaves the rest of the table."""
    try:
        return fn()
    except SystemExit as e:
        print(f"{name}: {e}", file=sys.stderr)
        return {}


def worker_command(a, kind: str, bundle: Path, name: str = "") -> list[str]:
    return [sys.executable, __file__, "--worker", kind, "--bundle", str(bundle), "--name", name,
            "--batches", *map(str, a.batches), "--runs", str(a.runs), "--warmup", str(a.warmup),
            "--backbone", a.backbone, "--pretrained", a.pretrained, "--device", a.device, "--provider", a.provider,
            *(["--cpu-autocast"] if a.cpu_autocast else [])]


def measure(a, size: int) -> list[dict]:
    """Alternated rounds of every pipeline at one size -> rows with medians and ratios."""
    b = a.bundles
    pipelines = {"torch": lambda: run_json(worker_command(a, "torch", b / f"clip-{size}-fp32"), "torch")}
    for prec in ("fp32", "fp16"):
        if (b / f"clip-{size}-{prec}").exists():
            pipelines[prec] = (lambda p=prec: run_json(worker_command(a, "clipxai", b / f"clip-{size}-{p}",
                                                                      f"clipxai {p}"), f"clipxai {p}"))
    rounds = alternate({name: (lambda fn=fn, name=name: survive(fn, name)) for name, fn in pipelines.items()},
                       a.rounds, f"at {size}")
    merged = [{k: v for r in rnd.values() for k, v in r.items()} for rnd in rounds]
    rows = []
    for key in dict.fromkeys(k for m in merged for k in m):
        if "|" not in key:
            continue
        name, bs = key.split("|")
        row = {"size": size, "pipeline": name, "batch": int(bs),
               "ms": statistics.median(m[key] for m in merged if key in m)}
        row["images_per_s"] = 1000 * row["batch"] / row["ms"]
        for ref_name, col in ((TORCH32, "vs_torch_fp32"), (TORCH16, "vs_torch_fp16")):
            if all(f"{ref_name}|{bs}" in m and key in m for m in merged):
                row[col] = statistics.median(m[f"{ref_name}|{bs}"] / m[key] for m in merged)
        rows.append(row)
    provider = next((r["provider"] for rnd in rounds for r in rnd.values() if "provider" in r), "—")
    return [dict(r, provider=provider) for r in rows]


def markdown(a, rows, env: dict) -> str:
    ratio = lambda v: f"**{v:.2f}×**" if v is not None else "—"  # noqa: E731
    body = [[r["size"], r["pipeline"], r["batch"], f"{r['ms']:.2f}", f"{r['images_per_s']:.1f}",
             ratio(r.get("vs_torch_fp32")), ratio(r.get("vs_torch_fp16"))] for r in rows]
    return (f"## Latency on {env.get('gpu', a.device)} ({a.backbone}, {a.pretrained} weights; onnxruntime "
            f"{env.get('onnxruntime', '?')}, provider {rows[0]['provider'] if rows else '?'}; median of {a.runs} "
            f"runs after {a.warmup} warm-up, {a.rounds} round(s); host -> host, examples/rocket.jpg)\n\n"
            + md_table(HEADER, body))


def environment() -> dict:
    import onnxruntime as ort
    env = {"onnxruntime": ort.__version__}
    try:
        from clipxai.runtime.nvidia import gpu_info
        env["gpu"] = gpu_info.gpu().name
    except Exception:  # noqa: BLE001  (no GPU: the table names the device instead)
        pass
    return env


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["torch", "clipxai"])
    ap.add_argument("--bundle")
    ap.add_argument("--name", default="")
    ap.add_argument("--bundles", type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--backbone", default="ViT-B/16")
    ap.add_argument("--pretrained", default="random")
    ap.add_argument("--device", default="cuda", help="torch device of the reference")
    ap.add_argument("--provider", default="cuda", help="clipxai's provider")
    ap.add_argument("--cpu-autocast", action="store_true", help="time autocast fp16 on the CPU too (dry run)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path)
    return ap.parse_args()


def main():
    a = parse_args()
    if a.worker:
        print(json.dumps(worker_torch(a) if a.worker == "torch" else worker_clipxai(a)))
        return
    env, rows = environment(), []
    for size in a.sizes:
        rows += measure(a, size)
        write_json(a.out, {"environment": env, "runs": a.runs, "warmup": a.warmup, "rows": rows})  # as it goes
    append_markdown(a.md, markdown(a, rows, env))


if __name__ == "__main__":
    main()
