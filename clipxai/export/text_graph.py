"""The text tower as its own ONNX graph (bundles exported with ``--text-encoder``),
and Grad-ECLIP's word explainer as another (``--text-explainer``, see
clipxai/models/text_explainer.py).

    forward(input_ids int64 [P, L], eot_index int64 [P]) -> embeddings float32 [P, D]

equal to open_clip's ``encode_text`` (unnormalised). L is dynamic (1..77): with
the causal mask and end-token pooling, ids after the end token cannot change the
result, so the runtime cuts each batch to its longest real sequence. The
end-token position is an input: the graph never relies on the end token having
the highest id.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from clipxai.contract import (
    CONTEXT_LENGTH, EXPLAIN_INPUT_EMBEDDING, EXPLAIN_OUTPUT_COSINE, EXPLAIN_OUTPUT_WEIGHTS, TEXT_INPUT_EOT,
    TEXT_INPUT_IDS, TEXT_OUTPUT,
)
from clipxai.export.onnx_export import finish_graph
from clipxai.models.attention import plain_block
from clipxai.models.text_explainer import TextExplainer


class TextTowerOnnxModel(nn.Module):
    """open_clip's CLIP text tower with explicit attention and end-token pooling by index."""

    def __init__(self, model: nn.Module):
        super().__init__()
        t = getattr(model, "text", model)  # CustomTextCLIP keeps the tower under .text
        self.token_embedding = t.token_embedding
        self.positional_embedding = t.positional_embedding
        self.blocks = t.transformer.resblocks
        self.ln_final = t.ln_final
        self.text_projection = t.text_projection
        self.register_buffer("attn_mask", t.attn_mask.detach().float().clone(), persistent=False)
        proj = t.text_projection
        self.embed_dim = proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    def forward(self, input_ids: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length]
        for blk in self.blocks:
            x = plain_block(blk, x, mask, chunked_mlp=False)
        x = self.ln_final(x)
        index = eot_index.reshape(-1, 1, 1).expand(-1, 1, x.shape[2])
        pooled = x.gather(1, index).squeeze(1)  # [P, C]
        proj = self.text_projection
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj


def export_text_onnx(model: TextTowerOnnxModel, path: str | Path, opset: int) -> None:
    """Export with dynamic prompt count and length, fold constants, check, save."""
    ids = torch.zeros(3, CONTEXT_LENGTH, dtype=torch.long)
    ids[:, 0], ids[:, 1], ids[:, 2] = 49406, 320, 49407
    eot = torch.full((3,), 2, dtype=torch.long)
    dynamic = {TEXT_INPUT_IDS: {0: "prompts", 1: "length"}, TEXT_INPUT_EOT: {0: "prompts"},
               TEXT_OUTPUT: {0: "prompts"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (ids, eot), str(path), input_names=[TEXT_INPUT_IDS, TEXT_INPUT_EOT],
                          output_names=[TEXT_OUTPUT], dynamic_axes=dynamic, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    finish_graph(path)


def verify_text_onnx(path: str | Path, model: nn.Module, ids: np.ndarray, lengths: np.ndarray) -> float:
    """Max abs error of the L2-normalised embeddings: onnxruntime (cut to the longest
    sequence) against open_clip's ``encode_text`` on the full 77-token rows."""
    sess = _session(path)
    cut = int(lengths.max())
    ours = sess.run([TEXT_OUTPUT], {TEXT_INPUT_IDS: ids[:, :cut], TEXT_INPUT_EOT: lengths - 1})[0]
    with torch.no_grad():
        theirs = model.encode_text(torch.from_numpy(ids)).numpy()

    def unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)
    return float(np.abs(unit(ours) - unit(theirs)).max())


def _session(path: str | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_explainer_onnx(model: TextExplainer, path: str | Path, opset: int, embed_dim: int) -> None:
    """Export the word explainer: ids [P, 77], eot [P], image embedding [D] -> weights [P, 77], cosine [P]."""
    ids = torch.zeros(2, CONTEXT_LENGTH, dtype=torch.long)
    ids[:, 0], ids[:, 1], ids[:, 2], ids[:, 3] = 49406, 320, 1929, 49407
    eot = torch.full((2,), 3, dtype=torch.long)
    image = torch.nn.functional.normalize(torch.ones(embed_dim), dim=0)
    dynamic = {TEXT_INPUT_IDS: {0: "texts"}, TEXT_INPUT_EOT: {0: "texts"}, EXPLAIN_OUTPUT_WEIGHTS: {0: "texts"},
               EXPLAIN_OUTPUT_COSINE: {0: "texts"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (ids, eot, image), str(path),
                          input_names=[TEXT_INPUT_IDS, TEXT_INPUT_EOT, EXPLAIN_INPUT_EMBEDDING],
                          output_names=[EXPLAIN_OUTPUT_WEIGHTS, EXPLAIN_OUTPUT_COSINE], dynamic_axes=dynamic,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    finish_graph(path)


def verify_explainer_onnx(path: str | Path, model: TextExplainer, ids: np.ndarray, image: np.ndarray) -> float:
    """Max abs error of the word weights and cosines: onnxruntime against the PyTorch module
    (whose closed-form gradient tests/test_text_explainer.py checks against torch.autograd)."""
    eot = (ids == ids.max(axis=1, keepdims=True)).argmax(axis=1).astype(np.int64)
    feeds = {TEXT_INPUT_IDS: ids, TEXT_INPUT_EOT: eot, EXPLAIN_INPUT_EMBEDDING: image}
    ours = _session(path).run([EXPLAIN_OUTPUT_WEIGHTS, EXPLAIN_OUTPUT_COSINE], feeds)
    with torch.no_grad():
        theirs = model(*(torch.from_numpy(v) for v in (ids, eot, image)))
    return max(float(np.abs(a - b.numpy()).max()) for a, b in zip(ours, theirs))
