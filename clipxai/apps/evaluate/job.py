"""One mIoU evaluation as data: ``EvalJob`` (the bundle, the ``Dataset``, the option groups), and the
predictor and ``predict`` function it makes. The local run (segmentation.py) and the Ray workers
(ray.py) build their predictors from the same job, so both compute the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from clipxai.apps.segment.job import RayOptions, SegmentationOptions
from clipxai.runtime.backends import RuntimeOptions


@dataclass(frozen=True)
class Dataset:
    """Where the dataset is: images, PNG label maps, the class-name file, an optional split file;
    label file = image stem + ``label_suffix``; ``reduce_zero_label``: label 0 ignored, others shift
    down; ``background_id``: the label of background pixels (None: the line named 'background');
    ``limit``: the first N images only."""

    images: str
    labels: str
    class_file: str
    split: str | None = None
    image_suffix: str = ".jpg"
    label_suffix: str = ".png"
    reduce_zero_label: bool = False
    background_id: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class EvalJob:
    """One mIoU evaluation: the bundle, the dataset, how maps become a segmentation, how graphs run,
    Ray (None: this process), the JSON report's path (None: not written)."""

    bundle: str
    dataset: Dataset
    segmentation: SegmentationOptions = SegmentationOptions()
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    ray: RayOptions | None = None
    out: str | None = None


def open_predictor(job: EvalJob, stamps: str | Path | None = None):
    """The predictor with the job's segmentation settings; stamps: see Predictor.from_bundle."""
    from clipxai.apps.segment.load import segmenting_predictor
    return segmenting_predictor(job.bundle, job.runtime, job.segmentation, stamps=stamps)


def predict_fn(job: EvalJob, predictor) -> Callable[[Path], np.ndarray]:
    """image path -> int32 [H, W] bundle class ids (-1 background): whole image or sliding windows."""
    slide = job.segmentation.slide

    def predict(path):
        if slide is None:
            return predictor.predict(path).segmentation
        return predictor.predict_slide(path, slide.stride, slide.short_side, slide.windows_per_batch).segmentation
    return predict
