"""Text side (docs/design.md §5): prompt ensemble and redundancy vector.

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
from clipxai.templates import TEMPLATE_SET, TEMPLATES  # noqa: F401  (re-exported)


# CPU matmuls with fewer than 12 rows take another kernel whose rounding differs
# (seen with torch 2.15 on this project's AMD EPYC). So a cut batch keeps at least MIN_ROWS token
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
