"""The bundle contract between export and runtime, named once (torch-free).

Both halves import these names; nothing here may import torch.
"""

from __future__ import annotations

from clipxai.methods import method_names

# Bundle schema the exporter writes. 2 added methods, precisions and
# text-encoder bundles (graph inputs text/redundancy); a schema-1 bundle
# (surgery, fp32, baked vocabulary) is a valid schema-2 bundle and still loads.
# 3: the image graph keeps its weights in MODEL_DATA_FILE (ONNX external data) and the manifest
# says its "kind"; schema-1 and -2 bundles (one graph file) still load.
SCHEMA_VERSION = 3
SUPPORTED_SCHEMAS = (1, 2, 3)

# Bundle kinds ("kind" in the manifest; schema 1-2 bundles are "clip").
KIND_CLIP = "clip"
KIND_MASK = "mask-model"   # SAM / SAM 2.1 (clipxai export-sam)

# Files and graph IO of a mask-model bundle.
MASK_FAMILIES = ("sam", "sam2")               # segment-anything, SAM 2.1 (the manifest's "family")
MASK_IMAGE_SIZE = 1024                        # the encoder's square input
MASK_ENCODER_FILE = "encoder.onnx"            # + encoder.onnx.data (its weights)
MASK_DECODER_FILE = "decoder.onnx"
MASK_INPUT_IMAGE = "image"                    # float32 [1, 3, 1024, 1024], preprocessed
MASK_EMBEDDINGS = "image_embeddings"          # float32 [1, 256, 64, 64]
MASK_HIGH_RES = ("high_res_feats_0", "high_res_feats_1")  # SAM 2.1: [1, 32, 256, 256], [1, 64, 128, 128]
MASK_POINT_COORDS = "point_coords"            # float32 [B, N, 2], (x, y) in the 1024-pixel input frame
MASK_POINT_LABELS = "point_labels"            # float32 [B, N]: 1 positive, 0 negative, -1 padding
MASK_LOW_RES = "low_res_masks"                # float32 [B, 4, 256, 256] logits of the four mask tokens
MASK_IOU = "iou_predictions"                  # float32 [B, 4]
# SAM 2.1 tracking graphs (clipxai/models/sam_video.py; docs/tracking.md)
MASK_MEMORY_ATTENTION_FILE = "memory_attention.onnx"
MASK_MEMORY_ENCODER_FILE = "memory_encoder.onnx"
MASK_TRACK_DECODER_FILE = "track_decoder.onnx"
MASK_MEMORIES = "memories"                    # float32 [B, M, 64, 64, 64]: the bank's memories
MASK_MEMORY_SLOTS = "memory_slots"            # int64 [B, M]: each memory's temporal slot
MASK_POINTERS = "object_pointers"             # float32 [B, P, 256] in, [B, 4, 256] out (one per mask token)
MASK_POINTER_DISTANCES = "pointer_distances"  # float32 [B, P]: frame distance / (max pointers - 1)
MASK_CONDITIONED = "features"                 # float32 [B, 256, 64, 64]: memory-conditioned (or prompted) features
MASK_MASK_LOGITS = "mask_logits"              # float32 [B, 1, 256, 256]: the chosen low-res logits
MASK_OBJECT_SCORE = "object_score_logits"     # float32 [B, 1]: > 0 where the object is visible
MASK_BINARIZE = "binarize"                    # float32 [B]: 1 for a frame prompted with points

# Limits a manifest is checked against (larger values are refused, not allocated).
MAX_IMAGE_SIZE = 2048
MAX_CLASSES = 32768
MAX_MANIFEST_BYTES = 16 << 20

# Files of a bundle.
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
MODEL_DATA_FILE = "model.onnx.data"         # its weights (ONNX external data), schema 3
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
REDUNDANCY_FILE = "redundancy.npy"
TEXT_ENCODER_FILE = "text_encoder.onnx"           # bundles exported with --text-encoder
BPE_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"   # CLIP's BPE merges, copied from open_clip

# ONNX graph inputs and outputs.
INPUT_IMAGE = "image"                # float32 [B, 3, S, S], normalised RGB
OUTPUT_SIMILARITY = "similarity"     # float32 [B, N, K], patch tokens after feature surgery
OUTPUT_SCORES = "scores"             # float32 [B, K], softmax(logit_scale * cos) of the class token
OUTPUT_HEATMAPS = "heatmaps"         # float32 [B, K, g, g], per-class min-max over the N patches
OUTPUTS = (OUTPUT_SIMILARITY, OUTPUT_SCORES, OUTPUT_HEATMAPS)
# Image-graph output of bundles exported with --text-explainer: plain CLIP's image embedding.
OUTPUT_EMBEDDING = "image_embedding"  # float32 [B, D], L2-normalised (the class token the scores use)
# Image-graph output of bundles exported since issue 31 (older bundles lack it and still load):
# independent multi-label logits, TaI-DPT's protocol (docs/methods.md, "Which classes are present").
OUTPUT_LABELS = "labels"             # float32 [B, K], rate·local + (1 − rate)·global, both logit_scale·cos

# Image-graph inputs of a text-encoder bundle (the vocabulary is data, not constants).
INPUT_TEXT = "text"                  # float32 [K, D], L2-normalised prompt-ensemble class embeddings
INPUT_REDUNDANCY = "redundancy"      # float32 [D], prompt-ensemble embedding of the empty class name

# The text-encoder graph: token ids -> unnormalised text embeddings (open_clip's encode_text).
TEXT_INPUT_IDS = "input_ids"         # int64 [P, L], L <= CONTEXT_LENGTH; ids after the end token are ignored
TEXT_INPUT_EOT = "eot_index"         # int64 [P], position of the end-of-text token in each row
TEXT_OUTPUT = "embeddings"           # float32 [P, D], NOT normalised
CONTEXT_LENGTH = 77

# The text-explainer graph (--text-explainer): Grad-ECLIP's word weights (docs/design.md §11).
TEXT_EXPLAINER_FILE = "text_explainer.onnx"
EXPLAIN_INPUT_EMBEDDING = OUTPUT_EMBEDDING    # float32 [D], the image graph's output for one image
EXPLAIN_OUTPUT_WEIGHTS = "token_weights"      # float32 [P, 77]: tokens 1..eot-1 sum to 1, zero elsewhere
EXPLAIN_OUTPUT_COSINE = "cosine"              # float32 [P]: the image-text cosine being explained

# Feature-surgery redundancy modes (docs/design.md §6).
REDUNDANCY_MODES = ("classes", "empty", "none")
# Graph-only mode of text-encoder bundles: "classes" when K > 1, "empty" when K == 1,
# chosen inside the graph from the shape of its text input (what an export would pick).
REDUNDANCY_AUTO = "auto"

# Methods: one bundle format for every training-free method (the table: clipxai/methods.py).
METHODS = method_names()

# Precision of the graph's weights; IO stays float32 in every precision.
PRECISIONS = ("fp32", "fp16", "int8")

# Zero-shot scores use CLIP's trained temperature.
LOGIT_SCALE = 100.0

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# Defaults of the commands and the jobs behind them (clipxai/cli, clipxai/apps): one literal each.
DEFAULT_PROVIDERS = "auto"
DEFAULT_BATCH_SIZE = 4           # images per graph run
DEFAULT_WINDOWS_PER_BATCH = 8    # sliding windows per graph run (--slide)
DEFAULT_FRAMES_PER_BATCH = 4     # video frames per graph run
DEFAULT_FAITHFULNESS_BATCH = 16  # perturbed images per classifier run (evaluate faithfulness)
DEFAULT_METHOD = "surgery"
DEFAULT_PRETRAINED = "openai"    # CLIP's own weights (open_clip's "openai" tag)
DEFAULT_IMAGE_SIZE = 224
DEFAULT_PRECISION = "fp32"
MIN_OPSET = 17                   # the oldest ONNX opset the exporters write (LayerNormalization)
DEFAULT_TEXT_BATCH = 256         # prompts per text-encoder batch at export
DEFAULT_TEMPLATES = "openai-85"  # clipxai export --templates (clipxai/templates.py: TEMPLATE_CHOICES)
DEFAULT_LABELS_MERGE_RATE = 0.5  # weight of the local (dense) label logits: TaI-DPT's GL_merge_rate
DEFAULT_EXPLAINER_BLOCKS = 8     # text blocks Grad-ECLIP's word explainer re-runs (the reference's 8)
ROS_NODE_NAME = "clipxai"        # clipxai ros: the node's name (--ros-args -r __node:=NAME renames it)
ROS_MAX_CLASSES = 255            # clipxai ros: the mono8 segmentation holds class k as k, 255 = unassigned
ROS_DIAGNOSTICS_PERIOD_S = 1.0   # clipxai ros: /diagnostics once a second
ROS_LATENCY_MAX_S = 60.0         # clipxai ros: a stamp older than this is not on the node's clock (latency n/a)
ROS_CLOCK_SKEW_S = 1.0           # ... nor one further ahead than this (a little ahead: another host's clock)

# Text to tracks (clipxai/runtime/video/tracks.py, clipxai segment --track)
DEFAULT_REPROMPT_EVERY = 30   # frames between two prompts of every class
DEFAULT_FORGET_AFTER = 60     # frames a track may stay invisible before it is removed
