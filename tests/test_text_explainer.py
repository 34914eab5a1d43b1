"""Grad-ECLIP word explanations: the closed-form gradient against torch.autograd (clipxai/models/reference.py),
the exported graph, Predictor.explain_text, clipxai-explain and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from clipxai.errors import ClipxaiError
from clipxai.export.pipeline import ExportConfig, export_bundle
from clipxai.models.text_explainer import TextExplainer
from clipxai.runtime import Predictor

from clipxai.models import reference as ref
from tiny import TINY, TINY_HEADS

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"
TOL = 1e-4
SENTENCES = {
    "short": "a dog.",
    "punctuation": "a dog in a car, waiting for traffic-lights! (really?)",
    "pieces": "unbelievably photogenic café-au-lait dachshunds",
    "truncated": " ".join(["a photo of a small red car parked next to a tree"] * 9),  # > 77 tokens
}


def _sd(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


def _tokens(text):
    ids = open_clip.tokenize([text])  # truncates to 77 with the end token last, as clip.tokenize(truncate=True)
    return ids, ids.argmax(-1)


@pytest.fixture(scope="module")
def deep_tower():
    """A 4-block text tower with exact GELU and weights scaled up so attention is far from uniform."""
    torch.manual_seed(3)
    model = open_clip.model.CLIP(32, {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 16},
                                 {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4})
    with torch.no_grad():
        for blk in model.transformer.resblocks:
            blk.attn.in_proj_weight.mul_(4.0)
            blk.ln_1.weight.add_(0.3 * torch.randn(64))
            blk.ln_2.bias.add_(0.3 * torch.randn(64))
    return model.eval()


def _image_embedding(d=32, seed=1):
    return F.normalize(torch.randn(d, generator=torch.Generator().manual_seed(seed)), dim=0)


@pytest.mark.parametrize("sentence", list(SENTENCES))
@pytest.mark.parametrize("tower,blocks", [("tiny", 8), ("tiny", 1), ("deep", 8), ("deep", 3)])
def test_closed_form_matches_autograd(tiny_model, deep_tower, sentence, tower, blocks):
    model, quick = (tiny_model.model, tiny_model.quick_gelu) if tower == "tiny" else (deep_tower, False)
    ids, eot = _tokens(SENTENCES[sentence])
    img = _image_embedding()
    explainer = TextExplainer(model, blocks).eval()
    with torch.no_grad():
        weights, cosine = explainer(ids, eot, img)
        raw, _ = explainer.relevance(ids, eot, img)
    want, want_cos, want_raw = ref.grad_eclip_text(_sd(model), ids[0], img, TINY_HEADS, quick, n=blocks)
    e = int(eot)
    assert weights.shape == (1, 77)
    # Σ_l S_l over all 77 positions, before the ReLU: the gradient, values and λ in one number per token
    assert (raw[0] - want_raw).abs().max() <= TOL * max(1.0, float(want_raw.abs().max()))
    assert float(want_raw[1:e].abs().max()) > 0
    assert abs(float(cosine) - want_cos) <= 1e-5
    assert weights[0, :1].abs().max() == 0 and weights[0, e:].abs().max() == 0
    if torch.isfinite(want).all():  # the reference divides by zero when no token is positive
        assert (weights[0, 1:e] - want).abs().max() <= TOL
        assert abs(float(weights.sum()) - 1) < 1e-5
    else:
        assert weights.abs().max() == 0


def test_a_wrong_backward_is_caught(deep_tower):
    """The comparison has teeth: dropping the gradient's path through later blocks' attention changes the weights."""
    ids, eot = _tokens(SENTENCES["punctuation"])
    img = _image_embedding()
    explainer = TextExplainer(deep_tower, 4).eval()
    with torch.no_grad():
        good, _ = explainer(ids, eot, img)
        original = explainer._grad_through_attention
        explainer._grad_through_attention = lambda *a: 0 * original(*a)
        broken, _ = explainer(ids, eot, img)
    assert (good - broken).abs().max() > 1e-3


def test_unsupported_text_tower_is_refused(tiny_model):
    class NoMask(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.transformer, self.attn_mask = m.transformer, None
    with pytest.raises(ClipxaiError, match="causal text tower"):
        TextExplainer(NoMask(tiny_model.model))


@pytest.fixture(scope="module")
def explain_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "bundle"
    export_bundle(ExportConfig(output=out, classes=["rocket", "sky"], backbone=TINY.name, method="grad-eclip",
                               pretrained="random", image_size=32, text_encoder=True, text_explainer=True))
    return out


def test_bundle_explains_like_autograd(explain_bundle, tiny_model):
    p = Predictor.from_bundle(explain_bundle, providers="cpu")
    m = json.loads((explain_bundle / "manifest.json").read_text())
    assert m["text_explainer"]["blocks"] == 2 and m["verification"]["text_explainer"] <= TOL
    image = Image.open(ROCKET).convert("RGB")
    # The image embedding is plain CLIP's (open_clip's encode_image) on the bundle's preprocessing.
    emb = p.image_embedding(image)
    with torch.no_grad():
        want_emb = F.normalize(tiny_model.model.encode_image(torch.from_numpy(p.preprocess(image))[None]), dim=-1)[0]
    assert np.abs(emb - want_emb.numpy()).max() <= TOL
    texts = [SENTENCES["short"], SENTENCES["punctuation"], SENTENCES["pieces"]]
    batch = p.explain_text(image, texts)
    for text, got in zip(texts, batch):
        ids, eot = _tokens(text)
        want, want_cos, _ = ref.grad_eclip_text(_sd(tiny_model.model), ids[0], torch.from_numpy(emb), TINY_HEADS,
                                                tiny_model.quick_gelu)
        assert np.abs(got.weights - want.numpy()).max() <= TOL
        assert abs(got.cosine - want_cos) <= 1e-5
        decoded = open_clip.tokenizer.SimpleTokenizer().decode(ids[0, 1:int(eot)].tolist())
        assert "".join(got.tokens) == decoded.replace(" ", "") and len(got.tokens) == int(eot) - 1
    one = p.explain_text(image, texts[1])
    assert np.abs(one.weights - batch[1].weights).max() <= 1e-6
    assert [w for w, _ in one.words()][:4] == ["a", "dog", "in", "a"]
    assert abs(sum(w for _, w in one.words()) - 1) < 1e-5


def test_long_text_is_refused_unless_truncated(explain_bundle, tiny_model):
    p = Predictor.from_bundle(explain_bundle, providers="cpu")
    text = SENTENCES["truncated"]
    with pytest.raises(ClipxaiError, match=r"more than the 75 that fit in CLIP's 77 .* it would be truncated after "
                                           r".* \(token 75 of \d+\)"):
        p.explain_text(ROCKET, text)
    got = p.explain_text(ROCKET, text, truncate=True)
    assert got.truncated and len(got.tokens) == 75
    ids, _ = _tokens(text)
    want, _, _ = ref.grad_eclip_text(_sd(tiny_model.model), ids[0], torch.from_numpy(p.image_embedding(ROCKET)),
                                     TINY_HEADS, tiny_model.quick_gelu)
    assert np.abs(got.weights - want.numpy()).max() <= TOL


@pytest.mark.parametrize("text,match", [("", "the text is empty"), ("   ", "the text is empty")])
def test_empty_text_is_refused(explain_bundle, text, match):
    with pytest.raises(ClipxaiError, match=match):
        Predictor.from_bundle(explain_bundle, providers="cpu").explain_text(ROCKET, text)


def test_explain_needs_the_explainer_graph(tmp_path):
    out = tmp_path / "plain"
    export_bundle(ExportConfig(output=out, classes=["rocket", "sky"], backbone=TINY.name, pretrained="random",
                               image_size=32, text_encoder=True))
    with pytest.raises(ClipxaiError, match="--text-encoder --text-explainer"):
        Predictor.from_bundle(out, providers="cpu").explain_text(ROCKET, "a rocket")
    with pytest.raises(ClipxaiError, match="--text-explainer needs --text-encoder"):
        export_bundle(ExportConfig(output=tmp_path / "x", classes=["a"], backbone=TINY.name, pretrained="random",
                                   image_size=32, text_explainer=True))
    assert not (tmp_path / "x").exists()


def test_surgery_bundle_embedding_is_plain_clip(tmp_path, tiny_model):
    """Every method's graph gives plain CLIP's image embedding (surgery: its original path's class token)."""
    out = tmp_path / "surgery"
    export_bundle(ExportConfig(output=out, classes=["rocket", "sky"], backbone=TINY.name, pretrained="random",
                               image_size=32, text_encoder=True, text_explainer=True))
    p = Predictor.from_bundle(out, providers="cpu")
    x = p.preprocess(Image.open(ROCKET).convert("RGB"))
    with torch.no_grad():
        want = F.normalize(tiny_model.model.encode_image(torch.from_numpy(x)[None]), dim=-1)[0].numpy()
    assert np.abs(p.image_embedding(ROCKET) - want).max() <= TOL


def test_explain_cli_writes_words_heatmap_and_json(explain_bundle, tmp_path):
    from clipxai.cli.explain import main
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [str(explain_bundle), str(ROCKET), "--text", "a rocket launching into the sky",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    words, heat = Image.open(out / "rocket_words.png"), Image.open(out / "rocket_heatmap.png")
    assert words.width == 800 and words.height > 40
    assert heat.size[0] == Image.open(ROCKET).size[0]
    rec = json.loads((out / "rocket_explanation.json").read_text())
    assert [w["word"] for w in rec["words"]] == ["a", "rocket", "launching", "into", "the", "sky"]
    assert abs(sum(t["weight"] for t in rec["tokens"]) - 1) < 1e-5 and rec["random_weights"] is True
    assert sorted(p.name for p in out.iterdir()) == ["rocket_explanation.json", "rocket_heatmap.png",
                                                     "rocket_words.png"]


@pytest.mark.parametrize("args,message", [
    (["--text", ""], "the text is empty"),
    (["--text", " ".join(["word"] * 80)], "truncated after"),
])
def test_explain_cli_bad_input_is_one_line(explain_bundle, tmp_path, args, message):
    from clipxai.cli.explain import main
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [str(explain_bundle), str(ROCKET), "--out", str(out), *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_explain_cli_unreadable_image(explain_bundle, tmp_path):
    from clipxai.cli.explain import main
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    r = CliRunner().invoke(main, [str(explain_bundle), str(bad), "--text", "a rocket", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Traceback" not in r.output and "bad.jpg" in r.output


@pytest.mark.slow
def test_vitb16_text_tower_matches_autograd():
    """ViT-B/16's text tower (12 blocks, width 512, 8 heads; the last 8 re-run), random weights."""
    from clipxai.models.backbones import resolve_backbone
    from clipxai.models.loading import load_clip
    loaded = load_clip(resolve_backbone("ViT-B/16"), "random")
    img = _image_embedding(512, seed=5)
    explainer = TextExplainer(loaded.model).eval()
    for text in SENTENCES.values():
        ids, eot = _tokens(text)
        with torch.no_grad():
            weights, cosine = explainer(ids, eot, img)
        want, want_cos, _ = ref.grad_eclip_text(_sd(loaded.model), ids[0], img, heads=8, quick_gelu=True)
        assert (weights[0, 1:int(eot)] - want).abs().max() <= TOL
        assert abs(float(cosine) - want_cos) <= 1e-5
