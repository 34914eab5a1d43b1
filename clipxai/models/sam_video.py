"""SAM 2.1's video modules as three more graphs: memory attention, memory encoder, and the tracking decoder.

What ``SAM2VideoPredictor`` runs per frame and object (sam2's ``SAM2Base.track_step``), split where the
bank of memories changes shape, so that the graphs take a bank of any size and the bookkeeping (which
frames are in the bank, their temporal positions) stays in numpy (clipxai/runtime/sam/tracker.py):

- ``MemoryAttentionGraph``: the frame's image embedding [1, 256, 64, 64] (the encoder's, "no memory"
  embedding included: it is subtracted here), the bank's memories [B, M, 64, 64, 64] with their temporal
  slots [B, M] (an index into ``maskmem_tpos_enc``), the object pointers [B, P, 256] with their
  normalised temporal distances [B, P] -> the memory-conditioned features [B, 256, 64, 64].
- ``MemoryEncoderGraph``: the image embedding, the chosen low-resolution mask logits [B, 1, 256, 256],
  the object score logits [B, 1] and a binarize flag [B] (1 for a frame prompted with points) -> the
  frame's memory [B, 64, 64, 64] (the "no object" spatial embedding added where the object is absent).
- ``TrackDecoder``: features [B, 256, 64, 64] (conditioned, or the image embedding on a prompted frame),
  the two high-resolution maps, points [B, N, 2] and labels [B, N] -> low-resolution logits
  [B, 4, 256, 256], IoU [B, 4], the object pointer of each of the four mask tokens [B, 4, 256] (the
  "no object" pointer where the object is absent) and the object score logits [B, 1].

The modules call the package's own layers; two things are written here because they do not export:
the rotary encoding (complex numbers in sam2) is applied with its cosines and sines, and the keys of
the cross-attention are rotated per memory frame rather than by repeating the frequency table. The
positional encodings of the 64 x 64 maps do not depend on the image: they are computed once here and
stored in the graphs. docs/design.md, "Tracking through video", says how the graphs fit together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipxai.models.sam import IMAGE_SIZE, PromptDecoder


@dataclass(frozen=True)
class TrackingConstants:
    """The model's tracking settings the runtime needs (written to the manifest's ``tracking``)."""

    num_maskmem: int            # memory frames attended to: the prompted frames + the last num_maskmem - 1
    max_obj_ptrs: int           # object pointers: the prompted frames' + the last max_obj_ptrs - 1 frames'
    mem_dim: int                # channels of a memory (64)
    hidden_dim: int             # channels of the image embedding and of a pointer (256)
    multimask_max_points: int   # a prompt of at most this many points gives three masks (the best is kept)
    fill_hole_area: int         # background holes up to this area (low-res pixels) become foreground (0.1)
    no_object_score: float      # the logit given to every pixel of an absent object (-1024)


def tracking_constants(model: nn.Module) -> TrackingConstants:
    """The constants of a SAM 2.1 model as ``build_sam2_video_predictor`` configures it (fill holes up to
    8 pixels, binarize masks from points: checked in ``check_video_model``)."""
    from sam2.modeling.sam2_base import NO_OBJ_SCORE
    return TrackingConstants(
        num_maskmem=int(model.num_maskmem), max_obj_ptrs=int(model.max_obj_ptrs_in_encoder),
        mem_dim=int(model.mem_dim), hidden_dim=int(model.hidden_dim),
        multimask_max_points=int(model.multimask_max_pt_num), fill_hole_area=8, no_object_score=float(NO_OBJ_SCORE))


def check_video_model(model: nn.Module) -> None:
    """The settings the tracker reproduces; a model configured otherwise is refused (ValueError)."""
    wanted = {"use_obj_ptrs_in_encoder": True, "add_tpos_enc_to_obj_ptrs": True, "proj_tpos_enc_in_obj_ptrs": True,
              "use_signed_tpos_enc_to_obj_ptrs": True, "only_obj_ptrs_in_the_past_for_eval": True,
              "pred_obj_scores": True, "fixed_no_obj_ptr": True, "soft_no_obj_ptr": False,
              "directly_add_no_mem_embed": True, "use_multimask_token_for_obj_ptr": True,
              "multimask_output_in_sam": True, "multimask_output_for_tracking": True, "multimask_min_pt_num": 0,
              "memory_temporal_stride_for_eval": 1, "max_cond_frames_in_attn": -1,
              "non_overlap_masks_for_mem_enc": False, "use_high_res_features_in_sam": True}
    wrong = [f"{k}={getattr(model, k, None)!r}" for k, v in wanted.items() if getattr(model, k, None) != v]
    if wrong or model.no_obj_embed_spatial is None or model.num_maskmem < 2:
        raise ValueError("this SAM 2 configuration tracks differently from SAM 2.1's video predictor ("
                         + ", ".join(wrong or ["no spatial no-object embedding or no memory"]) + ")")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """sam2's ``apply_rotary_enc`` in real arithmetic: consecutive channel pairs (a, b) of x [..., N, D]
    rotated by the angles whose cosines and sines are cos, sin [N, D / 2]."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class _RotaryAttention(nn.Module):
    """One of sam2's ``RoPEAttention`` layers (its projections), for queries on the 64 x 64 grid and keys
    that are whole grids ([B, M * N] tokens, each grid rotated like the queries) followed by unrotated
    pointer tokens."""

    def __init__(self, layer: nn.Module, grid: int):
        super().__init__()
        self.layer = layer
        from sam2.modeling.position_encoding import compute_axial_cis
        cis = compute_axial_cis(dim=layer.internal_dim // layer.num_heads, end_x=grid, end_y=grid,
                                theta=_theta(layer))
        self.register_buffer("cos", cis.real.contiguous(), persistent=False)
        self.register_buffer("sin", cis.imag.contiguous(), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_plain: torch.Tensor | None = None,
                v_plain: torch.Tensor | None = None) -> torch.Tensor:
        """q [B, N, C]; k, v [B, M * N, Ck] (rotated per grid); k_plain, v_plain [B, P, Ck] (not rotated).
        Heads are folded into the batch, so attention is 3-D (what the CPU graph cache fuses into
        onnxruntime's flash-style kernel: clipxai/runtime/cpu/attention_fusion.py)."""
        att = self.layer
        n = self.cos.shape[0]
        q = _rotate(self._heads(att.q_proj(q)), self.cos, self.sin)                    # [B h, N, d]
        kk = self._heads(att.k_proj(k))
        kk = _rotate(kk.reshape(kk.shape[0], -1, n, kk.shape[-1]), self.cos, self.sin).flatten(1, 2)
        vv = self._heads(att.v_proj(v))
        if k_plain is not None:
            kk = torch.cat([kk, self._heads(att.k_proj(k_plain))], dim=1)
            vv = torch.cat([vv, self._heads(att.v_proj(v_plain))], dim=1)
        weights = torch.softmax(q @ kk.transpose(1, 2) * (1.0 / math.sqrt(q.shape[-1])), dim=-1)
        return att.out_proj(self._merge(weights @ vv))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, h d] -> [B h, T, d] (sam2's _separate_heads with the heads folded into the batch)."""
        b, t, c = x.shape
        h = self.layer.num_heads
        return x.reshape(b, t, h, c // h).transpose(1, 2).reshape(b * h, t, c // h)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B h, T, d] -> [B, T, h d] (sam2's _recombine_heads)."""
        h = self.layer.num_heads
        bh, t, d = x.shape
        return x.reshape(bh // h, h, t, d).transpose(1, 2).reshape(bh // h, t, h * d)


def _theta(layer: nn.Module) -> float:
    """The rope_theta the layer was built with (sam2 keeps it inside a functools.partial)."""
    return float(layer.compute_cis.keywords.get("theta", 10000.0))


class MemoryAttentionGraph(nn.Module):
    """forward(image_embeddings [1, 256, 64, 64], memories [B, M, 64, 64, 64], memory_slots int64 [B, M],
    object_pointers [B, P, 256], pointer_distances [B, P]) -> conditioned_features [B, 256, 64, 64].

    memory_slots: per memory, num_maskmem - t_pos - 1 (sam2's index into maskmem_tpos_enc: 0 for the
    frame just before, num_maskmem - 1 for a prompted frame). pointer_distances: frame distances divided
    by max_obj_ptrs - 1 (sam2's normalisation), in the order the pointers are given."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.attention = model.memory_attention
        self.register_buffer("no_mem_embed", model.no_mem_embed.detach().reshape(1, -1, 1, 1), persistent=False)
        self.tpos = model.maskmem_tpos_enc            # [num_maskmem, 1, 1, mem_dim]
        self.tpos_proj = model.obj_ptr_tpos_proj
        self.hidden_dim, self.mem_dim = model.hidden_dim, model.mem_dim
        grid = model.sam_image_embedding_size
        curr_pos, mem_pos = _grid_encodings(model)
        self.register_buffer("curr_pos", curr_pos, persistent=False)   # [N, 256]
        self.register_buffer("mem_pos", mem_pos, persistent=False)     # [N, 64]
        self.self_rotary = nn.ModuleList(_RotaryAttention(layer.self_attn, grid) for layer in self.attention.layers)
        self.cross_rotary = nn.ModuleList(_RotaryAttention(layer.cross_attn_image, grid)
                                          for layer in self.attention.layers)

    def forward(self, image_embeddings, memories, memory_slots, object_pointers, pointer_distances):
        from sam2.modeling.sam2_utils import get_1d_sine_pe
        b = memories.shape[0]
        n = self.curr_pos.shape[0]
        curr = (image_embeddings - self.no_mem_embed).flatten(2).transpose(1, 2).expand(b, -1, -1)  # [B, N, C]
        mem = memories.flatten(3).transpose(2, 3)                                   # [B, M, N, mem_dim]
        mem_pos = self.mem_pos + self.tpos.reshape(self.tpos.shape[0], -1)[memory_slots].unsqueeze(2)
        mem, mem_pos = mem.reshape(b, -1, self.mem_dim), mem_pos.reshape(b, -1, self.mem_dim)
        split = self.hidden_dim // self.mem_dim                                     # a pointer is `split` tokens
        ptr = object_pointers.reshape(b, -1, self.mem_dim)
        ptr_pos = self.tpos_proj(get_1d_sine_pe(pointer_distances, dim=self.hidden_dim))
        ptr_pos = ptr_pos.repeat_interleave(split, dim=1)
        out = curr + 0.1 * self.curr_pos if self.attention.pos_enc_at_input else curr
        for layer, self_att, cross_att in zip(self.attention.layers, self.self_rotary, self.cross_rotary):
            out = self._layer(layer, self_att, cross_att, out, (mem, mem_pos, ptr, ptr_pos))
        out = self.attention.norm(out)
        return out.transpose(1, 2).reshape(b, self.hidden_dim, int(math.sqrt(n)), int(math.sqrt(n)))

    def _layer(self, layer, self_att, cross_att, tgt, memory):
        """sam2's ``MemoryAttentionLayer.forward`` (eval: no dropout)."""
        mem, mem_pos, ptr, ptr_pos = memory
        x = layer.norm1(tgt)
        q = x + self.curr_pos if layer.pos_enc_at_attn else x
        tgt = tgt + self_att(q, q, x)
        x = layer.norm2(tgt)
        q = x + self.curr_pos if layer.pos_enc_at_cross_attn_queries else x
        keys, ptr_keys = (mem + mem_pos, ptr + ptr_pos) if layer.pos_enc_at_cross_attn_keys else (mem, ptr)
        tgt = tgt + cross_att(q, keys, mem, ptr_keys, ptr)
        x = layer.norm3(tgt)
        return tgt + layer.linear2(layer.activation(layer.linear1(x)))


def _grid_encodings(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The sine position encodings of the 64 x 64 image-embedding grid (the neck's, [N, 256]) and of a
    memory (the memory encoder's, [N, 64]); neither depends on the image."""
    grid = model.sam_image_embedding_size
    with torch.no_grad():
        feat = torch.zeros(1, model.hidden_dim, grid, grid)
        curr = model.image_encoder.neck.position_encoding(feat)
        mem = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, grid, grid))
    return curr.flatten(2)[0].T.contiguous(), mem.flatten(2)[0].T.contiguous()


class MemoryEncoderGraph(nn.Module):
    """forward(image_embeddings [1, 256, 64, 64], mask_logits [B, 1, 256, 256], object_score_logits [B, 1],
    binarize [B]) -> memories [B, 64, 64, 64]: sam2's ``_encode_new_memory`` on the mask upsampled to
    1024 (bilinear, as ``_forward_sam_heads``), thresholded at 0 where binarize is 1 (a prompted frame),
    through a sigmoid elsewhere, then scaled and shifted."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.memory_encoder
        self.register_buffer("no_mem_embed", model.no_mem_embed.detach().reshape(1, -1, 1, 1), persistent=False)
        self.no_obj = model.no_obj_embed_spatial                         # [1, mem_dim]
        self.scale, self.bias = float(model.sigmoid_scale_for_mem_enc), float(model.sigmoid_bias_for_mem_enc)

    def forward(self, image_embeddings, mask_logits, object_score_logits, binarize):
        b = mask_logits.shape[0]
        pix = (image_embeddings - self.no_mem_embed).expand(b, -1, -1, -1)
        high = F.interpolate(mask_logits, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        hard = binarize.reshape(-1, 1, 1, 1) > 0.5
        mask = torch.where(hard, (high > 0).float(), torch.sigmoid(high))
        mask = mask * self.scale + self.bias
        features = self.encoder(pix, mask, skip_mask_sigmoid=True)["vision_features"]
        absent = 1 - (object_score_logits > 0).float()                   # [B, 1]
        return features + absent[..., None, None] * self.no_obj[..., None, None]


class TrackDecoder(nn.Module):
    """forward(features [B, 256, 64, 64], high_res_feats_0 [1, 32, 256, 256], high_res_feats_1
    [1, 64, 128, 128], point_coords [B, N, 2], point_labels [B, N]) -> (low_res_masks [B, 4, 256, 256],
    iou_predictions [B, 4], object_pointers [B, 4, 256], object_score_logits [B, 1]).

    Raw logits of all four tokens (the runtime picks the token, applies the stability rule and the
    no-object score, as ``_forward_sam_heads`` does); each token's pointer through ``obj_ptr_proj``, the
    no-object pointer in its place where the object score is not positive (``fixed_no_obj_ptr``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.prompt = PromptDecoder(model, "sam2")
        self.decoder = model.sam_mask_decoder
        self.ptr_proj = model.obj_ptr_proj
        self.no_obj_ptr = model.no_obj_ptr                                # [1, 256]

    def forward(self, features, high_res_0, high_res_1, coords, labels):
        sparse = self.prompt.embed_points(coords, labels)
        prompt = self.prompt.prompt
        dense = prompt.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            features.shape[0], -1, features.shape[-2], features.shape[-1])
        masks, iou, tokens, score = self.decoder.predict_masks(
            features, prompt.get_dense_pe(), sparse, dense, repeat_image=False,
            high_res_features=[high_res_0, high_res_1])
        present = (score > 0).float().unsqueeze(1)                       # [B, 1, 1]
        pointers = present * self.ptr_proj(tokens) + (1 - present) * self.no_obj_ptr
        return masks, iou, pointers, score


def video_graph_modules(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(memory attention, memory encoder, track decoder) of a SAM 2.1 model, in eval mode."""
    check_video_model(model)
    return MemoryAttentionGraph(model).eval(), MemoryEncoderGraph(model).eval(), TrackDecoder(model).eval()
