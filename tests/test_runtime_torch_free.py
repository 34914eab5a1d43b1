"""The runtime imports and runs with torch unimportable, on its declared dependencies only."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tiny import TINY

ROOT = Path(__file__).parent.parent
# The base dependencies of pyproject.toml and theirs: all the runtime may import.
ALLOWED = {"numpy", "onnxruntime", "PIL", "click", "threadpoolctl", "ftfy", "wcwidth", "regex", "platformdirs",
           "filelock", "coloredlogs", "humanfriendly", "flatbuffers", "packaging", "google", "sympy", "mpmath",
           "ml_dtypes"}
ROCKET = ROOT / "examples" / "rocket.jpg"

SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys
    AT_START = {m.split(".")[0] for m in sys.modules}  # the interpreter's and site's own (.pth files)
    BLOCKED = {"torch", "torchvision", "open_clip", "onnx", "onnx_graphsurgeon", "timm"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    from clipxai.runtime import Predictor
    from clipxai.cli.segment import main
    # the NVIDIA kit's modules import, and the trtexec mapping reads the graph, without torch or onnx
    from clipxai.runtime import backends, latency, onnx_wire  # noqa: F401
    from clipxai.runtime.nvidia import engine_cache, gpu_info, iobinding, tensorrt_backend, trt_args  # noqa: F401
    from clipxai.runtime.bundle import load_bundle
    b = load_bundle(sys.argv[1])
    assert trt_args.plan_from_manifest(b.manifest, b.model_path, precision="fp16").fp32_layers
    p = Predictor.from_bundle(sys.argv[1], providers="cpu")
    assert latency.time_batch(p, [sys.argv[2]])["compute_ms"] > 0
    pred = p.predict(sys.argv[2])
    seg = pred.segmentation
    coords, labels = pred.points(0)
    import clipxai.runtime.sliding, clipxai.eval.segmentation  # noqa: F401
    p.set_segmentation(logit_scale=40.0, prob_threshold=0.3, background_classes=["sky"])
    slid = p.predict_slide(sys.argv[2], 16, 40)
    assert slid.segmentation.shape == seg.shape and slid.heatmaps.shape == pred.heatmaps.shape
    try:
        main([sys.argv[1], sys.argv[2], "--out", sys.argv[3]], standalone_mode=False)
    except SystemExit as e:
        assert not e.code, e.code
    tops = {m.split(".")[0] for m in sys.modules if not m.startswith("__editable__")} - AT_START
    third = sorted(tops - set(sys.stdlib_module_names) - {"clipxai", "__main__", "_distutils_hack"})
    ours = sorted(m for m in sys.modules if m.startswith(("clipxai.export", "clipxai.models")))
    print(json.dumps({"heatmaps": list(pred.heatmaps.shape), "seg": list(seg.shape),
                      "third_party": third, "torch_loaded": "torch" in sys.modules, "torch_side": ours}))
""")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    out = tmp_path_factory.mktemp("tf") / "b"
    return export_bundle(ExportConfig(output=out, classes=["sky", "rocket"], backbone=TINY.name,
                                      pretrained="random", image_size=32)).path


def test_runtime_runs_with_torch_blocked(bundle, tmp_path):
    import os
    env = dict(os.environ, CLIPXAI_CACHE_DIR=str(tmp_path / "graph-cache"))  # its own: built here, without onnx
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), str(ROCKET), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["heatmaps"] == [2, 427, 640] and info["seg"] == [427, 640]
    assert not info["torch_loaded"] and info["torch_side"] == []  # never clipxai.export or clipxai.models
    assert set(info["third_party"]) <= ALLOWED, set(info["third_party"]) - ALLOWED
    # Without onnx (an optional extra) the CPU graph cache is still built, without attention fusion.
    from clipxai.runtime.bundle import load_bundle
    from clipxai.runtime.cpu import graph_cache as gc
    entry = gc.lookup(tmp_path / "graph-cache", gc.cache_key(load_bundle(bundle).graph_files()))
    assert entry is not None and json.loads((entry.parent / gc.DONE_FILE).read_text())["attention_fused"] == 0
    assert (tmp_path / "out" / "rocket_segmentation.png").exists()


TEXT_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys
    AT_START = {m.split(".")[0] for m in sys.modules}  # the interpreter's and site's own (.pth files)
    BLOCKED = {"torch", "torchvision", "open_clip", "onnx", "onnx_graphsurgeon", "timm"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    from clipxai.runtime import Predictor
    from clipxai.cli.segment import main
    from clipxai.runtime.text.tokenizer import tokenize
    ids = tokenize(["a photo of a red mug."], vocab_path=sys.argv[1] + "/bpe_simple_vocab_16e6.txt.gz")
    p = Predictor.from_bundle(sys.argv[1], providers="cpu")
    p.set_classes(["red mug", "table"], cache=sys.argv[4])
    pred = p.predict(sys.argv[2])
    try:
        main([sys.argv[1], sys.argv[2], "--out", sys.argv[3], "--classes", "cup,chair", "--cache-dir", sys.argv[4]],
             standalone_mode=False)
    except SystemExit as e:
        assert not e.code, e.code
    words = p.explain_text(sys.argv[2], "a red mug on a table").words()
    from clipxai.cli.explain import main as explain
    import clipxai.eval.faithfulness, clipxai.eval.explanations  # noqa: F401
    try:
        explain([sys.argv[1], sys.argv[2], "--text", "a red mug", "--out", sys.argv[3] + "/x"], standalone_mode=False)
    except SystemExit as e:
        assert not e.code, e.code
    tops = {m.split(".")[0] for m in sys.modules if not m.startswith("__editable__")} - AT_START
    third = sorted(tops - set(sys.stdlib_module_names) - {"clipxai", "__main__", "_distutils_hack"})
    print(json.dumps({"ids": ids[0, :8].tolist(), "classes": pred.classes, "maps": list(pred.heatmaps_grid.shape),
                      "third_party": third, "torch_loaded": "torch" in sys.modules, "words": [w for w, _ in words]}))
""")


def test_tokenizer_set_classes_and_explain_run_with_torch_blocked(tmp_path_factory, tmp_path):
    import open_clip
    from clipxai.export.pipeline import ExportConfig, export_bundle
    bundle = export_bundle(ExportConfig(output=tmp_path_factory.mktemp("tft") / "b", classes=["sky", "rocket"],
                                        backbone=TINY.name, pretrained="random", image_size=32,
                                        text_encoder=True, text_explainer=True)).path
    r = subprocess.run([sys.executable, "-c", TEXT_SCRIPT, str(bundle), str(ROCKET), str(tmp_path / "out"),
                        str(tmp_path / "cache")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["ids"] == open_clip.get_tokenizer(TINY.open_clip_name)("a photo of a red mug.")[0, :8].tolist()
    assert info["classes"] == ["red mug", "table"] and info["maps"] == [2, 4, 4]
    assert info["words"] == ["a", "red", "mug", "on", "a", "table"]
    assert (tmp_path / "out" / "x" / "rocket_words.png").exists()
    assert not info["torch_loaded"]
    assert set(info["third_party"]) <= ALLOWED, set(info["third_party"]) - ALLOWED
    rec = json.loads((tmp_path / "out" / "rocket.json").read_text())
    assert set(rec["scores"]) == {"cup", "chair"}
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 4


def test_base_dependencies_are_declared():
    import tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in deps}
    assert names == {"numpy", "onnxruntime", "pillow", "click", "threadpoolctl", "ftfy", "regex", "platformdirs",
                     "filelock"}
