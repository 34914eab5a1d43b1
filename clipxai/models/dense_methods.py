"""Training-free dense CLIP methods on open_clip's ViT: vanilla, MaskCLIP, SCLIP, ClearCLIP, NACLIP.

Each method changes the last block (block L-1) only; blocks 0..L-2 are plain
CLIP (docs/design.md §3 notation, s = d^-1/2 per head, H = the block's heads):

- ``vanilla``:   the unmodified block.
- ``maskclip``:  ``x + W_o·v + b_o``, then ``+ MLP(LN2(·))`` (value path alone).
- ``sclip``:     ``x + W_o·(softmax(s·q qᵀ) + softmax(s·k kᵀ))·v + b_o``, then the MLP.
- ``clearclip``: ``W_o·softmax(s·q qᵀ)·v + b_o`` alone (no residual, no MLP).
- ``naclip``:    ``W_o·softmax(s·k kᵀ + Ω)·v + b_o`` alone, Ω a Gaussian (σ = 5)
  over the patch grid, zero on the class token's row and column.

``DenseViT`` calls the tower's own modules with the explicit attention of
``clipxai.models.attention``; token 0 of its output is always the class token
of the unmodified model (for the zero-shot scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from clipxai.errors import ClipxaiError
from clipxai.models.attention import attend, class_row_attention, mlp, out_proj, plain_block, project
from clipxai.models.pos_embed import pos_resizer
from clipxai.models.surgery import check_vit_structure

NACLIP_SIGMA = 5.0


# --- the last block of each method ---------------------------------------------------------------

def naclip_omega(grid: int, sigma: float = NACLIP_SIGMA) -> torch.Tensor:
    """Ω [1+N, 1+N]: exp(-‖p_i - p_j‖² / (2σ²)) over patch grid positions; class row/column 0."""
    rows = torch.arange(grid, dtype=torch.float64).repeat_interleave(grid)
    cols = torch.arange(grid, dtype=torch.float64).repeat(grid)
    d2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    omega = torch.zeros(grid * grid + 1, grid * grid + 1, dtype=torch.float64)
    omega[1:, 1:] = torch.exp(-d2 / (2.0 * sigma ** 2))
    return omega.float()


def _mlp(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + mlp(blk.mlp, blk.ln_2(x))


def _vanilla(blk, x, omega):
    return plain_block(blk, x)


def _maskclip(blk, x, omega):
    v = project(blk.attn, blk.ln_1(x), "v")[0]
    return _mlp(blk, x + out_proj(blk.attn, v))


def _sclip(blk, x, omega):
    q, k, v = project(blk.attn, blk.ln_1(x), "qkv")
    return _mlp(blk, x + out_proj(blk.attn, attend(q, q, v) + attend(k, k, v)))


def _clearclip(blk, x, omega):
    q, v = project(blk.attn, blk.ln_1(x), "qv")
    return out_proj(blk.attn, attend(q, q, v))


def _naclip(blk, x, omega):
    k, v = project(blk.attn, blk.ln_1(x), "kv")
    return out_proj(blk.attn, attend(k, k, v, mask=omega))


@dataclass(frozen=True)
class DenseMethod:
    last_block: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]
    alters_last_block: bool    # False: token 0 of the method's own output is plain CLIP's
    uses_omega: bool = False


DENSE_METHODS: dict[str, DenseMethod] = {
    "vanilla": DenseMethod(_vanilla, alters_last_block=False),
    "maskclip": DenseMethod(_maskclip, alters_last_block=True),
    "sclip": DenseMethod(_sclip, alters_last_block=True),
    "clearclip": DenseMethod(_clearclip, alters_last_block=True),
    "naclip": DenseMethod(_naclip, alters_last_block=True, uses_omega=True),
}


class DenseViT(nn.Module):
    """Image -> dense tokens of one method.

    forward(image [B, 3, S, S]) -> [B, 1 + N, D]: ``proj(ln_post(tokens))``;
    token 0 is the unmodified model's class token (plain CLIP's image
    embedding), tokens 1..N are the method's patch tokens. N = (S / patch)².
    """

    def __init__(self, visual: nn.Module, image_size: int, method: str):
        super().__init__()
        check_vit_structure(visual)
        if method not in DENSE_METHODS:
            raise ClipxaiError(f"unknown dense method {method!r}; choose one of: {', '.join(DENSE_METHODS)}")
        patch = visual.conv1.kernel_size[0]
        if image_size <= 0 or image_size % patch:
            raise ClipxaiError(f"image size {image_size} is not a positive multiple of the patch size {patch}")
        self.visual = visual
        self.method = method
        self.spec = DENSE_METHODS[method]
        self.image_size = image_size
        self.patch_size = patch
        self.grid = image_size // patch
        # Resized once from the ORIGINAL weights (as the method table says); the tower is never modified.
        self.register_buffer("pos_embed", pos_resizer(method)(visual.positional_embedding, self.grid),
                             persistent=False)
        omega = naclip_omega(self.grid) if self.spec.uses_omega else None
        self.register_buffer("omega", omega, persistent=False)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> ln_pre(patch tokens + class token + pos): [B, 1 + N, C]."""
        v = self.visual
        x = v.conv1(image).flatten(2).transpose(1, 2)  # [B, N, C]
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)
        return v.ln_pre(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        blocks = self.visual.transformer.resblocks
        x = self.embed(image)
        for blk in blocks[:-1]:
            x = plain_block(blk, x)
        last = blocks[-1]
        dense = self.spec.last_block(last, x, self.omega)
        if self.spec.alters_last_block:
            # The plain last block, for the class token alone: its query row and MLP.
            h = last.ln_1(x)
            v = project(last.attn, h, "v")[0]
            cls = _mlp(last, x[:, :1] + out_proj(last.attn, class_row_attention(last.attn, h, v)))
            dense = torch.cat([cls, dense[:, 1:]], dim=1)
        return self.visual.ln_post(dense) @ self.visual.proj

