"""Predictor.stream and clipxai-segment on videos: exactness, queue policies, shutdown, bad input."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipxai.errors import ClipxaiError
from clipxai.runtime import Predictor
from clipxai.cli.segment import main as segment_main
from clipxai.runtime.video.sources import VideoError
from clipxai.runtime.visualize import BANNER_HEIGHT
from tiny import TINY

CLASSES = ["sky", "box", "grass"]


def make_video(path, n=20, w=65, h=47, codec="mpeg4", rate=12, size_at=None):
    """Moving shapes on a sky and grass scene; odd sizes need mpeg4 (H.264 wants even sides)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[:] = (40, 90, 180)
            img[2 * h // 3:] = (50, 150, 60)
            x = (4 * i) % max(w - 12, 1)
            img[h // 4: h // 4 + 10, x:x + 12] = (220, 50, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)


def decoded(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=tmp_path_factory.mktemp("vid") / "b", classes=CLASSES,
                                      backbone=TINY.name, pretrained="random", image_size=32)).path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4")


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor.from_bundle(bundle, providers="cpu")


def _stream_threads():
    return [t for t in threading.enumerate() if t.name.startswith("clipxai-stream")]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_each_frame_equals_predict_on_the_same_decoded_frame(predictor, video, batch_size):
    frames = decoded(video)
    preds = list(predictor.stream(video, batch_size=batch_size))
    assert [p.frame_index for p in preds] == list(range(len(frames))) and len(frames) == 20
    assert preds[0].size == (47, 65) and preds[3].timestamp == pytest.approx(3 / 12)
    for pred, frame in zip(preds, frames):
        want = predictor.predict(frame)
        assert np.array_equal(pred.frame, frame)
        for name in ("similarity", "scores", "heatmaps_grid"):
            assert np.abs(getattr(pred, name) - getattr(want, name)).max() <= 1e-6
        assert np.array_equal(pred.segmentation, want.segmentation)
    assert not _stream_threads()


def test_iterables_every_n_and_timestamps(predictor):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (30, 41, 3), dtype=np.uint8) for _ in range(7)]
    mixed = [Image.fromarray(f) if i % 2 else f for i, f in enumerate(frames)]
    preds = list(predictor.stream(mixed, every_n=3, fps=10))
    assert [p.frame_index for p in preds] == [0, 3, 6] and [p.timestamp for p in preds] == [0.0, 0.3, 0.6]
    assert np.abs(preds[1].scores - predictor.predict(frames[3]).scores).max() <= 1e-6
    # frames may change size: each prediction has its own
    sizes = [p.size for p in predictor.stream([frames[0], frames[1][:20, :15], frames[2]])]
    assert sizes == [(30, 41), (20, 15), (30, 41)]


def test_smoothing_is_an_exponential_moving_average(predictor, video):
    raw = list(predictor.stream(video))
    same = list(predictor.stream(video, smoothing=1.0))
    half = list(predictor.stream(video, smoothing=0.5))
    assert all(np.array_equal(a.similarity, b.similarity) for a, b in zip(raw, same))
    want = raw[0].similarity
    for r, h in zip(raw, half):
        want = want if r is raw[0] else 0.5 * r.similarity + 0.5 * want
        assert np.abs(h.similarity - want).max() <= 1e-6
    assert np.array_equal(half[0].heatmaps_grid, raw[0].heatmaps_grid)
    with pytest.raises(ClipxaiError, match="smoothing must be None"):
        predictor.stream(video, smoothing=0)


def test_a_live_source_keeps_the_newest_frame_and_counts_drops(predictor, monkeypatch):
    real = predictor.run_graph

    def slow(images, sizes):
        time.sleep(0.05)  # the device falls behind the camera
        return real(images, sizes)
    monkeypatch.setattr(predictor, "run_graph", slow)

    def camera(n=60):
        for i in range(n):
            time.sleep(0.005)  # 200 frames per second
            yield np.full((20, 20, 3), i, np.uint8)
    preds = list(predictor.stream(camera(), live=True))
    indices = [p.frame_index for p in preds]
    assert indices == sorted(indices) and len(preds) < 60
    assert sum(p.dropped for p in preds) + len(preds) == 60  # every frame predicted or counted as dropped
    assert preds[-1].frame_index == 59  # the newest frame wins, even the last one
    assert int(preds[-1].frame[0, 0, 0]) == 59
    # a file-like source drops nothing, however slow the graph
    assert [p.frame_index for p in predictor.stream(camera(20))] == list(range(20))


def test_stopping_early_leaves_no_thread_and_closes_the_decoder(predictor, video, monkeypatch):
    closed = []
    from clipxai.runtime.video import sources
    real = sources.video_frames

    def tracked(path):
        gen = real(path)
        try:
            yield from gen
        finally:
            closed.append(True)
    monkeypatch.setattr(sources, "video_frames", tracked)
    it = predictor.stream(video)
    for pred in it:
        if pred.frame_index == 2:
            break
    it.close()
    assert closed == [True] and not _stream_threads()
    # an exception in the consumer's loop too
    with pytest.raises(RuntimeError):
        for pred in predictor.stream(video):
            raise RuntimeError("the consumer failed")
    deadline = time.monotonic() + 5
    while _stream_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _stream_threads()


def test_a_truncated_video_gives_its_frames_then_says_where_it_stopped(predictor, bundle, tmp_path):
    path = make_video(tmp_path / "cut.mp4", n=30, w=64, h=48, codec="h264")
    data = path.read_bytes()
    cut = tmp_path / "cut-mid.mkv"
    make_video(cut, n=30, w=64, h=48, codec="mpeg4")  # mkv: frames readable up to the cut
    blob = cut.read_bytes()
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    got = []
    with pytest.raises(VideoError) as e:  # no decode error: the short read itself is reported
        for pred in predictor.stream(cut):
            got.append(pred.frame_index)
    assert e.value.stopped_at == len(got) and "stopped at frame" in str(e.value) and "ends early" in str(e.value)
    assert 5 <= len(got) < 30
    r = CliRunner().invoke(segment_main, [str(bundle), str(cut), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "ends early" in r.stderr and f"{len(got)} frames -> cut-mid_segmentation.mp4" in r.stderr
    # a cut mp4 loses its index: not readable at all, one line
    (tmp_path / "head.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match="not a readable video|has no frames|cannot decode"):
        list(predictor.stream(tmp_path / "head.mp4"))


def test_bad_video_inputs_are_one_line_errors(predictor, tmp_path, monkeypatch):
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="text.mp4: not a readable video"):
        list(predictor.stream(tmp_path / "text.mp4"))
    with av.open(str(tmp_path / "audio.mkv"), "w") as c:  # a file with no video stream
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
    with pytest.raises(VideoError, match="audio.mkv: has no video stream"):
        list(predictor.stream(tmp_path / "audio.mkv"))
    with av.open(str(tmp_path / "empty.mkv"), "w") as c:  # a video stream without a frame (sound only)
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("pcm_s16le", rate=8000)
        for p in a.encode(frame):
            c.mux(p)
    with pytest.raises(VideoError, match="empty.mkv: has no frames"):
        list(predictor.stream(tmp_path / "empty.mkv"))

    class Undecodable:  # what PyAV says about a codec it has no decoder for
        streams = type("S", (), {"video": [type("V", (), {"thread_type": None, "time_base": None})()]})()

        def decode(self, stream):
            raise av.error.DecoderNotFoundError(0, "no decoder for this codec")
            yield

        def demux(self, stream):
            raise av.error.DecoderNotFoundError(0, "no decoder for this codec")
            yield

        def close(self):
            pass
    monkeypatch.setattr(av, "open", lambda *a, **k: Undecodable())
    with pytest.raises(VideoError, match="cannot decode its video"):
        list(predictor.stream(tmp_path / "text.mp4"))
    with pytest.raises(ClipxaiError, match="not a video file"):
        predictor.stream(tmp_path / "photo.png")
    with pytest.raises(ClipxaiError, match="predict\\(\\) takes one"):
        predictor.stream(np.zeros((8, 8, 3), np.uint8))


def test_without_the_extras_a_one_line_error_names_them(predictor, video, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ClipxaiError, match=r'pip install "clipxai\[video\]"'):
        predictor.stream(video)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ClipxaiError, match=r'pip install "clipxai\[camera\]"'):
        predictor.stream(0)


def test_a_camera_that_cannot_be_opened(bundle, tmp_path, monkeypatch):
    class Closed:
        def __init__(self, index):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass
    monkeypatch.setitem(sys.modules, "cv2", type(sys)("cv2"))
    sys.modules["cv2"].VideoCapture = Closed
    r = CliRunner().invoke(segment_main, [str(bundle), "--camera", "7", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "camera 7 cannot be opened" in r.stderr and "Traceback" not in r.output


def test_segment_cli_writes_a_playable_video_and_json_lines(bundle, video, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(segment_main, [str(bundle), str(video), "--out", str(out), "--every-n", "2"])
    assert r.exit_code == 0, r.output
    assert "(1 video)" in r.stdout and "10 frames -> clip_segmentation.mp4, clip.jsonl" in r.stderr
    lines = [json.loads(x) for x in (out / "clip.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(0, 20, 2)) and set(lines[0]["scores"]) == set(CLASSES)
    assert lines[1]["timestamp"] == pytest.approx(2 / 12) and lines[0]["top_class"] in CLASSES
    with av.open(str(out / "clip_segmentation.mp4")) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (66, 48 + BANNER_HEIGHT)  # banner strip above; even sides for H.264
        assert sum(1 for _ in c.decode(video=0)) == 10 and abs(float(s.average_rate) - 6) < 0.01
    r = CliRunner().invoke(segment_main, [str(bundle), str(video), "--out", str(out), "--heatmap", "box"])
    assert r.exit_code == 0 and (out / "clip_heatmap_box.mp4").is_file()
    r = CliRunner().invoke(segment_main, [str(bundle), str(video), "--out", str(out), "--heatmap", "tree"])
    assert r.exit_code == 2 and "--heatmap 'tree' is not one of the classes" in r.stderr
    r = CliRunner().invoke(segment_main, [str(bundle), str(video), str(Path(__file__)), "--out", str(out)])
    assert r.exit_code == 2 and "not both in one run" in r.stderr
    assert not [p for p in out.iterdir() if ".partial-" in p.name]


def test_a_broken_video_among_others_is_listed_and_the_rest_written(bundle, video, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 500)
    out = tmp_path / "out"
    r = CliRunner().invoke(segment_main, [str(bundle), str(bad), str(video), "--out", str(out)])
    assert r.exit_code == 1 and "1 input failed, 1 processed:" in r.stderr and "bad.mp4: not a readable video" in r.stderr
    assert len(list(out.rglob("clip_segmentation.mp4"))) == 1 and not list(out.rglob("bad*"))


def test_frames_that_change_size_are_scaled_in_the_output_video(tmp_path):
    from clipxai.runtime.video.output import VideoWriter
    w = VideoWriter(tmp_path / "v.mp4", 10)
    for size in ((40, 30), (40, 30), (20, 24), (40, 30)):
        w.write(Image.new("RGB", size, (200, 10, 10)))
    assert w.resized_at == 2 and w.close() == tmp_path / "v.mp4"
    assert [f.shape for f in decoded(tmp_path / "v.mp4")] == [(30, 40, 3)] * 4
    empty = VideoWriter(tmp_path / "none.mp4", 10)
    assert empty.close() is None and not list(tmp_path.glob("*none*"))


def test_sigint_finishes_the_output_video_cleanly(bundle, tmp_path):
    """Ctrl-C while the 5th frame is written (a gate, not a timer): the video is closed with those 5
    frames, playable, with their 5 JSON lines, exit 130."""
    from helpers import gated_segment, signal_at_gate
    long = make_video(tmp_path / "long.mp4", n=60, w=96, h=64, codec="h264", rate=30)
    out = tmp_path / "out"
    proc = gated_segment("clipxai.runtime.video.output:VideoWriter.write", 5, tmp_path / "gate",
                         [bundle, long, "--out", out, "--providers", "cpu", "--frames-per-batch", 1])
    stdout, stderr = signal_at_gate(proc, tmp_path / "gate", signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert "interrupted: 1 video written" in stderr and "Traceback" not in stderr
    assert "5 frames -> long_segmentation.mp4" in stderr
    assert len(decoded(out / "long_segmentation.mp4")) == 5  # closed properly: every frame plays
    assert len((out / "long.jsonl").read_text().splitlines()) == 5
    assert not [p for p in out.iterdir() if ".partial-" in p.name]
