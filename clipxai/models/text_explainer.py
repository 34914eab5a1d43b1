"""Grad-ECLIP's word explanation with the gradient in closed form (docs/design.md §11).

Grad-ECLIP (Zhao et al.) explains an image-text match on the text side too: which
tokens of the text made its embedding match the image's. The reference
(``grad_eclip_text.ipynb`` of Cyang-Zhao/Grad-Eclip) re-runs the last n text blocks
(n = 8) with ONE head over the full width and takes ``torch.autograd.grad`` of the
cosine with respect to each of those blocks' attention outputs. Here that gradient
is written as forward operations, so the exported graph needs no autograd.

Why a closed form is short: the text tower is causal and pools the end-of-text
(EOT) row e. Row e of any block's output depends only on rows <= e of its input,
and rows > e never feed back into row e. So ∂c/∂a_l[e] only needs the derivatives
along row e: through each later block's MLP and LayerNorms, and through its
attention at row e, where x[e] reaches the query q_e, its own key k_e and value
v_e (the other rows' keys and values do not depend on x[e]).

Per rewritten block l (C: width, s = C^-1/2, w the softmax row of the EOT query):

    g_l     = ∂c/∂a_l[e]                                  (length C, before out_proj)
    λ_l,i   = minmax_i cos(q_l[e], k_l[i])                 over all 77 positions
    S_l,i   = (Σ_c g_l,c · v_l[i,c]) · λ_l,i
    weights = ReLU(Σ_l S_l) on tokens 1 .. e-1, divided by their sum

q, k, v are the raw in-projections (with bias), as the notebook uses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipxai.contract import DEFAULT_EXPLAINER_BLOCKS
from torch import nn

from clipxai.errors import ClipxaiError
from clipxai.models.attention import plain_block
from clipxai.models.grad_eclip import activation_grad, layer_norm_grad

# The reference explains with the last 8 text blocks (grad_eclip_text.ipynb: clip_encode_text_dense(n=8)).
DEFAULT_BLOCKS = DEFAULT_EXPLAINER_BLOCKS


def _row(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row ``index[p]`` of each t[p]: t [P, L, C], index [P] -> [P, C].

    Picked from the flattened rows [P·L, C] (ONNX Gather), not with ``torch.gather`` (GatherElements):
    OpenVINO 2026.4's CPU plugin could not compile a GatherElements of q, a slice of the qkv MatMul
    (its transformations handed it the whole [P, L, 3C] output; docs/performance.md)."""
    flat = torch.arange(t.shape[0], device=t.device) * t.shape[1] + index      # [P]
    return t.reshape(-1, t.shape[2]).index_select(0, flat)


def _scale_of(ls: nn.Module) -> torch.Tensor | None:
    """LayerScale's gamma [C], or None for Identity."""
    return None if isinstance(ls, nn.Identity) else ls.gamma


def _scaled(ls: nn.Module, t: torch.Tensor) -> torch.Tensor:
    gamma = _scale_of(ls)
    return t if gamma is None else t * gamma


def _minmax_rows(x: torch.Tensor) -> torch.Tensor:
    """Min-max of each row of x [P, L]; a constant row gives zeros."""
    lo = x.amin(dim=-1, keepdim=True)
    span = x.amax(dim=-1, keepdim=True) - lo
    return (x - lo) / torch.where(span > 0, span, torch.ones_like(span))


def check_text_tower(model: nn.Module, name: str = "this model") -> nn.Module:
    """The text tower of an open_clip CLIP, if the explainer supports it (else ClipxaiError)."""
    t = getattr(model, "text", model)
    pool = getattr(t, "text_pool_type", getattr(t, "pool_type", "argmax"))
    blocks = getattr(getattr(t, "transformer", None), "resblocks", None)
    ok = (getattr(t, "attn_mask", None) is not None and pool in ("argmax", "eos") and blocks is not None
          and not getattr(t, "final_ln_after_pool", False) and getattr(t, "cls_emb", None) is None)
    for blk in blocks or ():
        ok = ok and isinstance(getattr(blk, "attn", None), nn.MultiheadAttention) and hasattr(blk.mlp, "c_fc")
        ok = ok and isinstance(getattr(blk, "ln_attn", nn.Identity()), nn.Identity)
        ok = ok and isinstance(getattr(blk.mlp, "ln", nn.Identity()), nn.Identity)
    if not ok:
        raise ClipxaiError(f"--text-explainer supports CLIP's causal text tower with end-token pooling; "
                           f"{name} has another kind of text tower: export without --text-explainer")
    return t


class TextExplainer(nn.Module):
    """Token ids + an image embedding -> Grad-ECLIP word weights and the cosine they explain.

    forward(input_ids int64 [P, 77], eot_index int64 [P], image_embedding float32 [D]) ->
        (weights float32 [P, 77]: >= 0 on tokens 1 .. eot-1 summing to 1 (all zero when no
         token has positive relevance), zero elsewhere;
         cosine float32 [P]: cosine of the image embedding and the text embedding of the
         explained forward, i.e. with the last ``blocks`` blocks one-head)
    The padding after the end token (id 0) takes part in λ's min-max, as in the reference,
    so rows must be the full 77 tokens.
    """

    def __init__(self, model: nn.Module, blocks: int = DEFAULT_BLOCKS, name: str = "this model"):
        super().__init__()
        t = check_text_tower(model, name)
        if blocks < 1:
            raise ClipxaiError(f"the text explainer needs at least 1 block, got {blocks}")
        self.token_embedding = t.token_embedding
        self.positional_embedding = t.positional_embedding
        self.blocks = t.transformer.resblocks
        self.n = min(blocks, len(self.blocks))
        self.ln_final = t.ln_final
        self.text_projection = t.text_projection
        self.act_grads = [activation_grad(b.mlp.gelu) for b in self.blocks[-self.n:]]
        self.register_buffer("attn_mask", t.attn_mask.detach().float().clone(), persistent=False)

    def forward(self, input_ids: torch.Tensor, eot_index: torch.Tensor, image_embedding: torch.Tensor):
        total, cosine = self.relevance(input_ids, eot_index, image_embedding)
        return self._normalise(torch.relu(total), eot_index), cosine

    def relevance(self, input_ids: torch.Tensor, eot_index: torch.Tensor, image_embedding: torch.Tensor):
        """Σ_l S_l before the ReLU, over all positions [P, L], and the cosine [P]."""
        length = input_ids.shape[1]
        mask = self.attn_mask[:length, :length]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        for blk in self.blocks[:len(self.blocks) - self.n]:
            x = plain_block(blk, x, mask, chunked_mlp=False)
        saved = []
        for blk in self.blocks[len(self.blocks) - self.n:]:
            x, rows = self._one_head_block(blk, x, mask, eot_index)
            saved.append(rows)
        cosine, grad = self._cosine_and_grad(_row(x, eot_index), image_embedding)
        total = 0
        for i in reversed(range(self.n)):
            blk, rows = self.blocks[len(self.blocks) - self.n + i], saved[i]
            g_a, grad_z = self._grad_attention_output(blk, rows, grad, self.act_grads[i])
            if i > 0:
                grad = grad_z + self._grad_through_attention(blk, rows, g_a)
            total = total + self._relevance(rows, g_a)
        return total, cosine

    @staticmethod
    def _one_head_block(blk, x, mask, eot):
        """One block with one head over the full width -> (output [P, L, C], what the backward needs)."""
        attn, c = blk.attn, x.shape[-1]
        h = blk.ln_1(x)
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)  # [P, L, C] each
        w = ((q @ k.transpose(1, 2)) * c ** -0.5 + mask).softmax(dim=-1)                # [P, L, L]
        a = w @ v
        z = x + _scaled(blk.ls_1, attn.out_proj(a))
        hid = blk.mlp.c_fc(blk.ln_2(z))
        out = z + _scaled(blk.ls_2, blk.mlp.c_proj(blk.mlp.gelu(hid)))
        rows = {"x": _row(x, eot), "q": _row(q, eot), "k": k, "v": v, "a": _row(a, eot),
                "w": _row(w, eot), "z": _row(z, eot), "hid": _row(hid, eot), "eot": eot}
        return out, rows

    def _cosine_and_grad(self, x_eot, image_embedding):
        """cos(t, image) [P] and ∂cos/∂(last block's output at EOT) [P, C]."""
        f = self.ln_final(x_eot)
        proj = self.text_projection
        t = proj(f) if isinstance(proj, nn.Linear) else f @ proj           # [P, D]
        img = F.normalize(image_embedding.reshape(1, -1), dim=-1)           # [1, D]
        norm = t.norm(dim=-1, keepdim=True)
        cosine = (t @ img.t())[:, 0] / norm[:, 0]
        dt = img / norm - (cosine[:, None] / norm) * (t / norm)            # ∂cos/∂t
        df = dt @ proj.weight if isinstance(proj, nn.Linear) else dt @ proj.t()
        return cosine, layer_norm_grad(self.ln_final, x_eot, df.unsqueeze(1))[:, 0]

    @staticmethod
    def _grad_attention_output(blk, rows, grad_out, act_grad):
        """Back through the MLP and LN2 at EOT -> (g = ∂c/∂a[e] [P, C], ∂c/∂z[e] [P, C])."""
        mlp = blk.mlp
        g_hid = (_scaled(blk.ls_2, grad_out) @ mlp.c_proj.weight) * act_grad(rows["hid"])
        grad_z = grad_out + layer_norm_grad(blk.ln_2, rows["z"], (g_hid @ mlp.c_fc.weight).unsqueeze(1))[:, 0]
        return _scaled(blk.ls_1, grad_z) @ blk.attn.out_proj.weight, grad_z

    @staticmethod
    def _grad_through_attention(blk, rows, g_a):
        """The part of ∂c/∂x[e] (block input at EOT) that goes through LN1 -> q_e, k_e, v_e: [P, C]."""
        c = g_a.shape[-1]
        scale = c ** -0.5
        q, k, v, w, eot = rows["q"], rows["k"], rows["v"], rows["w"], rows["eot"]
        gv = (v @ g_a.unsqueeze(-1))[..., 0]                          # [P, L]: g·v_i
        ds = w * (gv - (g_a * rows["a"]).sum(-1, keepdim=True))        # softmax backward, [P, L]
        dq = (ds.unsqueeze(1) @ k)[:, 0] * scale                        # [P, C]
        ds_e = ds.gather(1, eot.reshape(-1, 1))                         # [P, 1]
        w_e = w.gather(1, eot.reshape(-1, 1))
        dk, dv = ds_e * q * scale, w_e * g_a
        w_in = blk.attn.in_proj_weight                                  # [3C, C]
        dh = dq @ w_in[:c] + dk @ w_in[c:2 * c] + dv @ w_in[2 * c:]
        return layer_norm_grad(blk.ln_1, rows["x"], dh.unsqueeze(1))[:, 0]

    @staticmethod
    def _relevance(rows, g_a):
        """S_i = (g·v_i) · λ_i over all positions: [P, L]."""
        lam = _minmax_rows((F.normalize(rows["k"], dim=-1) @ F.normalize(rows["q"], dim=-1).unsqueeze(-1))[..., 0])
        return (rows["v"] @ g_a.unsqueeze(-1))[..., 0] * lam

    @staticmethod
    def _normalise(e, eot):
        """Keep tokens 1 .. eot-1, divide by their sum (zeros if it is 0): [P, L] -> [P, L]."""
        pos = torch.arange(e.shape[1], device=e.device).unsqueeze(0)
        keep = (pos >= 1) & (pos < eot.unsqueeze(1))
        e = torch.where(keep, e, torch.zeros_like(e))
        total = e.sum(dim=-1, keepdim=True)
        return e / torch.where(total > 0, total, torch.ones_like(total))
