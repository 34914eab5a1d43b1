"""The method table: one row per training-free method, as data (torch-free).

Every place that needs to know the methods reads this table: ``contract.METHODS``
(what a bundle may say), the exporter (which builder makes the graph, which
backbones it supports, whether ``--redundancy`` applies), the CLI help and
docs/methods.md. Adding a method is adding a row here and its builder in
``clipxai.export.methods``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """name: the ``--method`` value. builder: the function of ``clipxai.export.methods`` that
    builds its graph. feature_surgery: whether it applies feature surgery (and reads
    ``--redundancy``). archs: backbone architectures it supports ("vit", "resnet").
    pos_embed_resize: how positional embeddings are resized for another grid, a key of
    ``POS_EMBED_RESIZES``. summary: what its last block does, one line. paper: the source."""

    name: str
    builder: str
    feature_surgery: bool
    archs: tuple[str, ...]
    pos_embed_resize: str
    summary: str
    paper: str


# How the positional embeddings of the pretrained grid g0 reach the grid g (class token kept).
POS_EMBED_RESIZES: dict[str, dict] = {
    "bilinear": {"mode": "bilinear", "align_corners": False, "antialias": False, "target": "size"},
    "bicubic-size": {"mode": "bicubic", "align_corners": False, "antialias": False, "target": "size"},
    "bicubic-scale": {"mode": "bicubic", "align_corners": False, "antialias": False, "target": "scale_factor",
                      "scale_factor": "(to_grid + 0.1) / from_grid", "recompute_scale_factor": False},
}

METHOD_TABLE: tuple[Method, ...] = (
    Method("surgery", "build_surgery", True, ("vit", "resnet"), "bilinear",
           "last 6 blocks get a second v-v attention path without MLP, then feature surgery",
           "CLIP Surgery (Li et al., 2023)"),
    Method("grad-eclip", "build_grad_eclip", False, ("vit",), "bicubic-size",
           "closed-form gradient of each class's cosine w.r.t. the class token's attention output, "
           "times values and a query-key weight",
           "Grad-ECLIP (Zhao et al., ICML 2024)"),
    Method("vanilla", "build_dense", False, ("vit",), "bicubic-scale",
           "unchanged: plain CLIP patch tokens", "baseline"),
    Method("maskclip", "build_dense", False, ("vit", "resnet"), "bicubic-size",
           "value path alone (x + W_o·v), then the MLP; on a ResNet, each cell through the attention "
           "pool's value and output projections", "MaskCLIP (Zhou et al., ECCV 2022)"),
    Method("sclip", "build_dense", False, ("vit",), "bicubic-scale",
           "correlative self-attention (q-q + k-k), then the MLP", "SCLIP (Wang et al., ECCV 2024)"),
    Method("clearclip", "build_dense", False, ("vit",), "bicubic-scale",
           "q-q attention alone: no residual, no MLP", "ClearCLIP (Lan et al., ECCV 2024)"),
    Method("naclip", "build_dense", False, ("vit",), "bicubic-scale",
           "k-k attention plus a Gaussian neighbourhood prior, no residual, no MLP",
           "NACLIP (Hajimiri et al., WACV 2025)"),
)

METHODS_BY_NAME: dict[str, Method] = {m.name: m for m in METHOD_TABLE}


def method_names() -> tuple[str, ...]:
    return tuple(m.name for m in METHOD_TABLE)


def pos_embed_record(method: str, from_grid: int, to_grid: int) -> dict:
    """The manifest's ``pos_embed_resize`` for a method (``applied``: False at the pretrained grid)."""
    rec = POS_EMBED_RESIZES[METHODS_BY_NAME[method].pos_embed_resize]
    return {"from_grid": from_grid, "to_grid": to_grid, **rec, "applied": from_grid != to_grid}
