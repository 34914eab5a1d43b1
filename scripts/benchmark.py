#!/usr/bin/env python
"""Benchmark the runtime (fp32, int8, fp16 bundles) against the PyTorch reference, side by side.

Every pipeline takes the same image (examples/rocket.jpg, 640x427) and returns
per-class heatmaps at the original size:

- reference: torchvision preprocessing, the reference formulation of CLIP
  Surgery in PyTorch (clipxai/models/reference.py: both paths in full through the
  surgery blocks, element-wise feature surgery), torch bilinear upsampling;
- runtime: clipxai.runtime.Predictor on an exported bundle (onnxruntime CPU),
  one row per precision. fp16 is measured only where a GPU provider exists;
- OpenVINO fp32 and bf16 (``--openvino``; by default fp32 where OpenVINO is
  installed, and bf16 where the CPU has native bf16 too: openvino_rows): the
  same Predictor on the fp32 bundle with providers="openvino". bf16 needs the
  bundle's bf16 gate passed at export (the benchmark's export measures it when
  OpenVINO is installed).

Batch 1 and ``--batch`` (8 by default) are measured for every row.

Each pipeline runs in its own subprocess (honest peak RSS and cold start),
with the same weights and thread count. Figures are medians of --runs runs in
a worker; the reference and the runtime rows alternate for --rounds rounds and
each figure is the median over rounds (speed ratios are taken within a round,
so a slow spell of a shared machine hits both sides): scripts/harness.py.
Then, with --pairs N, every pipeline is loaded once more into a long-lived
worker and the parent asks them in turn, in a shuffled order with a pause
between calls, for one batch-1 prediction each, N times: the ratio of every
set is taken between predictions seconds apart, so it is much less sensitive
to the slow spells of a shared machine than the per-round ratios. Paired mode
also runs the reference a second time with glibc told to keep freed memory
(KEEP_MEMORY): by default PyTorch frees and re-allocates its large buffers
every call and faults them in again, which costs more the longer the pause
between calls on a VM that hands free memory back to its host (this one
does). Every worker counts its minor page faults per call.
The run also measures this machine's fp32 ceiling (onnxruntime MatMul,
2048x2048x2048) and counts the model's FLOPs analytically, so it can print
the achieved GFLOP/s as a fraction of the ceiling.

    .venv/bin/python scripts/benchmark.py --sizes 224 448 --runs 5 --rounds 3 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    alternate, median_ms, median_rows, minor_faults, peak_rss_mb, ratio_text, ratios, run_json, timed_with_faults,
)

ROOT = Path(__file__).resolve().parent.parent
ROCKET = ROOT / "examples" / "rocket.jpg"
CLASSES = "rocket,sky,smoke,tree,ground"
KEPT = "torch reference, memory kept"
OV_ROWS = {"fp32": "OpenVINO fp32", "bf16": "OpenVINO bf16"}  # --openvino precision -> row name


def builder_peak_rss_mb(timeout=600):
    """Peak RSS of the graph cache builder this process started in the background (it waits for it
    to end), or nan if none was started."""
    from clipxai.runtime.cpu import graph_cache as gc
    if not gc.started_builds() or not gc.wait_for_builds(timeout):
        return float("nan")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# ---------------------------------------------------------------- FLOPs and ceiling

def surgery_vit_gflop(width, layers, heads, patch, image_size, embed_dim, classes, surgery_blocks,
                      mlp_ratio=4.0):
    """Analytic GFLOP (a multiply-add = 2) of one image through the exported surgery graph.

    Blocks 0..L-2: full original path. Last block: v for all tokens; the class
    token's query, its attention row through u = W_kᵀ q (no keys), out-projection
    and MLP. Surgery path (last ``surgery_blocks``): v-v attention +
    out-projection. Then ln_post/proj for all tokens, the similarity and the multi-label
    logits (``labels``: the tokens' cosines before feature surgery, TaI-DPT's protocol).
    (tests/test_benchmark_flops.py checks this against the exported graph.)
    """
    c, n = width, (image_size // patch) ** 2
    t = n + 1
    m = mlp_ratio * c
    attention = 4 * t * t * c                       # q kᵀ and A v
    full_block = 2 * t * c * 3 * c + attention + 2 * t * c * c + 4 * t * c * m
    last_block = (2 * t * c * c + 2 * c * c + 2 * c * c   # v; q of the class token; u = W_kᵀ q per head
                  + 2 * t * c * heads + 2 * t * c          # u·h for every key; A v
                  + 2 * c * c + 4 * c * m)                 # out-projection, MLP
    surgery_path = surgery_blocks * (attention + 2 * t * c * c)
    flops = (2 * n * 3 * patch * patch * c         # patch embedding
             + (layers - 1) * full_block + last_block + surgery_path
             + 2 * t * c * embed_dim                # ln_post @ proj
             + 2 * t * embed_dim * classes          # similarity
             + 2 * t * embed_dim * classes)         # labels: every token's cosines before feature surgery
    return flops / 1e9


def fp32_ceiling_gflops(threads, n=2048, runs=7):
    """onnxruntime MatMul on an n x n x n GEMM, fp32, this thread count: median GFLOP/s.

    B is a constant, as the model's weights are, so onnxruntime prepacks it once
    (with B as an input it would repack it on every call and understate the ceiling)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.random((n, n), dtype=np.float32), "b")
    info = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ac"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", info[:1], info[1:], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"a": rng.random((n, n), dtype=np.float32)}
    sess.run(None, feed)
    ms = median_ms(lambda: sess.run(None, feed), runs)
    return 2 * n ** 3 / (ms / 1000) / 1e9


# ---------------------------------------------------------------- workers

def serve(predict):
    """Paired mode: time one ``predict()`` per line read from stdin, print "ms minor-faults"; stop at EOF."""
    predict()
    print("ready", flush=True)
    for _ in sys.stdin:
        f0, t0 = minor_faults(), time.perf_counter()
        predict()
        print(f"{(time.perf_counter() - t0) * 1e3:.3f} {minor_faults() - f0}", flush=True)


def worker_runtime(a):
    t0 = time.perf_counter()
    from clipxai.runtime import Predictor
    from clipxai.runtime.postprocess import resize_bilinear
    from clipxai.runtime.preprocess import open_image, preprocess
    t_import = time.perf_counter()
    p = Predictor.from_bundle(a.bundle, options=runtime_options(a))
    t_session = time.perf_counter()
    _ = p.predict(ROCKET).heatmaps
    t_first = time.perf_counter()
    if a.serve:
        return serve(lambda: p.predict(ROCKET).heatmaps)
    out = {"cold_import_s": t_import - t0, "cold_load_s": t_session - t_import, "cold_first_s": t_first - t_session,
           "provider": p.provider}
    if a.cold_only:  # the first-ever load: the cache builder it started is this process's child
        out["peak_rss_mb"] = peak_rss_mb()
        out["builder_rss_mb"] = builder_peak_rss_mb()
        return out
    b = p.bundle
    s = b.image_size
    x = preprocess(open_image(ROCKET), s, b.mean, b.std)[None]
    out["pre_ms"] = median_ms(lambda: preprocess(open_image(ROCKET), s, b.mean, b.std), a.runs)
    out["infer_ms"] = median_ms(lambda: p.session.run(None, {"image": x}), a.runs)
    maps = p.session.run(None, {"image": x})[2][0]
    out["post_ms"] = median_ms(lambda: resize_bilinear(maps, 427, 640), a.runs)
    out["total_ms_b1"], out["faults_b1"] = timed_with_faults(lambda: p.predict(ROCKET).heatmaps, a.runs)
    out["peak_rss_b1_mb"] = peak_rss_mb()
    n = a.batch
    xn = x.repeat(n, 0)
    out[f"infer_ms_b{n}"] = median_ms(lambda: p.session.run(None, {"image": xn}), a.runs)
    out[f"total_ms_b{n}"] = median_ms(lambda: [q.heatmaps for q in p.predict_batch([ROCKET] * n, batch_size=n)],
                                      a.runs)
    return out


def runtime_options(a):
    """onnxruntime on ``--providers``, or OpenVINO at ``--ov-precision`` (the bundle's bf16 gate applies)."""
    from clipxai.runtime import RuntimeOptions
    from clipxai.runtime.backends import OpenVINOOptions
    if a.ov_precision:
        return RuntimeOptions(providers="openvino", threads=a.threads, openvino=OpenVINOOptions(precision=a.ov_precision))
    return RuntimeOptions(providers=a.providers, threads=a.threads)


def worker_torch(a):
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from PIL import Image
    from clipxai.models import reference as ref
    from clipxai.models.backbones import resolve_backbone
    from clipxai.models.loading import load_clip
    t_import = time.perf_counter()
    torch.set_num_threads(a.threads)
    choice = resolve_backbone(a.backbone)
    loaded = load_clip(choice, a.pretrained)
    sd = {k: v.detach() for k, v in loaded.model.state_dict().items()}
    text = torch.from_numpy(np.load(Path(a.bundle) / "text_embeddings.npy"))
    heads = loaded.model.visual.transformer.resblocks[0].attn.num_heads
    blocks = choice.spec.surgery_blocks
    t_session = time.perf_counter()
    s = a.size

    def pre():
        return ref.clip_preprocess(Image.open(ROCKET), s, loaded.mean, loaded.std)[None]

    def infer(x):
        with torch.no_grad():
            feats = torch.nn.functional.normalize(ref.surgery_tokens(sd, x, heads, blocks, loaded.quick_gelu), dim=-1)
            return ref.feature_surgery(feats, text, "classes")[:, 1:]

    def post(sim):
        with torch.no_grad():
            return ref.heatmaps(sim, (427, 640))

    def pipeline(n=1):
        x = torch.cat([pre() for _ in range(n)])
        return post(infer(x))

    pipeline()
    t_first = time.perf_counter()
    if a.serve:
        return serve(pipeline)
    out = {"cold_import_s": t_import - t0, "cold_load_s": t_session - t_import, "cold_first_s": t_first - t_session,
           "provider": "torch CPU"}
    x = pre()
    sim = infer(x)
    out.update(pre_ms=median_ms(pre, a.runs), infer_ms=median_ms(lambda: infer(x), a.runs),
               post_ms=median_ms(lambda: post(sim), a.runs))
    out["total_ms_b1"], out["faults_b1"] = timed_with_faults(pipeline, a.runs)
    out["peak_rss_b1_mb"] = peak_rss_mb()
    n = a.batch
    xn = x.repeat(n, 1, 1, 1)
    out[f"infer_ms_b{n}"] = median_ms(lambda: infer(xn), a.runs)
    out[f"total_ms_b{n}"] = median_ms(lambda: pipeline(n), a.runs)
    return out


def worker_command(kind, a, bundle, size, extra=()):
    return [sys.executable, __file__, "--worker", kind, "--bundle", str(bundle), "--size", str(size),
           "--runs", str(a.runs), "--threads", str(a.threads), "--backbone", a.backbone, "--pretrained", a.pretrained,
           "--providers", a.providers, "--batch", str(a.batch), *extra]


def worker_env(a, extra=None):
    return dict(os.environ, OMP_NUM_THREADS=str(a.threads), CLIPXAI_CACHE_DIR=a.cache_dir, **(extra or {}))


# glibc settings under which a process never gives freed memory back to the system (no mmap'ed
# blocks, no heap trimming): the reference then re-uses its buffers instead of faulting them in
# again every call. Paired mode runs the reference both ways to show what that costs it here.
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736",
               "MALLOC_TOP_PAD_": "0"}


def run_worker(kind, a, bundle, size, extra=()):
    return run_json(worker_command(kind, a, bundle, size, extra), kind, worker_env(a))


def _timing(line):
    """A serving worker's answer "ms faults" as (ms, faults), or None for any other line."""
    parts = line.split()
    try:
        return (float(parts[0]), int(parts[1])) if len(parts) == 2 else None
    except ValueError:
        return None


def _reply(proc, name, wanted):
    """The next line of a serving worker that ``wanted(line)`` accepts (other output is skipped)."""
    for line in proc.stdout:
        if wanted(line.strip()):
            return line.strip()
    sys.exit(f"the {name} worker stopped (paired mode); its error is above")


def paired(a, workers, pairs, gap_s=0.3):
    """Batch-1 predictions taken in turn from long-lived workers.

    ``workers``: {name: (kind, bundle, size, extra environment or None, extra arguments)}. Each set
    asks every worker for one prediction, in a shuffled order, with ``gap_s``
    between calls (so spinning threads of the last one have gone to sleep).
    Returns {name: {"ms": [ms per set], "faults": [minor page faults per set]}}.
    """
    import random
    procs = {}
    try:
        for name, (kind, bundle, size, extra_env, args) in workers.items():
            procs[name] = subprocess.Popen(worker_command(kind, a, bundle, size, [*args, "--serve"]), stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True, env=worker_env(a, extra_env))
            _reply(procs[name], name, lambda line: line == "ready")
        order, sets = list(procs), {name: {"ms": [], "faults": []} for name in procs}
        shuffle = random.Random(0).shuffle
        for _ in range(pairs):
            shuffle(order)
            for name in order:
                time.sleep(gap_s)
                procs[name].stdin.write("run\n")
                procs[name].stdin.flush()
                ms, faults = _timing(_reply(procs[name], name, lambda line: _timing(line) is not None))
                sets[name]["ms"].append(ms)
                sets[name]["faults"].append(faults)
    finally:
        for proc in procs.values():
            if proc.stdin:
                proc.stdin.close()
            proc.wait()
    return sets


def set_ratios(sets, ref, name):
    """The ratio of ``ref``'s time to ``name``'s, set by set (> 1: ``name`` is faster)."""
    return [r / x for r, x in zip(sets[ref]["ms"], sets[name]["ms"])]


def spread(values):
    """"median× (quartiles; min–max)" of per-set ratios."""
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"**{statistics.median(values):.2f}×** ({q1:.2f}–{q3:.2f}; {min(values):.2f}–{max(values):.2f})"


# ---------------------------------------------------------------- main

def combine_rounds(rounds, batches):
    """Per pipeline, the median over rounds of each figure, and ``ratio_b<batch>``: the speed
    ratios to the reference, one per round (each taken within its round)."""
    rows = median_rows(rounds)
    for name, d in rows.items():
        for bs in batches:
            d[f"ratio_b{bs}"] = ratios(rounds, "torch reference", name, f"total_ms_b{bs}")
    return rows


def wait_for_graph_cache(a, bundle, timeout=600):
    """Wait until the first load's background builder has filled the bundle's CPU graph cache entry."""
    if a.providers != "cpu":
        return
    from clipxai.common.cache import cache_root
    from clipxai.runtime.bundle import load_bundle
    from clipxai.runtime.cpu import graph_cache as gc
    root, key = cache_root(a.cache_dir), gc.cache_key(load_bundle(bundle).graph_files())
    deadline = time.monotonic() + timeout
    while gc.building(root, key) or gc.lookup(root, key) is None:
        if time.monotonic() > deadline:
            sys.exit(f"the graph cache entry for {bundle} was not filled within {timeout} s")
        time.sleep(0.5)


def cpu_name():
    """Model name and the vector-ISA flags that decide GEMM speed (fp32: AVX2/AVX-512; int8: VNNI)."""
    from clipxai.common.system import cpu_info
    cpu = cpu_info()
    flags = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
             if f in cpu.flags]
    return f"{cpu.model} ({', '.join(flags)})" if flags else cpu.model


def export(a, bundle, size, precision):
    if (bundle / "manifest.json").exists():
        return
    print(f"exporting {bundle} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "clipxai.export.cli", "--backbone", a.backbone, "--pretrained",
                    a.pretrained, "--classes", CLASSES, "--image-size", str(size), "--precision", precision,
                    "--output", str(bundle), "--overwrite"], check=True, stdout=subprocess.DEVNULL)


def bundle_mb(bundle):
    return sum(f.stat().st_size for f in Path(bundle).iterdir() if f.is_file()) / 2 ** 20


def openvino_rows(asked: list[str] | None) -> list[str]:
    """The OpenVINO precisions to measure: ``asked``, or by default fp32 where OpenVINO is installed and bf16
    where the CPU computes it too (elsewhere OpenVINO would run a "bf16" row in fp32). Exits when bf16 is
    asked for on a CPU without it."""
    import importlib.util
    if not importlib.util.find_spec("openvino"):
        if asked:
            sys.exit("--openvino: OpenVINO is not installed (pip install '.[openvino]')")
        return []
    from clipxai.runtime.backends.openvino import native_bf16
    if asked is None:
        return [p for p in OV_ROWS if p != "bf16" or native_bf16()]
    if "bf16" in asked and not native_bf16():
        sys.exit("--openvino bf16: this CPU has no native bf16 (avx512_bf16 or amx_bf16); OpenVINO would run fp32")
    return asked


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["runtime", "torch", "ceiling"])
    ap.add_argument("--cold-only", action="store_true")
    ap.add_argument("--bundle")
    ap.add_argument("--size", type=int)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8", "fp16"], choices=["fp32", "int8", "fp16"])
    ap.add_argument("--openvino", nargs="*", default=None, choices=list(OV_ROWS),
                    help="OpenVINO rows on the fp32 bundle (default: fp32 where openvino is installed, and bf16 "
                         "where the CPU has it too; --openvino alone: none)")
    ap.add_argument("--ov-precision", choices=list(OV_ROWS), help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help="the second batch size measured (the first is 1; >= 2)")
    ap.add_argument("--backbone", default="ViT-B/16")
    ap.add_argument("--pretrained", default="random", help="weights for every pipeline (random needs no network)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per figure in each worker (median)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate the reference and the runtime rows this many times (median over rounds)")
    ap.add_argument("--pairs", type=int, default=15,
                    help="then this many sets of single predictions taken in turn from long-lived workers (0: none)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--providers", default="cpu", help="runtime provider (cpu, cuda, tensorrt)")
    ap.add_argument("--bundle-dir", help="reuse/keep exported bundles here")
    ap.add_argument("--cache-dir", default=None, help="graph cache for the runtime workers (default: a fresh one)")
    a = ap.parse_args()
    if a.batch < 2:
        ap.error("--batch must be 2 or more (batch 1 is always measured)")
    return a


def run_as_worker(a) -> None:
    if a.worker == "ceiling":
        print(json.dumps({"gflops": fp32_ceiling_gflops(a.threads)}))
        return
    out = worker_runtime(a) if a.worker == "runtime" else worker_torch(a)
    if a.serve:
        return
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def runtime_rows(a, precisions: list[str], bundles: dict) -> dict:
    """{row name: (bundle, worker arguments)}: a row per bundle precision on --providers, then the
    OpenVINO rows on the fp32 bundle."""
    rows = {f"clipxai {p}": (bundles[p], []) for p in precisions}
    rows.update({OV_ROWS[p]: (bundles["fp32"], ["--ov-precision", p]) for p in a.openvino})
    return rows


def measure_size(a, size: int, precisions: list[str], bundle_dir: Path, gflop: float):
    """Export, first-ever load, alternated rounds and paired sets at one size -> (size, gflop, rows, sets)."""
    bundles, first = {}, {}
    for prec in precisions:
        bundles[prec] = bundle_dir / f"{a.backbone.replace('/', '-')}-{size}-{prec}"
        export(a, bundles[prec], size, prec)
        print(f"first-ever load of {prec} at {size} ...", file=sys.stderr)
        first[prec] = run_worker("runtime", a, bundles[prec], size, ["--cold-only"])  # starts the cache fill
        wait_for_graph_cache(a, bundles[prec])  # the builder runs in the background: never time beside it
    runtimes = runtime_rows(a, precisions, bundles)
    # Rounds: the reference and every runtime row back to back, again and again, so a slow
    # spell of this shared machine hits both sides; ratios are taken within a round.
    rounds = alternate({"torch reference": lambda: run_worker("torch", a, bundles["fp32"], size),
                        **{name: (lambda b=b, x=x: run_worker("runtime", a, b, size, x))
                           for name, (b, x) in runtimes.items()}}, a.rounds, f"at {size}")
    rows = combine_rounds(rounds, (1, a.batch))
    for prec in precisions:
        d, f = rows[f"clipxai {prec}"], first[prec]
        d["cold_first_ever_s"] = f["cold_import_s"] + f["cold_load_s"] + f["cold_first_s"]
        d["first_ever_rss_mb"] = f["peak_rss_mb"]
        d["builder_rss_mb"] = f.get("builder_rss_mb", float("nan"))
        d["bundle_mb"] = bundle_mb(bundles[prec])
    for p in a.openvino:  # OpenVINO runs the fp32 bundle: the memory budget is that bundle's
        rows[OV_ROWS[p]]["bundle_mb"] = bundle_mb(bundles["fp32"])
    sets = {}
    if a.pairs:
        print(f"{a.pairs} paired sets at {size} ...", file=sys.stderr)
        sets = paired(a, {"torch reference": ("torch", bundles["fp32"], size, None, []),
                          KEPT: ("torch", bundles["fp32"], size, KEEP_MEMORY, []),
                          **{name: ("runtime", b, size, None, x) for name, (b, x) in runtimes.items()}}, a.pairs)
    return size, gflop, rows, sets


def print_speed_table(results, ceiling: float, batch: int) -> None:
    print("\nimage -> heatmaps (preprocessing, graph, upsampling to 640x427); GFLOP/s and % of the ceiling are "
          "for the graph alone (model FLOPs / graph time; int8 counts the same FLOPs)\n")
    print("| size | GFLOP/img | pipeline | batch | ms / batch | img/s | graph ms | GFLOP/s | % ceiling | "
          "speed vs reference (min–max over rounds) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, gflop, rows, _ in results:
        for name, d in rows.items():
            for bs in (1, batch):
                total = d[f"total_ms_b{bs}"]
                infer = d["infer_ms"] if bs == 1 else d[f"infer_ms_b{bs}"]
                gfs = gflop * bs / (infer / 1000)
                print(f"| {size} | {gflop:.1f} | {name} | {bs} | {total:.1f} | {1000 * bs / total:.2f} | "
                      f"{infer:.1f} | {gfs:.1f} | {100 * gfs / ceiling:.0f}% | "
                      f"{'—' if name == 'torch reference' else ratio_text(d[f'ratio_b{bs}'])} |")


def print_memory_table(results, batch: int) -> None:
    print("\nbatch 1 in parts, memory and cold start (import / load / first image; first ever = with an empty "
          "graph cache, which a background process then fills: the cache builder's own peak is the last column)\n")
    print(f"| size | pipeline | pre ms | graph ms | post ms | page faults / call | peak RSS b1 MB | peak RSS b{batch} MB | "
          "bundle MB | RSS budget 1.5×bundle+150 | cold s | first ever s | first ever RSS MB | cache builder RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, _, rows, _ in results:
        for name, d in rows.items():
            cold = d["cold_import_s"] + d["cold_load_s"] + d["cold_first_s"]
            budget = f"{1.5 * d['bundle_mb'] + 150:.0f}" if "bundle_mb" in d else "—"
            print(f"| {size} | {name} | {d['pre_ms']:.1f} | {d['infer_ms']:.1f} | {d['post_ms']:.1f} | "
                  f"{d['faults_b1']:.0f} | {d['peak_rss_b1_mb']:.0f} | {d['peak_rss_mb']:.0f} | "
                  f"{d.get('bundle_mb', 0):.0f} | {budget} | {cold:.2f} "
                  f"({d['cold_import_s']:.2f}/{d['cold_load_s']:.2f}/{d['cold_first_s']:.2f}) | "
                  f"{d.get('cold_first_ever_s', float('nan')):.2f} | {d.get('first_ever_rss_mb', float('nan')):.0f} | "
                  f"{d.get('builder_rss_mb', float('nan')):.0f} |")


def print_paired_table(results, pairs: int) -> None:
    print(f"\npaired, batch 1 (image -> heatmaps): {pairs} sets, each one prediction per pipeline from "
          "long-lived workers in a shuffled order, 0.3 s apart; the ratio is taken within each set; "
          f"\"{KEPT}\" is the same reference run with glibc told never to give freed memory back "
          f"({' '.join(f'{k}={v}' for k, v in KEEP_MEMORY.items())})\n")
    print(f"| size | pipeline | median ms | page faults / call | speed vs reference: median of sets "
          f"(quartiles; min–max) | speed vs {KEPT} |")
    print("|---|---|---:|---:|---:|---:|")
    for size, _, _, sets in results:
        for name, d in sets.items():
            vs = [spread(set_ratios(sets, ref, name)) if ref != name else "—" for ref in ("torch reference", KEPT)]
            print(f"| {size} | {name} | {statistics.median(d['ms']):.1f} | "
                  f"{statistics.median(d['faults']):.0f} | {vs[0]} | {vs[1]} |")


def main():
    a = parse_args()
    if a.worker:
        run_as_worker(a)
        return
    import onnxruntime as ort
    import open_clip
    from clipxai.models.backbones import resolve_backbone

    given_cache = a.cache_dir
    a.cache_dir = a.cache_dir or tempfile.mkdtemp(prefix="clipxai-bench-cache-")
    gpu = any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    # fp32 always: the reference row takes its text embeddings from the fp32 bundle.
    precisions = ["fp32"] + [p for p in dict.fromkeys(a.precisions) if p != "fp32" and (p != "fp16" or gpu)]
    a.openvino = openvino_rows(a.openvino)
    choice = resolve_backbone(a.backbone)
    cfg = open_clip.get_model_config(choice.spec.open_clip_name)
    vcfg = cfg["vision_cfg"]
    n_classes = len(CLASSES.split(","))
    print(f"measuring the fp32 ceiling (onnxruntime MatMul 2048^3, {a.threads} threads) ...", file=sys.stderr)
    ceilings = [run_worker("ceiling", a, "-", 0)["gflops"]]
    bundle_dir = Path(a.bundle_dir or tempfile.mkdtemp(prefix="clipxai-bench-"))
    try:
        results = []
        for size in a.sizes:
            heads = vcfg["width"] // vcfg.get("head_width", 64)
            gflop = surgery_vit_gflop(vcfg["width"], vcfg["layers"], heads, vcfg["patch_size"], size, cfg["embed_dim"],
                                      n_classes, choice.spec.surgery_blocks, vcfg.get("mlp_ratio", 4.0))
            results.append(measure_size(a, size, precisions, bundle_dir, gflop))
        ceilings.append(run_worker("ceiling", a, "-", 0)["gflops"])  # again at the end: the machine may drift
    finally:  # what this run created in the temp folder (graph caches ~2x, bundles ~1x the model each)
        for made, given in ((a.cache_dir, given_cache), (bundle_dir, a.bundle_dir)):
            if not given:
                shutil.rmtree(made, ignore_errors=True)
    ceiling = max(ceilings)
    print(f"\n{a.backbone} ({a.pretrained} weights), {n_classes} classes, 640x427 input, {a.threads} threads, "
          f"median of {a.runs} runs per worker, median over {a.rounds} rounds")
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}; onnxruntime {ort.__version__}")
    print(f"fp32 ceiling (onnxruntime MatMul 2048x2048x2048, constant B, own process): {ceiling:.1f} GFLOP/s "
          f"(the higher of {ceilings[0]:.1f} before and {ceilings[1]:.1f} after the runs)")
    if "fp16" in a.precisions and not gpu:
        print("fp16: no GPU provider on this machine, so no fp16 row (its fidelity is measured on the CPU at export)")
    print_speed_table(results, ceiling, a.batch)
    print_memory_table(results, a.batch)
    if a.pairs:
        print_paired_table(results, a.pairs)


if __name__ == "__main__":
    main()
