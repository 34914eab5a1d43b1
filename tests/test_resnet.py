"""ResNet surgery (v-v attention pool) against the independent reference, export and runtime."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipxai.errors import ClipxaiError
from clipxai.export.methods import build_method_graph
from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.models.backbones import BACKBONES, resolve_backbone
from clipxai.models.loading import load_clip
from clipxai.models.resnet_surgery import SurgeryResNet, check_resnet_structure
from clipxai.runtime import Predictor

from clipxai.models import reference as ref
from helpers import leftovers, random_images, read_manifest, run_bundle
from tiny import TINY_RN

RN_HEADS = 8  # 16 * 32 / 64
CLASSES = ["person", "bench", "ground", "building", "sky"]


def _tiny_rn(seed=1):
    """The tiny ResNet, BatchNorms randomised (open_clip zero-inits bn3 weights), v_proj scaled up."""
    model = load_clip(resolve_backbone(TINY_RN.name), "random").model
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.visual.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        # Sharper v-v attention: with open_clip's init it is near uniform, the patch tokens
        # nearly equal and their min-max heatmaps dominated by rounding.
        model.visual.attnpool.v_proj.weight.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module")
def rn():
    return _tiny_rn()


def _sd(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


def _text(k=4, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, dim, generator=g), dim=-1)


@pytest.mark.parametrize("mode", ["classes", "empty", "none"])
@pytest.mark.parametrize("size", [64, 160])  # pretrained grid 2, and resized to 5
def test_resnet_surgery_matches_independent_reference(rn, size, mode):
    built = build_method_graph("surgery", rn.visual, TINY_RN, size, mode)
    x = torch.from_numpy(random_images(2, size, seed=size))
    text, red = _text(), _text(1, seed=9)[0] * 0.5
    with torch.no_grad():
        got = built.module(x, text, red)
        want = ref.resnet_pipeline(_sd(rn), x, text, mode, RN_HEADS, redundancy=red)
    for name, g, w in zip(["similarity", "scores", "heatmaps"], got, want):
        assert g.shape == w.shape, name
        assert (g - w).abs().max() <= 1e-4, (name, (g - w).abs().max())
    assert built.pos_embed_resize == {"from_grid": 2, "to_grid": size // 32, "mode": "bilinear",
                                      "align_corners": False, "antialias": False, "target": "size",
                                      "applied": size // 32 != 2}


def test_scores_use_the_plain_attention_pool(rn):
    x = torch.from_numpy(random_images(2, 64, seed=3))
    with torch.no_grad():
        tokens, image_embedding = SurgeryResNet(rn.visual, 64)(x)
        plain = rn.encode_image(x)
    assert torch.allclose(image_embedding, plain, atol=1e-5), (image_embedding - plain).abs().max()
    # the v-v mean token is not the plain embedding (guards against a no-op rewrite)
    assert (tokens[:, 0] - plain).abs().max() > 1e-3


def test_structure_check_fails_clearly(rn, tiny_model):
    with pytest.raises(ClipxaiError, match="not open_clip ModifiedResNet"):
        check_resnet_structure(tiny_model.model.visual)
    broken = _tiny_rn()
    broken.visual.attnpool = nn.Identity()
    with pytest.raises(ClipxaiError, match="unsupported open_clip ResNet structure.*attention pool is Identity"):
        SurgeryResNet(broken.visual, 64)
    broken = _tiny_rn()
    broken.visual.attnpool.v_proj = nn.Linear(512, 512, bias=False)
    with pytest.raises(ClipxaiError, match="attnpool.v_proj is not a Linear with bias"):
        SurgeryResNet(broken.visual, 64)


def test_export_bundle_from_checkpoint_verify_and_predict(tmp_path, rn):
    ckpt = tmp_path / "tiny-rn.pt"
    torch.save(rn.state_dict(), ckpt)
    cfg = ExportConfig(output=tmp_path / "rn", classes=CLASSES, backbone=TINY_RN.name, pretrained=str(ckpt),
                       image_size=96)
    res = export_bundle(cfg)
    assert res.verification["similarity"] <= 1e-4 and res.verification["heatmaps"] <= 1e-4
    m = read_manifest(res.path)
    assert m["method"] == "surgery" and m["backbone"]["arch"] == "resnet" and m["grid_size"] == 3
    assert m["backbone"]["surgery_blocks"] is None and m["redundancy"] == "classes"
    assert m["pos_embed_resize"]["mode"] == "bilinear" and m["pos_embed_resize"]["to_grid"] == 3
    x = random_images(2, 96, seed=4)
    text = torch.from_numpy(np.load(res.path / "text_embeddings.npy"))
    with torch.no_grad():
        want = ref.resnet_pipeline(_sd(rn), torch.from_numpy(x), text, "classes", RN_HEADS)
    for g, w in zip(run_bundle(res.path, x), want):
        assert np.abs(g - w.numpy()).max() <= 1e-4
    img = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    pred = Predictor.from_bundle(res.path, providers="cpu").predict(img)
    assert pred.heatmaps_grid.shape == (5, 3, 3) and pred.heatmaps.shape == (5, 50, 70)


def test_image_size_must_be_a_multiple_of_the_stride(tmp_path):
    cfg = ExportConfig(output=tmp_path / "rn", classes=CLASSES, backbone=TINY_RN.name, pretrained="random",
                       image_size=100)
    with pytest.raises(ClipxaiError, match="not a multiple of Tiny-RN's output stride 32; try 96"):
        export_bundle(cfg)
    assert not (tmp_path / "rn").exists() and not leftovers(tmp_path)


def test_resnet_table_matches_open_clip_configs():
    rns = [b for b in BACKBONES if b.arch == "resnet"]
    assert [b.name for b in rns] == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64"]
    for b in rns:
        cfg = open_clip.get_model_config(b.open_clip_name)
        assert cfg["vision_cfg"]["image_size"] == b.image_size, b.name
        assert isinstance(cfg["vision_cfg"]["layers"], list) and b.patch_size == 32
        assert resolve_backbone(b.name).quick_gelu  # OpenAI spelling: OpenAI's QuickGELU text tower
        assert resolve_backbone(f"{b.name}-quickgelu").spec is b
