"""Full-size ViT-B/16 with random weights: export plus parity (marked slow; CI runs it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipxai.models import reference as ref
from helpers import random_images, read_manifest, run_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vitb16_bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.models.backbones import resolve_backbone
    from clipxai.models.loading import load_clip
    out = tmp_path_factory.mktemp("vitb16") / "bundle"
    res = export_bundle(ExportConfig(output=out, classes=["person", "bench", "ground", "building", "sky"],
                                     backbone="ViT-B/16", pretrained="random", image_size=224))
    model = load_clip(resolve_backbone("ViT-B/16"), "random").model  # same seed, same weights
    return res, model


def test_vitb16_export_parity_with_reference(vitb16_bundle):
    res, model = vitb16_bundle
    m = read_manifest(res.path)
    assert m["grid_size"] == 14 and m["backbone"]["activation"] == "quick_gelu"
    assert res.verification["heatmaps"] <= 1e-4
    x = random_images(2, 224, seed=11)
    got = run_bundle(res.path, x)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    text = torch.from_numpy(np.load(res.path / "text_embeddings.npy"))
    with torch.no_grad():
        want = ref.pipeline(sd, torch.from_numpy(x), text, "classes", heads=12, surgery_blocks=6, quick_gelu=True)
    for name, g, w in zip(["similarity", "scores", "heatmaps"], got, want):
        err = np.abs(g - w.numpy()).max()
        assert err <= 1e-4, (name, err)


@pytest.mark.parametrize("size", [224, 448])
def test_vitb16_runtime_end_to_end_parity(vitb16_bundle, tmp_path_factory, size):
    """Runtime on a non-square photo vs torch: preprocess, surgery, feature surgery, heatmap at 640x427."""
    from pathlib import Path
    from PIL import Image
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.runtime import Predictor
    res, model = vitb16_bundle
    path = res.path
    if size != 224:
        path = export_bundle(ExportConfig(output=tmp_path_factory.mktemp("v448") / "b", classes=["sky", "rocket"],
                                          backbone="ViT-B/16", pretrained="random", image_size=size)).path
    rocket = Path(__file__).parent.parent / "examples" / "rocket.jpg"
    pil = Image.open(rocket).convert("RGB")
    pred = Predictor.from_bundle(path, providers="cpu").predict(rocket)
    m = read_manifest(path)
    x = ref.clip_preprocess(pil, size, m["preprocess"]["mean"], m["preprocess"]["std"])[None]
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    text = torch.from_numpy(np.load(path / "text_embeddings.npy"))
    with torch.no_grad():
        feats = torch.nn.functional.normalize(ref.surgery_tokens(sd, x, 12, 6, True), dim=-1)
        sim = ref.feature_surgery(feats, text, "classes")[:, 1:]
        scores = (100.0 * feats[:, 0] @ text.t()).softmax(-1)
        maps = ref.heatmaps(sim, (427, 640))
    assert np.abs(pred.similarity - sim[0].numpy()).max() <= 1e-4
    assert np.abs(pred.scores - scores[0].numpy()).max() <= 1e-4
    assert np.abs(pred.heatmaps - maps[0].numpy()).max() <= 1e-4


@pytest.mark.parametrize("seed, classes", [(1, ["person", "car", "tree", "road", "sky"]),
                                           (2, ["dog", "cat", "grass", "sofa", "wall"]),
                                           (3, ["boat", "water", "bird", "cloud", "rock"])])
def test_vitb16_int8_at_448_passes_its_gate_on_other_weights(tmp_path, seed, classes):
    """Seed 2 failed the gate with every weight MatMul in int8 (pixel agreement 94.8 %); the
    accuracy-aware selection must pass without --force on all three and name what stayed fp32."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=classes, backbone="ViT-B/16",
                                     pretrained=f"random:{seed}", image_size=448, precision="int8", verify=False))
    f = res.manifest["fidelity"]
    assert f["passed"] and f["pixel_agreement"] >= 0.95 and f["correlation"] >= 0.98, f
    conv = f["conversion"]
    assert isinstance(conv["sensitive_fp32"], list) and conv["int8_flop_share"] >= 0.9, conv["sensitive_fp32"]


def test_vitb16_on_openvino_equals_onnxruntime_and_bf16_passes_its_gate(vitb16_bundle, tmp_path):
    """Full size: OpenVINO fp32 gives onnxruntime's outputs within 1e-4; bf16 (where the CPU has it) passes
    the int8 gate on other images than the export's, as the export's own measurement said."""
    from clipxai.contract import MODEL_FILE, OUTPUT_HEATMAPS, OUTPUT_SCORES, OUTPUT_SIMILARITY
    from clipxai.export.fidelity import GATES, compare_outputs, gate_failures, preprocess_images, synthetic_scenes
    from clipxai.runtime import RuntimeOptions
    from clipxai.runtime.backends import OpenVINOOptions, open_graph
    from clipxai.runtime.backends.openvino import native_bf16
    from clipxai.runtime.bundle import load_bundle
    res, _ = vitb16_bundle
    b = load_bundle(res.path)
    x = preprocess_images(synthetic_scenes(4, 224, seed=1), b.mean, b.std)  # not the export's scenes (seed 0)
    names = [OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS]

    def outputs(providers="openvino", precision="fp32"):
        opts = RuntimeOptions(providers=providers, graph_cache=False, cache_dir=str(tmp_path),
                              openvino=OpenVINOOptions(precision=precision))
        return open_graph(b, MODEL_FILE, opts).run(names, {"image": x})
    want = outputs("cpu")
    for name, w, g in zip(names, want, outputs()):
        assert np.abs(g - w).max() <= 1e-4, (name, np.abs(g - w).max())
    if not native_bf16():
        assert b.manifest.bf16_fidelity is None
        return
    assert b.manifest.bf16_fidelity["passed"]
    report = compare_outputs(want, outputs(precision="bf16"), 224)
    assert not gate_failures(report, GATES["bf16"]), report
