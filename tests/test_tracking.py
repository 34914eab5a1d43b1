"""SAM 2.1 tracking: the exported memory graphs and the torch-free MaskTracker against sam2's SAM2VideoPredictor.

A tiny random SAM 2.1 (tests/tiny_sam.py: SAM 2.1's bank of 7 memories and 16 pointers, one cheap
memory-attention layer), on synthetic clips of moving shapes. Its object-score head is shifted so that the
object is scored visible on some frames and not on others (random weights score every frame alike).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sam2")
torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sam import TINY_SAM, TINY_SAM2, save_checkpoint  # noqa: E402

from clipxai.errors import BundleError, ClipxaiError  # noqa: E402
from clipxai.export.sam_video import (  # noqa: E402
    TOLERANCE, Event, clipxai_tracks, compare, moving_shapes, reference_tracks, scipy_connected_components,
    video_predictor,
)

FRAMES = 12
HIDDEN = range(4, 8)   # the disc is out of view on these frames


def _events(h: int, w: int) -> list[Event]:
    """Two objects on frame 0 (one point: multimask; two points: the stability rule), a third added on
    frame 5, the first removed on frame 9."""
    return [Event(0, "add", 1, ((w * 0.25, h * 0.5),), (1,)),
            Event(0, "add", 2, ((w * 0.75, h * 0.4), (w * 0.1, h * 0.9)), (1, 0)),
            Event(5, "add", 3, ((w * 0.6, h * 0.35),), (1,)),
            Event(9, "remove", 1)]


def _export(tmp: Path, model, name: str, verify: bool = False, **cfg) -> Path:
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    ckpt = tmp / f"{name}.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    return export_mask_bundle(SamExportConfig(model=TINY_SAM2.name, checkpoint=ckpt, output=tmp / name,
                                              verify=verify, **cfg)).path


def _tracker(bundle: Path, frames: int | None = FRAMES):
    from clipxai.runtime.sam.tracker import MaskTracker
    return MaskTracker(bundle, num_frames=frames, providers="cpu", graph_cache="off")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model, bundle, clip, events): the object-score head shifted to the median score clipxai's tracker
    gives on the clip, so that about half the frame-objects are scored visible."""
    tmp = tmp_path_factory.mktemp("tracking")
    model = save_checkpoint(TINY_SAM2, tmp / "seed.pt", seed=11)
    clip = moving_shapes(FRAMES, hidden=HIDDEN)
    events = _events(*clip[0].shape[:2])
    first = _export(tmp, model, "unshifted", bf16=False)
    scores = [s for frame in clipxai_tracks(_tracker(first), clip, events) for _, s in frame.values()]
    head = model.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.bias -= float(np.median(scores))
    return model, _export(tmp, model, "shifted", verify=True), clip, events


@pytest.fixture(scope="module")
def runs(setup):
    """(ours, theirs): the scripted clip through MaskTracker and through SAM2VideoPredictor (holes filled
    on both sides: the reference's CUDA labelling replaced by scipy's)."""
    from PIL import Image

    from clipxai.runtime.sam.preprocess import image_input
    model, bundle, clip, events = setup
    tracker = _tracker(bundle)
    images = torch.from_numpy(np.concatenate([image_input(Image.fromarray(f), tracker.sam.preprocess)[0]
                                              for f in clip]))
    with scipy_connected_components():
        theirs = reference_tracks(video_predictor(TINY_SAM2, model), images, clip[0].shape[:2], events)
    return clipxai_tracks(tracker, clip, events), theirs


def test_tracker_equals_sam2_video_predictor(runs):
    ours, theirs = runs
    report = compare(ours, theirs)
    assert report["mask_logits"] <= TOLERANCE and report["object_scores"] <= TOLERANCE, report
    assert report["mask_flips"] == 0, report
    assert [sorted(f) for f in theirs] == [[1, 2]] * 5 + [[1, 2, 3]] * 4 + [[2, 3]] * 3  # added, removed
    visible = [s > 0 for f in theirs for _, s in f.values()]
    assert any(visible) and not all(visible), "the shifted head should score some frames visible, some not"


def test_an_object_scored_absent_is_empty_and_found_again(runs):
    ours, theirs = runs
    for frame in ours:
        for logits, score in frame.values():
            if score <= 0:
                assert (logits < 0).all()           # SAM 2's -1024 everywhere: an empty mask
    seen = {}
    for frame in theirs:
        for key, (_, score) in frame.items():
            seen.setdefault(key, []).append(score > 0)
    back = [k for k, v in seen.items() if any(not a and b for a, b in zip(v, v[1:]))]
    assert back, f"no object came back after being scored absent: {seen}"


def test_export_verifies_the_tracker_and_lists_its_graphs(setup):
    from clipxai.runtime.bundle import load_bundle
    bundle = load_bundle(setup[1], kind="mask-model")
    tracking = bundle.manifest.tracking
    v = tracking.verification
    assert v["mask_logits"] <= TOLERANCE and v["object_scores"] <= TOLERANCE and v["mask_flips"] == 0, v
    assert v["holes_filled"] is False and v["frame_objects"] == 8
    assert (tracking.num_maskmem, tracking.max_obj_ptrs, tracking.mem_dim) == (7, 16, 64)
    for graph in tracking.graphs().values():
        assert graph.file in bundle.manifest.files


def test_objects_share_runs_and_memory_stays_bounded(setup):
    _, bundle, clip, _ = setup
    tracker = _tracker(bundle, frames=None)
    h, w = clip[0].shape[:2]
    a = tracker.add(clip[0], [[w * 0.25, h * 0.5]], [1], name="disc")
    b = tracker.add(clip[0], [[w * 0.75, h * 0.4]], [1], name="square")
    assert tracker.frame_index == 0                         # both on one encoded frame
    runs = {"attention": 0}
    run = tracker.attention.run

    def counted(*args, **kw):
        runs["attention"] += 1
        return run(*args, **kw)
    tracker.attention.run = counted
    for t in range(17):
        out = tracker.track(clip[t % FRAMES])
        assert sorted(out) == [a, b] and out[a].name == "disc" and out[a].mask.shape == (h, w)
    assert runs["attention"] == 16          # one batched run per tracked frame for both (frame 0 was prompted)
    for obj in tracker.objects.values():
        assert len(obj.prompted) == 1 and len(obj.recent) == 15   # max(7, 16) - 1 frames kept


def test_bfloat16_storage_rounds_as_torch():
    from clipxai.runtime.sam.tracker import from_bfloat16_bits, to_bfloat16_bits
    x = np.random.default_rng(0).normal(0, 3, 100_000).astype(np.float32)
    x[:4] = (1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -0.0, 65504.0)        # ties go to even
    want = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    assert np.array_equal(from_bfloat16_bits(to_bfloat16_bits(x)), want)


def test_hole_filling_equals_sam2s():
    from sam2.utils.misc import fill_holes_in_mask_scores

    from clipxai.runtime.sam.tracker import fill_holes
    rng = np.random.default_rng(1)
    logits = rng.normal(0.5, 1.0, (3, 1, 256, 256)).astype(np.float32)
    with scipy_connected_components():
        want = fill_holes_in_mask_scores(torch.from_numpy(logits), 8).numpy()
    got = np.stack([fill_holes(m[0], 8)[None] for m in logits])
    assert (want != logits).sum() > 100                     # there were holes to fill
    assert np.array_equal(got, want)


def test_points_outside_the_frame_are_refused_without_a_step(setup):
    _, bundle, clip, _ = setup
    tracker = _tracker(bundle)
    with pytest.raises(ClipxaiError, match=r"point \(400, 10\) is outside the 320x240 frame"):
        tracker.add(clip[0], [[400, 10]], [1])
    assert tracker.frame_index == -1 and not tracker.objects
    with pytest.raises(ClipxaiError, match="labels must be 1"):
        tracker.add(clip[0], [[10, 10]], [2])
    with pytest.raises(ClipxaiError, match="no object 7"):
        tracker.remove(7)


def test_a_new_frame_size_restarts_the_memory_once(setup, caplog):
    _, bundle, clip, _ = setup
    tracker = _tracker(bundle)
    tracker.add(clip[0], [[50, 50]], [1])
    tracker.track(clip[1])
    small = np.ascontiguousarray(clip[2][:200, :300])
    with caplog.at_level(logging.WARNING, logger="clipxai"):
        assert tracker.track(small) == {}
        tracker.add(small, [[50, 50]], [1])
        tracker.track(small)
        tracker.track(clip[3])
    notes = [r.getMessage() for r in caplog.records if "frame size changed" in r.getMessage()]
    assert len(notes) == 2 and "320x240 to 300x200" in notes[0] and "300x200 to 320x240" in notes[1]
    assert not tracker.objects                               # the 320x240 change emptied it again


def test_bundles_without_memory_are_refused(setup, tmp_path):
    from clipxai.export.sam import SamExportConfig, _check
    model, _, _, _ = setup
    with pytest.raises(ClipxaiError, match="SAM 1 model: it has no memory"):
        _check(SamExportConfig(model=TINY_SAM.name, checkpoint=tmp_path / "x.pth", output=tmp_path / "o",
                               video=True))
    plain = _export(tmp_path, model, "plain", video=False, bf16=False)
    with pytest.raises(ClipxaiError, match="has no tracking graphs"):
        _tracker(plain)


def test_a_tampered_tracking_graph_is_refused(setup, tmp_path):
    import shutil
    _, bundle, _, _ = setup
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    graph = copy / "memory_attention.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError) as e:
        _tracker(copy)
    assert "memory_attention.onnx" in str(e.value) and "\n" not in str(e.value)


def test_export_sam_video_flag_refuses_sam1_in_one_line(tmp_path):
    from click.testing import CliRunner

    from clipxai.export.sam_cli import export_sam
    ckpt = tmp_path / "sam.pth"
    save_checkpoint(TINY_SAM, ckpt)
    res = CliRunner().invoke(export_sam, ["--model", TINY_SAM.name, "--checkpoint", str(ckpt), "--out",
                                          str(tmp_path / "o"), "--video"])
    assert res.exit_code == 2 and "no memory" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_full_size_hiera_tiny_tracks_as_sam2_video_predictor(tmp_path):
    """SAM 2.1 Hiera-tiny at full size (random weights): the same script over 12 frames of 640x480."""
    from PIL import Image

    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    from clipxai.mask_models import resolve_mask_model
    from clipxai.runtime.sam.preprocess import image_input
    row = resolve_mask_model("sam2.1-hiera-tiny")
    model = save_checkpoint(row, tmp_path / row.checkpoint, seed=5)
    bundle = export_mask_bundle(SamExportConfig(model=row.name, checkpoint=tmp_path / row.checkpoint,
                                                output=tmp_path / "b")).path
    clip = moving_shapes(FRAMES, 480, 640, hidden=HIDDEN)
    events = _events(*clip[0].shape[:2])
    tracker = _tracker(bundle)
    images = torch.from_numpy(np.concatenate([image_input(Image.fromarray(f), tracker.sam.preprocess)[0]
                                              for f in clip]))
    with scipy_connected_components():
        theirs = reference_tracks(video_predictor(row, model), images, clip[0].shape[:2], events)
    report = compare(clipxai_tracks(tracker, clip, events), theirs)
    assert report["mask_logits"] <= TOLERANCE and report["object_scores"] <= TOLERANCE, report
    assert report["mask_flips"] == 0 and report["frame_objects"] == 28, report


def test_openvino_bf16_tracker_follows_the_bundles_gate(setup):
    """Export measured the encoder and memory attention in OpenVINO bf16 against fp32 (this CPU has native
    bf16); the tracker runs them bf16 only because that gate passed, and its masks stay within it."""
    pytest.importorskip("openvino")
    from clipxai.runtime.backends import OpenVINOOptions, RuntimeOptions
    from clipxai.runtime.backends.openvino import native_bf16
    from clipxai.runtime.bundle import load_bundle
    from clipxai.runtime.sam.tracker import MaskTracker
    assert native_bf16(), "this project's CPU has AVX-512 BF16"
    _, bundle, clip, events = setup
    record = load_bundle(bundle, kind="mask-model").manifest.bf16_fidelity
    assert list(record["graphs"]) == ["encoder.onnx", "memory_attention.onnx"] and record["masks"] == 4 * 3 + 4 * 2
    assert record["passed"] == (record["mean_iou"] >= 0.95)
    options = RuntimeOptions(providers="openvino", openvino=OpenVINOOptions(precision="bf16", cache=False))
    if not record["passed"]:
        with pytest.raises(ClipxaiError, match="bf16 refused"):
            MaskTracker(bundle, options)
        return
    bf16 = MaskTracker(bundle, options, num_frames=FRAMES)
    assert (bf16.sam.encoder.precision, bf16.attention.precision, bf16.decoder.precision) == ("bf16", "bf16", "fp32")
    script = [e for e in events if e.frame < 4]
    ious = []
    for a, b in zip(clipxai_tracks(_tracker(bundle), clip[:4], script), clipxai_tracks(bf16, clip[:4], script)):
        for key in a:
            x, y = a[key][0] > 0, b[key][0] > 0
            ious.append((x & y).sum() / max((x | y).sum(), 1) if (x | y).any() else 1.0)
    assert np.mean(ious) >= 0.95, ious
