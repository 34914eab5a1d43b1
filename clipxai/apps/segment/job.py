"""A segment request as data: ``SegmentJob``, made of small frozen option groups.

    SegmentJob(bundle, inputs, out_dir,
               runtime=RuntimeOptions(...),          # how graphs run (clipxai/runtime/backends)
               segmentation=SegmentationOptions(...),  # how maps become a segmentation
               video=VideoOptions(...),              # videos and cameras only
               sam=SamOptions(...),                  # object masks from a mask-model bundle
               track=TrackOptions(...),              # follow them through videos (SAM 2.1)
               ray=RayOptions(...))                  # spread images over Ray actors

Defaults come from clipxai/contract.py. ``check()`` refuses a combination that cannot run
(one line each) before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clipxai.cluster.connect import LOCAL
from clipxai.contract import DEFAULT_BATCH_SIZE, DEFAULT_FRAMES_PER_BATCH, DEFAULT_WINDOWS_PER_BATCH
from clipxai.errors import ClipxaiError
from clipxai.runtime.backends import RuntimeOptions
from clipxai.runtime.video.tracks import DEFAULT_FORGET_AFTER, DEFAULT_REPROMPT_EVERY


@dataclass(frozen=True)
class SlideOptions:
    """Sliding windows of the bundle's size every ``stride`` pixels, after resizing the short side to
    ``short_side``; ``windows_per_batch`` windows per graph run."""

    stride: int
    short_side: int
    windows_per_batch: int = DEFAULT_WINDOWS_PER_BATCH


@dataclass(frozen=True)
class SegmentationOptions:
    """How maps become a segmentation (``Prediction.segment``): background below ``background_threshold``
    of the winner's heatmap, or softmax(``logit_scale`` * similarity) with ``prob_threshold``;
    ``background_classes`` count as background. ``slide``: sliding-window inference (images only)."""

    background_threshold: float | None = None
    logit_scale: float | None = None
    prob_threshold: float | None = None
    background_classes: tuple[str, ...] = ()
    slide: SlideOptions | None = None


@dataclass(frozen=True)
class VideoOptions:
    """Videos and cameras: ``camera`` index (None: files only), the class whose ``heatmap`` the video
    shows (None: the segmentation), one frame in ``every_n``, EMA ``smoothing`` (the newest frame's
    weight, None: off), ``frames_per_batch`` frames per graph run."""

    camera: int | None = None
    heatmap: str | None = None
    every_n: int = 1
    smoothing: float | None = None
    frames_per_batch: int = DEFAULT_FRAMES_PER_BATCH


@dataclass(frozen=True)
class SamOptions:
    """A mask-model bundle (``clipxai export-sam``) and the classes to mask (None: all)."""

    bundle: str
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TrackOptions:
    """Follow the SAM masks through videos and cameras with SAM 2.1's memory (runtime/video/tracks.py):
    every class's points again every ``reprompt_every`` frames (and a class's on any frame where it has
    no visible track); a track invisible for ``forget_after`` frames is removed (None: never)."""

    reprompt_every: int = DEFAULT_REPROMPT_EVERY
    forget_after: int | None = DEFAULT_FORGET_AFTER


@dataclass(frozen=True)
class RayOptions:
    """Ray: ``address`` "local" (a local instance, or $RAY_ADDRESS) or a cluster's; ``actors`` (None:
    the cluster's CPUs / threads)."""

    address: str = LOCAL
    actors: int | None = None


@dataclass(frozen=True)
class SegmentJob:
    """One ``clipxai segment`` run. classes: new names on a --text-encoder bundle, else a subset of
    the bundle's (None: all). expect_digest: the manifest sha256 to insist on. batch_size: images per
    graph run. overlays: write per-class heatmap pictures."""

    bundle: str
    inputs: tuple[str, ...]
    out_dir: Path
    classes: tuple[str, ...] | None = None
    expect_digest: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    overlays: bool = True
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    segmentation: SegmentationOptions = SegmentationOptions()
    video: VideoOptions = VideoOptions()
    sam: SamOptions | None = None
    track: TrackOptions | None = None
    ray: RayOptions | None = None

    def videos(self) -> list[str]:
        """The inputs that are video files (by suffix)."""
        from clipxai.runtime.video.sources import is_video_path
        return [i for i in self.inputs if is_video_path(i)]

    @property
    def video_mode(self) -> bool:
        return bool(self.videos()) or self.video.camera is not None

    def check(self) -> "SegmentJob":
        """One-line ClipxaiError for a combination that cannot run; the job itself otherwise."""
        videos = self.videos()
        if not self.inputs and self.video.camera is None:
            raise ClipxaiError("nothing to segment: give images, folders, video files or --camera N")
        if self.video_mode and len(videos) != len(self.inputs):
            raise ClipxaiError("give either images and folders, or videos (and --camera), not both in one run")
        if not self.video_mode and self.video != VideoOptions(frames_per_batch=self.video.frames_per_batch):
            raise ClipxaiError("--heatmap, --every-n and --smooth are for videos and --camera")
        if self.ray is not None and self.video_mode:
            raise ClipxaiError("--ray spreads images over a cluster; segment videos and cameras without it")
        if self.video_mode and self.segmentation.slide is not None:
            raise ClipxaiError("--slide is for images; videos run the bundle's own size")
        self._check_track()
        return self

    def _check_track(self) -> None:
        if self.track is None:
            return
        if self.sam is None:
            raise ClipxaiError("--track needs --sam SAM2_BUNDLE (a SAM 2.1 bundle exported with its tracking graphs)")
        if not self.video_mode:
            raise ClipxaiError("--track follows objects through a video: give video files or --camera N, not images")
        if self.video.heatmap is not None:
            raise ClipxaiError("--heatmap draws one class's heatmap; --track draws the tracks: use one of them")
