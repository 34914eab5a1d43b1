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

    def row(total1, total4, rss):
        return {"total_ms_b1": total1, "total_ms_b4": total4, "peak_rss_mb": rss, "provider": "x"}

    # Round 2 is a slow spell for both sides: the ratio within each round stays 2.
    rounds = [{"torch reference": row(200, 800, 10), "clipxai fp32": row(100, 400, 5)},
              {"torch reference": row(600, 2400, 30), "clipxai fp32": row(300, 1200, 7)},
              {"torch reference": row(220, 880, 20), "clipxai fp32": row(110, 440, 6)}]
    rows = bench.combine_rounds(rounds)
    fp32 = rows["clipxai fp32"]
    assert fp32["total_ms_b1"] == 110 and fp32["peak_rss_mb"] == 6 and fp32["provider"] == "x"
    assert fp32["ratio_b1"] == (2.0, 2.0, 2.0) and fp32["ratio_b4"] == (2.0, 2.0, 2.0)
    assert rows["torch reference"]["ratio_b1"] == (1.0, 1.0, 1.0)


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
    print(f"{{(time.perf_counter() - t0) * 1e3:.3f}}", flush=True)
"""


def test_paired_mode_takes_ratios_within_each_set(monkeypatch):
    """Paired mode: long-lived workers answer one prediction per request; the ratio is the reference's time
    over each pipeline's, set by set (fake workers that sleep 60 and 20 ms: ratio ~3)."""
    import sys
    bench = _benchmark_module()
    delays = {"torch": 0.06, "runtime": 0.02}
    monkeypatch.setattr(bench, "worker_command",
                        lambda kind, a, bundle, size, extra=(): [sys.executable, "-c", FAKE_WORKER.format(delay=delays[kind])])
    monkeypatch.setattr(bench, "worker_env", lambda a: None)
    out = bench.paired(None, {"torch reference": ("torch", "-", 0), "clipxai fp32": ("runtime", "-", 0)}, 4, gap_s=0)
    ref_ms, ref_ratios = out["torch reference"]
    ms, ratios = out["clipxai fp32"]
    assert len(ratios) == 4 and ref_ratios == [1.0] * 4
    assert 55 < ref_ms < 120 and 18 < ms < 60
    assert all(1.5 < r < 3.5 for r in ratios)

    delays["runtime"] = -1  # a worker that dies before it is ready: a clear exit, no hang
    with pytest.raises(SystemExit, match="clipxai fp32 worker stopped"):
        bench.paired(None, {"torch reference": ("torch", "-", 0), "clipxai fp32": ("runtime", "-", 0)}, 2, gap_s=0)
