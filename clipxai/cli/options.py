"""Every flag that more than one command takes, defined once: one name, one meaning, one default.

An option group is a decorator that adds its flags to a command and hands the command ONE typed
value built from them (``runtime=RuntimeOptions``, ``segmentation=SegmentationOptions``, ...), so
command functions stay short and the jobs in clipxai/apps get the same groups. Defaults come from
clipxai/contract.py.
"""

from __future__ import annotations

import functools

import click

from clipxai.cli.console import cli_errors
from clipxai.contract import DEFAULT_FORGET_AFTER, DEFAULT_PROVIDERS, DEFAULT_REPROMPT_EVERY, DEFAULT_WINDOWS_PER_BATCH
from clipxai.errors import ClipxaiError

CACHE_DIR_HELP = ("Root of clipxai's caches (graphs, text encodings, TensorRT engines, verification stamps) "
                  "[default: $CLIPXAI_CACHE_DIR, else the user cache folder, ~/.cache/clipxai on Linux].")
PROVIDERS_HELP = ("Where graphs run: auto (TensorRT > CUDA > CPU), cpu, cuda, tensorrt, or openvino "
                  "(needs clipxai[openvino]).")
COMMAND = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def out_dir(help: str = "Folder for the results.", required: bool = True):
    """``--out DIR`` / ``-o DIR``: every command's output folder."""
    return click.option("--out", "-o", "out_dir", required=required, type=click.Path(file_okay=False), help=help)


def cache_dir():
    return click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help=CACHE_DIR_HELP)


def expect_digest():
    return click.option("--expect-digest", default=None, metavar="SHA256",
                        help="Refuse the bundle unless its manifest's sha256 is this (clipxai export prints it).")


def class_list(text: str | None, flag: str) -> tuple[str, ...] | None:
    """A comma-separated class list as a tuple (None stays None); a one-line error names ``flag``."""
    from clipxai.vocabulary import parse_class_list
    if text is None:
        return None
    try:
        return tuple(parse_class_list(text))
    except ClipxaiError as e:
        raise ClipxaiError(f"{flag}: {e}") from None


def _group(flags: list, build):
    """A decorator adding ``flags`` to a command and replacing their values by ``build(**values)``'s
    (name, value); a ClipxaiError while building is the command's one-line error."""
    names = [click.Option(list(o.args), **o.kwargs).name for o in flags]

    def decorator(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            values = {n: kwargs.pop(n) for n in names}
            with cli_errors():
                key, value = build(**values)
            return command(*args, **{key: value}, **kwargs)
        for flag in reversed(flags):
            wrapper = click.option(*flag.args, **flag.kwargs)(wrapper)
        return wrapper
    return decorator


class Flag:
    """One click option's arguments, kept as data until a group applies them."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


# ---- how graphs run ---------------------------------------------------------------------------------

RUNTIME_FLAGS = [
    Flag("--providers", default=DEFAULT_PROVIDERS, show_default=True, help=PROVIDERS_HELP),
    Flag("--threads", type=click.IntRange(1), default=None,
         help="onnxruntime intra-op threads (at most 4 x the CPU cores) [default: one per core]."),
    Flag("--cache-dir", type=click.Path(file_okay=False), default=None, help=CACHE_DIR_HELP),
    Flag("--trt-fp16", is_flag=True, help="TensorRT: allow fp16 kernels."),
    Flag("--trt-cache", type=click.Path(file_okay=False), default=None,
         help="TensorRT engine cache folder [default: the cache root's engines folder]."),
    Flag("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
         help="With --providers openvino: bf16 on a CPU with native bf16 (AVX-512 BF16 or AMX), for a bundle "
              "whose bf16 fidelity passed its gate at export."),
    Flag("--force-precision", is_flag=True, help="With --precision bf16: run it although the bundle's bf16 "
                                                 "gate failed or was never measured."),
    Flag("--ov-device", default="CPU", show_default=True,
         help="With --providers openvino: the OpenVINO device (CPU, GPU, NPU, AUTO; only the CPU is tested)."),
]


def _runtime(providers, threads, cache_dir, trt_fp16, trt_cache, precision, force_precision, ov_device):
    from clipxai.runtime.backends import NvidiaOptions, OpenVINOOptions, RuntimeOptions
    if (precision != "fp32" or force_precision or ov_device != "CPU") and providers.lower() != "openvino":
        raise ClipxaiError("--precision, --force-precision and --ov-device are OpenVINO's: add --providers openvino")
    return "runtime", RuntimeOptions(providers=providers, threads=threads, cache_dir=cache_dir,
                                     nvidia=NvidiaOptions(trt_fp16=trt_fp16, trt_cache_dir=trt_cache),
                                     openvino=OpenVINOOptions(ov_device, precision, force_precision))


runtime_options = _group(RUNTIME_FLAGS, _runtime)

# ---- how maps become a segmentation -----------------------------------------------------------------

SEGMENTATION_FLAGS = [
    Flag("--background-threshold", type=click.FloatRange(0, 1), default=None,
         help="Background where the winning class's heatmap is below this."),
    Flag("--logit-scale", type=float, default=None,
         help="Segmentation by softmax(scale * similarity) over the classes."),
    Flag("--prob-threshold", type=float, default=None,
         help="Background where the winning class's probability is below this (needs --logit-scale)."),
    Flag("--background-classes", default=None, help="Comma-separated classes whose pixels are background."),
    Flag("--slide", type=int, default=None, metavar="STRIDE",
         help="Sliding windows of the bundle's size every STRIDE pixels (images; needs --short-side)."),
    Flag("--short-side", type=int, default=None, metavar="N",
         help="With --slide: resize the image so its short side is N pixels (>= the bundle's size)."),
    Flag("--windows-per-batch", type=click.IntRange(1), default=DEFAULT_WINDOWS_PER_BATCH, show_default=True,
         help="With --slide: windows per graph run."),
]


def _segmentation(background_threshold, logit_scale, prob_threshold, background_classes, slide, short_side,
                  windows_per_batch):
    from clipxai.apps.segment.job import SegmentationOptions, SlideOptions
    if (slide is None) != (short_side is None):
        raise ClipxaiError("--slide and --short-side go together: give both (e.g. --slide 112 --short-side 336)")
    window = SlideOptions(slide, short_side, windows_per_batch) if slide is not None else None
    return "segmentation", SegmentationOptions(background_threshold, logit_scale, prob_threshold,
                                               class_list(background_classes, "--background-classes") or (), window)


segmentation_options = _group(SEGMENTATION_FLAGS, _segmentation)

# ---- tracks (videos, with a SAM 2.1 bundle) ---------------------------------------------------------

TRACK_FLAGS = [
    Flag("--track", is_flag=True,
         help="With --sam (a SAM 2.1 bundle exported with its tracking graphs): follow each class's objects "
              "through the frames with SAM 2.1's memory, as tracks with stable ids (segment: videos and --camera, "
              "into NAME_tracks.mp4 and NAME_tracks.jsonl; ros: their ids on 'tracks'; docs/tracking.md)."),
    Flag("--reprompt-every", type=click.IntRange(1), default=None, metavar="N",
         help="With --track: take every class's points again every N processed frames (a class with no visible "
              f"track: on every frame) [default: {DEFAULT_REPROMPT_EVERY}]."),
    Flag("--forget-after", type=click.IntRange(1), default=None, metavar="N",
         help=f"With --track: remove a track not visible for N processed frames in a row [default: {DEFAULT_FORGET_AFTER}]."),
]


def _track(track, reprompt_every, forget_after):
    from clipxai.apps.segment.job import TrackOptions
    if not track:
        if reprompt_every is not None or forget_after is not None:
            raise ClipxaiError("--reprompt-every and --forget-after are for --track")
        return "track", None
    defaults = TrackOptions()
    return "track", TrackOptions(reprompt_every or defaults.reprompt_every, forget_after or defaults.forget_after)


track_options = _group(TRACK_FLAGS, _track)

# ---- Ray --------------------------------------------------------------------------------------------

RAY_FLAGS = [
    Flag("--ray", "use_ray", is_flag=True,
         help="Spread the images over Ray actors: a local Ray instance, or the cluster in $RAY_ADDRESS "
              "(needs clipxai[ray]; docs/scale.md)."),
    Flag("--ray-address", default=None, metavar="ADDRESS",
         help="Join the Ray cluster at ADDRESS (HOST:PORT, ray://HOST:PORT or auto); implies --ray."),
    Flag("--actors", type=click.IntRange(1), default=None,
         help="With --ray: actors, each with its own predictor [default: the cluster's CPUs / threads, "
              "at most one per batch; threads default to 1 per actor]."),
]


def _ray(use_ray, ray_address, actors):
    from clipxai.apps.segment.job import RayOptions
    from clipxai.cluster.connect import LOCAL
    if not use_ray and ray_address is None:
        if actors is not None:
            raise ClipxaiError("--actors is for --ray runs")
        return "ray", None
    return "ray", RayOptions(ray_address or LOCAL, actors)


ray_options = _group(RAY_FLAGS, _ray)


def hidden_alias(old: str, new: str):
    """A retired flag name that still works (hidden from --help) and means ``new``'s parameter."""
    def callback(ctx, param, value):
        if value is not None:
            ctx.meta.setdefault("aliases", {})[new] = value
        return value
    return click.option(old, f"_alias_{new}", hidden=True, default=None, expose_value=False, callback=callback)


def alias_value(value, name: str):
    """``value``, or what a hidden alias of ``name`` was given (see ``hidden_alias``)."""
    aliased = click.get_current_context().meta.get("aliases", {}).get(name)
    return aliased if value is None else value

