"""clipxai ros (clipxai/apps/ros): the message conversions without ROS, then the real node on rclpy and
Fast DDS, driven by an in-process publisher and subscriber, on the tiny bundle.

Every ROS 2 process here runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a test-only domain, so no
discovery traffic leaves the machine. Needs the ros extra (scripts/test.sh installs it): these tests fail,
not skip, without it.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy starts any participant
os.environ["ROS_DOMAIN_ID"] = os.environ.get("CLIPXAI_TEST_ROS_DOMAIN_ID", "87")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from clipxai.apps.ros import RosJob, run_node  # noqa: E402
from clipxai.apps.ros.convert import (BadFrame, ImageFields, UNASSIGNED, compressed_to_rgb, image_to_rgb,  # noqa: E402
                                      mono8_fields, parse_classes, rgb_fields, topic_part)
from clipxai.errors import ClipxaiError  # noqa: E402
from clipxai.runtime import Predictor  # noqa: E402
from helpers import commands_in_fresh_python  # noqa: E402
from tiny import TINY  # noqa: E402

CLASSES = ["red mug", "table", "sky"]
WAIT_S = 20.0
RESEND_S = 3.0  # a frame whose outputs have not come in this long is sent again (Harness.publish)


def _rgb(h=37, w=53, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _gray(rgb):
    return rgb.mean(axis=2).astype(np.uint8)


# name -> (encoding, uint8 [H, W, C] as sent, the RGB pixels it means)
def _encoded(rgb):
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    g = _gray(rgb)
    return {"rgb8": (rgb, rgb), "bgr8": (rgb[..., ::-1], rgb), "rgba8": (np.concatenate([rgb, alpha], 2), rgb),
            "bgra8": (np.concatenate([rgb[..., ::-1], alpha], 2), rgb),
            "mono8": (g[..., None], np.repeat(g[..., None], 3, 2))}


def _fields(encoding, pixels, pad=0):
    h, w, c = pixels.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, :w * c] = pixels.reshape(h, w * c)
    return ImageFields(encoding, h, w, w * c + pad, rows.tobytes())


# -- without ROS ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 7])
def test_every_encoding_converts_to_the_same_rgb(encoding, pad):
    sent, meant = _encoded(_rgb())[encoding]
    assert np.array_equal(image_to_rgb(_fields(encoding, sent, pad)), meant)


def test_bad_frames_are_refused_by_kind():
    good = _fields("rgb8", _rgb())
    cases = {"encoding": ImageFields("yuv422", good.height, good.width, good.step, good.data),
             "step": ImageFields("rgb8", good.height, good.width, good.step - 1, good.data[:-good.height]),
             "data": ImageFields("rgb8", good.height, good.width, good.step, good.data[:-5]),
             "size": ImageFields("rgb8", 0, good.width, good.step, b"")}
    for kind, fields in cases.items():
        with pytest.raises(BadFrame) as e:
            image_to_rgb(fields)
        assert e.value.kind == kind
    with pytest.raises(BadFrame, match="compressed"):
        compressed_to_rgb(b"not an image")


def test_outputs_round_trip():
    labels = np.array([[-1, 0], [2, 1]], np.int32)
    f = mono8_fields(labels)
    assert (f.encoding, f.step) == ("mono8", 2)
    assert list(f.data) == [UNASSIGNED, 0, 2, 1]
    rgb = _rgb(5, 4)
    assert np.array_equal(image_to_rgb(rgb_fields(rgb)), rgb)
    assert topic_part("red mug") == "red_mug" and topic_part("3d") == "c_3d"


def test_classes_messages_are_validated():
    assert parse_classes(" cat, dog ,car") == ["cat", "dog", "car"]
    for bad in ("", " , ", "cat,dog,Cat", ",".join(f"c{i}" for i in range(10_000))):
        with pytest.raises(ClipxaiError):
            parse_classes(bad)


# -- the real node --------------------------------------------------------------------------------------
def _export(out, classes, text_encoder=False):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return str(export_bundle(ExportConfig(output=out, classes=classes, backbone=TINY.name, pretrained="random",
                                          image_size=32, text_encoder=text_encoder)).path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("ros") / "b", CLASSES)


@pytest.fixture(scope="module")
def te_bundle(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("ros-te") / "b", ["sky", "rocket"], text_encoder=True)


@pytest.fixture(scope="module")
def reference(bundle):
    return Predictor.from_bundle(bundle, providers="cpu")


_RUNS = iter(range(10_000))


class Harness:
    """The node (run_node in a thread, its own namespace) and a tester node that publishes images and
    classes and records every output."""

    def __init__(self, bundle, *params, sam=None, track=None):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Float32MultiArray, String
        self.ns = f"t{os.getpid()}_{next(_RUNS)}"
        self.name = f"clipxai_{self.ns}"
        self.stop, self.error = threading.Event(), []
        args = ("--ros-args", "-r", f"__ns:=/{self.ns}", "-r", f"__node:={self.name}", *params)
        self.thread = threading.Thread(target=self._run, args=(RosJob(bundle, args, sam=sam, track=track),), daemon=True)
        self.thread.start()
        self.last = None  # the last message publish() sent
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("tester", namespace=self.ns, context=self.ctx)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.got = {k: [] for k in ("segmentation", "scores", "class_names", "overlay", "diagnostics", "heat",
                                          "masks", "tracks")}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        subs = [("segmentation", Image, 100), ("scores", Float32MultiArray, 100), ("class_names", String, latched),
                ("overlay", Image, 100), ("heatmap/red_mug", Image, 100), ("masks", Image, 100),
                ("tracks", Image, 100)]
        self.subs = [self.node.create_subscription(t, topic, self._keep(topic.split("/")[0].replace("heatmap", "heat")),
                                                   q) for topic, t, q in subs]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        self.images = self.node.create_publisher(Image, "image", 100)
        self.compressed = self.node.create_publisher(CompressedImage, "image/compressed", 100)
        self.classes = self.node.create_publisher(String, "classes", 10)
        self.wait(lambda: self.subs[0].get_publisher_count() and self.images.get_subscription_count()
                  and self.classes.get_subscription_count(), "the node's topics")

    def _run(self, job):
        try:
            run_node(job, stop=self.stop)
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            self.error.append(e)

    def _keep(self, key):
        return lambda msg: self.got[key].append(msg)

    def _diagnostics(self, msg):
        self.got["diagnostics"] += [{kv.key: kv.value for kv in s.values} for s in msg.status
                                    if s.name.startswith(self.name + ":")]

    def wait(self, done, what, timeout=WAIT_S):
        assert self._spin_until(done, timeout), f"timed out waiting for {what}"

    def _spin_until(self, done, seconds) -> bool:
        """Spin up to ``seconds`` or until ``done()``; whether it is done."""
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            assert not self.error, self.error
            self.executor.spin_once(timeout_sec=0.05)
        return bool(done())

    def send(self, encoding, pixels, stamp=(7, 500), frame_id="camera_optical", pad=0):
        from sensor_msgs.msg import Image
        f = _fields(encoding, pixels, pad)
        msg = Image(encoding=f.encoding, height=f.height, width=f.width, step=f.step)
        msg.data = f.data
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.header.frame_id = frame_id
        self.publish(self.images, msg)

    def publish(self, publisher, msg):
        """Publish ``msg`` and remember it: result() sends it again if its outputs are slow to come (images
        are best-effort, and Fast DDS drops a sample when a burst has filled the reader's shared-memory port)."""
        self.last = (publisher, msg)
        publisher.publish(msg)

    def result(self, n_before, stamp_sec, resend_s=RESEND_S):
        """The segmentation (uint8 [H, W]) and scores of the frame stamped ``stamp_sec``; the last message
        published again every ``resend_s`` seconds until they come (None: never, for tests that count frames)."""
        def arrived():
            return (any(m.header.stamp.sec == stamp_sec for m in self.got["segmentation"][n_before:])
                    and len(self.got["scores"]) >= len(self.got["segmentation"]))
        end = time.monotonic() + WAIT_S
        while resend_s is not None and not arrived() and time.monotonic() < end:
            if not self._spin_until(arrived, resend_s):
                self.last[0].publish(self.last[1])
        self.wait(arrived, "the frame's outputs", max(end - time.monotonic(), 0.1))
        i = next(i for i, m in enumerate(self.got["segmentation"]) if m.header.stamp.sec == stamp_sec)
        m = self.got["segmentation"][i]
        assert m.encoding == "mono8" and m.step == m.width
        return m, np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width), \
            np.array(self.got["scores"][i].data, np.float32)

    def close(self):
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive() and not self.error, self.error
        self.node.destroy_node()
        self.ctx.try_shutdown()


@pytest.fixture
def node(bundle, request):
    params = getattr(request, "param", ())
    h = Harness(bundle, *params)
    yield h
    h.close()


def _assert_equals_predict(seg, scores, pred):
    expected = np.where(pred.segmentation < 0, UNASSIGNED, pred.segmentation).astype(np.uint8)
    assert np.array_equal(seg, expected)
    np.testing.assert_allclose(scores, pred.scores, atol=1e-6, rtol=0)


@pytest.mark.parametrize("node", [("-p", "publish_overlay:=true", "-p", "heatmap_classes:=[red mug]",
                                   "-p", "background_threshold:=0.6", "-p", "compressed:=true")], indirect=True)
def test_each_output_equals_predict_for_every_encoding(node, bundle):
    reference = Predictor.from_bundle(bundle, providers="cpu", background_threshold=0.6)
    rgb, unassigned = _rgb(), False
    for i, (encoding, (sent, meant)) in enumerate(_encoded(rgb).items()):
        n = len(node.got["segmentation"])
        node.send(encoding, sent, stamp=(100 + i, 123456), frame_id=f"cam_{encoding}", pad=3 * (i % 2))
        msg, seg, scores = node.result(n, 100 + i)
        assert (msg.header.stamp.nanosec, msg.header.frame_id) == (123456, f"cam_{encoding}")
        pred = reference.predict(meant)
        _assert_equals_predict(seg, scores, pred)
        unassigned = unassigned or bool((seg == UNASSIGNED).any())
    assert unassigned  # the background threshold reached the node
    node.wait(lambda: len(node.got["overlay"]) >= 5 and len(node.got["heat"]) >= 5, "overlays and heatmaps")
    o, hm = node.got["overlay"][-1], node.got["heat"][-1]
    assert o.encoding == "rgb8" and o.width == rgb.shape[1] and o.header.frame_id == "cam_mono8"
    assert o.height >= rgb.shape[0]  # a random-weights bundle's overlay carries a banner below the frame
    heat = np.frombuffer(bytes(hm.data), "<f4").reshape(hm.height, hm.width)
    np.testing.assert_allclose(heat, reference.predict(_encoded(rgb)["mono8"][1]).heatmap(0), atol=1e-6)
    assert node.got["scores"][0].layout.dim[0].label == "classes" and node.got["scores"][0].layout.dim[0].size == 3

    from sensor_msgs.msg import CompressedImage  # a compressed JPEG: the pixels PIL decodes
    jpeg = io.BytesIO()
    PILImage.fromarray(rgb).save(jpeg, "JPEG", quality=80)
    msg = CompressedImage(format="jpeg")
    msg.data = jpeg.getvalue()
    msg.header.stamp.sec = 200
    n = len(node.got["segmentation"])
    node.publish(node.compressed, msg)
    _, seg, scores = node.result(n, 200)
    _assert_equals_predict(seg, scores, reference.predict(np.asarray(PILImage.open(jpeg).convert("RGB"))))


def test_class_names_are_latched_and_diagnostics_count(node):
    node.wait(lambda: node.got["class_names"], "class_names")
    assert node.got["class_names"][-1].data == ",".join(CLASSES)
    now = int(time.time())  # a stamp of the wall clock: the latency is then a real one
    node.send("rgb8", _rgb(), stamp=(now, 0))
    node.result(0, now, resend_s=None)  # counts frames in
    node.wait(lambda: any(d["frames processed"] == "1" for d in node.got["diagnostics"]), "diagnostics", 5)
    d = next(d for d in node.got["diagnostics"] if d["frames processed"] == "1")
    assert d["frames in"] == "1" and d["provider"] == "CPUExecutionProvider"
    assert 0 <= float(d["latency mean (ms)"]) <= float(d["latency max (ms)"]) < 2000 + WAIT_S * 1000, d


def test_classes_topic_changes_class_names_and_scores(te_bundle):
    from std_msgs.msg import String
    h = Harness(te_bundle)
    try:
        h.wait(lambda: h.got["class_names"], "class_names")
        assert h.got["class_names"][-1].data == "sky,rocket"
        for refused in ("", "cat,cat", ",".join(f"c{i}" for i in range(10_000))):
            h.classes.publish(String(data=refused))
        h.classes.publish(String(data="cat, dog,car"))
        h.wait(lambda: h.got["class_names"][-1].data == "cat,dog,car", "the new class names")
        assert [m.data for m in h.got["class_names"]] == ["sky,rocket", "cat,dog,car"]
        h.send("rgb8", _rgb(seed=4), stamp=(300, 0))
        _, seg, scores = h.result(0, 300)
        reference = Predictor.from_bundle(te_bundle, providers="cpu")
        reference.set_classes(["cat", "dog", "car"])
        assert scores.shape == (3,)
        _assert_equals_predict(seg, scores, reference.predict(_rgb(seed=4)))
    finally:
        h.close()


def test_classes_on_a_bundle_without_text_encoder_change_nothing(node):
    from std_msgs.msg import String
    node.wait(lambda: node.got["class_names"], "class_names")
    node.classes.publish(String(data="cat,dog"))
    node.send("rgb8", _rgb(), stamp=(400, 0))
    _, _, scores = node.result(0, 400)
    assert scores.shape == (3,) and [m.data for m in node.got["class_names"]] == [",".join(CLASSES)]


def test_bad_frames_are_skipped_and_the_node_keeps_running(node, reference):
    from sensor_msgs.msg import Image
    rgb = _rgb()
    good = _fields("rgb8", rgb)
    bad = [Image(encoding="yuv422", height=good.height, width=good.width, step=good.step),
           Image(encoding="rgb8", height=good.height, width=good.width, step=good.step - 2),
           Image(encoding="rgb8", height=good.height, width=good.width, step=good.step)]
    bad[0].data = good.data
    bad[1].data = good.data
    bad[2].data = good.data[:-100]
    for _ in range(50):
        for m in bad:
            node.images.publish(m)
        node.executor.spin_once(timeout_sec=0.001)
    node.send("rgb8", rgb, stamp=(500, 0))
    _, seg, scores = node.result(0, 500)
    _assert_equals_predict(seg, scores, reference.predict(rgb))
    node.wait(lambda: node.got["diagnostics"], "diagnostics", 5)
    before = int(node.got["diagnostics"][-1]["frames skipped"])
    for m in bad:  # one at a time: the image subscription keeps only the newest frame, so a burst counts one
        node.images.publish(m)
        node._spin_until(lambda: False, 0.3)
    node.wait(lambda: int(node.got["diagnostics"][-1]["frames skipped"]) >= before + 3, "skips in the diagnostics", 5)
    node.send("rgb8", rgb, stamp=(501, 0))
    node.result(0, 501)
    assert {m.header.stamp.sec for m in node.got["segmentation"]} == {500, 501}  # no bad frame gave outputs
    # the periods that processed the two frames (stamped in 1970: not on this clock) report no latency
    node.wait(lambda: int(node.got["diagnostics"][-1]["frames processed"]) >= 2, "diagnostics", 5)
    assert all(d["latency mean (ms)"] == "n/a" for d in node.got["diagnostics"])


def test_a_burst_is_answered_with_the_newest_frame_and_drops_are_counted(bundle, monkeypatch):
    real = Predictor.predict

    def slow(self, image):
        time.sleep(0.3)
        return real(self, image)
    monkeypatch.setattr(Predictor, "predict", slow)
    h = Harness(bundle)
    try:
        rgb = _rgb()
        for i in range(1, 51):
            h.send("rgb8", rgb, stamp=(i, 0))
            h.executor.spin_once(timeout_sec=0.002)
        _, seg, _ = h.result(0, 50, resend_s=None)
        stamps = [m.header.stamp.sec for m in h.got["segmentation"]]
        assert stamps[-1] == 50 and len(stamps) < 10, stamps
        h.wait(lambda: h.got["diagnostics"] and h.got["diagnostics"][-1]["frames processed"] == str(len(stamps)),
               "the diagnostics", 5)
        d = h.got["diagnostics"][-1]
        assert int(d["frames dropped"]) >= 1 and int(d["frames dropped"]) + len(stamps) <= 50, d
        assert int(d["frames dropped"]) + len(stamps) == int(d["frames in"]), d
    finally:
        h.close()


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_command_cleanly(bundle, sig):
    ns = f"sig{os.getpid()}_{int(sig)}"
    p = subprocess.Popen([sys.executable, "-m", "clipxai.cli.main", "ros", bundle, "--ros-args", "-r", f"__ns:=/{ns}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        line = p.stdout.readline()
        assert "node /" in line, line + p.stderr.read()
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err and "stopped: 0 frames processed" in err, err


def test_bad_input_is_a_one_line_error_before_the_node_starts(tmp_path, bundle):
    from clipxai.cli.main import main
    r = CliRunner().invoke(main, ["ros", str(tmp_path)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "error:" in r.output, r.output
    r = CliRunner().invoke(main, ["ros", bundle, "extra"])
    assert r.exit_code == 2 and "--ros-args" in r.output, r.output
    r = CliRunner().invoke(main, ["ros", bundle, "--ros-args", "--no-such-ros-flag"])
    assert r.exit_code == 2 and "--ros-args" in r.output, r.output


def test_help_never_imports_rclpy():
    r = commands_in_fresh_python([["--help"], ["ros", "--help"]], "rclpy")
    assert r.stdout.strip().splitlines()[-1] == "NO-RCLPY", r.stdout + r.stderr
    assert "--ros-args" in r.stdout


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_bad_messages_in_a_loop_leave_memory_flat(node):
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String
    good = _fields("rgb8", _rgb(120, 160))
    bad = Image(encoding="rgb8", height=good.height, width=good.width, step=good.step)
    bad.data = good.data[:-1]
    junk = CompressedImage(format="jpeg")
    junk.data = b"\xff\xd8 not a jpeg" * 100

    def burst(n):
        for i in range(n):
            node.images.publish(bad)
            node.compressed.publish(junk)
            node.classes.publish(String(data="a,a" if i % 2 else ""))
            node.executor.spin_once(timeout_sec=0)
        node.wait(lambda: node.got["diagnostics"] and int(node.got["diagnostics"][-1]["frames skipped"]) > 0,
                  "the skips", 5)
    burst(300)  # warm up: allocators, logging
    before = _rss_mb()
    burst(2000)
    assert _rss_mb() - before < 10, (before, _rss_mb())
    assert node.thread.is_alive()


def test_sam_masks_are_the_label_map_of_the_mask_predictor(bundle, reference, tmp_path):
    from tiny_sam import TINY_SAM, save_checkpoint
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    from clipxai.runtime.sam import MaskPredictor, label_map
    save_checkpoint(TINY_SAM, tmp_path / "sam.pth", seed=7)
    sam = str(export_mask_bundle(SamExportConfig(model=TINY_SAM.name, checkpoint=tmp_path / "sam.pth",
                                                 output=tmp_path / "sam", bf16=False)).path)
    r = CliRunner().invoke(load_ros(), [bundle, "--sam", bundle])  # a CLIP bundle as --sam
    assert r.exit_code == 2 and "mask-model" in r.output and r.output.count("\n") == 1, r.output
    h = Harness(bundle, sam=sam)
    try:
        rgb = _rgb(40, 60, seed=9)
        h.send("bgr8", rgb[..., ::-1].copy(), stamp=(600, 0), frame_id="sam_cam")
        h.result(0, 600)
        h.wait(lambda: h.got["masks"], "the masks")
        m = h.got["masks"][0]
        assert (m.encoding, m.header.stamp.sec, m.header.frame_id) == ("mono8", 600, "sam_cam")
        masks = np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width)
        pred = reference.predict(rgb)
        sp = MaskPredictor.from_bundle(sam, providers="cpu")
        sp.set_image(rgb)
        assert np.array_equal(masks, label_map(sp.masks_for(pred, pred.classes), pred) + 1)
        assert masks.max() > 0
    finally:
        h.close()


def load_ros():
    from clipxai.cli.main import load_command
    return load_command("ros")


def _set(h, **values):
    """Set the node's parameters through its parameter service: [(successful, reason)] per parameter."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    client = AsyncParameterClient(h.node, f"/{h.ns}/{h.name}")
    h.wait(client.services_are_ready, "the parameter services")
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    h.wait(future.done, "the parameter answer")
    return [(r.successful, r.reason) for r in future.result().results]


def test_parameters_change_at_run_time(node, bundle):
    assert _set(node, threads=3)[0][0] is False  # read-only: needs a restart
    assert _set(node, classes=["cat"])[0][0] is False  # not a --text-encoder bundle
    assert _set(node, every_n=0)[0][0] is False  # out of range
    assert all(ok for ok, _ in _set(node, background_threshold=0.6, publish_overlay=True,
                                    heatmap_classes=["red mug"]))
    reference = Predictor.from_bundle(bundle, providers="cpu", background_threshold=0.6)
    rgb = _rgb()
    node.send("rgb8", rgb, stamp=(700, 0))
    _, seg, scores = node.result(0, 700, resend_s=None)  # a resent 700 would shift every_n's count
    _assert_equals_predict(seg, scores, reference.predict(rgb))
    assert (seg == UNASSIGNED).any()
    node.wait(lambda: node.got["overlay"] and node.got["heat"], "the overlay and heatmap")
    assert _set(node, every_n=3) == [(True, "")]
    for i in range(6):  # frames 2 to 7 the node received: it takes 4 and 7 ((n - 1) % 3 == 0)
        node.send("rgb8", rgb, stamp=(701 + i, 0))
        time.sleep(0.2)
    node.result(1, 706, resend_s=None)
    assert [m.header.stamp.sec for m in node.got["segmentation"]] == [700, 703, 706]


def test_the_classes_parameter_on_a_text_encoder_bundle(te_bundle):
    h = Harness(te_bundle, "-p", "classes:=[cat, dog]")
    try:
        h.wait(lambda: h.got["class_names"], "class_names")
        assert h.got["class_names"][-1].data == "cat,dog"
        assert _set(h, classes=["car", "car"])[0][0] is False
        assert _set(h, classes=["car", "boat", "sea"]) == [(True, "")]
        h.wait(lambda: h.got["class_names"][-1].data == "car,boat,sea", "the new class names")
        h.send("rgb8", _rgb(seed=2), stamp=(800, 0))
        _, seg, scores = h.result(0, 800)
        reference = Predictor.from_bundle(te_bundle, providers="cpu")
        reference.set_classes(["car", "boat", "sea"])
        _assert_equals_predict(seg, scores, reference.predict(_rgb(seed=2)))
    finally:
        h.close()
