"""Tiny random SAM and SAM 2.1 models, registered in clipxai's mask-model table (for the fast suite)."""

from __future__ import annotations

from clipxai.mask_models import MaskModel, register_mask_model
from clipxai.models.sam import save_random_checkpoint as save_checkpoint  # noqa: F401  (the tests' name)

TINY_SAM = register_mask_model(MaskModel("tiny-sam", "sam", (32, 2, 2, (1,)), "tiny_sam.pth",
                                         "https://example.invalid/"))
# A global-attention block must not be the first of a stage in Hiera: stages [1, 1, 2, 1], global [3].
TINY_SAM2 = register_mask_model(MaskModel(
    "tiny-sam2", "sam2", "configs/sam2.1/sam2.1_hiera_t.yaml", "tiny_sam2.pt", "https://example.invalid/",
    overrides=("++model.image_encoder.trunk.embed_dim=8", "++model.image_encoder.trunk.stages=[1,1,2,1]",
               "++model.image_encoder.trunk.global_att_blocks=[3]",
               "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
               # one cheap memory-attention layer (the bank stays SAM 2.1's: 7 memories, 16 pointers)
               "++model.memory_attention.num_layers=1", "++model.memory_attention.layer.dim_feedforward=64",
               "++model.memory_attention.layer.self_attention.downsample_rate=4",
               "++model.memory_attention.layer.cross_attention.downsample_rate=4")))
# Same family as tiny-sam, another width: a checkpoint of one does not fit the other.
TINY_SAM_WIDE = register_mask_model(MaskModel("tiny-sam-wide", "sam", (48, 2, 2, (1,)), "tiny_sam_wide.pth",
                                              "https://example.invalid/"))

