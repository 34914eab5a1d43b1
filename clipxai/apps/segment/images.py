"""The image runner: batches of images through the Predictor into result files (writer.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from clipxai.apps.segment.inputs import image_inputs, output_names
from clipxai.apps.segment.job import SegmentJob
from clipxai.apps.segment.load import Segmenter
from clipxai.apps.segment.summary import Summary, announce
from clipxai.apps.segment.writer import ResultWriter
from clipxai.common.files import exclusive_output, prepare_output_dir
from clipxai.common.report import Reporter
from clipxai.errors import ClipxaiError


def run_images(job: SegmentJob, reporter: Reporter, stop: threading.Event) -> Summary:
    """Every image of ``job``, ``job.batch_size`` per graph run; stops between images once ``stop`` is set."""
    seg = Segmenter(job)
    files, failures = image_inputs(job.inputs)
    prepare_output_dir(job.out_dir)
    with exclusive_output(job.out_dir):
        return _run(job, seg, files, failures, reporter, stop)


def _run(job: SegmentJob, seg: Segmenter, files: list[Path], failures: list, reporter: Reporter,
         stop: threading.Event) -> Summary:
    """The image loop, while the output folder is ours."""
    announce(reporter, seg, len(files), "image")
    summary = Summary(failures=list(failures))
    writer = ResultWriter(job.out_dir, seg.predictor, output_names(files), job.overlays, seg.sam)
    with reporter.progress(len(files), "segmenting") as advance:
        for start in range(0, len(files), job.batch_size):
            if stop.is_set():
                break
            batch = files[start:start + job.batch_size]
            segment_batch(seg, writer, batch, summary, stop)
            advance(len(batch))
    summary.interrupted = stop.is_set()
    summary.remaining = len(files) - len(summary.done) - (len(summary.failures) - len(failures))
    return summary


def segment_batch(seg: Segmenter, writer: ResultWriter, batch: list[Path], summary: Summary,
                  stop: threading.Event | None = None) -> dict[Path, dict]:
    """Predict a batch of images and write each one's files; done and failed images go to ``summary``.
    Returns {image: its JSON record} of those written."""
    images = _open(seg, batch, summary)
    if not images:
        return {}
    slide = seg.job.segmentation.slide
    if slide is None:
        preds = seg.predictor.predict_batch([im for _, im in images], batch_size=len(images))
    else:
        preds = [seg.predictor.predict_slide(im, slide.stride, slide.short_side, slide.windows_per_batch)
                 for _, im in images]
    records = {}
    for (f, im), pred in zip(images, preds):
        if stop is not None and stop.is_set():
            break
        try:
            records[f] = writer.write(f, im, seg.select(pred))
        except (OSError, ClipxaiError) as e:
            summary.failures.append((str(f), f"results not written: {getattr(e, 'strerror', None) or e}"))
        else:
            summary.done.append(f)
    return records


def _open(seg: Segmenter, batch: list[Path], summary: Summary) -> list:
    """(path, PIL image) of the batch's readable images; the others go to ``summary.failures``."""
    from clipxai.runtime.preprocess import open_image
    images = []
    for f in batch:
        try:
            images.append((f, open_image(f, seg.predictor.max_pixels)))
        except ClipxaiError as e:
            message = str(e)
            summary.failures.append((str(f), message.split(": ", 1)[-1] if message.startswith(str(f)) else message))
    return images
