"""A tiny random ViT and ResNet registered through open_clip's config mechanism.

Importing this module registers them with open_clip and with clipxai's backbone
table. ``python tests/tiny.py ARGS`` runs clipxai-export with it available
(used by the subprocess tests).
"""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
from pathlib import Path

import open_clip

from clipxai.models.backbones import BackboneSpec, register_backbone

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 5, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TINY_HEADS = 4
TINY_SURGERY_BLOCKS = 3
TINY = BackboneSpec("Tiny-ViT/8", "clipxai-tiny-vit", patch_size=8, image_size=32,
                    surgery_blocks=TINY_SURGERY_BLOCKS)

# A tiny random ResNet (ModifiedResNet + AttentionPool2d): attention-pool width 16*32 = 512, 8 heads.
TINY_RN_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TINY_RN = BackboneSpec("Tiny-RN", "clipxai-tiny-rn", patch_size=32, image_size=64, arch="resnet")

_cfg_dir = Path(tempfile.mkdtemp(prefix="clipxai-cfg-"))
atexit.register(shutil.rmtree, _cfg_dir, True)  # every test process made one and left it behind
for _spec, _cfg in ((TINY, TINY_CFG), (TINY_RN, TINY_RN_CFG)):
    (_cfg_dir / f"{_spec.open_clip_name}.json").write_text(json.dumps(_cfg))
    open_clip.add_model_config(_cfg_dir / f"{_spec.open_clip_name}.json")
    register_backbone(_spec)

if __name__ == "__main__":
    from clipxai.export.cli import main
    sys.argv[0] = "clipxai-export"
    main()
