"""Positional embeddings for another token grid, one function per kind of the method table.

The kinds (``clipxai.methods.POS_EMBED_RESIZES``): ``bilinear`` and
``bicubic-size`` resize the pretrained g0 x g0 patch embeddings to the target
size; ``bicubic-scale`` resizes by the scale factor (g + 0.1) / g0, as SCLIP,
ClearCLIP and NACLIP do. Half-pixel centres, align_corners=False, no
antialias; the class-token embedding is kept, and the weights are never
modified (docs/design.md §4).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from clipxai.errors import ClipxaiError
from clipxai.methods import METHODS_BY_NAME


def resize_pos_embed(pos: torch.Tensor, grid: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize [1 + g0², C] positional embeddings to [1 + grid², C].

    Patch embeddings are resized from the original grid with ``mode``
    interpolation ("bilinear" or "bicubic"; half-pixel centres,
    align_corners=False, no antialias); the class-token embedding is kept.
    Never modifies ``pos``.
    """
    n, c = pos.shape
    g0 = int(round((n - 1) ** 0.5))
    if g0 * g0 != n - 1:
        raise ClipxaiError(f"positional embedding of {n - 1} patches is not a square grid")
    if grid == g0:
        return pos.detach().clone()
    patches = pos[1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode=mode, align_corners=False, antialias=False)
    patches = patches.permute(0, 2, 3, 1).reshape(grid * grid, c)
    return torch.cat([pos[:1], patches], 0).detach()


def _split_pos(pos: torch.Tensor) -> tuple[torch.Tensor, int]:
    n, c = pos.shape
    g0 = int(round((n - 1) ** 0.5))
    if g0 * g0 != n - 1:
        raise ClipxaiError(f"positional embedding of {n - 1} patches is not a square grid")
    return pos[1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2), g0


def _join_pos(pos: torch.Tensor, grid_map: torch.Tensor, grid: int) -> torch.Tensor:
    if grid_map.shape[-2:] != (grid, grid):
        raise ClipxaiError(f"positional-embedding resize gave a {tuple(grid_map.shape[-2:])} grid, not {grid}x{grid}")
    patches = grid_map.permute(0, 2, 3, 1).reshape(grid * grid, pos.shape[1])
    return torch.cat([pos[:1], patches], 0).detach()


def resize_pos_bicubic_size(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """[1+g0², C] -> [1+grid², C]: bicubic to the target size, align_corners=False (MaskCLIP)."""
    patches, g0 = _split_pos(pos)
    if grid == g0:
        return pos.detach().clone()
    return _join_pos(pos, F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False), grid)


def resize_pos_bicubic_scale(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """[1+g0², C] -> [1+grid², C]: bicubic by scale factor (grid+0.1)/g0 (SCLIP, ClearCLIP, NACLIP).

    The factor itself (not in/out sizes) maps output to input coordinates, so
    the result differs from a resize to ``size=(grid, grid)``. The pretrained
    grid is kept as is, as their references do.
    """
    patches, g0 = _split_pos(pos)
    if grid == g0:
        return pos.detach().clone()
    factor = (grid + 0.1) / g0
    out = F.interpolate(patches, scale_factor=(factor, factor), mode="bicubic", align_corners=False,
                        recompute_scale_factor=False)
    return _join_pos(pos, out, grid)


RESIZERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "bilinear": resize_pos_embed,
    "bicubic-size": resize_pos_bicubic_size,
    "bicubic-scale": resize_pos_bicubic_scale,
}


def pos_resizer(method: str) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The resize function of a method's row in the method table."""
    return RESIZERS[METHODS_BY_NAME[method].pos_embed_resize]
