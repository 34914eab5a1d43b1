"""Full-size ViT-B/16 (random weights) with the dense methods: parity and export (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipxai.models import reference as ref
from helpers import random_images, read_manifest, run_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vitb16():
    from clipxai.models.backbones import resolve_backbone
    from clipxai.models.loading import load_clip
    model = load_clip(resolve_backbone("ViT-B/16"), "random").model
    return model, {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["sclip", "naclip"])  # the tiny tests cover all five
def test_vitb16_method_graph_parity_at_448(vitb16, method):
    from clipxai.export.methods import build_method_graph
    from clipxai.models.backbones import resolve_backbone
    model, sd = vitb16
    built = build_method_graph(method, model.visual, resolve_backbone("ViT-B/16").spec, 448, "none")
    x = torch.from_numpy(random_images(1, 448, seed=2))
    text = F.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    with torch.no_grad():
        got = built.module(x, text, torch.zeros(512))
        want = ref.dense_pipeline(sd, x, text, 12, True, method)
    for name, g, w in zip(["similarity", "scores", "heatmaps"], got, want):
        assert (g - w).abs().max() <= 1e-4, (name, (g - w).abs().max())
    assert built.pos_embed_resize["from_grid"] == 14 and built.pos_embed_resize["to_grid"] == 28


def test_vitb16_naclip_export(vitb16, tmp_path):
    """At 224 to stay fast; the resized 448 graph is checked above in torch."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    _, sd = vitb16
    res = export_bundle(ExportConfig(output=tmp_path / "b", classes=["sky", "rocket"], backbone="ViT-B/16",
                                     method="naclip", pretrained="random", image_size=224))
    m = read_manifest(res.path)
    assert m["method"] == "naclip" and m["grid_size"] == 14 and m["pos_embed_resize"]["applied"] is False
    assert res.verification["similarity"] <= 1e-4 and res.verification["heatmaps"] <= 1e-4
    x = random_images(1, 224, seed=3)
    text = torch.from_numpy(np.load(res.path / "text_embeddings.npy"))
    with torch.no_grad():
        want = ref.dense_pipeline(sd, torch.from_numpy(x), text, 12, True, "naclip")
    for name, g, w in zip(["similarity", "scores", "heatmaps"], run_bundle(res.path, x), want):
        assert np.abs(g - w.numpy()).max() <= 1e-4, name
