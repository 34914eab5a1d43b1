"""The ROS 2 node behind ``clipxai ros``: image topics in, segmentation, scores and diagnostics out
(docs/ros.md has the topic and parameter tables).

    run_node(RosJob(bundle, ros_args), reporter, stop)   # until ``stop`` is set (the command's Ctrl-C)

Callbacks never block: the image callback converts the message (convert.py) and keeps only the newest
frame (frames.Latest); one worker thread runs ``Predictor.predict`` on it and publishes, so a slow device
stays current instead of falling behind, and each replaced frame counts as dropped. A new class list (the
``classes`` topic) is also handed to the worker, which encodes it between frames.

rclpy is imported when the node starts, so this module imports without the ros extra. Signals stay with
the command: rclpy is initialised without its own handlers.
"""

from __future__ import annotations

import array
import queue
import threading
import time
from dataclasses import dataclass, replace

from clipxai.apps.ros.convert import BadFrame, ImageFields, check_class_count, compressed_to_rgb, heatmap_fields, \
    image_to_rgb, mono8_fields, mono16_fields, parse_classes, rgb_fields, topic_part
from clipxai.apps.ros.frames import Latest, Stats
from clipxai.common.report import SILENT, Reporter
from clipxai.contract import DEFAULT_PROVIDERS, ROS_CLOCK_SKEW_S, ROS_DIAGNOSTICS_PERIOD_S, ROS_LATENCY_MAX_S, ROS_NODE_NAME
from clipxai.errors import ClipxaiError
from clipxai.vocabulary import validate_classes

LOG_EVERY_S = 10.0  # a bad frame of one kind is logged at most this often


@dataclass(frozen=True)
class RosJob:
    """One ``clipxai ros`` run: the bundle, the arguments after ``--ros-args`` (remappings, ``-p``
    parameters) for ``rclpy.init``, the manifest digest to insist on, and a mask-model bundle (``sam``:
    each class's object mask from its points, published on ``masks``). track: a TrackOptions
    (apps/segment/job.py) to follow the masks with SAM 2.1's memory instead, their ids published on
    ``tracks`` (``sam`` must then be a SAM 2.1 bundle with its tracking graphs)."""

    bundle: str
    ros_args: tuple[str, ...] = ()
    expect_digest: str | None = None
    sam: str | None = None
    track: object = None


@dataclass(frozen=True)
class RosSettings:
    """The node's parameters (docs/ros.md): threads (None: one per core), providers, classes (None: the
    bundle's), background_threshold (None: off), publish_overlay, heatmap_classes, reliable, compressed,
    every_n."""

    threads: int | None = None
    providers: str = DEFAULT_PROVIDERS
    classes: tuple[str, ...] | None = None
    background_threshold: float | None = None
    publish_overlay: bool = False
    heatmap_classes: tuple[str, ...] = ()
    reliable: bool = False
    compressed: bool = False
    every_n: int = 1


# name -> (default, description, range or None). RELOAD: read-only, a change would need a reload; the
# others change at run time (NodeServer.on_parameters), between frames.
RELOAD = ("threads", "providers", "reliable", "compressed")
PARAMETERS: dict[str, tuple[object, str, tuple | None]] = {
    "threads": (0, "onnxruntime intra-op threads (0: one per core)", (0, 1024)),
    "providers": (DEFAULT_PROVIDERS, "auto, cpu, cuda, tensorrt or openvino", None),
    "classes": ("string_array", "class names at start (a --text-encoder bundle: any names; empty: the bundle's)", None),
    "background_threshold": (0.0, "pixels whose winning heatmap is below it are unassigned (255); 0: off", (0.0, 1.0)),
    "publish_overlay": (False, "publish the tinted segmentation with its legend on 'overlay'", None),
    "heatmap_classes": ("string_array", "publish these classes' heatmaps on 'heatmap/<class>' (32FC1)", None),
    "reliable": (False, "subscribe to images with reliable QoS (bags, reliable publishers)", None),
    "compressed": (False, "also subscribe to 'image/compressed' (JPEG or PNG)", None),
    "every_n": (1, "process one received frame in N", (1, 1000)),
}


def run_node(job: RosJob, reporter: Reporter = SILENT, stop: threading.Event | None = None) -> Stats:
    """Check the bundle, start the node, serve until ``stop`` is set; the counters at the end.
    A bad bundle or bad ``--ros-args`` raise ClipxaiError before the node starts."""
    from clipxai.runtime.bundle import load_bundle
    load_bundle(job.bundle, expect_digest=job.expect_digest)  # one-line errors before anything starts
    if job.track is not None and job.sam is None:
        raise ClipxaiError("--track needs --sam SAM2_BUNDLE (a SAM 2.1 bundle exported with its tracking graphs)")
    if job.sam is not None:
        from clipxai.contract import KIND_MASK
        sam = load_bundle(job.sam, kind=KIND_MASK)
        if job.track is not None and sam.manifest.tracking is None:
            raise ClipxaiError(f"--track needs a SAM 2.1 bundle with its tracking graphs: {job.sam} has none "
                               f"({sam.manifest.family} {sam.manifest.model})")
    stop = stop or threading.Event()
    rclpy = _rclpy()
    from rclpy.signals import SignalHandlerOptions
    context = rclpy.Context()
    try:
        rclpy.init(args=[ROS_NODE_NAME, *job.ros_args], context=context,
                   signal_handler_options=SignalHandlerOptions.NO)
    except Exception as e:  # noqa: BLE001 - rclpy's argument errors have no common base
        raise ClipxaiError(f"--ros-args: {type(e).__name__}: {e}") from None
    try:
        node = rclpy.create_node(ROS_NODE_NAME, context=context)
        try:
            return _serve(job, node, context, reporter, stop)
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()


def _rclpy():
    try:
        import rclpy
    except ImportError as e:
        raise ClipxaiError(f"clipxai ros needs rclpy ({e}): pip install 'clipxai[ros]', or source a ROS 2 "
                           "Jazzy installation") from None
    return rclpy


def _serve(job: RosJob, node, context, reporter: Reporter, stop: threading.Event) -> Stats:
    from rclpy.executors import SingleThreadedExecutor
    settings = declare_settings(node)
    sam = open_sam(job, settings)
    tracks = open_tracks(job, sam, settings)
    server = NodeServer(node, open_predictor(job, settings), settings, None if tracks else sam, tracks)
    p = server.predictor
    reporter.step(f"node {node.get_fully_qualified_name()}: {p.bundle.backbone_name}, {len(p.classes)} classes, "
                  f"{p.provider}; image topic {node.resolve_topic_name('image')}")
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        while not stop.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.1)
    finally:
        server.close()
        executor.shutdown(timeout_sec=1.0)
    return server.stats


def declare_settings(node) -> RosSettings:
    """Declare the node's parameters (PARAMETERS) and read them; ClipxaiError for bad values."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter
    values = {}
    for name, (default, description, bounds) in PARAMETERS.items():
        d = ParameterDescriptor(description=description, read_only=name in RELOAD)
        if bounds is not None and isinstance(default, float):
            d.floating_point_range = [FloatingPointRange(from_value=bounds[0], to_value=bounds[1])]
        elif bounds is not None:
            d.integer_range = [IntegerRange(from_value=bounds[0], to_value=bounds[1], step=1)]
        initial = Parameter.Type.STRING_ARRAY if default == "string_array" else default
        try:
            node.declare_parameter(name, initial, d)
            values[name] = node.get_parameter(name).value
        except ParameterUninitializedException:
            values[name] = None
        except Exception as e:  # noqa: BLE001 - rclpy's parameter errors (type, range) have no common base
            raise ClipxaiError(f"parameter {name}: {e}") from None
    return _settings(values)


def _settings(v: dict) -> RosSettings:
    classes = check_class_count(list(v["classes"])) if v["classes"] else None
    return RosSettings(threads=v["threads"] or None, providers=v["providers"],
                       classes=tuple(classes) if classes else None,
                       background_threshold=v["background_threshold"] or None,
                       publish_overlay=v["publish_overlay"], heatmap_classes=tuple(v["heatmap_classes"] or ()),
                       reliable=v["reliable"], compressed=v["compressed"], every_n=v["every_n"])


def open_predictor(job: RosJob, settings: RosSettings):
    """The Predictor with the node's runtime and segmentation settings and its start classes."""
    from clipxai.runtime.backends import RuntimeOptions
    from clipxai.runtime.predictor import Predictor
    from clipxai.runtime.text.encoder import has_text_encoder
    options = RuntimeOptions(providers=settings.providers, threads=settings.threads)
    predictor = Predictor.from_bundle(job.bundle, options=options, digest=job.expect_digest,
                                      background_threshold=settings.background_threshold)
    if settings.classes is not None:
        if not has_text_encoder(predictor.bundle):
            raise ClipxaiError("parameter classes: new class names need a bundle exported with --text-encoder")
        predictor.set_classes(list(settings.classes))
    check_class_count(predictor.classes)
    return predictor


def open_sam(job: RosJob, settings: RosSettings):
    """The mask predictor of ``job.sam`` (None without one), on the node's providers and threads."""
    if job.sam is None:
        return None
    from clipxai.runtime.backends import RuntimeOptions
    from clipxai.runtime.sam import MaskPredictor
    return MaskPredictor.from_bundle(job.sam, options=RuntimeOptions(providers=settings.providers,
                                                                     threads=settings.threads))


def open_tracks(job: RosJob, sam, settings: RosSettings):
    """With ``job.track``: the tracks (runtime/video/tracks.TextTracks, every class) on the mask predictor
    ``sam`` (already open), on the node's providers and threads; else None."""
    if job.track is None:
        return None
    from clipxai.runtime.backends import RuntimeOptions
    from clipxai.runtime.sam.tracker import MaskTracker
    from clipxai.runtime.video.tracks import TextTracks
    tracker = MaskTracker(sam, options=RuntimeOptions(providers=settings.providers, threads=settings.threads))
    return TextTracks(tracker, None, job.track.reprompt_every, forget_after=job.track.forget_after)


class NodeServer:
    """The node's topics, its worker thread and its counters (module docstring). sam: a MaskPredictor
    (None: no ``masks`` topic); tracks: a TextTracks (None: no ``tracks`` topic)."""

    def __init__(self, node, predictor, settings: RosSettings, sam=None, tracks=None):
        self.node, self.predictor, self.settings, self.sam, self.tracks = node, predictor, settings, sam, tracks
        self.stats, self.frames, self.todo = Stats(), Latest(), queue.SimpleQueue()  # todo: (what, value)
        self._halt, self._logged, self.heatmaps = threading.Event(), {}, {}
        self._topics()
        self.publish_class_names()
        node.add_on_set_parameters_callback(self.on_parameters)
        self.worker = threading.Thread(target=self._work, name="clipxai-ros-worker", daemon=True)
        self.worker.start()

    def _topics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Float32MultiArray, String
        n, s = self.node, self.settings
        out, latched = _output_qos(), _latched_qos()
        self.pub = {"segmentation": n.create_publisher(Image, "segmentation", out),
                    "scores": n.create_publisher(Float32MultiArray, "scores", out),
                    "class_names": n.create_publisher(String, "class_names", latched),
                    "diagnostics": n.create_publisher(DiagnosticArray, "/diagnostics", out)}
        if self.sam is not None:
            self.pub["masks"] = n.create_publisher(Image, "masks", out)
        if self.tracks is not None:
            self.pub["tracks"] = n.create_publisher(Image, "tracks", out)
        self._optional_publishers(s)
        n.create_subscription(Image, "image", self.on_image, _image_qos(s.reliable))
        if s.compressed:
            n.create_subscription(CompressedImage, "image/compressed", self.on_compressed, _image_qos(s.reliable))
        n.create_subscription(String, "classes", self.on_classes, 10)  # volatile: takes latched publishers too
        n.create_timer(ROS_DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)

    def _optional_publishers(self, s: RosSettings) -> None:
        """The overlay and heatmap publishers ``s`` asks for that do not exist yet."""
        from sensor_msgs.msg import Image
        if s.publish_overlay and "overlay" not in self.pub:
            self.pub["overlay"] = self.node.create_publisher(Image, "overlay", _output_qos())
        for c in s.heatmap_classes:
            if c not in self.heatmaps:
                self.heatmaps[c] = self.node.create_publisher(Image, f"heatmap/{topic_part(c)}", _output_qos())

    # -- callbacks (executor thread): convert, hand over, return --------------------------------------
    def on_image(self, msg) -> None:
        self._receive(msg.header, lambda: image_to_rgb(
            ImageFields(msg.encoding, msg.height, msg.width, msg.step, msg.data), self.predictor.max_pixels))

    def on_compressed(self, msg) -> None:
        self._receive(msg.header, lambda: compressed_to_rgb(msg.data, self.predictor.max_pixels))

    def _receive(self, header, convert) -> None:
        self.stats.count("frames_in")
        if (self.stats.frames_in - 1) % self.settings.every_n:
            return
        try:
            rgb = convert()
        except BadFrame as e:
            self._warn_throttled(e.kind, f"skipped a frame: {e}", self.stats.skip(e.kind))
            return
        if self.frames.put((header, rgb)):
            self.stats.count("dropped")

    def on_classes(self, msg) -> None:
        from clipxai.runtime.text.encoder import has_text_encoder
        if not has_text_encoder(self.predictor.bundle):
            self.node.get_logger().warning("classes message ignored: new class names need a bundle exported "
                                           "with --text-encoder")
            return
        try:
            names = parse_classes(msg.data)
        except ClipxaiError as e:
            self.node.get_logger().warning(f"classes message refused, the classes stay: {e}")
            return
        self.todo.put(("classes", names))

    def on_parameters(self, params):
        """A run-time change of classes, background_threshold, publish_overlay, heatmap_classes or every_n
        (rclpy has checked the types, ranges and read-only ones); the graph's side is the worker's."""
        from rcl_interfaces.msg import SetParametersResult
        values = {p.name: p.value for p in params}
        try:
            names = self._checked_classes(values["classes"]) if "classes" in values else None
        except ClipxaiError as e:
            return SetParametersResult(successful=False, reason=str(e))
        changes = {k: v for k, v in values.items() if k in ("publish_overlay", "every_n")}
        if "heatmap_classes" in values:
            changes["heatmap_classes"] = tuple(values["heatmap_classes"] or ())
        if "background_threshold" in values:
            changes["background_threshold"] = values["background_threshold"] or None
            self.todo.put(("background_threshold", values["background_threshold"]))
        self.settings = replace(self.settings, **changes)
        self._optional_publishers(self.settings)
        if names is not None:
            self.todo.put(("classes", names))
        return SetParametersResult(successful=True)

    def _checked_classes(self, value) -> list[str]:
        from clipxai.runtime.text.encoder import has_text_encoder
        if not has_text_encoder(self.predictor.bundle):
            raise ClipxaiError("classes: new class names need a bundle exported with --text-encoder")
        return check_class_count(validate_classes(value or [], source="classes"))

    def _warn_throttled(self, kind: str, message: str, count: int) -> None:
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[kind] = now
            self.node.get_logger().warning(f"{message} ({count} of this kind so far)")

    # -- the worker thread ----------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._halt.is_set():
            item = self.frames.take(0.1)
            self._apply_changes()  # those made before this frame was taken apply to it
            if item is None:
                continue
            try:
                self.process(*item)
            except Exception as e:  # noqa: BLE001 - one failed frame must not end the node
                self.stats.count("failed")
                self.node.get_logger().error(f"a frame failed: {type(e).__name__}: {e}")

    def _apply_changes(self) -> None:
        while True:
            try:
                what, value = self.todo.get_nowait()
            except queue.Empty:
                return
            if what == "classes":
                self._set_classes(value)
            else:  # 0.0: off (heatmaps are in [0, 1])
                self.predictor.set_segmentation(background_threshold=value)

    def _set_classes(self, names: list[str]) -> None:
        try:
            self.predictor.set_classes(names)
        except ClipxaiError as e:
            self.node.get_logger().warning(f"classes message refused, the classes stay: {e}")
            return
        self.node.get_logger().info(f"classes: {', '.join(names)}")
        self.publish_class_names()

    def process(self, header, rgb) -> None:
        """Predict on uint8 [H, W, 3] RGB and publish every output with the image's ``header``."""
        s, pred = self.settings, self.predictor.predict(rgb)
        self._publish_image("segmentation", header, mono8_fields(pred.segmentation))
        self.pub["scores"].publish(scores_message(pred.scores))
        if s.publish_overlay:
            self._publish_image("overlay", header, rgb_fields(self._overlay(rgb, pred)))
        if self.sam is not None:
            self._publish_image("masks", header, mask_fields(self.sam, rgb, pred))
        if self.tracks is not None:
            self._publish_image("tracks", header, track_fields(self.tracks, rgb, pred))
        for name in s.heatmap_classes:
            if name in pred.classes:
                self.heatmaps[name].publish(image_message(header, heatmap_fields(pred.heatmap(pred.classes.index(name)))))
        self.stats.done(self._latency(header))

    def _publish_image(self, topic: str, header, fields: ImageFields) -> None:
        self.pub[topic].publish(image_message(header, fields))

    def _overlay(self, rgb, pred):
        import numpy as np
        from PIL import Image
        from clipxai.runtime.video.output import annotate
        return np.asarray(annotate(Image.fromarray(rgb), pred, None, self.predictor.bundle.random_weights))

    def _latency(self, header) -> float | None:
        """Seconds from the image's stamp to now (0 for a stamp up to ROS_CLOCK_SKEW_S ahead: another host's
        clock); None for a zero stamp or one not on this node's clock (a camera's time since boot, a bag's
        recording time): older than ROS_LATENCY_MAX_S or further ahead."""
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        latency = (self.node.get_clock().now().nanoseconds - stamp) / 1e9
        return max(latency, 0.0) if stamp and -ROS_CLOCK_SKEW_S <= latency <= ROS_LATENCY_MAX_S else None

    # -- status ---------------------------------------------------------------------------------------
    def publish_class_names(self) -> None:
        from std_msgs.msg import String
        self.pub["class_names"].publish(String(data=",".join(self.predictor.classes)))

    def publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        values = {**self.stats.period(), "provider": self.predictor.provider,
                  "classes": str(len(self.predictor.classes))}
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.node.get_name()}: clipxai",
                                  message="running", hardware_id=self.predictor.provider,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub["diagnostics"].publish(msg)

    def close(self) -> None:
        """Stop the worker after the frame in progress."""
        self._halt.set()
        self.worker.join()


def mask_fields(sam, rgb, pred) -> ImageFields:
    """SAM's object masks of every class, as a ``mono8`` label map: 0 background, k + 1 for class k (where
    masks overlap, the higher-scoring mask wins: clipxai.runtime.sam.label_map)."""
    from clipxai.runtime.sam import label_map
    sam.set_image(rgb)
    labels = label_map(sam.masks_for(pred, pred.classes), pred) + 1
    return mono8_fields(labels)


def track_fields(tracks, rgb, pred) -> ImageFields:
    """The tracks on this frame (``TextTracks.step``) as a ``mono16`` label map of their ids, 0 where none
    (where masks overlap, the higher score wins: clipxai.runtime.video.tracks.track_map)."""
    from clipxai.runtime.video.tracks import track_map
    pred.frame = rgb
    return mono16_fields(track_map(tracks.step(pred).tracks, rgb.shape[:2]))


def image_message(header, fields: ImageFields):
    """A ``sensor_msgs/Image`` with ``header`` and ``fields``."""
    from sensor_msgs.msg import Image
    msg = Image(header=header, encoding=fields.encoding, height=fields.height, width=fields.width,
                step=fields.step, is_bigendian=0)
    msg.data = array.array("B", fields.data)
    return msg


def scores_message(scores):
    """``std_msgs/Float32MultiArray`` of float32 [K] scores, one dimension labelled ``classes`` (the message
    type has no header: it is published right after the same frame's segmentation)."""
    import numpy as np
    from std_msgs.msg import Float32MultiArray, MultiArrayDimension, MultiArrayLayout
    k = int(scores.shape[0])
    msg = Float32MultiArray(layout=MultiArrayLayout(dim=[MultiArrayDimension(label="classes", size=k, stride=k)]))
    msg.data = array.array("f", np.asarray(scores, np.float32).tobytes())
    return msg


def _image_qos(reliable: bool):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def _output_qos():
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)


def _latched_qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
