"""The bundle contract between export and runtime, named once (torch-free).

Both halves import these names; nothing here may import torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SCHEMA_VERSION = 1

# Files of a bundle.
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
REDUNDANCY_FILE = "redundancy.npy"

# ONNX graph inputs and outputs.
INPUT_IMAGE = "image"                # float32 [B, 3, S, S], normalised RGB
OUTPUT_SIMILARITY = "similarity"     # float32 [B, N, K], patch tokens after feature surgery
OUTPUT_SCORES = "scores"             # float32 [B, K], softmax(logit_scale * cos) of the class token
OUTPUT_HEATMAPS = "heatmaps"         # float32 [B, K, g, g], per-class min-max over the N patches
OUTPUTS = (OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS)

# Feature-surgery redundancy modes (DESIGN section 6).
REDUNDANCY_MODES = ("classes", "empty", "none")

# Methods: one bundle format for every training-free method (README "Methods").
METHODS = ("surgery", "grad-eclip", "vanilla", "maskclip", "sclip", "clearclip", "naclip")

# Precision of the graph's weights; IO stays float32 in every precision.
PRECISIONS = ("fp32", "fp16", "int8")

# Zero-shot scores use CLIP's trained temperature.
LOGIT_SCALE = 100.0

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
