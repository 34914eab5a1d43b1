"""Multi-label scores (issue 31): the graph's ``labels`` against plain PyTorch references.

ViT methods and ResNet surgery: the formula of docs/methods.md on the independent reference tokens
(clipxai/models/reference.py). MaskCLIP on a ResNet: a re-implementation, in this file, of TaI-DPT's
``ZeroshotCLIP_dense.model_inference`` as its paper and code describe it (global logits from the
attention pool, local logits from each cell through v_proj and c_proj, spatial softmax pooling),
merged as its ``default_merge_aux`` evaluator does (GL_merge_rate weighs the local logits).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from clipxai.apps.segment.records import prediction_fields
from clipxai.common.files import sha256_file
from clipxai.errors import ClipxaiError
from clipxai.export.methods import build_method_graph
from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.models import reference as ref
from clipxai.runtime import Predictor
from clipxai.runtime.prediction import Prediction

from helpers import random_images, read_manifest
from test_resnet import RN_HEADS, _tiny_rn
from tiny import TINY, TINY_HEADS, TINY_RN, TINY_SURGERY_BLOCKS

VIT_METHODS = ["surgery", "grad-eclip", "vanilla", "maskclip", "sclip", "clearclip", "naclip"]
TOL = 1e-4


def _text(k=4, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, dim, generator=g), dim=-1)


def _sd(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


def merged_reference(cls_embedding, dense, text, rate, scale=100.0):
    """The protocol in plain PyTorch: cls_embedding [B, D], dense features [B, N, D] (unnormalised)."""
    glob = scale * F.normalize(cls_embedding, dim=-1) @ text.t()
    local = scale * F.normalize(dense, dim=-1) @ text.t()  # [B, N, K]
    pooled = torch.einsum("bnk,bnk->bk", local.softmax(dim=1), local)
    return rate * pooled + (1 - rate) * glob


def _graph_labels(visual, spec, method, size, text, x, rate, mode="classes", redundancy=None):
    built = build_method_graph(method, visual, spec, size, mode if method == "surgery" else None)
    built.module.with_labels, built.module.labels_merge_rate = True, rate
    red = torch.zeros(text.shape[1]) if redundancy is None else redundancy
    with torch.no_grad():
        out = built.module(x, text, red)
    assert len(out) == 4
    return out


@pytest.mark.parametrize("rate", [0.5, 0.2])
@pytest.mark.parametrize("method", VIT_METHODS)
def test_vit_labels_match_the_formula_on_reference_tokens(tiny_model, method, rate):
    size = 32 if method == "grad-eclip" else 48  # grad-eclip's local path: plain CLIP at the native grid
    x = torch.from_numpy(random_images(2, size, seed=3))
    text = _text()
    sd = _sd(tiny_model.model)
    out = _graph_labels(tiny_model.model.visual, TINY, method, size, text, x, rate)
    with torch.no_grad():
        if method == "surgery":  # the dual-path tokens before feature surgery; token 0 is the plain class token
            tokens = ref.surgery_tokens(sd, x, TINY_HEADS, TINY_SURGERY_BLOCKS, quick_gelu=True)
        else:
            tokens = ref.dense_tokens(sd, x, TINY_HEADS, True, "vanilla" if method == "grad-eclip" else method)
        want = merged_reference(tokens[:, 0], tokens[:, 1:], text, rate)
    assert out[3].shape == (2, 4)
    assert (out[3] - want).abs().max() <= TOL, (out[3] - want).abs().max()
    for g, w in zip(out[:3], _graph_labels(tiny_model.model.visual, TINY, method, size, text, x, rate)[:3]):
        assert torch.equal(g, w)  # the other outputs are unchanged by the labels


@pytest.fixture(scope="module")
def rn():
    return _tiny_rn()


def test_resnet_surgery_labels_use_the_vv_tokens_before_feature_surgery(rn):
    x = torch.from_numpy(random_images(2, 96, seed=5))
    text = _text()
    out = _graph_labels(rn.visual, TINY_RN, "surgery", 96, text, x, 0.5)
    with torch.no_grad():
        tokens, plain = ref.resnet_surgery(_sd(rn), x, RN_HEADS)
    want = merged_reference(plain, tokens[:, 1:], text, 0.5)
    assert (out[3] - want).abs().max() <= TOL, (out[3] - want).abs().max()


def taidpt_model_inference(clip_visual, logit_scale, text_features, image):
    """TaI-DPT's ZeroshotCLIP_dense.model_inference, re-implemented from its description (OpenAI layout).

    Returns (local logits [B, K], global logits [B, K]): the last feature map's cells through the attention
    pool's v_proj then c_proj (no positional embedding, no attention), normalised, times logit_scale, pooled
    over the HW positions by Σ softmax_HW(l)·l; global: the attention pool's own output, normalised.
    """
    v = clip_visual
    x = v.stem(image)
    feat = v.layer4(v.layer3(v.layer2(v.layer1(x))))  # [B, C, h, w]
    b, c, h, w = feat.shape
    cells = feat.reshape(b, c, h * w).permute(2, 0, 1)  # HW, B, C
    pool = v.attnpool
    local = F.linear(F.linear(cells, pool.v_proj.weight, pool.v_proj.bias), pool.c_proj.weight, pool.c_proj.bias)
    glob = pool(feat)  # the attention pool as CLIP runs it
    local = local / local.norm(dim=-1, keepdim=True)
    glob = glob / glob.norm(dim=-1, keepdim=True)
    logits_glob = logit_scale * glob @ text_features.t()
    logits_local = logit_scale * local @ text_features.t()  # HW, B, K
    prob_spatial = torch.softmax(logits_local, dim=0)
    return torch.sum(logits_local * prob_spatial, dim=0), logits_glob


def test_maskclip_resnet_is_taidpt_zeroshot_dense(rn):
    """Global, local and merged logits of ``--method maskclip`` on a ResNet against TaI-DPT's protocol,
    at the pretrained resolution (TaI-DPT runs the attention pool without resizing its embedding)."""
    x = torch.from_numpy(random_images(3, 64, seed=6))
    text = _text()
    with torch.no_grad():
        local, glob = taidpt_model_inference(rn.visual, math.exp(math.log(100.0)), text, x)
    for rate, want in ((1.0, local), (0.0, glob), (0.5, 0.5 * local + 0.5 * glob), (0.3, 0.3 * local + 0.7 * glob)):
        out = _graph_labels(rn.visual, TINY_RN, "maskclip", 64, text, x, rate)
        assert (out[3] - want).abs().max() <= TOL, (rate, (out[3] - want).abs().max())
    # its similarity is TaI-DPT's local cosine, its scores the softmax of the global logits
    assert (out[1] - glob.softmax(-1)).abs().max() <= 1e-5


def _bundle(tmp_path, method="surgery", backbone=TINY.name, size=32, **kw):
    return export_bundle(ExportConfig(output=tmp_path / f"{method}-{size}", classes=["cat", "dog", "sky"],
                                      backbone=backbone, method=method, pretrained="random", image_size=size, **kw))


@pytest.mark.parametrize("text_encoder", [False, True])
def test_export_records_labels_and_the_runtime_returns_them(tmp_path, tiny_model, text_encoder):
    res = _bundle(tmp_path, text_encoder=text_encoder)
    m = read_manifest(res.path)
    assert m["labels_merge_rate"] == 0.5
    assert m["graph"]["outputs"]["labels"]["shape"] == ["batch", "classes" if text_encoder else 3]
    assert res.verification["labels"] <= 100 * TOL
    img = np.random.default_rng(0).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    pred = Predictor.from_bundle(res.path, providers="cpu").predict(img)
    assert pred.labels.dtype == np.float32 and pred.labels.shape == (3,)
    top = float(pred.labels.max())
    assert pred.present(top) == [pred.classes[int(pred.labels.argmax())]] and pred.present(top + 1) == []
    record = prediction_fields(pred)
    assert list(record["labels"]) == ["cat", "dog", "sky"]
    assert np.allclose(list(record["labels"].values()), pred.labels)
    assert pred.select(["sky", "cat"]).labels.tolist() == [pred.labels[2], pred.labels[0]]


def test_the_merge_rate_is_checked_and_recorded(tmp_path):
    with pytest.raises(ClipxaiError, match=r"merge rate must be in \[0, 1\]"):
        _bundle(tmp_path, labels_merge_rate=1.5)
    res = _bundle(tmp_path, method="maskclip", backbone=TINY_RN.name, size=64, labels_merge_rate=0.25)
    assert read_manifest(res.path)["labels_merge_rate"] == 0.25
    assert read_manifest(res.path)["pos_embed_resize"]["mode"] == "bilinear"


def _strip_labels(bundle):
    """Make the bundle an older one: no labels output in the graph nor in the manifest."""
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    keep = [o for o in model.graph.output if o.name != "labels"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(model, str(bundle / "model.onnx"))
    m = json.loads((bundle / "manifest.json").read_text())
    del m["graph"]["outputs"]["labels"]
    del m["labels_merge_rate"]
    m["files"]["model.onnx"]["sha256"] = sha256_file(bundle / "model.onnx")
    if "bytes" in m["files"]["model.onnx"]:
        m["files"]["model.onnx"]["bytes"] = (bundle / "model.onnx").stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_a_bundle_without_labels_still_loads(tmp_path):
    res = _bundle(tmp_path)
    old = tmp_path / "old"
    shutil.copytree(res.path, old)
    _strip_labels(old)
    predictor = Predictor.from_bundle(old, providers="cpu")
    assert not predictor.has_labels
    pred = predictor.predict(np.zeros((20, 30, 3), np.uint8))
    assert pred.labels is None and "labels" not in prediction_fields(pred)
    with pytest.raises(ClipxaiError, match="no multi-label scores .* re-export it"):
        pred.present(0.0)


def test_present_on_a_plain_prediction():
    pred = Prediction(["a", "b"], np.zeros((4, 2), np.float32), np.full(2, 0.5, np.float32),
                      np.zeros((2, 2, 2), np.float32), (8, 8), labels=np.array([20.0, 25.0], np.float32))
    assert pred.present(22.0) == ["b"] and pred.present(19.0) == ["a", "b"]
