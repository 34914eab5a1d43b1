"""The table of supported backbones, as data.

A backbone can be named in OpenAI spelling (``ViT-B/16``) or open_clip
spelling (``ViT-B-16``, ``ViT-B-16-quickgelu``). The spelling matters for
local checkpoint files only (see ``clipxai.models.loading``): OpenAI spelling
and ``-quickgelu`` names mean the QuickGELU architecture of OpenAI's release.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipxai.errors import ClipxaiError


@dataclass(frozen=True)
class BackboneSpec:
    """One CLIP backbone.

    name: canonical OpenAI spelling, e.g. "ViT-B/16".
    open_clip_name: open_clip model config name (GELU variant), e.g. "ViT-B-16".
    patch_size: pixels per cell of the token grid: the ViT patch size, or 32
        (the output stride) for a ResNet; the grid is image_size / patch_size.
    image_size: the resolution the weights were trained at.
    surgery_blocks: how many final blocks get the surgery path (docs/design.md §3; ViTs only).
    arch: "vit" or "resnet" (ModifiedResNet with an attention pool).
    """

    name: str
    open_clip_name: str
    patch_size: int
    image_size: int
    surgery_blocks: int = 6
    arch: str = "vit"

    @property
    def quickgelu_name(self) -> str:
        return f"{self.open_clip_name}-quickgelu"


BACKBONES: tuple[BackboneSpec, ...] = (
    BackboneSpec("ViT-B/32", "ViT-B-32", patch_size=32, image_size=224),
    BackboneSpec("ViT-B/16", "ViT-B-16", patch_size=16, image_size=224),
    BackboneSpec("ViT-L/14", "ViT-L-14", patch_size=14, image_size=224),
    BackboneSpec("ViT-L/14@336px", "ViT-L-14-336", patch_size=14, image_size=336),
    BackboneSpec("RN50", "RN50", patch_size=32, image_size=224, arch="resnet"),
    BackboneSpec("RN101", "RN101", patch_size=32, image_size=224, arch="resnet"),
    BackboneSpec("RN50x4", "RN50x4", patch_size=32, image_size=288, arch="resnet"),
    BackboneSpec("RN50x16", "RN50x16", patch_size=32, image_size=384, arch="resnet"),
    BackboneSpec("RN50x64", "RN50x64", patch_size=32, image_size=448, arch="resnet"),
)

DEFAULT_BACKBONE = "ViT-B/16"

_registry: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the table (used by tests for tiny random models)."""
    _registry[spec.name] = spec
    return spec


for _spec in BACKBONES:
    register_backbone(_spec)


@dataclass(frozen=True)
class BackboneChoice:
    """A backbone as the user named it.

    quick_gelu: True when the name itself says QuickGELU (OpenAI spelling or a
    ``-quickgelu`` open_clip name), False for a plain open_clip name.
    """

    spec: BackboneSpec
    quick_gelu: bool


def backbone_names() -> list[str]:
    """Every accepted spelling, OpenAI names first."""
    specs = list(_registry.values())
    names = [s.name for s in specs] + [s.open_clip_name for s in specs] + [s.quickgelu_name for s in specs]
    return list(dict.fromkeys(names))  # ResNets are spelled alike in both


def resolve_backbone(name: str) -> BackboneChoice:
    """Map any accepted spelling to its spec; unknown names list the choices."""
    for spec in _registry.values():
        if name == spec.name:
            return BackboneChoice(spec, quick_gelu=True)
        if name == spec.open_clip_name:
            return BackboneChoice(spec, quick_gelu=False)
        if name == spec.quickgelu_name:
            return BackboneChoice(spec, quick_gelu=True)
    raise ClipxaiError(
        f"unknown backbone {name!r}; choose one of: {', '.join(backbone_names())}"
    )
