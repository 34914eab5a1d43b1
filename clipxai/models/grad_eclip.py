"""Grad-ECLIP on open_clip's ViT with the gradient in closed form (no autograd).

Grad-ECLIP (Zhao et al., "Gradient-based Visual Explanation for CLIP") weighs
the values of the last attention by the gradient of the image-text cosine with
respect to the class token's attention output. Everything after that attention
is a fixed chain (out-projection, residual, LayerNorm, MLP, LayerNorm,
projection, cosine), so the gradient is written here as forward operations and
exports to ONNX like any other layer. ``GradEclipViT`` wraps an open_clip
``VisionTransformer`` without copying or modifying it.

Notation (C: width, D: embedding size, K: classes, N: patches, t_k the
L2-normalised text embedding of class k):

1. the last block is rerun with ONE head over the full width (scale C^-1/2):
   a = softmax(q kᵀ / √C) v for the class token; z = W_o a + b_o + x_in;
   x_out = z + MLP(LN2(z)); e = proj(ln_post(x_out)); c_k = e·t_k / ‖e‖;
2. g_k = ∂c_k/∂a (length C) by hand, back through the cosine, proj, ln_post,
   the residual plus MLP (QuickGELU or erf GELU, whichever the model uses),
   LN2 and W_o;
3. λ_i = cosine(W_o q_cls + b_o, W_o k_i + b_o), min-max normalised over the
   patches;
4. H_k,i = ReLU(Σ_c g_k,c · v_i,c · λ_i) for every patch i.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from clipxai.errors import ClipxaiError
from clipxai.models.attention import attend, merge_heads, out_proj, plain_block, project
from clipxai.models.pos_embed import pos_resizer
from clipxai.models.surgery import check_image_size, check_vit_structure, embed_tokens

# Positional embeddings of grad-eclip graphs are resized with this interpolation.


def _quick_gelu_grad(h: torch.Tensor) -> torch.Tensor:
    """d/dh of h·σ(1.702h): σ(1.702h) + 1.702·h·σ(1.702h)(1 − σ(1.702h))."""
    s = torch.sigmoid(1.702 * h)
    return s + 1.702 * h * s * (1.0 - s)


def _gelu_grad(h: torch.Tensor) -> torch.Tensor:
    """d/dh of h·Φ(h) (erf GELU): Φ(h) + h·φ(h)."""
    cdf = 0.5 * (1.0 + torch.erf(h * (1.0 / math.sqrt(2.0))))
    pdf = torch.exp(-0.5 * h * h) * (1.0 / math.sqrt(2.0 * math.pi))
    return cdf + h * pdf


def activation_grad(act: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The derivative of the MLP's activation module (QuickGELU or exact GELU)."""
    if isinstance(act, QuickGELU):
        return _quick_gelu_grad
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return _gelu_grad
    raise ClipxaiError(
        f"grad-eclip supports MLPs with QuickGELU or exact GELU, not {act!r}; use --method surgery"
    )


def layer_norm_grad(ln: nn.LayerNorm, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. the LayerNorm's input x [B, C], given the output gradients grad [B, K, C].

    (γ⊙g − mean(γ⊙g) − n·mean(γ⊙g⊙n)) / s, with n the normalised input and s its
    standard deviation (ln.eps included). Returns [B, K, C].
    """
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    s = torch.sqrt((xc * xc).mean(dim=-1, keepdim=True) + ln.eps)  # [B, 1]
    n = (xc / s).unsqueeze(1)  # [B, 1, C]
    gg = grad * ln.weight if ln.weight is not None else grad
    return (gg - gg.mean(dim=-1, keepdim=True) - n * (gg * n).mean(dim=-1, keepdim=True)) / s.unsqueeze(1)


def _minmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Min-max normalise along dim; a constant slice gives zeros, never NaN."""
    lo = x.amin(dim=dim, keepdim=True)
    span = x.amax(dim=dim, keepdim=True) - lo
    return (x - lo) / torch.where(span > 0, span, torch.ones_like(span))


class GradEclipViT(nn.Module):
    """Image + classes -> Grad-ECLIP maps and the plain CLIP image embedding.

    forward(image [B, 3, S, S], text [K, D] L2-normalised) ->
        (maps [B, N, K] = H before normalisation, cls_embedding [B, D])
    cls_embedding is plain CLIP's image embedding (all heads), for the scores.
    Each image gets its own gradients.
    """

    def __init__(self, visual: nn.Module, image_size: int):
        super().__init__()
        check_vit_structure(visual)
        patch = check_image_size(visual, image_size)
        last = visual.transformer.resblocks[-1]
        self.act_grad = activation_grad(last.mlp.gelu)
        self.visual = visual
        self.image_size = image_size
        self.patch_size = patch
        self.grid = image_size // patch
        # Resized once from the ORIGINAL weights; the tower itself is never modified.
        self.register_buffer("pos_embed", pos_resizer("grad-eclip")(visual.positional_embedding, self.grid),
                             persistent=False)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(maps H [B, N, K], plain CLIP's class-token embedding [B, D])."""
        maps, cls_embedding, _ = self._run(image, text)
        return maps, cls_embedding

    def with_patch_tokens(self, image: torch.Tensor, text: torch.Tensor):
        """``forward``'s two outputs plus plain CLIP's projected patch tokens [B, N, D] (the last
        block run unchanged over every token), the dense features of the multi-label scores."""
        maps, cls_embedding, x = self._run(image, text)
        tokens = plain_block(self.visual.transformer.resblocks[-1], x)[:, 1:]
        return maps, cls_embedding, self.visual.ln_post(tokens) @ self.visual.proj

    def _run(self, image: torch.Tensor, text: torch.Tensor):
        vis = self.visual
        blocks = vis.transformer.resblocks
        x = embed_tokens(vis, self.pos_embed, image)
        for blk in blocks[:-1]:
            x = plain_block(blk, x)
        blk = blocks[-1]
        attn, mlp = blk.attn, blk.mlp
        h = blk.ln_1(x)

        # Plain CLIP's class token (all heads), for the zero-shot scores.
        qkv = project(attn, h, "qkv")  # [3, B, H, T, d]
        cls = x[:, :1] + out_proj(attn, attend(qkv[0][:, :, :1], qkv[1], qkv[2]))
        cls = cls + mlp(blk.ln_2(cls))
        cls_embedding = vis.ln_post(cls[:, 0]) @ vis.proj  # [B, D]

        # 1. The last block rerun with one head over the full width (scale C^-1/2).
        q, k, v = (merge_heads(t) for t in qkv)  # [B, T, C] each
        a = attend(q[:, None, :1], k[:, None], v[:, None])[:, 0, 0]  # [B, C]
        z = attn.out_proj(a) + x[:, 0]  # [B, C]
        hid = mlp.c_fc(blk.ln_2(z))  # [B, 4C]
        x_out = z + mlp.c_proj(mlp.gelu(hid))
        e = vis.ln_post(x_out) @ vis.proj  # [B, D]

        # 2. g_k = dc_k/da, all classes at once: [B, K, C].
        norm = e.norm(dim=-1, keepdim=True)  # [B, 1]
        et = e @ text.t()  # [B, K]
        g = text.unsqueeze(0) / norm.unsqueeze(-1) - (et / norm ** 3).unsqueeze(-1) * e.unsqueeze(1)  # dc/de
        g = g @ vis.proj.t()  # d/d ln_post output
        g = layer_norm_grad(vis.ln_post, x_out, g)  # d/dx_out
        g_mlp = (g @ mlp.c_proj.weight) * self.act_grad(hid).unsqueeze(1)  # d/dhid
        g = g + layer_norm_grad(blk.ln_2, z, g_mlp @ mlp.c_fc.weight)  # d/dz (residual + MLP)
        g = g @ attn.out_proj.weight  # d/da

        # 3. Spatial weight: cosine of the out-projected class query and patch keys.
        q_o = F.normalize(attn.out_proj(q[:, 0]), dim=-1)  # [B, C]
        k_o = F.normalize(attn.out_proj(k[:, 1:]), dim=-1)  # [B, N, C]
        lam = _minmax((k_o @ q_o.unsqueeze(-1))[..., 0], dim=1)  # [B, N]

        # 4. H_k,i = ReLU(Σ_c g_k,c v_i,c λ_i).
        maps = torch.relu((v[:, 1:] @ g.transpose(1, 2)) * lam.unsqueeze(-1))  # [B, N, K]
        return maps, cls_embedding, x
