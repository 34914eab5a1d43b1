#!/usr/bin/env python
"""OpenVINO's own int8 (NNCF post-training quantization) against onnxruntime int8, OpenVINO bf16 and
onnxruntime fp32 on one bundle's image graph, at the int8 gate (issue 34, part 2).

NNCF quantizes the fp32 bundle's ``model.onnx`` (read and unshared as the OpenVINO backend does) with
``--calibration`` of the exporter's synthetic scenes (clipxai/export/fidelity.py, seed 0), model type
transformer. Variants:

- ``nncf int8``: every layer NNCF picks;
- ``nncf int8, fp32 kept``: the layers the onnxruntime int8 bundle's accuracy-aware selection kept in fp32
  (its manifest's ``fidelity.conversion.sensitive_fp32``) left out of quantization (NNCF's ignored scope) - the issue's "keeping
  the sensitive layers in higher precision";
- ``nncf int8 weight MatMuls, fp32 kept``: as the last, and the MatMuls of two computed tensors (attention,
  the surgery path) left in float, as onnxruntime's int8 does;
- each also compiled with ``INFERENCE_PRECISION_HINT=bf16`` (the unquantized rest in bf16: "mixed").

Fidelity: every candidate against onnxruntime fp32 on --images synthetic scenes of another seed (1), with
the exporter's comparison (heatmap correlation, segmentation pixel agreement) and the int8 gate.
Speed: graph only (onnxruntime as the runtime opens it: graph cache, attention fused), batch 1, each
pipeline in its own process, alternated rounds (scripts/harness.py).

    .venv/bin/python scripts/benchmark_openvino_int8.py --bundle B_fp32 --int8-bundle B_int8 --threads 2

A maintainer tool: it needs ``nncf`` (not a clipxai dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import alternate, median_ms, median_rows, peak_rss_mb, ratio_text, ratios, run_json

# NNCF rows: name -> variant ("all": every layer; "kept": the int8 bundle's sensitive layers ignored;
# "weights": those and the MatMuls of two computed tensors ignored); "+ bf16": the rest compiled bf16.
NNCF_ROWS = [("nncf int8", "all"), ("nncf int8 + bf16", "all"),
             ("nncf int8, fp32 kept", "kept"), ("nncf int8, fp32 kept + bf16", "kept"),
             ("nncf int8 weight MatMuls, fp32 kept", "weights"),
             ("nncf int8 weight MatMuls, fp32 kept + bf16", "weights")]


def scenes(bundle, n: int, seed: int):
    """Preprocessed synthetic scenes float32 [n, 3, S, S] for ``bundle`` (a runtime Bundle)."""
    from clipxai.export.fidelity import preprocess_images, synthetic_scenes
    return preprocess_images(synthetic_scenes(n, bundle.image_size, seed), bundle.mean, bundle.std)


def activation_matmuls(model) -> list[str]:
    """MatMuls of two computed tensors (attention's q kᵀ and A v, the surgery path's): no weight to quantize."""
    def constant(port):
        node = port.get_source_output().get_node()
        while node.get_type_name() == "Convert":
            node = node.input(0).get_source_output().get_node()
        return node.get_type_name() == "Constant"
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"
            and not any(constant(op.input(i)) for i in range(2))]


def quantize(bundle, out: Path, n_calibration: int, ignored: list[str], weights_only: bool = False) -> Path:
    """NNCF int8 of the bundle's image graph, saved as OpenVINO IR at ``out`` (.xml). ``weights_only``: the
    activation-by-activation MatMuls stay in float too (onnxruntime's int8 quantizes weight MatMuls only)."""
    import nncf
    import openvino as ov

    from clipxai.runtime.backends.openvino import unshare_constants
    model = ov.Core().read_model(str(bundle.path / "model.onnx"))
    unshare_constants(model)
    x = scenes(bundle, n_calibration, seed=0)
    ignored = [*ignored, *(activation_matmuls(model) if weights_only else [])]
    names = {n.get_friendly_name() for n in model.get_ops()}
    scope = nncf.IgnoredScope(names=[n for n in ignored if n in names]) if ignored else None
    t = time.perf_counter()
    q = nncf.quantize(model, nncf.Dataset([x[i:i + 1] for i in range(len(x))]), subset_size=len(x),
                      model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED,
                      **({"ignored_scope": scope} if scope else {}))
    print(f"{out.name}: quantized in {time.perf_counter() - t:.0f} s ({len(scope.names) if scope else 0} "
          f"layers ignored of {len(ignored)} asked)", file=sys.stderr)
    ov.save_model(q, str(out))
    return out


def compiled(path: Path, precision: str, threads: int):
    import openvino as ov

    from clipxai.runtime.backends.openvino import unshare_constants
    core = ov.Core()
    model = core.read_model(str(path))
    if path.suffix == ".onnx":
        unshare_constants(model)
    config = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision], "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": threads}
    return core.compile_model(model, "CPU", config)


def session(kind: str, path: Path, precision: str, threads: int, cache_dir: str | None = None):
    """A ``run(x) -> {output name: array}`` callable for one pipeline: "ort" opens a bundle's image graph as
    the runtime does (the CPU graph cache, attention fused, filled first), "ov" compiles ``path``."""
    if kind == "ort":
        from clipxai.contract import MODEL_FILE
        from clipxai.runtime import RuntimeOptions
        from clipxai.runtime.backends import open_graph
        from clipxai.runtime.bundle import load_bundle
        opts = RuntimeOptions(providers="cpu", threads=threads, graph_cache="sync" if cache_dir else False,
                              cache_dir=cache_dir)
        s = open_graph(load_bundle(path.parent), MODEL_FILE, opts)
        names = [o.name for o in s.get_outputs()]
        return lambda x: dict(zip(names, s.run(None, {"image": x})))
    c = compiled(path, precision, threads)
    req = c.create_infer_request()

    def run(x):
        result = req.infer({"image": x})
        return {o.get_any_name(): result[o] for o in c.outputs}
    return run


def worker(a) -> None:
    from clipxai.runtime.bundle import load_bundle
    b = load_bundle(a.bundle)
    run = session(a.kind, Path(a.graph), a.precision, a.threads, a.cache_dir)
    x = scenes(b, 1, seed=2)
    print(json.dumps({"ms": median_ms(lambda: run(x), a.runs, warmup=2), "peak_rss_mb": peak_rss_mb()}))


def outputs(run, x) -> list:
    """[similarity, scores, heatmaps] of ``run`` on x [n, 3, S, S], one image at a time."""
    import numpy as np

    from clipxai.contract import OUTPUT_HEATMAPS, OUTPUT_SCORES, OUTPUT_SIMILARITY
    per = [run(x[i:i + 1]) for i in range(len(x))]
    return [np.concatenate([p[k] for p in per]) for k in (OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--kind"), ap.add_argument("--graph"), ap.add_argument("--precision", default="fp32")
    ap.add_argument("--bundle", required=True, help="the fp32 bundle")
    ap.add_argument("--int8-bundle", required=True, help="the same weights exported --precision int8")
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    ap.add_argument("--calibration", type=int, default=16)
    ap.add_argument("--only", nargs="*", help="these NNCF/OpenVINO rows only (and the onnxruntime ones)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    from clipxai.runtime.bundle import load_bundle
    b = load_bundle(a.bundle)
    conversion = json.loads((Path(a.int8_bundle) / "manifest.json").read_text())["fidelity"]["conversion"]
    kept = list(conversion.get("sensitive_fp32", []))
    unknown = set(a.only or ()) - {name for name, _ in NNCF_ROWS} - {"OpenVINO bf16"}
    if unknown:
        sys.exit(f"--only: no such row {sorted(unknown)}; rows: OpenVINO bf16, {', '.join(n for n, _ in NNCF_ROWS)}")
    work = Path(tempfile.mkdtemp(prefix="clipxai-nncf-"))
    try:
        rounds, fid, pipelines = measure(a, b, kept, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(a, b, kept, rounds, fid, pipelines)


def measure(a, b, kept: list[str], work: Path):
    """Quantize the variants asked for, measure their fidelity here and their speed in worker processes."""
    wanted = [(name, variant) for name, variant in NNCF_ROWS if not a.only or name in a.only]
    graphs = {variant: quantize(b, work / f"{variant}.xml", a.calibration, kept if variant != "all" else [],
                                weights_only=variant == "weights") for variant in dict.fromkeys(v for _, v in wanted)}
    pipelines = {"onnxruntime fp32": ("ort", b.path / "model.onnx", "fp32"),
                 "onnxruntime int8": ("ort", Path(a.int8_bundle) / "model.onnx", "fp32")}
    if not a.only or "OpenVINO bf16" in a.only:
        pipelines["OpenVINO bf16"] = ("ov", b.path / "model.onnx", "bf16")
    for name, variant in wanted:
        pipelines[name] = ("ov", graphs[variant], "bf16" if name.endswith("+ bf16") else "fp32")
    for k, p, prec in pipelines.values():  # fill the CPU graph cache before anything is timed
        if k == "ort":
            session(k, p, prec, a.threads, str(work / "cache"))
    x = scenes(b, a.images, seed=1)
    from clipxai.export.fidelity import compare_outputs
    ref = outputs(session("ort", b.path / "model.onnx", "fp32", a.threads), x)  # once, for every candidate
    fid = {name: compare_outputs(ref, outputs(session(k, p, prec, a.threads), x), x.shape[-1])
           for name, (k, p, prec) in pipelines.items() if name != "onnxruntime fp32"}

    def cmd(k, p, prec):
        return [sys.executable, __file__, "--worker", "--bundle", a.bundle, "--int8-bundle", a.int8_bundle,
                "--kind", k, "--graph", str(p), "--precision", prec, "--threads", str(a.threads), "--runs", str(a.runs),
                "--cache-dir", str(work / "cache")]
    rounds = alternate({n: (lambda c=cmd(*v), n=n: run_json(c, n)) for n, v in pipelines.items()}, a.rounds,
                       b.path.name)
    return rounds, fid, pipelines


def print_table(a, b, kept, rounds, fid, pipelines) -> None:
    from clipxai.export.fidelity import GATES, gate_failures
    rows = median_rows(rounds)
    gate = GATES["int8"]
    print(f"\n{b.path.name} ({b.image_size}): batch 1, {a.threads} threads, {a.rounds} rounds x median of {a.runs}; "
          f"fidelity on {a.images} synthetic scenes (seed 1) against onnxruntime fp32; NNCF calibrated on "
          f"{a.calibration} (seed 0); {len(kept)} layers kept fp32 by the int8 bundle's selection")
    print("| pipeline | ms | × onnxruntime fp32 | × onnxruntime int8 | correlation (min) | pixel agreement | "
          "top-1 | int8 gate | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for name in pipelines:
        f = fid.get(name)
        figs = (f"{f['correlation']:.4f} ({f['correlation_min']:.4f}) | {100 * f['pixel_agreement']:.1f} % | "
                f"{100 * f['top1_agreement']:.0f} % | {'; '.join(gate_failures(f, gate)) or 'passed'}"
                if f else "— | — | — | —")
        print(f"| {name} | {rows[name]['ms']:.1f} | {ratio_text(ratios(rounds, 'onnxruntime fp32', name, 'ms'))} | "
              f"{ratio_text(ratios(rounds, 'onnxruntime int8', name, 'ms'))} | {figs} | {rows[name]['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
