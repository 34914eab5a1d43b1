"""The module that is exported: image in, similarity/scores/heatmaps out.

A thin wrapper (like segment-anything's SamOnnxModel) that re-expresses the
surgery model for export, with the text embeddings baked in as buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipxai.contract import LOGIT_SCALE
from clipxai.models.feature_surgery import feature_surgery, grid_heatmaps
from clipxai.models.surgery import SurgeryViT


class SurgeryOnnxModel(nn.Module):
    """forward(image [B,3,S,S]) -> (similarity [B,N,K], scores [B,K], heatmaps [B,K,g,g])."""

    def __init__(self, vit: SurgeryViT, text: torch.Tensor, redundancy: torch.Tensor, mode: str):
        super().__init__()
        self.vit = vit
        self.mode = mode
        self.register_buffer("text", text.detach().float().clone())
        self.register_buffer("redundancy", redundancy.detach().float().clone())

    def forward(self, image: torch.Tensor):
        feats = F.normalize(self.vit(image), dim=-1)  # [B, 1+N, D]
        sim = feature_surgery(feats, self.text, self.mode, self.redundancy)[:, 1:, :]
        scores = torch.softmax(LOGIT_SCALE * (feats[:, 0, :] @ self.text.t()), dim=-1)
        return sim, scores, grid_heatmaps(sim, self.vit.grid)
