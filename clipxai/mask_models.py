"""The mask models ``clipxai export-sam`` exports, as data (torch-free): SAM and SAM 2.1.

Each row says which package builds the model and how (a SAM registry size, or
a SAM 2.1 config with optional overrides), where the official checkpoint is
published, and how images are preprocessed. The runtime reads the
preprocessing from the bundle's manifest, never from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


@dataclass(frozen=True)
class MaskModel:
    """name: the ``--model`` value. family: "sam" (segment-anything) or "sam2" (SAM 2.1).
    build: SAM: (encoder width, depth, heads, global-attention blocks); SAM 2.1: the package's
    config name. overrides: SAM 2.1 hydra overrides (tests build small models with them).
    checkpoint: the official file name, published at ``url``."""

    name: str
    family: str
    build: object
    checkpoint: str
    url: str
    overrides: tuple[str, ...] = field(default=())


# Preprocessing per family (facts of the models; checked against the packages in tests/test_sam.py).
PREPROCESS: dict[str, dict] = {
    "sam": {"resize": "longest-side", "interpolation": "bilinear (Pillow, on uint8)", "image_size": 1024,
            "scale": 1.0, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
            "pad": "zeros, right and bottom, after normalising"},
    "sam2": {"resize": "stretch", "interpolation": "bilinear, antialiased (on float)", "image_size": 1024,
             "scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "pad": "none"},
}

# How the decoder's four mask tokens become masks, per family.
DECODING: dict[str, dict] = {
    "sam": {"multimask_tokens": [1, 2, 3], "single_token": 0, "pad_point": "only without a box",
            "iou": "raw", "mask_threshold": 0.0, "upscale": "1024, crop to the resized image, original size"},
    "sam2": {"multimask_tokens": [1, 2, 3], "single_token": 0, "pad_point": "always",
             "iou": "sigmoid", "mask_threshold": 0.0, "upscale": "original size", "low_res_clamp": 32.0,
             "stability": {"delta": 0.05, "threshold": 0.98}},
}

MASK_MODEL_TABLE: tuple[MaskModel, ...] = (
    MaskModel("sam-vit-b", "sam", (768, 12, 12, (2, 5, 8, 11)), "sam_vit_b_01ec64.pth", SAM_URL),
    MaskModel("sam-vit-l", "sam", (1024, 24, 16, (5, 11, 17, 23)), "sam_vit_l_0b3195.pth", SAM_URL),
    MaskModel("sam-vit-h", "sam", (1280, 32, 16, (7, 15, 23, 31)), "sam_vit_h_4b8939.pth", SAM_URL),
    MaskModel("sam2.1-hiera-tiny", "sam2", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt", SAM2_URL),
    MaskModel("sam2.1-hiera-small", "sam2", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt", SAM2_URL),
    MaskModel("sam2.1-hiera-base-plus", "sam2", "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt",
              SAM2_URL),
    MaskModel("sam2.1-hiera-large", "sam2", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt", SAM2_URL),
)
RECOMMENDED = "sam2.1-hiera-tiny"  # the edge choice: 39 M parameters

_registry: dict[str, MaskModel] = {m.name: m for m in MASK_MODEL_TABLE}


def register_mask_model(model: MaskModel) -> MaskModel:
    """Add a row (tests register small random models)."""
    _registry[model.name] = model
    return model


def mask_model_names() -> list[str]:
    return list(_registry)


def resolve_mask_model(name: str) -> MaskModel:
    from clipxai.errors import ClipxaiError
    if name not in _registry:
        raise ClipxaiError(f"unknown mask model {name!r}; choose one of: {', '.join(_registry)} "
                           f"({RECOMMENDED} is the edge choice)")
    return _registry[name]
