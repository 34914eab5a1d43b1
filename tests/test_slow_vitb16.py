"""Full-size ViT-B/16 with random weights: export plus parity (marked slow; CI runs it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference as ref
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
