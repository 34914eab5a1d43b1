"""The benchmark's analytic FLOP count equals the FLOPs of the exported graph's MatMuls and Conv."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

from clipxai.export.pipeline import ExportConfig, export_bundle
from tiny import TINY, TINY_CFG, TINY_HEADS, TINY_SURGERY_BLOCKS

ROOT = Path(__file__).resolve().parent.parent


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("clipxai_benchmark", ROOT / "scripts" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def graph_gflop(path: Path) -> float:
    """Sum of 2·(output elements)·(reduction length) over MatMul and Conv nodes, at batch 1."""
    m = onnx.load(str(path))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    total = 0
    for n in m.graph.node:
        if n.op_type == "MatMul":
            total += 2 * int(np.prod(shapes[n.output[0]])) * shapes[n.input[0]][-1]
        elif n.op_type == "Conv":
            total += 2 * int(np.prod(shapes[n.output[0]])) * int(np.prod(shapes[n.input[1]][1:]))
    return total / 1e9


@pytest.mark.parametrize("size", [32, 64])
def test_analytic_flops_match_the_graph(tmp_path, size):
    classes = ["a", "b", "c"]
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=classes, backbone=TINY.name,
                                     pretrained="random", image_size=size))
    v = TINY_CFG["vision_cfg"]
    want = _benchmark_module().surgery_vit_gflop(v["width"], v["layers"], TINY_HEADS, v["patch_size"], size,
                                                 TINY_CFG["embed_dim"], len(classes), TINY_SURGERY_BLOCKS)
    got = graph_gflop(res.path / "model.onnx")
    assert got == pytest.approx(want, rel=1e-4), (got, want)


def test_rounds_are_combined_by_median_and_ratios_are_taken_within_a_round():
    bench = _benchmark_module()

    def row(total1, total8, rss):
        return {"total_ms_b1": total1, "total_ms_b8": total8, "peak_rss_mb": rss, "provider": "x"}

    # Round 2 is a slow spell for both sides: the ratio within each round stays 2.
    rounds = [{"torch reference": row(200, 800, 10), "clipxai fp32": row(100, 400, 5)},
              {"torch reference": row(600, 2400, 30), "clipxai fp32": row(300, 1200, 7)},
              {"torch reference": row(220, 880, 20), "clipxai fp32": row(110, 440, 6)}]
    rows = bench.combine_rounds(rounds, (1, 8))
    fp32 = rows["clipxai fp32"]
    assert fp32["total_ms_b1"] == 110 and fp32["peak_rss_mb"] == 6 and fp32["provider"] == "x"
    assert fp32["ratio_b1"] == [2.0, 2.0, 2.0] and fp32["ratio_b8"] == [2.0, 2.0, 2.0]  # one per round
    assert rows["torch reference"]["ratio_b1"] == [1.0, 1.0, 1.0]
    assert bench.ratio_text(fp32["ratio_b1"]) == "**2.00×** (2.00–2.00)"


FAKE_WORKER = """
import sys, time
print("some other output")
delay = {delay}
if delay < 0:
    sys.exit(3)
print("ready", flush=True)
for _ in sys.stdin:
    t0 = time.perf_counter()
    time.sleep(delay)
    print("noise line", flush=True)
    print(f"{{(time.perf_counter() - t0) * 1e3:.3f}} {{int(delay * 1000)}}", flush=True)
"""


def test_paired_mode_takes_ratios_within_each_set(monkeypatch):
    """Paired mode: long-lived workers answer one prediction per request; the ratio is the reference's time
    over each pipeline's, set by set (fake workers that sleep 60 and 20 ms: ratio ~3). Each worker gets
    its own extra environment (the memory-kept reference)."""
    import sys
    bench = _benchmark_module()
    delays = {"torch": 0.06, "runtime": 0.02}
    envs = []
    monkeypatch.setattr(bench, "worker_command",
                        lambda kind, a, bundle, size, extra=(): [sys.executable, "-c", FAKE_WORKER.format(delay=delays[kind])])
    monkeypatch.setattr(bench, "worker_env", lambda a, extra=None: envs.append(extra))
    workers = {"torch reference": ("torch", "-", 0, None, []), "clipxai fp32": ("runtime", "-", 0, {"X": "1"}, [])}
    sets = bench.paired(None, workers, 4, gap_s=0)
    assert envs == [None, {"X": "1"}]
    assert sets["torch reference"]["faults"] == [60] * 4 and sets["clipxai fp32"]["faults"] == [20] * 4
    ref_ms, ms = sets["torch reference"]["ms"], sets["clipxai fp32"]["ms"]
    assert len(ms) == 4 and all(55 < t < 120 for t in ref_ms) and all(18 < t < 60 for t in ms)
    ratios = bench.set_ratios(sets, "torch reference", "clipxai fp32")
    assert ratios == [r / x for r, x in zip(ref_ms, ms)] and all(1.5 < r < 3.5 for r in ratios)
    assert bench.spread([1.0, 2.0, 3.0, 4.0, 5.0]).startswith("**3.00×** (") and "1.00–5.00" in bench.spread([1.0, 5.0])

    delays["runtime"] = -1  # a worker that dies before it is ready: a clear exit, no hang
    with pytest.raises(SystemExit, match="clipxai fp32 worker stopped"):
        bench.paired(None, workers, 2, gap_s=0)


def test_page_faults_per_call_tell_fresh_buffers_from_reused_ones():
    """The benchmark's fault count: a call that maps, fills and unmaps a 32 MB buffer (as glibc does
    for large blocks) faults its pages in every time; one that refills a kept buffer does not."""
    import mmap
    bench = _benchmark_module()
    size = 32 << 20
    ones = b"\1" * size
    kept = memoryview(bytearray(size))  # slice assignment into a memoryview writes in place

    def fresh():
        with mmap.mmap(-1, size) as m:
            m.write(ones)

    def reuse():
        kept[:] = ones

    reuse()
    _, fresh_faults = bench.timed_with_faults(fresh, 3)
    _, reused_faults = bench.timed_with_faults(reuse, 3)
    assert fresh_faults > 4000 and reused_faults < 100, (fresh_faults, reused_faults)  # 8192 4-KB pages
    assert bench.KEEP_MEMORY["MALLOC_TRIM_THRESHOLD_"] and bench.KEEP_MEMORY["MALLOC_MMAP_THRESHOLD_"]


def test_first_ever_load_reports_its_cache_builders_peak_memory(tmp_path):
    """The benchmark's first-ever load (empty graph cache) waits for the builder it started and
    reports that process's peak RSS, which is not in the app's own peak."""
    import argparse
    import json
    import subprocess
    bench = _benchmark_module()
    bundle = export_bundle(ExportConfig(output=tmp_path / "b", classes=["a", "b"], backbone=TINY.name,
                                        pretrained="random", image_size=48)).path
    a = argparse.Namespace(runs=1, threads=1, backbone=TINY.name, pretrained="random", providers="cpu",
                           cache_dir=str(tmp_path / "cache"), batch=8)
    env = dict(bench.worker_env(a), CLIPXAI_GRAPH_CACHE="background")
    r = subprocess.run(bench.worker_command("runtime", a, bundle, 48, ["--cold-only"]), capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert 30 < out["builder_rss_mb"] < 2000 and 30 < out["peak_rss_mb"] < 2000
    assert len([p for p in (tmp_path / "cache" / "graphs").iterdir() if not p.name.startswith(".")]) == 1


def test_openvino_rows_run_the_fp32_bundle_and_bf16_only_where_the_cpu_has_it(monkeypatch):
    """The OpenVINO rows use the fp32 bundle with --ov-precision; by default bf16 is measured only on a CPU
    with native bf16 (elsewhere OpenVINO would time fp32 under a bf16 label), and asked for there it is
    refused."""
    import argparse

    from clipxai.runtime.backends import openvino as ovb
    bench = _benchmark_module()
    a = argparse.Namespace(openvino=["fp32", "bf16"])
    rows = bench.runtime_rows(a, ["fp32", "int8"], {"fp32": "B32", "int8": "B8"})
    assert rows == {"clipxai fp32": ("B32", []), "clipxai int8": ("B8", []),
                    "OpenVINO fp32": ("B32", ["--ov-precision", "fp32"]),
                    "OpenVINO bf16": ("B32", ["--ov-precision", "bf16"])}
    monkeypatch.setattr(ovb, "native_bf16", lambda: False)
    assert bench.openvino_rows(None) == ["fp32"] and bench.openvino_rows([]) == []
    with pytest.raises(SystemExit, match="no native bf16"):
        bench.openvino_rows(["bf16"])
    monkeypatch.setattr(ovb, "native_bf16", lambda: True)
    assert bench.openvino_rows(None) == ["fp32", "bf16"]
