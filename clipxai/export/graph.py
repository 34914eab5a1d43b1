"""The modules that are exported: image in, similarity/scores/heatmaps out.

Thin wrappers (like segment-anything's SamOnnxModel) that re-express a model
for export. Every method's graph module has the same signature,

    forward(image [B,3,S,S], text [K,D], redundancy [D])
        -> (similarity [B,N,K], scores [B,K], heatmaps [B,K,g,g])

and the attributes ``image_size`` and ``grid``. With ``with_embedding`` set (bundles
exported with ``--text-explainer``) a fourth output follows: image_embedding [B, D],
plain CLIP's L2-normalised image embedding (the class token the scores use).
With ``with_labels`` set (every bundle exported since issue 31) the output ``labels``
[B, K] comes right after the heatmaps (before the embedding): ``label_logits``.
``BakedVocabulary`` turns one into ``forward(image)`` with the vocabulary baked in
as constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipxai.contract import DEFAULT_LABELS_MERGE_RATE, LOGIT_SCALE
from clipxai.models.feature_surgery import feature_surgery, grid_heatmaps
from clipxai.models.grad_eclip import GradEclipViT
from clipxai.models.dense_methods import DenseViT
from clipxai.models.resnet_surgery import SurgeryResNet
from clipxai.models.surgery import SurgeryViT


def class_scores(cls_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Zero-shot scores [B, K] = softmax(100 * cos) of the unmodified class token [B, D]."""
    return torch.softmax(LOGIT_SCALE * (F.normalize(cls_embedding, dim=-1) @ text.t()), dim=-1)


def label_logits(cls_embedding: torch.Tensor, dense_cos: torch.Tensor, text: torch.Tensor,
                 rate: float) -> torch.Tensor:
    """Independent multi-label logits [B, K], TaI-DPT's zero-shot protocol (docs/methods.md).

    cls_embedding: [B, D] the class token (unnormalised); dense_cos: [B, N, K] cosine of every
    position's dense feature with every class; text: [K, D] L2-normalised. global = 100·cos(class
    token, text); local = Σ_p softmax_p(l)·l with l = 100·dense_cos; rate·local + (1 − rate)·global.
    """
    glob = LOGIT_SCALE * (F.normalize(cls_embedding, dim=-1) @ text.t())
    local = LOGIT_SCALE * dense_cos
    pooled = (torch.softmax(local, dim=1) * local).sum(dim=1)
    return rate * pooled + (1.0 - rate) * glob


class MethodGraph(nn.Module):
    """The common signature; subclasses implement ``outputs``: (similarity, scores, heatmaps,
    class-token embedding [B, D], dense cosine [B, N, K] the labels' local path pools)."""

    with_embedding = False  # also return image_embedding [B, D]
    with_labels = False     # also return labels [B, K] (set by the exporter)
    labels_merge_rate = DEFAULT_LABELS_MERGE_RATE

    def forward(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        sim, scores, maps, embedding, dense = self.outputs(image, text, redundancy)
        out = [sim, scores, maps]
        if self.with_labels:
            out.append(label_logits(embedding, dense, text, self.labels_merge_rate))
        if self.with_embedding:
            out.append(F.normalize(embedding, dim=-1))
        return tuple(out)

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
        dense = feats[:, 1:, :] @ text.t()  # labels: the dual-path tokens BEFORE feature surgery
        return sim, class_scores(feats[:, 0, :], text), grid_heatmaps(sim, self.grid), feats[:, 0, :], dense


class GradEclipOnnxModel(MethodGraph):
    """Grad-ECLIP with the closed-form gradient; the similarity output is the map H
    before normalisation (segmentation is its argmax); redundancy is unused."""

    def __init__(self, vit: GradEclipViT):
        super().__init__()
        self.vit = vit
        self.image_size = vit.image_size
        self.grid = vit.grid

    def outputs(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        sim, cls_embedding, tokens = self.vit.with_patch_tokens(image, text)  # [B, N, K], [B, D], [B, N, D]
        dense = F.normalize(tokens, dim=-1) @ text.t()  # labels: plain CLIP's patch tokens
        return sim, class_scores(cls_embedding, text), grid_heatmaps(sim, self.grid), cls_embedding, dense


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
        dense = feats[:, 1:, :] @ text.t()  # labels: the v-v tokens BEFORE feature surgery
        return sim, class_scores(image_embedding, text), grid_heatmaps(sim, self.grid), image_embedding, dense


class MaskClipResNetOnnxModel(MethodGraph):
    """MaskCLIP on a ResNet, TaI-DPT's dense path: each cell of the last feature map through the
    attention pool's value and output projections (no positional embedding, no attention);
    scores from the plain pool. ``redundancy`` is unused."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet = resnet
        self.image_size = resnet.image_size
        self.grid = resnet.grid

    def outputs(self, image: torch.Tensor, text: torch.Tensor, redundancy: torch.Tensor):
        local, image_embedding = self.resnet(image)  # [B, N, D], [B, D]
        sim = F.normalize(local, dim=-1) @ text.t()
        return sim, class_scores(image_embedding, text), grid_heatmaps(sim, self.grid), image_embedding, sim


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
        return sim, class_scores(feats[:, 0, :], text), grid_heatmaps(sim, self.grid), feats[:, 0, :], sim


class BakedVocabulary(nn.Module):
    """forward(image [B,3,S,S]) -> the wrapped model's outputs, text [K,D] and redundancy [D] baked in."""

    def __init__(self, model: nn.Module, text: torch.Tensor, redundancy: torch.Tensor):
        super().__init__()
        self.model = model
        self.image_size = model.image_size
        self.grid = model.grid
        self.with_embedding = model.with_embedding
        self.with_labels = model.with_labels
        self.register_buffer("text", text.detach().float().clone())
        self.register_buffer("redundancy", redundancy.detach().float().clone())

    def forward(self, image: torch.Tensor):
        return self.model(image, self.text, self.redundancy)
