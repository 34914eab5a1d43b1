"""Text side (DESIGN section 5): prompt ensemble and redundancy vector.

The text tower is run through open_clip's own modules with explicit attention.
Batches are cut to their longest real sequence:
with the causal mask and end-token pooling, later tokens cannot influence the
result, and with length-invariant attention the cut changes no bit of it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from clipxai.models.attention import attend, out_proj, project

TEMPLATE_SET = "clip-surgery-85"

# The 80 ImageNet templates of the CLIP paper plus five scene templates.
TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
)
assert len(TEMPLATES) == 85

# CPU matmuls with fewer than 12 rows take another kernel whose rounding differs
# (seen with torch 2.15 on AVX2). So a cut batch keeps at least MIN_ROWS token
# rows for the linear layers, and attention zero-pads each sequence to at least
# ATTENTION_MIN_LENGTH (padded keys are masked, padded rows dropped).
MIN_ROWS = 16
ATTENTION_MIN_LENGTH = 16


def _text_parts(model: torch.nn.Module):
    """open_clip's CLIP keeps the text tower on the model; CustomTextCLIP under .text."""
    return getattr(model, "text", model)


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor, truncate: bool = True) -> torch.Tensor:
    """Encode token ids [P, 77] (open_clip tokenizer output) -> unnormalised embeddings [P, D].

    truncate: cut the batch to its longest real sequence.
    """
    t = _text_parts(model)
    eot = tokens.argmax(dim=-1)  # end token has the highest id
    length = tokens.shape[1]
    if truncate:
        rows_floor = -(-MIN_ROWS // tokens.shape[0])  # ceil
        length = min(length, max(int(eot.max()) + 1, rows_floor))
    ids = tokens[:, :length]
    x = t.token_embedding(ids) + t.positional_embedding[:length]
    padded = max(length, min(ATTENTION_MIN_LENGTH, tokens.shape[1]))
    mask = t.attn_mask[:padded, :padded]
    for blk in t.transformer.resblocks:
        x = _text_block(blk, x, mask, padded)
    x = t.ln_final(x)
    pooled = x[torch.arange(x.shape[0]), eot]
    proj = t.text_projection
    return proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj


def _text_block(block, x: torch.Tensor, mask: torch.Tensor, padded: int) -> torch.Tensor:
    """A causal text block with length-invariant attention (see ATTENTION_MIN_LENGTH)."""
    length = x.shape[1]
    q, k, v = project(block.attn, block.ln_1(x), "qkv")
    if padded > length:
        pad = (0, 0, 0, padded - length)
        q, k, v = F.pad(q, pad), F.pad(k, pad), F.pad(v, pad)
    heads = attend(q, k, v, mask, length_invariant=True)[:, :, :length]
    x = x + block.ls_1(out_proj(block.attn, heads))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


@torch.no_grad()
def encode_vocabulary(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    classes: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
    batch_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Prompt-ensemble embeddings T [K, D], L2-normalised rows.

    Every class is formatted with every template; prompts are encoded in
    batches sorted by token length (so each batch is cut short), each row
    L2-normalised, averaged per class and normalised again.
    on_progress(n) is called after each batch with the number of prompts done.
    """
    prompts = [tpl.format(c) for c in classes for tpl in templates]
    tokens = tokenizer(prompts)
    lengths = tokens.argmax(dim=-1)
    order = torch.argsort(lengths, stable=True)
    emb = torch.empty(len(prompts), _embed_dim(model))
    for start in range(0, len(prompts), batch_size):
        idx = order[start:start + batch_size]
        emb[idx] = F.normalize(encode_tokens(model, tokens[idx]), dim=-1)
        if on_progress is not None:
            on_progress(len(idx))
    per_class = emb.reshape(len(classes), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)


def _embed_dim(model: torch.nn.Module) -> int:
    proj = _text_parts(model).text_projection
    return proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1]


def redundancy_vector(
    model, tokenizer, templates: Sequence[str] = TEMPLATES, on_progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """r: the prompt-ensemble embedding of the empty class name "" -> [D]."""
    return encode_vocabulary(model, tokenizer, [""], templates, on_progress=on_progress)[0]
