"""Dense ViT methods (vanilla, MaskCLIP, SCLIP, ClearCLIP, NACLIP) against the independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipxai.errors import ClipxaiError
from clipxai.export.methods import build_method_graph
from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.models.dense_methods import DenseViT, naclip_omega
from clipxai.models.pos_embed import resize_pos_bicubic_scale, resize_pos_bicubic_size
from clipxai.runtime import Predictor

from clipxai.models import reference as ref
from helpers import leftovers, random_images, read_manifest, run_bundle
from tiny import TINY, TINY_HEADS, TINY_RN

DENSE = ["vanilla", "maskclip", "sclip", "clearclip", "naclip"]
CLASSES = ["person", "bench", "ground", "building", "sky"]


def _sd(tiny_model):
    return {k: v.detach() for k, v in tiny_model.model.state_dict().items()}


def _text(k=4, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, dim, generator=g), dim=-1)


@pytest.mark.parametrize("size", [32, 48, 24])  # pretrained grid 4, then resized up to 6 and down to 3
@pytest.mark.parametrize("method", DENSE)
def test_method_graph_matches_independent_reference(tiny_model, method, size):
    built = build_method_graph(method, tiny_model.model.visual, TINY, size, "classes")
    x = torch.from_numpy(random_images(2, size, seed=size))
    text = _text()
    with torch.no_grad():
        got = built.module(x, text, torch.zeros(32))
        want = ref.dense_pipeline(_sd(tiny_model), x, text, TINY_HEADS, quick_gelu=True, method=method)
    for name, g, w in zip(["similarity", "scores", "heatmaps"], got, want):
        assert g.shape == w.shape, name
        assert (g - w).abs().max() <= 1e-4, (name, (g - w).abs().max())
    assert built.module.grid == size // 8
    assert built.pos_embed_resize["from_grid"] == 4 and built.pos_embed_resize["to_grid"] == size // 8


@pytest.mark.parametrize("method", DENSE)
def test_scores_come_from_the_unmodified_class_token(tiny_model, method):
    model = tiny_model.model
    x = torch.from_numpy(random_images(2, 32, seed=7))
    with torch.no_grad():
        ours = DenseViT(model.visual, 32, method)(x)
        plain = model.encode_image(x)
        model.visual.output_tokens = True
        _, plain_tokens = model.visual(x)
        model.visual.output_tokens = False
    assert torch.allclose(ours[:, 0], plain, atol=1e-5), (ours[:, 0] - plain).abs().max()
    diff = (ours[:, 1:] - plain_tokens @ model.visual.proj).abs().max()
    if method == "vanilla":  # vanilla's patch tokens are open_clip's own
        assert diff <= 1e-5, diff
    else:  # guards against a method that silently does nothing
        assert diff > 1e-3, diff


def test_methods_differ_from_each_other(tiny_model):
    x = torch.from_numpy(random_images(1, 32, seed=8))
    with torch.no_grad():
        outs = {m: DenseViT(tiny_model.model.visual, 32, m)(x)[:, 1:] for m in DENSE}
    for i, a in enumerate(DENSE):
        for b in DENSE[i + 1:]:
            assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)


def test_naclip_omega_formula():
    om = naclip_omega(5)
    assert torch.allclose(om, ref._omega(5), atol=1e-7)
    assert om[0].abs().max() == 0 and om[:, 0].abs().max() == 0
    assert om[1, 1] == 1.0 and torch.allclose(om, om.t())
    # patches (0,0) and (1,2) of a 5-wide grid: distance² 5, σ = 5
    assert abs(float(om[1 + 0, 1 + 7]) - np.exp(-5 / 50)) < 1e-7


def test_scale_factor_resize_is_not_a_size_resize(tiny_model):
    """The (g+0.1)/g0 factor maps coordinates differently from a resize to g: both are reproduced."""
    pos = tiny_model.model.visual.positional_embedding.detach()
    by_scale, by_size = resize_pos_bicubic_scale(pos, 6), resize_pos_bicubic_size(pos, 6)
    assert by_scale.shape == by_size.shape == (37, pos.shape[1])
    assert (by_scale[1:] - by_size[1:]).abs().max() > 1e-3
    assert torch.equal(by_scale[0], pos[0]) and torch.equal(resize_pos_bicubic_scale(pos, 4), pos)
    for g in (3, 5, 6, 7, 28, 64):  # the factor always lands on exactly g cells
        assert resize_pos_bicubic_scale(pos, g).shape[0] == 1 + g * g


def _export(tmp_path, method, size, name=None, **kw):
    cfg = ExportConfig(output=tmp_path / (name or f"{method}{size}"), classes=CLASSES, backbone=kw.pop("backbone", TINY.name),
                       method=method, pretrained="random", image_size=size, **kw)
    return export_bundle(cfg)


@pytest.mark.parametrize("method", DENSE)
def test_export_bundle_verify_and_predict(tmp_path, tiny_model, method):
    res = _export(tmp_path, method, 48)
    assert res.verification["similarity"] <= 1e-4 and res.verification["heatmaps"] <= 1e-4
    m = read_manifest(res.path)
    assert m["method"] == method and m["redundancy"] is None
    assert m["pos_embed_resize"]["mode"] == "bicubic" and m["pos_embed_resize"]["applied"] is True
    assert m["pos_embed_resize"]["target"] == ("size" if method == "maskclip" else "scale_factor")
    assert m["backbone"]["surgery_blocks"] is None and m["backbone"]["arch"] == "vit"
    # the ONNX graph against the independent reference
    x = random_images(2, 48, seed=11)
    text = torch.from_numpy(np.load(res.path / "text_embeddings.npy"))
    with torch.no_grad():
        want = ref.dense_pipeline(_sd(tiny_model), torch.from_numpy(x), text, TINY_HEADS, True, method)
    for g, w in zip(run_bundle(res.path, x), want):
        assert np.abs(g - w.numpy()).max() <= 1e-4
    # the runtime runs it like any other bundle
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    pred = Predictor.from_bundle(res.path, providers="cpu").predict(img)
    assert pred.heatmaps_grid.shape == (5, 6, 6) and pred.heatmaps.shape == (5, 40, 56)
    assert abs(float(pred.scores.sum()) - 1) < 1e-5


def test_redundancy_is_for_surgery_only(tmp_path):
    with pytest.raises(ClipxaiError, match="it applies to --method surgery only"):
        _export(tmp_path, "sclip", 32, redundancy="classes")
    assert not (tmp_path / "sclip32").exists() and not leftovers(tmp_path)


def test_dense_methods_refuse_resnets(tmp_path):
    with pytest.raises(ClipxaiError, match="needs a ViT backbone"):
        _export(tmp_path, "naclip", 64, backbone=TINY_RN.name)
    assert not (tmp_path / "naclip64").exists() and not leftovers(tmp_path)


def test_cli_method_flag(tmp_path):
    from click.testing import CliRunner
    from clipxai.export.cli import main
    base = ["--pretrained", "random", "--classes", "person,sky", "--no-verify"]
    ok = CliRunner().invoke(main, ["--backbone", TINY.name, "--method", "naclip", "--image-size", "48",
                                   "-o", str(tmp_path / "n"), *base], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert read_manifest(tmp_path / "n")["method"] == "naclip"
    bad = CliRunner().invoke(main, ["--backbone", TINY_RN.name, "--method", "sclip", "--image-size", "64",
                                    "-o", str(tmp_path / "r"), *base], catch_exceptions=False)
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: --method sclip needs a ViT backbone, not Tiny-RN; ResNets support --method surgery, maskclip")
    assert not (tmp_path / "r").exists()
