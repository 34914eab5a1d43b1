"""One mIoU evaluation as data: the settings of ``scripts/evaluate.py``, the predictor and the
``predict`` function they make. The local run and the Ray workers (clipxai/cluster/evaluate.py)
build their predictors from the same ``EvalJob``, so both compute the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from clipxai.errors import ClipxaiError


@dataclass
class EvalJob:
    """What ``scripts/evaluate.py`` was asked (see its --help for each)."""

    bundle: str
    images: str
    labels: str
    class_file: str
    split: str | None = None
    image_suffix: str = ".jpg"
    label_suffix: str = ".png"
    reduce_zero_label: bool = False
    background_id: int | None = None
    stride: int | None = None
    short_side: int | None = None
    logit_scale: float | None = None
    prob_threshold: float | None = None
    background_classes: str | None = None
    batch_size: int = 8
    providers: str = "auto"
    threads: int | None = None
    limit: int | None = None

    def check(self) -> "EvalJob":
        if (self.stride is None) != (self.short_side is None):
            raise ClipxaiError("--slide and --short-side go together: give both (e.g. --slide 112 --short-side 336)")
        return self

    def background(self) -> tuple[str, ...]:
        from clipxai.vocabulary import parse_class_list
        return tuple(parse_class_list(self.background_classes)) if self.background_classes else ()


def open_predictor(job: EvalJob, stamps: str | Path | None = None):
    """The predictor with the job's segmentation settings; stamps: see Predictor.from_bundle."""
    from clipxai.runtime.predictor import Predictor
    predictor = Predictor.from_bundle(job.bundle, providers=job.providers, threads=job.threads, stamps=stamps)
    if job.stride is not None:
        from clipxai.runtime.sliding import check_slide
        check_slide(job.stride, job.short_side, predictor.bundle.image_size)
    predictor.set_segmentation(job.logit_scale, job.prob_threshold, job.background())
    return predictor


def predict_fn(job: EvalJob, predictor) -> Callable[[Path], np.ndarray]:
    """image path -> int32 [H, W] bundle class ids (-1 background): whole image or sliding windows."""
    def predict(path):
        if job.stride is None:
            return predictor.predict(path).segmentation
        return predictor.predict_slide(path, job.stride, job.short_side, job.batch_size).segmentation
    return predict
