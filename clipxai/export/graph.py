"""The modules that are exported: image in, similarity/scores/heatmaps out.

Thin wrappers (like segment-anything's SamOnnxModel) that re-express a model
for export. Every method's graph module has the same signature,

    forward(image [B,3,S,S], text [K,D], redundancy [D])
        -> (similarity [B,N,K], scores [B,K], heatmaps [B,K,g,g])

and the attributes ``image_size`` and ``grid``. With ``with_embedding`` set (bundles
exported with ``--text-explainer``) a fourth output follows: image_embedding [B, D],
plain CLIP's L2-normalised image embedding (the class token the scores use).
``BakedVocabulary`` turns one into ``forward(image)`` with the vocabulary baked in
as constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipxai.contract import LOGIT_SCALE
from clipxai.models.feature_surgery import feature_surgery, grid_heatmaps
from clipxai.models.grad_eclip import GradEclipViT
from clipxai.models.dense_methods import DenseViT
from clipxai.models.resnet_surgery import SurgeryResNet
from clipxai.models.surgery import SurgeryViT


def class_scores(cls_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Zero-shot scores [B, K] = softmax(100 * cos) of the unmodified class token [B, D]."""
    return torch.softmax(LOGIT_SCALE * (F.normalize(cls_embedding, dim=-1) @ text.t()), dim=-1)


class MethodGraph(nn.Module):
    """The common signature; subclasses implement ``outputs`` (the three outputs and the embedding)."""

    with_embedding = False  # also return image_embedding [B, D]

    def forward(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        sim, scores, maps, embedding = self.outputs(image, text, redundancy)
        return (sim, scores, maps, F.normalize(embedding, dim=-1)) if self.with_embedding else (sim, scores, maps)

    def outputs(self, image, text, redundancy):
        raise NotImplementedError


class SurgeryOnnxModel(MethodGraph):
    """CLIP Surgery: dual-path ViT tokens, then feature surgery (docs/design.md §3 and §6)."""

    def __init__(self, vit: SurgeryViT, mode: str):
        super().__init__()
        self.vit = vit
        self.mode = mode
        self.image_size = vit.image_size
        self.grid = vit.grid

    def outputs(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        feats = F.normalize(self.vit(image), dim=-1)  # [B, 1+N, D]
        sim = feature_surgery(feats, text, self.mode, redundancy)[:, 1:, :]
        return sim, class_scores(feats[:, 0, :], text), grid_heatmaps(sim, self.grid), feats[:, 0, :]


class GradEclipOnnxModel(MethodGraph):
    """Grad-ECLIP with the closed-form gradient; the similarity output is the map H
    before normalisation (segmentation is its argmax); redundancy is unused."""

    def __init__(self, vit: GradEclipViT):
        super().__init__()
        self.vit = vit
        self.image_size = vit.image_size
        self.grid = vit.grid

    def outputs(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        sim, cls_embedding = self.vit(image, text)  # [B, N, K], [B, D]
        return sim, class_scores(cls_embedding, text), grid_heatmaps(sim, self.grid), cls_embedding


class SurgeryResNetOnnxModel(MethodGraph):
    """CLIP Surgery on a ResNet: v-v attention pool, then feature surgery; scores from the plain pool."""

    def __init__(self, resnet: SurgeryResNet, mode: str):
        super().__init__()
        self.resnet = resnet
        self.mode = mode
        self.image_size = resnet.image_size
        self.grid = resnet.grid

    def outputs(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        tokens, image_embedding = self.resnet(image)
        feats = F.normalize(tokens, dim=-1)  # [B, 1+N, D]
        sim = feature_surgery(feats, text, self.mode, redundancy)[:, 1:, :]
        return sim, class_scores(image_embedding, text), grid_heatmaps(sim, self.grid), image_embedding


class DenseOnnxModel(MethodGraph):
    """A dense method (vanilla, MaskCLIP, SCLIP, ClearCLIP, NACLIP): plain cosine similarity.

    No feature surgery: ``redundancy`` is accepted for the common signature and unused.
    """

    def __init__(self, vit: DenseViT):
        super().__init__()
        self.vit = vit
        self.image_size = vit.image_size
        self.grid = vit.grid

    def outputs(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        feats = F.normalize(self.vit(image), dim=-1)  # [B, 1+N, D]
        sim = feats[:, 1:, :] @ text.t()
        return sim, class_scores(feats[:, 0, :], text), grid_heatmaps(sim, self.grid), feats[:, 0, :]


class BakedVocabulary(nn.Module):
    """forward(image [B,3,S,S]) -> the wrapped model's outputs, text [K,D] and redundancy [D] baked in."""

    def __init__(self, model: nn.Module, text: torch.Tensor, redundancy: torch.Tensor):
        super().__init__()
        self.model = model
        self.image_size = model.image_size
        self.grid = model.grid
        self.with_embedding = model.with_embedding
        self.register_buffer("text", text.detach().float().clone())
        self.register_buffer("redundancy", redundancy.detach().float().clone())

    def forward(self, image: torch.Tensor):
        return self.model(image, self.text, self.redundancy)
