"""``export_mask_bundle``: SAM or SAM 2.1 -> a mask-model bundle (the typed function behind ``clipxai export-sam``).

The bundle holds two graphs (clipxai/models/sam.py): ``encoder.onnx`` (its weights in
``encoder.onnx.data``), run once per image, and ``decoder.onnx``, run for B prompt sets at once.
It does not depend on a vocabulary, so any number of CLIP bundles can share it. Like CLIP bundles
it is written atomically, with a manifest (schema 3, kind "mask-model") holding a sha256 for every
file, the model, the preprocessing and decoding constants; and it is verified at export: the
device pipeline (runtime/sam: numpy preprocessing, onnxruntime, numpy postprocessing) against the
package's own predictor (``SamPredictor`` / ``SAM2ImagePredictor``) on the same weights.
``--precision int8|fp16`` converts the encoder and keeps it only if the masks it gives agree with
fp32's (mean IoU >= 0.95 on the fidelity images).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

import clipxai
from clipxai.contract import (
    KIND_MASK, MASK_DECODER_FILE, MASK_EMBEDDINGS, MASK_ENCODER_FILE, MASK_HIGH_RES, MASK_IMAGE_SIZE, MASK_INPUT_IMAGE,
    MASK_IOU, MASK_LOW_RES, MASK_POINT_COORDS, MASK_POINT_LABELS, PRECISIONS, SCHEMA_VERSION,
)
from clipxai.errors import ClipxaiError, VerificationError, WeightsError
from clipxai.export.bundle import bundle_size, check_output, finalize_manifest, staged_bundle
from clipxai.export.fidelity import bf16_measurable, load_images, synthetic_scenes
from clipxai.export.onnx_export import MIN_OPSET, export_module, save_graph
from clipxai.export.pipeline import ExportResult, Reporter
from clipxai.export.precision import convert
from clipxai.common.files import sha256_file
from clipxai.manifest import Decoding, MaskManifest, MaskPreprocess, Weights, mask_graphs
from clipxai.mask_models import DECODING, PREPROCESS, MaskModel, resolve_mask_model
from clipxai.models.sam import graph_modules, load_mask_model
from clipxai.runtime.bundle import Bundle, manifest_digest

TOLERANCE = 1e-4
IOU_GATE = 0.95
ENCODER_DATA_FILE = MASK_ENCODER_FILE + ".data"


@dataclass
class SamExportConfig:
    model: str
    checkpoint: Path | None
    output: Path
    precision: str = "fp32"
    overwrite: bool = False
    force: bool = False        # write an int8/fp16 encoder that fails the IoU gate
    verify: bool = True
    opset: int = MIN_OPSET
    fidelity_images: list[Path] | None = None
    fidelity_count: int = 4
    video: bool | None = None  # SAM 2.1: also the tracking graphs (None: yes for SAM 2.1; True for SAM 1 is refused)
    bf16: bool = True          # measure OpenVINO bf16 against fp32 (where OpenVINO and native bf16 exist)


def _check(cfg: SamExportConfig) -> MaskModel:
    row = resolve_mask_model(cfg.model)
    if cfg.precision not in PRECISIONS:
        raise ClipxaiError(f"unknown precision {cfg.precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if cfg.opset < MIN_OPSET:
        raise ClipxaiError(f"--opset {cfg.opset} is too old; use {MIN_OPSET} or newer")
    if cfg.checkpoint is None:
        raise WeightsError(f"no checkpoint given: download the official {row.name} weights, {row.url}{row.checkpoint}, "
                           "and pass them with --checkpoint FILE")
    if cfg.video and row.family != "sam2":
        raise ClipxaiError(f"{row.name} is a SAM 1 model: it has no memory to track with; export a SAM 2.1 model "
                           f"(e.g. sam2.1-hiera-tiny) for --video, or leave --video out")
    check_output(Path(cfg.output), cfg.overwrite)
    return row


def _export_graphs(model, row: MaskModel, staging: Path, opset: int, rep: Reporter) -> None:
    encoder, decoder = graph_modules(model, row.family)
    x = torch.zeros(1, 3, 1024, 1024)
    graphs = mask_graphs(row.family)
    rep.step(f"exporting the image encoder ({MASK_ENCODER_FILE}, opset {opset})")
    export_module(encoder, (x,), staging / MASK_ENCODER_FILE, [MASK_INPUT_IMAGE], list(graphs.encoder.outputs),
                  opset=opset, data_file=ENCODER_DATA_FILE)
    with torch.no_grad():
        feats = encoder(x)
    feats = feats if isinstance(feats, tuple) else (feats,)
    coords, labels = torch.rand(2, 3, 2) * 1024, torch.tensor([[1.0, 0.0, -1.0], [1.0, 1.0, -1.0]])
    rep.step(f"exporting the prompt decoder ({MASK_DECODER_FILE}, any number of prompt sets and points)")
    names = list(graphs.decoder.inputs)
    feat_args = (feats[-1], *feats[:-1]) if row.family == "sam2" else feats
    feat_names = [MASK_EMBEDDINGS, *MASK_HIGH_RES] if row.family == "sam2" else [MASK_EMBEDDINGS]
    export_module(decoder, (*feat_args, coords, labels), staging / MASK_DECODER_FILE,
                  feat_names + [MASK_POINT_COORDS, MASK_POINT_LABELS], [MASK_LOW_RES, MASK_IOU],
                  dynamic_axes={MASK_POINT_COORDS: {0: "prompts", 1: "points"},
                                MASK_POINT_LABELS: {0: "prompts", 1: "points"},
                                MASK_LOW_RES: {0: "prompts"}, MASK_IOU: {0: "prompts"}}, opset=opset)
    assert set(names) == set(feat_names + [MASK_POINT_COORDS, MASK_POINT_LABELS])


def build_manifest(row: MaskModel, cfg: SamExportConfig, checkpoint_sha: str) -> MaskManifest:
    """The manifest of the bundle being written, without its verification, fidelity and files (added last)."""
    return MaskManifest(
        schema_version=SCHEMA_VERSION,
        kind=KIND_MASK,
        clipxai_version=clipxai.__version__,
        created_with={"torch": torch.__version__, "onnx": onnx.__version__, "python": platform.python_version()},
        model=row.name,
        family=row.family,
        weights=Weights(source="file", file=Path(cfg.checkpoint).name, sha256=checkpoint_sha,
                        official=row.url + row.checkpoint),
        image_size=MASK_IMAGE_SIZE,
        preprocess=MaskPreprocess.from_dict(PREPROCESS[row.family], "preprocess."),
        decoding=Decoding.from_dict(DECODING[row.family], "decoding."),
        precision=cfg.precision,
        opset=cfg.opset,
        graphs=mask_graphs(row.family),
    )


def _tracker(staging: Path, manifest: MaskManifest, num_frames: int, predictor=None, options=None):
    """A MaskTracker on the staged bundle: onnxruntime on the CPU unless given a predictor and its options."""
    from clipxai.runtime.backends import RuntimeOptions
    from clipxai.runtime.sam.tracker import MaskTracker
    return MaskTracker(predictor or _predictor(staging, manifest),
                       options or RuntimeOptions(providers="cpu", graph_cache="off"), num_frames=num_frames)


def _verify_tracking(model, row: MaskModel, staging: Path, manifest: MaskManifest) -> dict:
    """The tracker against SAM2VideoPredictor on a synthetic clip; VerificationError past the tolerance."""
    from clipxai.export.sam_video import TOLERANCE as TRACK_TOLERANCE, verify_tracking
    frames = 4
    report = verify_tracking(row, model, _tracker(staging, manifest, frames), frames)
    worst = max(report["mask_logits"], report["object_scores"])
    if not worst <= TRACK_TOLERANCE or report["mask_flips"]:
        raise VerificationError(f"the tracking graphs disagree with SAM2VideoPredictor: max abs error mask logits "
                                f"{report['mask_logits']:.3g}, object scores {report['object_scores']:.3g} "
                                f"(> {TRACK_TOLERANCE}), {report['mask_flips']} mask pixels; no bundle written")
    return report


def _openvino_bf16(staging: Path, manifest: MaskManifest):
    """A MaskPredictor on OpenVINO with its encoder (and the tracker's memory attention) in bf16, and those
    options; the staged manifest must list the files. The 'forced' warning is not for this measurement."""
    import logging

    from clipxai.runtime.backends import OpenVINOOptions, RuntimeOptions, open_graph
    from clipxai.runtime.sam.predictor import MaskPredictor
    options = RuntimeOptions(providers="openvino", graph_cache="off",
                             openvino=OpenVINOOptions(precision="bf16", force_precision=True, cache=False))
    bundle = Bundle(staging, manifest)
    quiet = logging.getLogger("clipxai")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        predictor = MaskPredictor(bundle, open_graph(bundle, MASK_ENCODER_FILE, options),
                                  open_graph(bundle, MASK_DECODER_FILE, options))
        tracker = _tracker(staging, manifest, 4, predictor, options) if manifest.tracking else None
    finally:
        quiet.setLevel(level)
    return predictor, tracker


def bf16_fidelity(cfg: SamExportConfig, staging: Path, manifest: MaskManifest, rep: Reporter) -> dict | None:
    """The masks with the encoder (and, with tracking, the memory attention) in OpenVINO bf16 against
    onnxruntime fp32: the image masks of the fidelity images and, with tracking, every object on a 4-frame
    clip; gated like int8 (mean IoU >= 0.95). None (not measured) without OpenVINO or native bf16; a failed
    gate is recorded, not an error (the runtime then refuses bf16)."""
    if not bf16_measurable(rep):
        return None
    images = (load_images(cfg.fidelity_images, 512) if cfg.fidelity_images
              else synthetic_scenes(cfg.fidelity_count, 512, seed=1))
    graphs = [MASK_ENCODER_FILE] + ([manifest.tracking.memory_attention.file] if manifest.tracking else [])
    rep.step(f"measuring OpenVINO bf16 ({', '.join(graphs)}) against fp32 masks")
    predictor, tracker = _openvino_bf16(staging, manifest)
    ious = [_iou(a, b) for a, b in zip(_best_masks(_predictor(staging, manifest), images),
                                       _best_masks(predictor, images))]
    if tracker is not None:
        ious += _tracked_ious(_tracker(staging, manifest, 4), tracker)
    report = {"images": len(images), "masks": len(ious), "mean_iou": float(np.mean(ious)),
              "min_iou": float(np.min(ious)), "gate": {"mean_iou": IOU_GATE}, "graphs": graphs,
              "provider": "OpenVINO:CPU bf16"}
    report["passed"] = report["mean_iou"] >= IOU_GATE
    if not report["passed"]:
        rep.warn(f"bf16 (OpenVINO) fails the IoU gate: mean mask IoU {report['mean_iou']:.3f} < {IOU_GATE}; "
                 "the runtime will refuse bf16")
    return report


def _tracked_ious(fp32, bf16) -> list[float]:
    """IoU of every object's mask on every frame of the verification clip, fp32 tracker against bf16."""
    from clipxai.export.sam_video import clipxai_tracks, tracking_script
    clip, events = tracking_script(4)
    out = []
    for a, b in zip(clipxai_tracks(fp32, clip, events), clipxai_tracks(bf16, clip, events)):
        out += [_iou(a[k][0] > 0, b[k][0] > 0) for k in a]
    return out


def _predictor(staging: Path, manifest: MaskManifest, encoder_file: str = MASK_ENCODER_FILE):
    from clipxai.runtime.providers import SessionOptions, create_session
    from clipxai.runtime.sam.predictor import MaskPredictor
    bundle = Bundle(staging, manifest)
    open_ = lambda name: create_session(staging / name, "cpu", SessionOptions())  # noqa: E731
    return MaskPredictor(bundle, open_(encoder_file), open_(MASK_DECODER_FILE))


def _prompt_sets(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Three prompt sets of three points each (positive, positive, negative) spread over an image."""
    coords = np.array([[[w * 0.25, h * 0.3], [w * 0.3, h * 0.35], [w * 0.8, h * 0.8]],
                       [[w * 0.7, h * 0.25], [w * 0.6, h * 0.3], [w * 0.1, h * 0.9]],
                       [[w * 0.5, h * 0.6], [w * 0.45, h * 0.7], [w * 0.9, h * 0.1]]])
    return coords.round(), np.array([[1, 1, 0]] * 3, np.float32)


def verify(model, row: MaskModel, staging: Path, manifest: MaskManifest) -> dict:
    """The device pipeline against the package's predictor on a synthetic 300 x 400 scene:
    max abs error of the low-res logits and of the predicted IoU over three prompt sets."""
    image = synthetic_scenes(1, 400, seed=3)[0][:300]
    if row.family == "sam":
        from segment_anything import SamPredictor
        reference = SamPredictor(model)
    else:
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        reference = SAM2ImagePredictor(model)
    ours = _predictor(staging, manifest)
    ours.set_image(image)
    coords, labels = _prompt_sets(*image.shape[:2])
    errs = {"low_res_masks": 0.0, "iou_predictions": 0.0}
    with torch.no_grad():
        reference.set_image(image)
        for c, lab in zip(coords, labels):
            _, iou_ref, low_ref = reference.predict(point_coords=c, point_labels=lab, multimask_output=True,
                                                    return_logits=True)
            _, iou, low = ours.predict(c, lab, multimask_output=True)
            errs["low_res_masks"] = max(errs["low_res_masks"], float(np.abs(low - low_ref).max()))
            errs["iou_predictions"] = max(errs["iou_predictions"], float(np.abs(iou - iou_ref).max()))
    return {**errs, "tolerance": TOLERANCE, "image": [300, 400], "prompt_sets": len(coords)}


def _best_masks(predictor, images: np.ndarray) -> list[np.ndarray]:
    out = []
    for image in images:
        predictor.set_image(image)
        coords, labels = _prompt_sets(*image.shape[:2])
        masks, scores, _ = predictor.predict_batch(coords, labels)
        out += [m[int(np.argmax(s))] for m, s in zip(masks, scores)]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def lower_precision(cfg: SamExportConfig, staging: Path, manifest: MaskManifest, rep: Reporter) -> dict:
    """Convert the encoder, measure the masks' IoU against fp32, gate, put it in place."""
    rep.step(f"converting the image encoder to {cfg.precision}")
    candidate = f"encoder.{cfg.precision}.onnx"
    conversion = convert(cfg.precision, staging / MASK_ENCODER_FILE, staging / candidate)
    images = (load_images(cfg.fidelity_images, 512) if cfg.fidelity_images
              else synthetic_scenes(cfg.fidelity_count, 512, seed=1))
    source = f"{len(images)} user images" if cfg.fidelity_images else f"{len(images)} synthetic scenes"
    rep.step(f"measuring {cfg.precision} mask IoU against fp32 on {source}")
    want = _best_masks(_predictor(staging, manifest), images)
    got = _best_masks(_predictor(staging, manifest, candidate), images)
    ious = [_iou(a, b) for a, b in zip(want, got)]
    report = {"images": len(images), "image_source": source, "mean_iou": float(np.mean(ious)),
              "min_iou": float(np.min(ious)), "masks": len(ious), "gate": {"mean_iou": IOU_GATE},
              "provider": "CPUExecutionProvider", "conversion": conversion}
    report["passed"] = report["mean_iou"] >= IOU_GATE
    if not report["passed"]:
        msg = f"the {cfg.precision} encoder fails the IoU gate: mean mask IoU {report['mean_iou']:.3f} < {IOU_GATE}"
        if not cfg.force:
            raise VerificationError(msg + "; no bundle written (--force writes it anyway)")
        rep.warn(msg + "; writing it anyway (--force)")
    save_graph(onnx.load(str(staging / candidate)), staging / MASK_ENCODER_FILE, ENCODER_DATA_FILE)
    (staging / candidate).unlink()
    return report


def export_mask_bundle(cfg: SamExportConfig, reporter: Reporter | None = None) -> ExportResult:
    """Load, export, verify and write one mask-model bundle (module docstring)."""
    rep = reporter or Reporter()
    start = time.perf_counter()
    row = _check(cfg)
    rep.step(f"loading {row.name} ({row.family}) from {Path(cfg.checkpoint).name}")
    model = load_mask_model(row, cfg.checkpoint)
    checkpoint_sha = sha256_file(cfg.checkpoint)
    with staged_bundle(Path(cfg.output), cfg.overwrite) as staging:
        _export_graphs(model, row, staging, cfg.opset, rep)
        manifest = build_manifest(row, cfg, checkpoint_sha)
        if row.family == "sam2" and cfg.video is not False:
            from clipxai.export.sam_video import export_tracking
            rep.step("exporting the tracking graphs (memory attention, memory encoder, tracking decoder)")
            manifest = dataclasses.replace(manifest, tracking=export_tracking(model, staging, cfg.opset))
        if cfg.verify:
            manifest = _verified(model, row, staging, manifest, rep)   # on the fp32 encoder
        fidelity = lower_precision(cfg, staging, manifest, rep) if cfg.precision != "fp32" else None
        manifest = finalize_manifest(staging, dataclasses.replace(manifest, fidelity=fidelity))
        if cfg.precision == "fp32" and cfg.bf16:
            bf16 = bf16_fidelity(cfg, staging, manifest, rep)
            if bf16 is not None:
                manifest = finalize_manifest(staging, dataclasses.replace(manifest, bf16_fidelity=bf16))
    output = Path(cfg.output)
    return ExportResult(output, bundle_size(output), time.perf_counter() - start, manifest.verification, manifest,
                        manifest_digest(output))


def _verified(model, row: MaskModel, staging: Path, manifest: MaskManifest, rep: Reporter) -> MaskManifest:
    """The manifest with its verification (and its tracking's): the device pipeline against the package's
    predictor, then the tracker against SAM2VideoPredictor; VerificationError past the tolerances."""
    rep.step("verifying the device pipeline against the package's predictor")
    verification = verify(model, row, staging, manifest)
    worst = max(verification["low_res_masks"], verification["iou_predictions"])
    if not worst <= TOLERANCE:
        raise VerificationError(f"the mask graphs disagree with {row.family}'s predictor: max abs error "
                                f"low-res logits {verification['low_res_masks']:.3g}, IoU "
                                f"{verification['iou_predictions']:.3g} > {TOLERANCE}; no bundle written")
    manifest = dataclasses.replace(manifest, verification=verification)
    if manifest.tracking is None:
        return manifest
    rep.step("verifying the tracker against SAM2VideoPredictor on a 4-frame synthetic clip")
    listed = finalize_manifest(staging, manifest)   # the tracker opens only graphs the manifest lists
    tracking = dataclasses.replace(manifest.tracking, verification=_verify_tracking(model, row, staging, listed))
    return dataclasses.replace(manifest, tracking=tracking)
