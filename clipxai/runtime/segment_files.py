"""Segment image files into result files: what ``clipxai-segment`` does, as a typed function.

For each input image, in ``out_dir``:

- ``<name>_heatmap_<class>.png``: the class's heatmap over the image (unless ``overlays`` is off);
- ``<name>_segmentation.png``: the segmentation with a legend;
- ``<name>.json``: scores, top class, SAM points (always valid JSON: never NaN or Infinity);
- with ``--sam``: ``<name>_mask_<class>.png`` (8-bit, 255 inside), ``<name>_sam_<class>.png`` (the mask
  and the points), ``<name>_objects.png`` (the label map of the masks) and the JSON's ``masks``.

Names: each input keeps its path relative to the folder common to all inputs
(``a/x.jpg`` and ``b/x.jpg`` give ``a/x...`` and ``b/x...``), and its stem, or
its whole file name where two inputs in one folder share a stem (``x.png``
and ``x.jpg``). A result path that would still be written twice in one run
is an error for the second image, never an overwrite.

Losing nothing: every file is written atomically (a temporary name, then a
rename), so an interruption leaves no partial file; an image whose results
cannot be written (a name the file system refuses, a full disk) is skipped
and listed, and the others go on; Ctrl-C or SIGTERM stops after the current
file with a summary of what was written.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
from PIL import Image

from clipxai.common.files import atomic_write
from clipxai.common.images import image_files
from clipxai.runtime.outputs import json_safe, safe_name
from clipxai.errors import ClipxaiError


@dataclass
class SegmentJob:
    """The settings of one ``clipxai-segment`` run (see its --help for each)."""

    bundle: str
    inputs: list[str]
    out_dir: Path
    classes: str | None = None
    batch_size: int = 4
    providers: str = "auto"
    threads: int | None = None
    background_threshold: float | None = None
    slide: tuple[int | None, int | None] = (None, None)
    logit_scale: float | None = None
    prob_threshold: float | None = None
    background_classes: str | None = None
    trt_fp16: bool = False
    trt_cache: str | None = None
    overlays: bool = True
    text_cache: str | None = None
    expect_digest: str | None = None
    camera: int | None = None          # video mode: a camera index instead of inputs
    heatmap: str | None = None         # video mode: one class's heatmap instead of the segmentation
    every_n: int = 1                   # video mode: one frame in n
    smoothing: float | None = None     # video mode: exponential moving average, the newest frame's weight
    sam: str | None = None             # a mask-model bundle: object masks from each class's points
    sam_classes: str | None = None     # masks for these classes only (comma-separated)
    ray: str | None = None             # spread the images over Ray actors: "local" or a cluster address
    actors: int | None = None          # with ray: how many actors (default: the cluster's CPUs / threads)


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    remaining: int = 0
    unit: str = "image"                # "image", or "video" in video mode
    notes: list[str] = field(default_factory=list)


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Images, folders (their image files, sorted) and globs -> (unique files, [(input, problem)])."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = image_files(p)
            if not found:
                problems.append((item, "folder holds no image files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                problems.append((item, "pattern matches no files"))
            files.extend(found)
        else:
            problems.append((item, "no such file or folder"))
    unique = list({f.resolve(): f for f in reversed(files)}.values())[::-1]  # first occurrence wins
    return unique, problems


def output_names(files: list[Path]) -> dict[Path, Path]:
    """Each input -> its result prefix relative to the output folder (module docstring)."""
    absolute = [f.resolve() for f in files]
    common = Path(os.path.commonpath([str(a.parent) for a in absolute])) if absolute else Path()
    rel = [a.relative_to(common) for a in absolute]
    stems: dict[tuple, int] = {}
    for r in rel:
        stems[(r.parent, r.stem)] = stems.get((r.parent, r.stem), 0) + 1
    return {f: (r.parent / r.stem if stems[(r.parent, r.stem)] == 1 else r) for f, r in zip(files, rel)}


def prepare_output(out_dir: Path) -> None:
    """Create the output folder and prove it writable, else a one-line ClipxaiError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".clipxai-write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ClipxaiError(f"cannot write results to {out_dir} ({e.strerror or e}); choose a writable --out folder")


def _load(job: SegmentJob, stamps=None):
    from clipxai.runtime.predictor import Predictor
    from clipxai.runtime.sessions import NvidiaOptions
    from clipxai.vocabulary import parse_class_list

    predictor = Predictor.from_bundle(job.bundle, providers=job.providers, threads=job.threads,
                                      nvidia=NvidiaOptions(trt_fp16=job.trt_fp16, trt_cache_dir=job.trt_cache),
                                      background_threshold=job.background_threshold, digest=job.expect_digest,
                                      stamps=stamps)
    background = parse_class_list(job.background_classes) if job.background_classes else ()
    predictor.set_segmentation(job.logit_scale, job.prob_threshold, background)
    return predictor


def _load_sam(job: SegmentJob, classes: list[str], stamps=None):
    """(MaskPredictor, the classes to mask) or (None, None) without --sam."""
    from clipxai.vocabulary import parse_class_list
    if job.sam is None:
        if job.sam_classes is not None:
            raise ClipxaiError("--sam-classes needs --sam SAM_BUNDLE")
        return None, None
    from clipxai.runtime.sam import MaskPredictor
    sam = MaskPredictor.from_bundle(job.sam, providers=job.providers, threads=job.threads, stamps=stamps)
    wanted = parse_class_list(job.sam_classes) if job.sam_classes else list(classes)
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise ClipxaiError(f"--sam-classes: {unknown[0]!r} is not one of the classes ({', '.join(classes)})")
    return sam, wanted


def _check_slide(job: SegmentJob, predictor) -> None:
    stride, short_side = job.slide
    if (stride is None) != (short_side is None):
        raise ClipxaiError("--slide and --short-side go together: give both (e.g. --slide 112 --short-side 336)")
    if stride is not None:
        from clipxai.runtime.sliding import check_slide
        check_slide(stride, short_side, predictor.bundle.image_size)


def _subset(job: SegmentJob, predictor) -> list[str] | None:
    """The classes to report: new names on a text-encoder bundle (set on the predictor), else a subset."""
    from clipxai.runtime.text.encoder import has_text_encoder
    from clipxai.vocabulary import parse_class_list
    if job.classes is None:
        return None
    subset = parse_class_list(job.classes)
    if has_text_encoder(predictor.bundle):  # any names: the vocabulary itself changes
        predictor.set_classes(subset, cache=job.text_cache if job.text_cache is not None else True)
        return None
    unknown = [c for c in subset if c not in predictor.classes]
    if unknown:
        raise ClipxaiError(f"--classes: {unknown[0]!r} is not in the bundle (it has: {', '.join(predictor.classes)}); "
                           "to name new classes on the device, export the bundle with clipxai-export --text-encoder")
    return subset


class Segmenter:
    """What one process needs to segment a job's images into files: the predictor (and SAM), the
    classes to report and, once ``start`` gave the output names, the result writer. The local run
    has one; each Ray actor has its own (clipxai/cluster/segment.py). stamps: see Predictor.from_bundle."""

    def __init__(self, job: SegmentJob, stamps=None):
        self.job = job
        self.predictor = _load(job, stamps)
        _check_slide(job, self.predictor)
        self.subset = _subset(job, self.predictor)
        self.sam = _load_sam(job, self.subset or self.predictor.classes, stamps)
        self.writer = None

    def start(self, names: dict[Path, Path]) -> None:
        self.writer = ResultWriter(self.job.out_dir, self.predictor, names, self.job.overlays, self.sam)

    def segment(self, files: list[Path], summary: Summary) -> None:
        """Predict and write a batch of images; done and failed ones go to ``summary``."""
        _segment_batch(files, self.job, self.predictor, self.subset, self.writer, summary)


def check_modes(job: SegmentJob, videos: list[str]) -> None:
    if not job.inputs and job.camera is None:
        raise ClipxaiError("nothing to segment: give images, folders, video files or --camera N")
    if (videos or job.camera is not None) and len(videos) != len(job.inputs):
        raise ClipxaiError("give either images and folders, or videos (and --camera), not both in one run")
    if not videos and job.camera is None and (job.heatmap or job.every_n != 1 or job.smoothing is not None):
        raise ClipxaiError("--heatmap, --every-n and --smooth are for videos and --camera")
    if job.ray is not None and (videos or job.camera is not None):
        raise ClipxaiError("--ray spreads images over a cluster; segment videos and cameras without it")
    if job.actors is not None and job.ray is None:
        raise ClipxaiError("--actors is for --ray runs")


def image_files_of(job: SegmentJob) -> tuple[list[Path], list[tuple[str, str]]]:
    """The job's image files and the inputs that gave none; ClipxaiError when there are no images."""
    files, failures = expand_inputs(job.inputs)
    if not files:
        raise ClipxaiError("no images to process: " + "; ".join(f"{i}: {w}" for i, w in failures))
    return files, failures


def run(job: SegmentJob) -> Summary:
    """Segment every input of ``job`` into result files (module docstring); returns what happened.
    Video files and ``job.camera`` go to the video mode (clipxai/runtime/video/segment.py); a ``job.ray``
    job is for clipxai/cluster/segment.py."""
    from clipxai.runtime.video.sources import is_video_path
    videos = [i for i in job.inputs if is_video_path(i)]
    check_modes(job, videos)
    if job.ray is not None:
        raise ClipxaiError("a --ray job runs with clipxai.cluster.segment.run_on_ray")
    seg = Segmenter(job)
    if videos or job.camera is not None:
        return run_videos(job, seg.predictor, seg.subset, videos, seg.sam)
    files, failures = image_files_of(job)
    prepare_output(job.out_dir)
    announce(job, seg.predictor, len(files), "image")
    summary = Summary(failures=list(failures))
    seg.start(output_names(files))
    with click.progressbar(length=len(files), label="  segmenting", show_pos=True, file=sys.stderr) as bar:
        try:
            for start in range(0, len(files), job.batch_size):
                seg.segment(files[start:start + job.batch_size], summary)
                bar.update(min(job.batch_size, len(files) - start))
        except KeyboardInterrupt:
            summary.interrupted = True
    summary.remaining = len(files) - len(summary.done) - len(summary.failures) + len(failures)
    return summary


def announce(job: SegmentJob, predictor, count: int, unit: str) -> None:
    click.echo(f"• {count} {unit}{'s' if count != 1 else ''} with {Path(job.bundle)} "
               f"({predictor.bundle.manifest['backbone']['name']}, {len(predictor.classes)} classes, "
               f"{predictor.provider})")
    if predictor.bundle.random_weights:
        click.secho("WARNING: this bundle has RANDOM weights: its maps mean nothing (tests only)",
                    fg="red", bold=True, err=True)


def _segment_batch(batch: list[Path], job: SegmentJob, predictor, subset, writer, summary: Summary) -> None:
    from clipxai.runtime.preprocess import open_image
    images = []
    for f in batch:
        try:
            images.append((f, open_image(f, predictor.max_pixels)))
        except ClipxaiError as e:
            message = str(e)
            summary.failures.append((str(f), message.split(": ", 1)[-1] if message.startswith(str(f)) else message))
    if not images:
        return
    stride, short_side = job.slide
    if stride is None:
        preds = predictor.predict_batch([im for _, im in images], batch_size=len(images))
    else:
        preds = [predictor.predict_slide(im, stride, short_side, job.batch_size) for _, im in images]
    for (f, im), pred in zip(images, preds):
        if subset is not None:
            pred = pred.select(subset)
        try:
            writer.write(f, im, pred)
        except (OSError, ClipxaiError) as e:
            summary.failures.append((str(f), f"results not written: {getattr(e, 'strerror', None) or e}"))
        else:
            summary.done.append(f)


class ResultWriter:
    """Writes one image's result files (module docstring), never the same path twice in a run."""

    def __init__(self, out_dir: Path, predictor, names: dict[Path, Path], overlays: bool, sam=(None, None)):
        self.out_dir, self.predictor, self.names, self.overlays = out_dir, predictor, names, overlays
        self.sam, self.sam_classes = sam
        self.owner: dict[Path, Path] = {}  # result path -> the input it belongs to, this run
        self.fresh: list[Path] = []        # files written for the image being written
        self.random = predictor.bundle.random_weights

    def _save(self, source: Path, path: Path, write) -> None:
        other = self.owner.setdefault(path, source)
        if other is not source:
            raise ClipxaiError(f"its result {path.name} would overwrite that of {other}; rename one of them")
        atomic_write(path, write)
        self.fresh.append(path)

    def _picture(self, source: Path, name: str, picture) -> None:
        from clipxai.runtime.visualize import stamp
        if self.random:
            picture = stamp(picture, "RANDOM WEIGHTS - not a real result", in_place=True)  # ours: no copy
        self._save(source, self._prefix(source, name), lambda p: picture.save(p, format="PNG"))

    def _prefix(self, source: Path, suffix: str) -> Path:
        rel = self.names[source]
        return self.out_dir / rel.parent / f"{rel.name}{suffix}"

    def write(self, source: Path, image, pred) -> None:
        """All result files of one image, or none: a failure or an interruption removes those
        already written for it."""
        self.fresh = []
        try:
            self._write(source, image, pred)
        except BaseException:
            for path in self.fresh:
                path.unlink(missing_ok=True)
            raise

    def _write(self, source: Path, image, pred) -> None:
        from clipxai.runtime.visualize import overlay, segmentation_image
        (self.out_dir / self.names[source]).parent.mkdir(parents=True, exist_ok=True)
        if self.overlays:
            for k, name in enumerate(pred.classes):
                rows = (lambda kk: lambda r0, r1: pred.heatmap_rows(kk, r0, r1))(k)
                self._picture(source, f"_heatmap_{safe_name(name)}.png", overlay(image, rows))
        self._picture(source, "_segmentation.png", segmentation_image(image, pred.segmentation, pred.classes))
        record = self.record(source, pred)
        if self.sam is not None:
            record["masks"] = self._masks(source, image, pred)
        text = json.dumps(json_safe(record), indent=2, ensure_ascii=False, allow_nan=False)
        self._save(source, self._prefix(source, ".json"), lambda p: p.write_text(text + "\n", encoding="utf-8"))

    def _masks(self, source: Path, image, pred) -> dict:
        """SAM's object mask per class: mask and overlay pictures, the label map; their JSON."""
        from clipxai.runtime.sam import label_map, mask_record
        from clipxai.runtime.visualize import mask_overlay, palette, segmentation_image
        self.sam.set_image(image)
        masks = self.sam.masks_for(pred, self.sam_classes)
        colours = palette(len(pred.classes))
        for name, m in masks.items():
            coords, labels = (m.points, m.labels) if m is not None else pred.points(pred.classes.index(name))
            if m is not None:
                pic = Image.fromarray(np.where(m.mask, np.uint8(255), np.uint8(0)), "L")
                self._save(source, self._prefix(source, f"_mask_{safe_name(name)}.png"),
                           lambda p, pic=pic: pic.save(p, format="PNG"))
            colour = tuple(int(v) for v in colours[pred.classes.index(name)])
            self._picture(source, f"_sam_{safe_name(name)}.png",
                          mask_overlay(image, m.mask if m is not None else None, coords, labels, colour))
        self._picture(source, "_objects.png", segmentation_image(image, label_map(masks, pred), pred.classes))
        return {name: mask_record(m) for name, m in masks.items()}

    def record(self, source: Path, pred) -> dict:
        manifest = self.predictor.bundle.manifest
        points = {}
        for k, name in enumerate(pred.classes):
            coords, labels = pred.points(k)
            points[name] = {"coords": coords.tolist(), "labels": labels.tolist()}
        return {
            "image": str(source),
            "size": {"height": pred.size[0], "width": pred.size[1]},
            "bundle": str(self.predictor.bundle.path),
            "weights": (manifest.get("weights") or {}).get("source"),
            "provider": self.predictor.provider,
            "top_class": pred.classes[pred.top_class],
            "scores": {name: float(s) for name, s in zip(pred.classes, pred.scores)},
            "points": points,
        }


def run_videos(job: SegmentJob, predictor, subset, videos: list[str], sam=(None, None)) -> Summary:
    """Each video (then the camera) through ``segment_stream``: an annotated video and a JSON Lines file."""
    from clipxai.runtime.video.segment import segment_stream
    from clipxai.runtime.video.sources import VideoError
    if job.slide != (None, None):
        raise ClipxaiError("--slide is for images; videos run the bundle's own size")
    classes = subset or predictor.classes
    heat = None
    if job.heatmap is not None:
        if job.heatmap not in classes:
            raise ClipxaiError(f"--heatmap {job.heatmap!r} is not one of the classes: {', '.join(classes)}")
        heat = classes.index(job.heatmap)
    prepare_output(job.out_dir)
    names = output_names([Path(v) for v in videos])
    sources = [(Path(v), str(names[Path(v)])) for v in videos]
    if job.camera is not None:
        sources.append((job.camera, f"camera{job.camera}"))
    announce(job, predictor, len(sources), "video")
    summary = Summary(unit="video")
    for i, (source, name) in enumerate(sources):
        (job.out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            result = segment_stream(predictor, source if isinstance(source, int) else str(source), name,
                                    job.out_dir, heat, job.batch_size, job.every_n, job.smoothing, subset, sam)
        except VideoError as e:
            summary.failures.append((str(source), str(e).split(": ", 1)[-1]))
            continue
        summary.notes += [f"{source}: {note}" for note in result.notes]
        if result.frames:
            summary.done.append(source)
            summary.notes.append(f"{source}: {result.frames} frames -> {', '.join(p.name for p in result.outputs)}")
        if result.stopped:
            summary.failures.append((str(source), result.stopped.split(": ", 1)[-1]))
        if result.interrupted:
            summary.interrupted = True
            summary.remaining = len(sources) - i - 1
            break
    return summary
