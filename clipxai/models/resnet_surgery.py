"""CLIP Surgery on open_clip's ModifiedResNet (docs/design.md §3, ResNet backbones).

The attention pool becomes one v-v self-attention over the mean token and the
g×g spatial tokens: q, k and v are all ``v_proj(x)``, per head with the pool's
head count and s = d^-1/2 (no L2-normalisation), output through ``c_proj``.
The pool's positional embedding is resized bilinearly from the pretrained grid
(docs/design.md §4). ``SurgeryResNet`` calls the tower's own modules; nothing is
copied or modified.

Token 0 (the mean token): in the reference both of its attention paths give the
same output (q, k, v all come from ``v_proj``), so its v-v output is token 0 of
the surgery tokens and feeds feature surgery as in the reference. The
zero-shot scores use the plain attention pool instead (query = mean token,
``q_proj``/``k_proj``/``v_proj``), i.e. plain CLIP's image embedding at this
resolution, as for the ViTs.
"""

from __future__ import annotations

import torch
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from torch import nn

from clipxai.errors import ClipxaiError
from clipxai.models.attention import attend, merge_heads, split_heads
from clipxai.models.pos_embed import resize_pos_embed

RESNET_STRIDE = 32  # pixels per cell of the attention pool's token grid


def check_resnet_structure(visual: nn.Module) -> None:
    """Fail clearly if open_clip's ResNet differs from the structure ResNet surgery relies on."""
    problems = []
    if not isinstance(visual, ModifiedResNet):
        problems.append(f"vision tower is {type(visual).__name__}, not open_clip ModifiedResNet")
    else:
        for name in ("layer1", "layer2", "layer3", "layer4"):
            if not isinstance(getattr(visual, name, None), nn.Module):
                problems.append(f"no {name}")
        if not callable(getattr(visual, "stem", None)):
            problems.append("no stem()")
        pool = getattr(visual, "attnpool", None)
        if not isinstance(pool, AttentionPool2d):
            problems.append(f"attention pool is {type(pool).__name__}, not AttentionPool2d")
        else:
            for name in ("q_proj", "k_proj", "v_proj", "c_proj"):
                lin = getattr(pool, name, None)
                if not isinstance(lin, nn.Linear) or lin.bias is None:
                    problems.append(f"attnpool.{name} is not a Linear with bias")
            pos = getattr(pool, "positional_embedding", None)
            if not isinstance(pos, torch.Tensor) or pos.ndim != 2:
                problems.append("attnpool has no [1 + g², C] positional_embedding")
            elif pool.v_proj.in_features % pool.num_heads:
                problems.append(f"width {pool.v_proj.in_features} not divisible by {pool.num_heads} heads")
    if problems:
        raise ClipxaiError(
            "unsupported open_clip ResNet structure (" + "; ".join(problems)
            + "); clipxai supports open_clip>=3.0,<3.4 CLIP ResNets"
        )


class SurgeryResNet(nn.Module):
    """Image -> CLIP Surgery tokens of a ResNet, plus plain CLIP's image embedding.

    forward(image [B, 3, S, S]) -> (tokens [B, 1 + N, D], image_embedding [B, D]);
    tokens are ``c_proj`` of the v-v attention (token 0: the mean token),
    N = (S / 32)².
    """

    def __init__(self, visual: nn.Module, image_size: int):
        super().__init__()
        check_resnet_structure(visual)
        if image_size <= 0 or image_size % RESNET_STRIDE:
            raise ClipxaiError(f"image size {image_size} is not a positive multiple of the ResNet stride {RESNET_STRIDE}")
        self.visual = visual
        self.image_size = image_size
        self.grid = image_size // RESNET_STRIDE
        pool = visual.attnpool
        self.from_grid = int(round((pool.positional_embedding.shape[0] - 1) ** 0.5))
        # Resized once from the ORIGINAL weights; the tower itself is never modified.
        self.register_buffer("pos_embed", resize_pos_embed(pool.positional_embedding, self.grid), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool_input(self.cells(image))
        pool = self.visual.attnpool
        val = split_heads(pool.v_proj(x), pool.num_heads)  # [B, H, 1+N, d]
        tokens = pool.c_proj(merge_heads(attend(val, val, val)))
        return tokens, self.plain_pool(x)

    def cells(self, image: torch.Tensor) -> torch.Tensor:
        """The last feature map's cells [B, N, C] (before the attention pool)."""
        v = self.visual
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(image)))))  # [B, C, g, g]
        return x.flatten(2).transpose(1, 2)

    def pool_input(self, cells: torch.Tensor) -> torch.Tensor:
        """[B, 1+N, C]: the mean token and the cells, plus the (resized) positional embedding."""
        return torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1) + self.pos_embed.to(cells.dtype)

    def plain_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Plain CLIP's attention pool (the mean token's query over all tokens): [B, 1+N, C] -> [B, D]."""
        pool = self.visual.attnpool
        heads = pool.num_heads
        q0 = split_heads(pool.q_proj(x[:, :1]), heads)
        key, val = split_heads(pool.k_proj(x), heads), split_heads(pool.v_proj(x), heads)
        return pool.c_proj(merge_heads(attend(q0, key, val)))[:, 0]


class MaskClipResNet(SurgeryResNet):
    """MaskCLIP's dense features of a ResNet, as TaI-DPT's ZeroshotCLIP_dense computes them.

    forward(image [B, 3, S, S]) -> (local [B, N, D], image_embedding [B, D]): local = c_proj(v_proj(cell))
    per cell of the last feature map (no positional embedding, no attention); image_embedding: plain
    CLIP's attention pool (positional embedding resized as for surgery).
    """

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cells = self.cells(image)
        pool = self.visual.attnpool
        return pool.c_proj(pool.v_proj(cells)), self.plain_pool(self.pool_input(cells))
