"""CLIP Surgery on open_clip's ViT (docs/design.md §3 and §4).

``SurgeryViT`` wraps an open_clip ``VisionTransformer`` without copying or
forking it: it calls the tower's own modules with explicit attention and adds
the surgery path through the last blocks.
"""

from __future__ import annotations

import torch
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from clipxai.errors import ClipxaiError
from clipxai.models.pos_embed import resize_pos_embed
from clipxai.models.attention import attend, class_row_attention, mlp, out_proj, plain_block, project


def check_vit_structure(visual: nn.Module) -> None:
    """Fail clearly if open_clip's ViT differs from the structure surgery relies on."""
    problems = []
    if not isinstance(visual, VisionTransformer):
        problems.append(f"vision tower is {type(visual).__name__}, not open_clip VisionTransformer")
    else:
        if visual.attn_pool is not None:
            problems.append("attentional pooling")
        if visual.pool_type != "tok" or visual.final_ln_after_pool:
            problems.append(f"pooling {visual.pool_type!r} (needs class-token pooling)")
        if not isinstance(visual.patch_dropout, nn.Identity):
            problems.append("patch dropout")
        for i, blk in enumerate(visual.transformer.resblocks):
            if not isinstance(blk, ResidualAttentionBlock) or not isinstance(blk.attn, nn.MultiheadAttention):
                problems.append(f"block {i} is not a ResidualAttentionBlock with nn.MultiheadAttention")
                break
            if blk.attn.in_proj_weight is None or blk.attn.in_proj_bias is None:
                problems.append(f"block {i} has no packed in_proj_weight/in_proj_bias")
                break
            if not isinstance(blk.ls_1, nn.Identity) or not isinstance(blk.ls_2, nn.Identity):
                problems.append(f"block {i} uses layer scale")
                break
    if problems:
        raise ClipxaiError(
            "unsupported open_clip ViT structure (" + "; ".join(problems)
            + "); clipxai supports open_clip>=3.0,<3.4 CLIP ViTs"
        )


def embed_tokens(visual: nn.Module, pos_embed: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] -> ln_pre(class token + patch tokens + pos_embed): [B, 1 + N, C]."""
    x = visual.conv1(image).flatten(2).transpose(1, 2)  # [B, N, C]
    cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + pos_embed.to(x.dtype)
    return visual.ln_pre(x)


def check_image_size(visual: nn.Module, image_size: int) -> int:
    """The patch size, after checking image_size is a positive multiple of it."""
    patch = visual.conv1.kernel_size[0]
    if image_size <= 0 or image_size % patch:
        raise ClipxaiError(f"image size {image_size} is not a positive multiple of the patch size {patch}")
    return patch


class SurgeryViT(nn.Module):
    """Image -> CLIP Surgery token embeddings.

    forward(image [B, 3, S, S]) -> [B, 1 + N, D]: ``proj(ln_post(tokens))`` where
    token 0 is the original path's class token (equal to plain CLIP's image
    embedding) and tokens 1..N come from the surgery path. N = (S / patch)².
    """

    def __init__(self, visual: nn.Module, image_size: int, surgery_blocks: int = 6):
        super().__init__()
        check_vit_structure(visual)
        patch = check_image_size(visual, image_size)
        layers = len(visual.transformer.resblocks)
        if not 1 <= surgery_blocks <= layers:
            raise ClipxaiError(f"surgery_blocks must be in 1..{layers}, got {surgery_blocks}")
        self.visual = visual
        self.image_size = image_size
        self.patch_size = patch
        self.grid = image_size // patch
        self.first_surgery_block = layers - surgery_blocks
        # Resized once from the ORIGINAL weights; the tower itself is never modified.
        self.register_buffer("pos_embed", resize_pos_embed(visual.positional_embedding, self.grid), persistent=False)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> ln_pre(patch tokens + class token + pos): [B, 1 + N, C]."""
        return embed_tokens(self.visual, self.pos_embed, image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        blocks = self.visual.transformer.resblocks
        x = self.embed(image)
        for blk in blocks[: self.first_surgery_block]:
            x = plain_block(blk, x)

        x_ori, x_new = x, x
        surgery = list(blocks[self.first_surgery_block:])
        for i, blk in enumerate(surgery):
            h = blk.ln_1(x_ori)
            if i < len(surgery) - 1:
                q, k, v = project(blk.attn, h, "qkv")
                x_ori = x_ori + out_proj(blk.attn, attend(q, k, v))
                x_ori = x_ori + mlp(blk.mlp, blk.ln_2(x_ori))
            else:
                # Last block: the original path only feeds the class token, so
                # its attention row and MLP are computed for token 0 alone, and
                # its keys are never formed (class_row_attention).
                v = project(blk.attn, h, "v")[0]
                cls = x_ori[:, :1] + out_proj(blk.attn, class_row_attention(blk.attn, h, v))
                x_ori = cls + mlp(blk.mlp, blk.ln_2(cls))
            # Surgery path: v-v self-attention, same scale, no MLP.
            x_new = x_new + out_proj(blk.attn, attend(v, v, v))

        tokens = torch.cat([x_ori[:, :1], x_new[:, 1:]], dim=1)
        return self.visual.ln_post(tokens) @ self.visual.proj
