"""grad-eclip: closed-form gradient vs torch.autograd, ONNX parity, bundle, runtime, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from clipxai.errors import ClipxaiError
from clipxai.export.graph import BakedVocabulary, GradEclipOnnxModel
from clipxai.export.onnx_export import export_onnx
from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.models.backbones import resolve_backbone
from clipxai.models.grad_eclip import GradEclipViT
from clipxai.models.loading import load_clip

from clipxai.models import reference as ref
from helpers import random_images, read_manifest, run_bundle
from tiny import TINY, TINY_HEADS

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"
CLASSES = ["rocket", "sky", "smoke"]
TOL = 1e-4


def _sd(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


def _text(k=3, d=32, seed=2):
    return F.normalize(torch.randn(k, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def tiny_gelu():
    return load_clip(resolve_backbone(TINY.open_clip_name), "random")


@pytest.mark.parametrize("size", [32, 48])  # 48: positional embeddings resized bicubically 4x4 -> 6x6
@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_closed_form_matches_autograd(tiny_model, tiny_gelu, act, size):
    loaded = tiny_model if act == "quick_gelu" else tiny_gelu
    assert loaded.quick_gelu == (act == "quick_gelu")
    module = GradEclipOnnxModel(GradEclipViT(loaded.model.visual, size)).eval()
    x = torch.from_numpy(random_images(2, size, seed=5))  # batch 2, different images
    text = _text()
    with torch.no_grad():
        sim, scores, maps = module(x, text, torch.zeros(32))
    want_h, want_maps = ref.grad_eclip(_sd(loaded.model), x, text, TINY_HEADS, loaded.quick_gelu)
    assert sim.shape == (2, (size // 8) ** 2, 3) and maps.shape == (2, 3, size // 8, size // 8)
    assert (sim - want_h).abs().max() <= TOL
    assert (maps - want_maps).abs().max() <= TOL
    assert want_h.max() > 0 and 0 < (want_h > 0).float().mean() < 1  # a real map, not trivially zero
    # Scores from the unmodified CLIP class token (all heads).
    with torch.no_grad():
        emb = F.normalize(ref.plain_image_embedding(_sd(loaded.model), x, TINY_HEADS, loaded.quick_gelu), dim=-1)
    assert (scores - (100 * emb @ text.t()).softmax(-1)).abs().max() <= 1e-5


def test_wrong_activation_derivative_is_caught(tiny_model):
    """The parity check can fail: the erf-GELU derivative on a QuickGELU model is off by far more than 1e-4."""
    from clipxai.models import grad_eclip
    vit = GradEclipViT(tiny_model.model.visual, 32).eval()
    vit.act_grad = grad_eclip._gelu_grad
    x = torch.from_numpy(random_images(2, 32, seed=5))
    module = GradEclipOnnxModel(vit).eval()
    with torch.no_grad():
        _, _, maps = module(x, _text(), torch.zeros(32))
    _, want_maps = ref.grad_eclip(_sd(tiny_model.model), x, _text(), TINY_HEADS, quick_gelu=True)
    assert (maps - want_maps).abs().max() > 10 * TOL


def test_each_image_gets_its_own_gradients(tiny_model):
    vit = GradEclipViT(tiny_model.model.visual, 32).eval()
    x = torch.from_numpy(random_images(3, 32, seed=7))
    text = _text()
    with torch.no_grad():
        together, _ = vit(x, text)
        alone = torch.cat([vit(x[i:i + 1], text)[0] for i in range(3)])
    assert (together - alone).abs().max() <= 1e-6
    assert (together[0] - together[1]).abs().max() > 1e-3


def test_zero_map_gives_zeros_not_nan(tiny_model, tmp_path):
    """A zero text row has zero gradient: H = 0 everywhere, heatmap 0 (ONNX and torch)."""
    module = GradEclipOnnxModel(GradEclipViT(tiny_model.model.visual, 32)).eval()
    text = torch.cat([_text(1), torch.zeros(1, 32)])
    baked = BakedVocabulary(module, text, torch.zeros(32)).eval()
    export_onnx(baked, tmp_path / "m.onnx")
    import onnxruntime as ort
    x = random_images(2, 32, seed=3)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    sim, scores, maps = sess.run(["similarity", "scores", "heatmaps"], {"image": x})
    with torch.no_grad():
        t_sim, _, t_maps = (t.numpy() for t in baked(torch.from_numpy(x)))
    for arr in (sim, scores, maps, t_maps):
        assert np.isfinite(arr).all()
    assert (sim[..., 1] == 0).all() and (maps[:, 1] == 0).all() and (t_maps[:, 1] == 0).all()
    assert maps[:, 0].max() == pytest.approx(1.0) and maps[:, 0].min() == 0.0
    assert np.abs(maps - t_maps).max() <= TOL and np.abs(sim - t_sim).max() <= TOL


def test_unsupported_activation_is_refused(tiny_model):
    visual = copy.deepcopy(tiny_model.model.visual)
    visual.transformer.resblocks[-1].mlp.gelu = torch.nn.GELU(approximate="tanh")
    with pytest.raises(ClipxaiError, match="QuickGELU or exact GELU"):
        GradEclipViT(visual, 32)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("ge") / "b"
    return export_bundle(ExportConfig(output=out, classes=CLASSES, backbone=TINY.name, pretrained="random",
                                      method="grad-eclip", image_size=48))


def test_bundle_onnx_matches_autograd_and_manifest(bundle, tiny_model):
    m = read_manifest(bundle.path)
    assert m["method"] == "grad-eclip" and m["redundancy"] is None
    assert m["pos_embed_resize"] == {"from_grid": 4, "to_grid": 6, "mode": "bicubic", "align_corners": False,
                                     "antialias": False, "target": "size", "applied": True}
    assert bundle.verification["heatmaps"] <= TOL and bundle.verification["similarity"] <= TOL
    x = random_images(2, 48, seed=9)
    sim, scores, maps = run_bundle(bundle.path, x)
    text = torch.from_numpy(np.load(bundle.path / "text_embeddings.npy"))
    want_h, want_maps = ref.grad_eclip(_sd(tiny_model.model), torch.from_numpy(x), text, TINY_HEADS, True)
    assert np.abs(sim - want_h.numpy()).max() <= TOL
    assert np.abs(maps - want_maps.numpy()).max() <= TOL
    assert np.isfinite(scores).all() and np.allclose(scores.sum(-1), 1, atol=1e-5)


def test_redundancy_option_is_refused_for_grad_eclip(tmp_path):
    with pytest.raises(ClipxaiError, match="--redundancy is a feature-surgery setting"):
        export_bundle(ExportConfig(output=tmp_path / "x", classes=CLASSES, backbone=TINY.name, pretrained="random",
                                   method="grad-eclip", redundancy="empty"))
    assert not (tmp_path / "x").exists()


def test_export_cli_grad_eclip(tmp_path):
    from clipxai.export.cli import main
    out = tmp_path / "cli"
    r = CliRunner().invoke(main, ["--backbone", TINY.name, "--pretrained", "random", "--method", "grad-eclip",
                                  "--classes", "rocket,sky", "--image-size", "32", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert read_manifest(out)["method"] == "grad-eclip"


def test_runtime_and_segment_cli_run_the_bundle(bundle, tmp_path):
    from clipxai.runtime import Predictor
    from clipxai.cli.segment import main
    p = Predictor.from_bundle(bundle.path, providers="cpu")
    pred = p.predict(ROCKET)
    assert pred.heatmaps_grid.shape == (3, 6, 6) and pred.similarity.shape == (36, 3)
    seg = pred.segmentation
    assert seg.shape == (427, 640) and set(np.unique(seg)) <= {0, 1, 2}
    # The similarity output is H before normalisation: its per-class min-max is the heatmap.
    h = pred.similarity
    assert (h >= 0).all()
    span = h.max(0) - h.min(0)
    norm = (h - h.min(0)) / np.where(span > 0, span, 1)
    assert np.abs(norm.T.reshape(3, 6, 6) - pred.heatmaps_grid).max() <= 1e-6
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [str(bundle.path), str(ROCKET), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert all((out / f"rocket_heatmap_{c}.png").exists() for c in CLASSES)
    rec = json.loads((out / "rocket.json").read_text())
    assert set(rec["scores"]) == set(CLASSES)


@pytest.mark.slow
def test_vitb16_closed_form_matches_autograd():
    loaded = load_clip(resolve_backbone("ViT-B/16"), "random")
    module = GradEclipOnnxModel(GradEclipViT(loaded.model.visual, 224)).eval()
    x = torch.from_numpy(random_images(2, 224, seed=11))
    text = _text(3, 512, seed=4)
    with torch.no_grad():
        sim, _, maps = module(x, text, torch.zeros(512))
    want_h, want_maps = ref.grad_eclip(_sd(loaded.model), x, text, heads=12, quick_gelu=True)
    assert maps.shape == (2, 3, 14, 14)
    assert (sim - want_h).abs().max() <= TOL
    assert (maps - want_maps).abs().max() <= TOL
    assert want_h.max() > 0


def test_method_gallery_script(tmp_path):
    """scripts/method_gallery.py: one captioned row of overlays per method, stamped for random weights."""
    import importlib.util
    from PIL import Image
    from clipxai.contract import METHODS
    path = Path(__file__).parent.parent / "scripts" / "method_gallery.py"
    spec = importlib.util.spec_from_file_location("method_gallery", path)
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    written = gallery.make_gallery(tmp_path / "g", "random", TINY.name, ROCKET, CLASSES, 32, width=120)
    assert [p.name for p in written] == [f"{m}.png" for m in METHODS] + ["methods.png"]
    row = Image.open(tmp_path / "g" / "grad-eclip.png")
    from clipxai.runtime.visualize import BANNER_COLOUR, BANNER_HEIGHT
    assert row.width == 3 * 120 + 2 * 4 and row.height == BANNER_HEIGHT + round(427 * 120 / 640) + 18
    assert np.asarray(row)[2, 2].tolist() == list(BANNER_COLOUR)  # the random-weights banner, above the row
    n = len(METHODS)
    assert Image.open(tmp_path / "g" / "methods.png").height == n * row.height + 6 * (n - 1)
