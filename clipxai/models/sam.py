"""SAM and SAM 2.1 as two graphs each: an image encoder run once per image, and a prompt decoder.

- ``SamEncoder`` / ``Sam2Encoder``: normalised image [1, 3, 1024, 1024] -> the image embedding
  [1, 256, 64, 64] (SAM 2.1 also its two high-resolution feature maps [1, 32, 256, 256] and
  [1, 64, 128, 128], and the "no memory" embedding already added, as ``SAM2ImagePredictor.set_image``
  does).
- ``PromptDecoder``: the image's features, point coordinates [B, N, 2] in the 1024-pixel input frame
  and labels [B, N] (1 positive, 0 negative, -1 "not a point": the padding), for B prompt sets at
  once -> low-resolution mask logits [B, 4, 256, 256] and predicted IoU [B, 4] for all four mask
  tokens. Which tokens become masks (multimask: 1..3) is decided outside the graph, as are the
  upsampling and the threshold (clipxai/runtime/sam/).

Points are embedded as the packages' prompt encoders do (pixel centre +0.5, divided by 1024, random
Fourier features, one learned embedding per label); there is no mask prompt (the "no mask"
embedding is used). The modules call the packages' own layers; nothing is re-implemented.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from clipxai.errors import WeightsError
from clipxai.mask_models import MaskModel
from clipxai.models.pickled import load_tensors_only

IMAGE_SIZE = 1024


def build_mask_model(row: MaskModel, seed: int = 0) -> nn.Module:
    """The package's model for a table row, random-initialised (weights are loaded after)."""
    torch.manual_seed(seed)
    if row.family == "sam":
        from segment_anything.build_sam import _build_sam
        width, depth, heads, global_attn = row.build
        return _build_sam(width, depth, heads, list(global_attn)).eval()
    import logging

    from sam2.build_sam import build_sam2
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # hydra's and sam2's notes are not for users
    try:
        return build_sam2(row.build, None, device="cpu", hydra_overrides_extra=list(row.overrides)).eval()
    finally:
        logging.getLogger().setLevel(quiet)


def save_random_checkpoint(row: MaskModel, path: str | Path, seed: int = 0) -> nn.Module:
    """Random weights of ``row`` saved as its official files are (SAM a plain state dict, SAM 2.1
    {"model": ...}): what tests and benchmarks export without downloading. Returns the model."""
    model = build_mask_model(row, seed=seed)
    torch.save(model.state_dict() if row.family == "sam" else {"model": model.state_dict()}, str(path))
    return model


def read_mask_checkpoint(path: str | Path, row: MaskModel) -> dict[str, torch.Tensor]:
    """A local checkpoint as a state dict: safetensors, or a pickle read with weights_only=True
    (nothing but tensors is unpickled). SAM 2.1 files hold {"model": state dict}."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - truncated files, other formats
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path}: not a readable {row.name} checkpoint ({first}); "
                               f"the official one is {row.url}{row.checkpoint}") from None
    else:
        try:
            sd = load_tensors_only(path, f"{row.name} checkpoint")  # never runs code (models/pickled.py)
        except WeightsError as e:
            raise WeightsError(f"{e}; the official one is {row.url}{row.checkpoint}") from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors; the official {row.name} checkpoint is "
                           f"{row.url}{row.checkpoint}")
    return sd


def load_mask_model(row: MaskModel, checkpoint: str | Path) -> nn.Module:
    """Build ``row``'s model and load a local checkpoint into it (strict: every tensor must fit)."""
    model = build_mask_model(row)
    sd = read_mask_checkpoint(checkpoint, row)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        what = (f"{len(wrong)} tensors of another shape (e.g. {wrong[0]}: {list(sd[wrong[0]].shape)} for "
                f"{list(own[wrong[0]].shape)})" if wrong else
                f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else
                f"{len(unexpected)} unknown tensors (e.g. {unexpected[0]})")
        raise WeightsError(f"{Path(checkpoint).name} does not fit {row.name}: {what}; "
                           f"is it another model size? (the official file is {row.checkpoint})")
    model.load_state_dict(sd, strict=True)
    return model.eval()


class SamEncoder(nn.Module):
    """forward(image [1, 3, 1024, 1024]) -> image_embeddings [1, 256, 64, 64]."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


class Sam2Encoder(nn.Module):
    """forward(image [1, 3, 1024, 1024]) -> (high_res_feats_0 [1, 32, 256, 256],
    high_res_feats_1 [1, 64, 128, 128], image_embeddings [1, 256, 64, 64]), as SAM2ImagePredictor's
    set_image computes them (the decoder's conv_s0 / conv_s1 applied, no_mem_embed added)."""

    def __init__(self, sam2: nn.Module):
        super().__init__()
        self.model = sam2

    def forward(self, image: torch.Tensor):
        fpn = self.model.forward_image(image)["backbone_fpn"]
        f0, f1, emb = fpn[-3:]
        return f0, f1, emb + self.model.no_mem_embed.reshape(1, -1, 1, 1)


class PromptDecoder(nn.Module):
    """forward(image_embeddings, [high_res_feats_0, high_res_feats_1,] point_coords [B, N, 2],
    point_labels [B, N]) -> (low_res_masks [B, 4, 256, 256], iou_predictions [B, 4])."""

    def __init__(self, model: nn.Module, family: str):
        super().__init__()
        self.family = family
        self.prompt = model.prompt_encoder if family == "sam" else model.sam_prompt_encoder
        self.decoder = model.mask_decoder if family == "sam" else model.sam_mask_decoder

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt.pe_layer._pe_encoding((coords + 0.5) / IMAGE_SIZE)  # [B, N, 256]
        lab = labels.unsqueeze(-1)
        emb = pe * (lab != -1) + self.prompt.not_a_point_embed.weight * (lab == -1)
        for i in range(2):  # 0 negative, 1 positive (boxes, 2 and 3, are not used)
            emb = emb + self.prompt.point_embeddings[i].weight * (lab == i)
        return emb

    def forward(self, image_embeddings, *rest):
        *high_res, coords, labels = rest
        sparse = self.embed_points(coords, labels)
        dense = self.prompt.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            coords.shape[0], -1, image_embeddings.shape[-2], image_embeddings.shape[-1])
        if self.family == "sam":
            return self.decoder.predict_masks(image_embeddings, self.prompt.get_dense_pe(), sparse, dense)
        masks, iou, _, _ = self.decoder.predict_masks(image_embeddings, self.prompt.get_dense_pe(), sparse, dense,
                                                      repeat_image=True, high_res_features=list(high_res))
        return masks, iou


def graph_modules(model: nn.Module, family: str) -> tuple[nn.Module, nn.Module]:
    encoder = SamEncoder(model) if family == "sam" else Sam2Encoder(model)
    return encoder.eval(), PromptDecoder(model, family).eval()
