"""SAM 2.1's tracking graphs in a mask-model bundle, and the comparison with ``SAM2VideoPredictor``.

``export_tracking`` writes ``memory_attention.onnx``, ``memory_encoder.onnx`` and ``track_decoder.onnx``
(clipxai/models/sam_video.py) into a staged bundle and returns the manifest's ``tracking`` section.
``compare_tracking`` runs the torch-free ``MaskTracker`` and the package's video predictor on the same
frames, prompts and weights, frame by frame, and returns the largest differences; the exporter runs it on
a short synthetic clip (``verify_tracking``), the tests on longer scripted ones (occlusion, objects added
and removed mid-stream).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipxai.contract import (
    MASK_BINARIZE, MASK_CONDITIONED, MASK_IOU, MASK_LOW_RES, MASK_MASK_LOGITS,
    MASK_MEMORIES, MASK_MEMORY_SLOTS, MASK_OBJECT_SCORE, MASK_POINT_COORDS, MASK_POINT_LABELS,
    MASK_POINTER_DISTANCES, MASK_POINTERS,
)
from clipxai.export.onnx_export import export_module
from clipxai.manifest import Tracking, tracking_graphs
from clipxai.mask_models import MaskModel
from clipxai.models.sam_video import tracking_constants, video_graph_modules

TOLERANCE = 1e-3   # logits and object scores, per frame and object (bfloat16 memories on both sides)

# The overrides ``sam2.build_sam.build_sam2_video_predictor`` applies to a config.
VIDEO_OVERRIDES = ("++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
                   "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
                   "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
                   "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
                   "++model.binarize_mask_from_pts_for_mem_enc=true", "++model.fill_hole_area=8")


def export_tracking(model, staging: Path, opset: int) -> Tracking:
    """Export the three tracking graphs of a SAM 2.1 model into ``staging``; their manifest section."""
    attention, encoder, decoder = video_graph_modules(model)
    consts = tracking_constants(model)
    graphs = tracking_graphs(consts.hidden_dim, consts.mem_dim)
    attention_spec, encoder_spec, decoder_spec = (graphs[k] for k in ("memory_attention", "memory_encoder",
                                                                     "track_decoder"))
    g, c, m = model.sam_image_embedding_size, consts.hidden_dim, consts.mem_dim
    emb = torch.randn(1, c, g, g)
    objects = {0: "objects"}
    export_module(attention, (emb, torch.randn(2, 3, m, g, g), torch.tensor([[6, 0, 1], [6, 0, 1]]),
                              torch.randn(2, 2, c), torch.rand(2, 2)),
                  staging / attention_spec.file, list(attention_spec.inputs),
                  list(attention_spec.outputs),
                  dynamic_axes={MASK_MEMORIES: {0: "objects", 1: "memories"},
                                MASK_MEMORY_SLOTS: {0: "objects", 1: "memories"},
                                MASK_POINTERS: {0: "objects", 1: "pointers"},
                                MASK_POINTER_DISTANCES: {0: "objects", 1: "pointers"}, MASK_CONDITIONED: objects},
                  opset=opset, data_file=attention_spec.file + ".data")  # the CPU graph cache fuses it
    export_module(encoder, (emb, torch.randn(2, 1, 4 * g, 4 * g), torch.randn(2, 1), torch.tensor([1.0, 0.0])),
                  staging / encoder_spec.file, list(encoder_spec.inputs),
                  list(encoder_spec.outputs),
                  dynamic_axes={MASK_MASK_LOGITS: objects, MASK_OBJECT_SCORE: objects, MASK_BINARIZE: objects,
                                MASK_MEMORIES: objects}, opset=opset)
    export_module(decoder, (torch.randn(2, c, g, g), torch.randn(1, 32, 4 * g, 4 * g), torch.randn(1, 64, 2 * g, 2 * g),
                            torch.rand(2, 3, 2) * 1024, torch.tensor([[1.0, 0.0, -1.0], [-1.0, -1.0, -1.0]])),
                  staging / decoder_spec.file, list(decoder_spec.inputs), list(decoder_spec.outputs),
                  dynamic_axes={MASK_CONDITIONED: objects, MASK_POINT_COORDS: {0: "objects", 1: "points"},
                                MASK_POINT_LABELS: {0: "objects", 1: "points"}, MASK_LOW_RES: objects,
                                MASK_IOU: objects, MASK_POINTERS: objects, MASK_OBJECT_SCORE: objects},
                  opset=opset)
    return Tracking(**dataclasses.asdict(consts), memory_attention=attention_spec,
                    memory_encoder=encoder_spec, decoder=decoder_spec)


# ---- the reference ---------------------------------------------------------------------------------------------

def video_predictor(row: MaskModel, model) -> torch.nn.Module:
    """``SAM2VideoPredictor`` built as ``build_sam2_video_predictor`` builds it, with ``model``'s weights."""
    import logging

    from sam2.build_sam import build_sam2
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        reference = build_sam2(row.build, None, device="cpu", mode="eval",
                               hydra_overrides_extra=[*VIDEO_OVERRIDES, *row.overrides])
    finally:
        logging.getLogger().setLevel(quiet)
    reference.load_state_dict(model.state_dict(), strict=True)
    return reference.eval()


@contextlib.contextmanager
def scipy_connected_components():
    """sam2's hole filling runs a CUDA kernel; on a CPU it is skipped. Within this block it labels with scipy
    (8-connected, as the kernel), so the reference fills holes as it does on a GPU."""
    import sam2.utils.misc as misc
    from scipy import ndimage

    def components(mask: torch.Tensor):
        m = mask.to(torch.uint8).numpy()
        labels, counts = np.zeros(m.shape, np.int32), np.zeros(m.shape, np.int32)
        for i in range(m.shape[0]):
            lab, _ = ndimage.label(m[i, 0], structure=np.ones((3, 3), bool))
            labels[i, 0], counts[i, 0] = lab, np.where(lab > 0, np.bincount(lab.ravel())[lab], 0)
        return torch.from_numpy(labels), torch.from_numpy(counts)

    original = misc.get_connected_components
    misc.get_connected_components = components
    try:
        yield
    finally:
        misc.get_connected_components = original


@dataclass(frozen=True)
class Event:
    """What happens before a frame is tracked: ``add`` object ``key`` with points [N, 2] and labels [N],
    or ``remove`` it."""

    frame: int
    action: str
    key: int
    points: tuple = ()
    labels: tuple = ()


def reference_tracks(reference, images: torch.Tensor, size: tuple[int, int], events: list[Event]
                     ) -> list[dict[int, tuple[np.ndarray, float]]]:
    """The video predictor frame by frame: per frame {key: (logits [H, W] at the video's size, object score
    logit)}. images: [T, 3, 1024, 1024] preprocessed frames (as clipxai's encoder gets them)."""
    import sam2.sam2_video_predictor as vp
    original = vp.load_video_frames
    vp.load_video_frames = lambda **_: (images, size[0], size[1])
    try:
        state = reference.init_state(video_path="<frames given>")
    finally:
        vp.load_video_frames = original
    out = []
    quiet = contextlib.redirect_stderr(io.StringIO())  # its per-call progress bars and CPU notes
    with torch.inference_mode(), quiet, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in range(len(images)):
            for e in (e for e in events if e.frame == f):
                if e.action == "add":
                    reference.add_new_points_or_box(state, f, e.key, points=np.array(e.points, np.float32),
                                                    labels=np.array(e.labels, np.int32))
                else:
                    reference.remove_object(state, e.key, need_output=False)
            frame: dict[int, tuple[np.ndarray, float]] = {}
            if state["obj_ids"]:
                for _, ids, masks in reference.propagate_in_video(state, start_frame_idx=f, max_frame_num_to_track=0):
                    for i, key in enumerate(ids):
                        outputs = state["output_dict_per_obj"][i]
                        entry = outputs["cond_frame_outputs"].get(f) or outputs["non_cond_frame_outputs"][f]
                        frame[key] = (masks[i, 0].numpy().copy(), float(entry["object_score_logits"].reshape(-1)[0]))
            out.append(frame)
    return out


def clipxai_tracks(tracker, frames: list[np.ndarray], events: list[Event]) -> list[dict[int, tuple[np.ndarray, float]]]:
    """The same script through a ``MaskTracker``: per frame {key: (logits [H, W], object score logit)}."""
    from clipxai.runtime.postprocess import resize_bilinear
    ids: dict[int, int] = {}
    out = []
    for f, frame in enumerate(frames):
        for e in (e for e in events if e.frame == f):
            if e.action == "add":
                ids[e.key] = tracker.add(frame, np.array(e.points), np.array(e.labels))
            else:
                tracker.remove(ids.pop(e.key))
        tracked = tracker.track(frame)
        h, w = frame.shape[:2]
        out.append({key: (resize_bilinear(tracked[i].low_res, h, w), tracked[i].object_score)
                    for key, i in ids.items()})
    return out


def compare(ours: list[dict], theirs: list[dict]) -> dict:
    """Largest differences over frames and objects: logits, object scores, and mask pixels that disagree
    where the reference logit is at least TOLERANCE away from 0."""
    logits = scores = 0.0
    flips = pairs = 0
    for a, b in zip(ours, theirs):
        if sorted(a) != sorted(b):
            raise AssertionError(f"objects differ on a frame: {sorted(a)} vs {sorted(b)}")
        for key in a:
            (la, sa), (lb, sb) = a[key], b[key]
            logits = max(logits, float(np.abs(la - lb).max()))
            scores = max(scores, abs(sa - sb))
            flips += int(((la > 0) != (lb > 0))[np.abs(lb) >= TOLERANCE].sum())
            pairs += 1
    return {"mask_logits": logits, "object_scores": scores, "mask_flips": flips, "frame_objects": pairs,
            "tolerance": TOLERANCE}


def moving_shapes(count: int, height: int = 240, width: int = 320, seed: int = 0, hidden: range = range(0)
                  ) -> list[np.ndarray]:
    """A synthetic clip: a disc and a square moving over a textured background, uint8 [H, W, 3] frames; the
    disc is out of view on the frames in ``hidden``."""
    rng = np.random.default_rng(seed)
    background = (rng.random((height, width, 3)) * 60 + 40).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in range(count):
        img = background.copy()
        cx, cy = width * (0.25 + 0.04 * t), height * 0.5
        if t not in hidden:
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height * 0.15) ** 2] = (220, 40, 40)
        sx, sy = int(width * (0.7 - 0.03 * t)), int(height * 0.3)
        img[sy:sy + height // 4, max(sx, 0):max(sx + height // 4, 0)] = (40, 200, 60)
        frames.append(img)
    return frames


def tracking_script(frames: int) -> tuple[list[np.ndarray], list[Event]]:
    """The export-time clip (moving shapes, 320x240) and its prompts: one object with one point on the first
    frame (multimask), a second with a positive and a negative point."""
    clip = moving_shapes(frames)
    h, w = clip[0].shape[:2]
    return clip, [Event(0, "add", 1, ((w * 0.25, h * 0.5),), (1,)),
                  Event(0, "add", 2, ((w * 0.75, h * 0.4), (w * 0.1, h * 0.9)), (1, 0))]


def verify_tracking(row: MaskModel, model, tracker, frames: int = 4) -> dict:
    """The tracker against the package's video predictor on a synthetic clip, one object prompted on the
    first frame with one point (multimask), a second with two points: the largest differences.

    Without hole filling on either side (sam2 skips it on a CPU): filling is a threshold on components of
    pixels <= 0, so a logit within float error of 0 can open or close a hole on one side only and move the
    result by 0.1; it is checked on its own against sam2's function (tests/test_tracking.py)."""
    from PIL import Image

    from clipxai.runtime.sam.preprocess import image_input
    clip, events = tracking_script(frames)
    h, w = clip[0].shape[:2]
    images = torch.from_numpy(np.concatenate([image_input(Image.fromarray(f), tracker.sam.preprocess)[0]
                                              for f in clip]))
    reference = video_predictor(row, model)
    reference.fill_hole_area, tracker.fill_hole_area = 0, 0
    theirs = reference_tracks(reference, images, (h, w), events)
    report = compare(clipxai_tracks(tracker, clip, events), theirs)
    return {**report, "frames": frames, "image": [h, w], "objects": 2, "holes_filled": False}
