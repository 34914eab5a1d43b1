"""From text to tracks: Predictor.track (clipxai's points start SAM 2.1 tracks and take them up again),
clipxai segment --sam SAM2_BUNDLE --track (a tracks video and JSON Lines), and bad input."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clipxai.cli.segment import main as segment_main
from clipxai.errors import ClipxaiError
from clipxai.export.sam_video import moving_shapes
from clipxai.runtime import Predictor
from clipxai.runtime.sam.predictor import ObjectMask, bbox
from clipxai.runtime.sam.tracker import MaskTracker
from clipxai.runtime.video import tracks as tracks_module
from tiny import TINY
from tiny_sam import TINY_SAM, TINY_SAM2, save_checkpoint

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"
CLASSES = ["disc", "square"]
H, W = 48, 64


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A tiny CLIP bundle; a tiny SAM 2.1 with tracking graphs whose occlusion head always says "visible"
    (random weights otherwise hide every object: nothing would stay tracked); the same without tracking
    graphs; a tiny SAM 1."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    root = tmp_path_factory.mktemp("tracks")
    model = save_checkpoint(TINY_SAM2, root / "sam2.pt", seed=7)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(8.0)
    torch.save({"model": model.state_dict()}, root / "sam2.pt")
    out = {"sam2": export_mask_bundle(SamExportConfig(model=TINY_SAM2.name, checkpoint=root / "sam2.pt",
                                                      output=root / "sam2", verify=False, bf16=False)).path,
           "no_video": export_mask_bundle(SamExportConfig(model=TINY_SAM2.name, checkpoint=root / "sam2.pt",
                                                          output=root / "no-video", verify=False, video=False,
                                                          bf16=False)).path}
    save_checkpoint(TINY_SAM, root / "sam.pth", seed=7)
    out["sam1"] = export_mask_bundle(SamExportConfig(model=TINY_SAM.name, checkpoint=root / "sam.pth",
                                                     output=root / "sam1", verify=False, bf16=False)).path
    out["clip"] = export_bundle(ExportConfig(output=root / "clip", classes=CLASSES, backbone=TINY.name,
                                             pretrained="random", image_size=32)).path
    return out


@pytest.fixture(scope="module")
def predictor(bundles):
    return Predictor.from_bundle(bundles["clip"], providers="cpu")


@pytest.fixture(scope="module")
def tracker(bundles):
    return MaskTracker(bundles["sam2"], providers="cpu")


@pytest.fixture(scope="module")
def clip():
    return moving_shapes(4, H, W)


def _video(path: Path, frames) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("h264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _ids(frame):
    return [t.id for t in frame.tracks]


def test_ids_stay_the_same_across_frames_and_a_reprompt_finds_its_track(predictor, tracker, clip):
    got = list(predictor.track(clip, tracker, classes=["disc"], reprompt_every=2, fps=10))
    assert [f.frame_index for f in got] == [0, 1, 2, 3] and got[1].timestamp == pytest.approx(0.1)
    assert [f.prompted for f in got] == [["disc"], [], ["disc"], []]  # every 2 frames; else all visible
    first = _ids(got[0])
    assert len(first) == 1 and all(_ids(f) == first for f in got)  # frame 2's mask matched the track
    assert [t.new for f in got for t in f.tracks] == [True, False, False, False]
    for f in got:
        t = f.tracks[0]
        assert t.name == "disc" and t.visible and t.mask.shape == (H, W) and t.mask.dtype == bool
        assert t.area == int(t.mask.sum()) > 0 and t.bbox == bbox(t.mask) and np.array_equal(f.frame, clip[f.frame_index])
    assert set(tracker.objects) == set(first)


def _masks_for(tracker, make):
    """tracker.sam.masks_for with each class's mask replaced by make(the class's current track mask)."""
    real = tracker.sam.masks_for

    def masks_for(prediction, classes, threshold):
        out = real(prediction, classes, threshold)
        for name, m in out.items():
            current = [o.last.mask for o in tracker.objects.values() if o.name == name]
            if m is not None and current:
                mask = make(current[0])
                out[name] = ObjectMask(mask, m.score, bbox(mask), int(mask.sum()), m.points, m.labels, m.token)
        return out
    return masks_for


def _overlap(mask, inside_less: int = 0):
    """A mask whose IoU with ``mask`` (area A) is exactly 1/2: its first ceil(A/2) pixels, plus one pixel
    outside it when A is odd; ``inside_less`` pixels fewer inside it (IoU below 1/2)."""
    inside, outside = np.flatnonzero(mask), np.flatnonzero(~mask)
    k = -(-inside.size // 2)
    flat = np.zeros(mask.size, bool)
    flat[inside[:k - inside_less]] = True
    flat[outside[:2 * k - inside.size]] = True
    return flat.reshape(mask.shape)


@pytest.mark.parametrize("case", ["half", "below-half", "elsewhere"])
def test_a_reprompt_mask_is_its_track_from_iou_one_half_on(predictor, tracker, clip, monkeypatch, case):
    make = {"half": _overlap,                                # IoU 1/2: the same track
            "below-half": lambda m: _overlap(m, 1),          # IoU just below: a new track
            "elsewhere": lambda m: ~m}[case]                 # no overlap: a new track
    monkeypatch.setattr(tracker.sam, "masks_for", _masks_for(tracker, make))
    got = list(predictor.track(clip[:2], tracker, classes=["square"], reprompt_every=1))
    (one,), second = _ids(got[0]), _ids(got[1])
    if case == "half":
        assert second == [one] and got[1].prompted == ["square"]
    else:
        assert second == [one, one + 1] and [t.new for t in got[1].tracks] == [False, True]
        assert got[1].tracks[1].name == "square"


def test_a_track_invisible_for_forget_after_frames_is_removed(predictor, tracker, clip, monkeypatch):
    real = tracker.track
    hidden: set[int] = set()

    def track(frame):  # the tracker hides the objects in ``hidden`` (an occlusion)
        out = real(frame)
        for i in hidden & set(out):
            t = out[i]
            t.visible, t.mask, t.area, t.bbox = False, np.zeros_like(t.mask), 0, (0, 0, 0, 0)
        return out
    monkeypatch.setattr(tracker, "track", track)
    frames = iter(predictor.track(clip[:3], tracker, classes=["disc"], reprompt_every=100, forget_after=2))
    (one,) = _ids(next(frames))
    hidden.add(one)
    second = next(frames)  # hidden once: kept, and the class without a visible track is prompted again
    assert second.prompted == ["disc"] and _ids(second) == [one, one + 1] and not second.tracks[0].visible
    third = next(frames)   # hidden twice: forgotten
    assert _ids(third) == [one + 1] and one not in tracker.objects


def test_bad_settings_and_sources_are_one_line_errors(predictor, tracker, bundles):
    for kwargs, message in (({"reprompt_every": 0}, "reprompt_every must be an integer >= 1"),
                            ({"forget_after": 1.5}, "forget_after must be an integer >= 1 or None"),
                            ({"threshold": 0}, r"threshold must be a number in \(0, 1\]")):
        with pytest.raises(ClipxaiError, match=message):
            predictor.track([np.zeros((H, W, 3), np.uint8)], tracker, **kwargs)
    with pytest.raises(ClipxaiError, match="no tracking graphs"):
        predictor.track([np.zeros((H, W, 3), np.uint8)], bundles["sam1"])
    with pytest.raises(ClipxaiError, match="sam must be a MaskTracker or a SAM 2.1 bundle path"):
        predictor.track([np.zeros((H, W, 3), np.uint8)], 3)
    with pytest.raises(ClipxaiError, match="is outside the 64x48 frame"):  # the tracker's own check stays
        tracker.add(np.zeros((H, W, 3), np.uint8), [[70, 10]], [1])


def test_segment_track_writes_a_playable_tracks_video_and_json_lines(bundles, clip, tmp_path):
    video = _video(tmp_path / "shapes.mp4", clip[:2])
    out = tmp_path / "out"
    r = CliRunner().invoke(segment_main, [str(bundles["clip"]), str(video), "--out", str(out), "--sam",
                                          str(bundles["sam2"]), "--track", "--sam-classes", "disc,square",
                                          "--reprompt-every", "1", "--providers", "cpu"])
    assert r.exit_code == 0, r.output
    assert "2 frames, 2 tracks -> shapes_tracks.mp4, shapes_tracks.jsonl" in r.stderr and "(1 video)" in r.stdout
    with av.open(str(out / "shapes_tracks.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2
    lines = [json.loads(x) for x in (out / "shapes_tracks.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1] and lines[1]["timestamp"] == pytest.approx(0.1)
    assert [x["prompted"] for x in lines] == [["disc", "square"]] * 2  # --reprompt-every 1
    from pycocotools import mask as coco
    for line in lines:
        assert [(o["id"], o["class"]) for o in line["objects"]] == [(1, "disc"), (2, "square")]
        for o in line["objects"]:
            decoded = coco.decode({"size": o["rle"]["size"], "counts": o["rle"]["counts"].encode()}).astype(bool)
            assert decoded.shape == (H, W) and int(decoded.sum()) == o["area"] > 0
            assert o["bbox"] == list(bbox(decoded)) and o["visible"] is True
    assert not [p for p in out.iterdir() if ".partial-" in p.name]


def test_a_stopped_track_run_leaves_a_playable_video_of_the_frames_done(bundles, clip, tmp_path, monkeypatch):
    from clipxai.apps.segment import SamOptions, SegmentJob, TrackOptions, VideoOptions, run_segment
    from clipxai.runtime.backends import RuntimeOptions
    from clipxai.runtime.video.output import VideoWriter
    video = _video(tmp_path / "long.mp4", clip)
    stop, write = threading.Event(), VideoWriter.write

    def write_then_stop(self, frame):  # a Ctrl-C while the 2nd frame is written
        write(self, frame)
        if self.frames == 2:
            stop.set()
    monkeypatch.setattr(VideoWriter, "write", write_then_stop)
    job = SegmentJob(bundles["clip"], (str(video),), tmp_path / "out", runtime=RuntimeOptions(providers="cpu"),
                     video=VideoOptions(), sam=SamOptions(str(bundles["sam2"]), ("disc",)), track=TrackOptions())
    summary = run_segment(job, stop=stop)
    assert summary.interrupted and "long.mp4: 2 frames, 1 tracks" in summary.notes[-1]
    with av.open(str(tmp_path / "out" / "long_tracks.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2
    assert len((tmp_path / "out" / "long_tracks.jsonl").read_text().splitlines()) == 2
    assert not [p for p in (tmp_path / "out").iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("case", ["no-sam", "sam1", "no-tracking-graphs", "image", "flags-without-track", "heatmap"])
def test_bad_track_requests_are_one_line_errors_and_write_nothing(bundles, clip, tmp_path, case):
    video = str(_video(tmp_path / "v.mp4", clip[:1]))
    args, message = {
        "no-sam": ([video, "--track"], "--track needs --sam SAM2_BUNDLE"),
        "sam1": ([video, "--sam", str(bundles["sam1"]), "--track"],
                 "--track needs a SAM 2.1 bundle with its tracking graphs: .* has no tracking graphs"),
        "no-tracking-graphs": ([video, "--sam", str(bundles["no_video"]), "--track"], "has no tracking graphs"),
        "image": ([str(ROCKET), "--sam", str(bundles["sam2"]), "--track"],
                  "--track follows objects through a video: give video files or --camera N"),
        "flags-without-track": ([video, "--reprompt-every", "5"], "--reprompt-every and --forget-after are for --track"),
        "heatmap": ([video, "--sam", str(bundles["sam2"]), "--track", "--heatmap", "disc"], "--heatmap draws"),
    }[case]
    out = tmp_path / "out"
    r = CliRunner().invoke(segment_main, [str(bundles["clip"]), *args, "--out", str(out), "--providers", "cpu"])
    assert r.exit_code == 2 and re.search(message, r.stderr), r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists()


def test_the_help_shows_the_runtime_defaults():
    r = CliRunner().invoke(segment_main, ["--help"])
    text = " ".join(r.output.split())
    assert f"[default: {tracks_module.DEFAULT_REPROMPT_EVERY}]" in text
    assert f"in a row [default: {tracks_module.DEFAULT_FORGET_AFTER}]" in text


def test_the_ros_node_publishes_the_tracks_ids_as_predictor_track_gives_them(bundles, predictor, clip):
    from test_ros import Harness
    from clipxai.apps.segment import TrackOptions
    from clipxai.runtime.video.tracks import track_map
    r = CliRunner().invoke(load_ros(), [str(bundles["clip"]), "--sam", str(bundles["sam1"]), "--track"])
    assert r.exit_code == 2 and "--track needs a SAM 2.1 bundle with its tracking graphs" in r.stderr
    r = CliRunner().invoke(load_ros(), [str(bundles["clip"]), "--track"])
    assert r.exit_code == 2 and "--track needs --sam" in r.stderr
    h = Harness(str(bundles["clip"]), "-p", "providers:=cpu", sam=str(bundles["sam2"]),
                track=TrackOptions(reprompt_every=2))
    try:
        h.send("rgb8", clip[0], stamp=(700, 0), frame_id="track_cam")
        h.wait(lambda: h.got["tracks"], "the tracks")
        m = h.got["tracks"][0]
        assert (m.encoding, m.step, m.header.stamp.sec, m.header.frame_id) == ("mono16", 2 * W, 700, "track_cam")
        assert not h.got["masks"]  # with --track the ids replace the class label map
        got = np.frombuffer(bytes(m.data), "<u2").reshape(m.height, m.width)
    finally:
        h.close()
    (want,) = predictor.track(clip[:1], MaskTracker(bundles["sam2"], providers="cpu"), reprompt_every=2)
    assert np.array_equal(got, track_map(want.tracks, (H, W))) and set(np.unique(got)) - {0} <= {1, 2}
    assert got.max() > 0


def load_ros():
    from clipxai.cli.main import load_command
    return load_command("ros")
