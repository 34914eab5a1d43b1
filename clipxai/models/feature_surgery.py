"""Feature surgery and grid heatmaps in torch (docs/design.md §6), batch-aware."""

from __future__ import annotations

import torch


def feature_surgery(
    features: torch.Tensor, text: torch.Tensor, mode: str, redundancy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Similarity of every token to every class after feature surgery.

    features: [B, 1+N, D] image tokens, L2-normalised per token.
    text: [K, D] class embeddings, L2-normalised. redundancy: [D] (mode "empty").
    mode: "classes" | "empty" | "none" | "auto". Returns [B, 1+N, K].
    "auto" is "classes" for K > 1 and "empty" for K == 1, decided from the tensor
    shapes so that an ONNX graph with a dynamic K keeps the choice.

    "classes" uses the closed form of the reference's element-wise version:
    p = softmax(2·S[:, 0]), w = K·p per image, sim = w·S − mean_k(w·S).
    """
    if mode == "auto":
        several = torch.ones_like(text[:, 0]).sum() > 1.5  # K > 1 as a tensor, traced as such
        return torch.where(several, feature_surgery(features, text, "classes"),
                           feature_surgery(features, text, "empty", redundancy))
    if mode == "empty":
        return features @ (text - redundancy).t()
    s = features @ text.t()
    if mode == "none":
        return s
    if mode != "classes":
        raise ValueError(f"unknown redundancy mode {mode!r}")
    k = torch.ones_like(s[:, :1, :]).sum(dim=-1, keepdim=True)  # K, from the shape at run time
    w = k * torch.softmax(2.0 * s[:, :1, :], dim=-1)  # [B, 1, K]
    ws = w * s
    return ws - ws.mean(dim=-1, keepdim=True)


def grid_heatmaps(similarity: torch.Tensor, grid: int) -> torch.Tensor:
    """Per-class min-max over patches on the token grid.

    similarity: [B, N, K] (patch tokens only). Returns [B, K, g, g] in [0, 1];
    a constant map gives zeros, never NaN.
    """
    lo = similarity.amin(dim=1, keepdim=True)
    hi = similarity.amax(dim=1, keepdim=True)
    span = hi - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    maps = (similarity - lo) / span  # [B, N, K]
    b, n, k = maps.shape
    return maps.transpose(1, 2).reshape(b, k, grid, grid)
