"""Explicit, export-friendly multi-head attention on open_clip's modules.

open_clip's blocks call ``nn.MultiheadAttention``, whose eval-mode fast path is
a fused kernel the ONNX exporter cannot export. These helpers re-express the
same computation as ``q@kᵀ → softmax → @v`` from the module's own weights
(``in_proj_weight``/``in_proj_bias``, ``out_proj``), so no model code is forked.
Tensors are batch-first: ``[B, T, C]`` tokens, ``[B, H, T, d]`` per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, C] -> [B, H, T, C/H]."""
    b, t, c = x.shape
    return x.reshape(b, t, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, d] -> [B, T, H*d]."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def project(attn: nn.MultiheadAttention, x: torch.Tensor, which: str) -> torch.Tensor:
    """One or more of q, k, v projections of x [B, T, C], split into heads.

    which: a subset string of "qkv" in order, e.g. "kv"; returns [B, H, T, d] per letter
    stacked on a new leading dim: [len(which), B, H, T, d].
    """
    c = attn.embed_dim
    rows = {"q": slice(0, c), "k": slice(c, 2 * c), "v": slice(2 * c, 3 * c)}
    if which == "qkv":
        w, b = attn.in_proj_weight, attn.in_proj_bias
    else:
        w = torch.cat([attn.in_proj_weight[rows[s]] for s in which], 0)
        b = torch.cat([attn.in_proj_bias[rows[s]] for s in which], 0)
    y = F.linear(x, w, b)  # [B, T, n*C]
    bsz, t, _ = y.shape
    h = attn.num_heads
    y = y.reshape(bsz, t, len(which), h, c // h).permute(2, 0, 3, 1, 4)
    return y


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
    length_invariant: bool = False,
) -> torch.Tensor:
    """softmax(s·q kᵀ + mask) v per head, s = d^-1/2; [B, H, Tq, d] -> [B, H, Tq, d].

    length_invariant: spell the softmax out (max, exp, sum, divide). torch's fused
    CPU softmax reduces in an order that depends on the row length, so a causal
    sequence cut to its real length would differ in the last bits; the spelled-out
    form gives the same bits at any length (the text encoder relies on it).
    The fused form exports to one ONNX Softmax and is used for images.
    """
    scale = q.shape[-1] ** -0.5
    scores = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    if length_invariant:
        e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
        weights = e / e.sum(dim=-1, keepdim=True)
    else:
        weights = scores.softmax(dim=-1)
    return weights @ v


def class_row_attention(attn: nn.MultiheadAttention, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention output of token 0 alone, without forming k: h [B, T, C], v [B, H, T, d] -> [B, H, 1, d].

    Per head, s·q0·k_jᵀ = (s·W_kᵀ q0)·h_j + s·q0·b_k. The second term is the same for
    every key j and cancels in the softmax, so one C-vector u = s·W_kᵀ q0 per head
    replaces the key projection of all T tokens (2·T·C² multiply-adds -> 2·T·C·H).
    """
    c, heads = attn.embed_dim, attn.num_heads
    d = c // heads
    q0 = project(attn, h[:, :1], "q")[0]                       # [B, H, 1, d]
    w_k = attn.in_proj_weight[c:2 * c].reshape(heads, d, c)     # [H, d, C]
    u = (q0 * d ** -0.5) @ w_k                                  # [B, H, 1, C]
    scores = u @ h.unsqueeze(1).transpose(-2, -1)               # [B, H, 1, T]
    return scores.softmax(dim=-1) @ v


def out_proj(attn: nn.MultiheadAttention, heads_out: torch.Tensor) -> torch.Tensor:
    """W_o · (merged heads) + b_o: [B, H, T, d] -> [B, T, C]."""
    return attn.out_proj(merge_heads(heads_out))


def self_attention(
    attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None = None,
    length_invariant: bool = False,
) -> torch.Tensor:
    """Plain CLIP self-attention of x [B, T, C] (the block's LN already applied)."""
    q, k, v = project(attn, x, "qkv")
    return out_proj(attn, attend(q, k, v, mask, length_invariant))


def mlp_chunks(hidden: int, widest: int = 1536) -> list[int]:
    """Widths of the hidden-unit chunks ``mlp`` computes one after the other.

    As wide as possible up to ``widest``, in multiples of 256 units, and never a
    multiple of 1024 floats (4 KB): the down-projection reads its input rows with
    that stride, and a 4 KB-multiple stride (ViT-B's 3072 = 12 KB) made onnxruntime's
    GEMM 22-24 % slower on this project's x86 machine (measured: [785, 3072]x[3072, 768]
    at 144 GFLOP/s, as two K=1536 halves at 181-189). A width that is not a multiple of
    256 is left whole.
    """
    if hidden % 256:
        return [hidden]
    units = hidden // 256
    n = -(-hidden // widest)
    while True:
        sizes = [units // n + (1 if i < units % n else 0) for i in range(n)]
        if all(u % 4 for u in sizes):
            return [u * 256 for u in sizes]
        n += 1


def mlp(block_mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's MLP (c_fc -> activation -> c_proj) computed in hidden-unit chunks: [.., C] -> [.., C].

    Exact: the activation is element-wise, so the hidden units split into independent
    groups whose down-projections add up (only the order of the final sum changes).
    """
    fc, act, proj = block_mlp.c_fc, block_mlp.gelu, block_mlp.c_proj
    sizes = mlp_chunks(fc.out_features)
    if len(sizes) == 1:
        return block_mlp(x)
    out, start = None, 0
    for width in sizes:
        rows = slice(start, start + width)
        part = F.linear(act(F.linear(x, fc.weight[rows], fc.bias[rows])), proj.weight[:, rows])
        out = part if out is None else out + part
        start += width
    return out + proj.bias


def plain_block(
    block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None,
    length_invariant: bool = False, chunked_mlp: bool = True,
) -> torch.Tensor:
    """An open_clip ResidualAttentionBlock, with explicit attention: [B, T, C] -> [B, T, C].
    chunked_mlp: compute the MLP in hidden-unit chunks (``mlp``); the text encoder keeps
    the one-piece MLP (its speed with chunks was not measured)."""
    x = x + block.ls_1(self_attention(block.attn, block.ln_1(x), mask, length_invariant))
    h = block.ln_2(x)
    return x + block.ls_2(mlp(block.mlp, h) if chunked_mlp else block.mlp(h))
