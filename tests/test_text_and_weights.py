"""Text truncation, weight loading from files, and the backbone table."""

from __future__ import annotations

import pytest
import torch

from clipxai.errors import ClipxaiError, WeightsError
from clipxai.models.backbones import BACKBONES, backbone_names, resolve_backbone
from clipxai.models.loading import load_clip, read_checkpoint
from clipxai.models.text import TEMPLATES, encode_tokens

from tiny import TINY


def _tokens(n_repeat=1):
    import open_clip
    tok = open_clip.get_tokenizer(TINY.open_clip_name)
    prompts = [t.format(c) for c in ["dog", "traffic light", ""] for t in TEMPLATES[:7] + TEMPLATES[-3:]]
    return tok(prompts * n_repeat)


@pytest.mark.parametrize("rows", [1, 3, 30])
def test_truncated_text_encoding_is_bit_identical_to_77_tokens(tiny_model, rows):
    ids = _tokens()[:rows]
    with torch.no_grad():
        cut = encode_tokens(tiny_model.model, ids, truncate=True)
        full = encode_tokens(tiny_model.model, ids, truncate=False)
    assert int(ids.argmax(-1).max()) + 1 < 77  # the cut really is shorter
    assert torch.equal(cut, full)


def test_text_encoder_equals_open_clip_encode_text(tiny_model):
    ids = _tokens()
    with torch.no_grad():
        ours = encode_tokens(tiny_model.model, ids)
        theirs = tiny_model.model.encode_text(ids)
    assert (ours - theirs).abs().max() <= 1e-5


def test_backbone_table_accepts_both_spellings():
    assert [b.name for b in BACKBONES] == ["ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px",
                                           "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64"]
    assert resolve_backbone("ViT-B/16").spec is resolve_backbone("ViT-B-16").spec
    assert resolve_backbone("ViT-B/16").quick_gelu and not resolve_backbone("ViT-B-16").quick_gelu
    assert resolve_backbone("ViT-L-14-336-quickgelu").spec.image_size == 336
    with pytest.raises(ClipxaiError, match="ViT-B/32.*ViT-L/14@336px"):
        resolve_backbone("ViT-H/14")
    assert "ViT-B-32" in backbone_names()
    assert backbone_names().count("RN50") == 1 and "RN50-quickgelu" in backbone_names()


def test_open_clip_structure_we_rely_on():
    """open_clip 3.x builds ViT blocks from nn.MultiheadAttention with packed projections."""
    import open_clip
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    m = open_clip.create_model(TINY.open_clip_name, pretrained=None)
    assert isinstance(m.visual, VisionTransformer)
    blk = m.visual.transformer.resblocks[0]
    assert isinstance(blk, ResidualAttentionBlock) and isinstance(blk.attn, torch.nn.MultiheadAttention)
    assert blk.attn.in_proj_weight.shape == (3 * 64, 64) and blk.attn.out_proj.weight.shape == (64, 64)
    assert m.visual.transformer.batch_first


def _perturbed_state_dict(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: (v + 0.01 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def _assert_loaded(loaded, sd):
    own = loaded.model.state_dict()
    for k, v in sd.items():
        if k in own:
            assert torch.equal(own[k], v.float()), k


def test_load_openai_format_state_dict(tmp_path, tiny_model, tiny_choice):
    sd = _perturbed_state_dict(tiny_model.model, 1)
    openai_sd = {k: (v.half() if v.is_floating_point() and k != "logit_scale" else v) for k, v in sd.items()}
    openai_sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                     vocab_size=torch.tensor(49408))
    path = tmp_path / "ViT-tiny.pt"
    torch.save(openai_sd, path)
    loaded = load_clip(tiny_choice, str(path))
    assert loaded.weights["format"] == "openai-state-dict" and loaded.quick_gelu
    _assert_loaded(loaded, {k: v.float() if v.is_floating_point() else v for k, v in openai_sd.items()})


def test_load_openai_torchscript_archive(tmp_path, tiny_model):
    """OpenAI released TorchScript archives; they load through torch.jit, as QuickGELU."""
    import warnings
    model = tiny_model.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.zeros(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)),
                                 check_trace=False, strict=False)
    path = tmp_path / "ViT-tiny-jit.pt"
    traced.save(str(path))
    choice = resolve_backbone(TINY.open_clip_name)  # even with a GELU spelling: the archive is OpenAI's
    loaded = load_clip(choice, str(path))
    assert loaded.weights["format"] == "openai-torchscript" and loaded.quick_gelu
    _assert_loaded(loaded, model.state_dict())


def test_load_open_clip_checkpoint(tmp_path, tiny_model):
    sd = _perturbed_state_dict(tiny_model.model, 2)
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    choice = resolve_backbone(TINY.open_clip_name)  # open_clip spelling: GELU
    loaded = load_clip(choice, str(path))
    assert loaded.weights["format"] == "open_clip-checkpoint" and not loaded.quick_gelu
    assert loaded.weights["sha256"] and loaded.weights["file"] == "epoch_3.pt"
    _assert_loaded(loaded, sd)


def test_load_safetensors(tmp_path, tiny_model, tiny_choice):
    from safetensors.torch import save_file
    sd = _perturbed_state_dict(tiny_model.model, 3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    _assert_loaded(load_clip(tiny_choice, str(path)), sd)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, tiny_model, tiny_choice):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_model.model.state_dict(), "extra": Evil()}, path)
    with pytest.raises(WeightsError, match="not a plain weights file") as e:
        load_clip(tiny_choice, str(path))
    assert "weights_only=False" not in str(e.value)


def test_checkpoint_of_another_backbone_is_refused(tmp_path, tiny_model, tiny_choice):
    sd = dict(tiny_model.model.state_dict())
    sd["visual.conv1.weight"] = torch.zeros(64, 3, 16, 16)
    path = tmp_path / "other.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="visual.conv1.weight has shape"):
        load_clip(tiny_choice, str(path))


def test_missing_checkpoint_file(tmp_path, tiny_choice):
    with pytest.raises(WeightsError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


def test_unknown_tag_lists_valid_tags():
    with pytest.raises(WeightsError, match="laion2b_s34b_b88k.*random"):
        load_clip(resolve_backbone("ViT-B/16"), "not_a_tag")
