"""``clipxai evaluate segmentation``: mIoU of a bundle on a dataset in the common VOC layout.

Layout, class-name file and metric: clipxai/eval/segmentation.py; the job: job.py. Returns the
report (per-class IoU, pixel accuracy, settings) and writes it as JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from clipxai.apps.evaluate.job import EvalJob, open_predictor, predict_fn
from clipxai.common.files import atomic_write_text
from clipxai.common.report import SILENT, Reporter


def run_evaluation(job: EvalJob, reporter: Reporter = SILENT) -> dict:
    """The mIoU report of ``job`` (module docstring)."""
    from clipxai.eval.segmentation import EvalResult, class_mapping, evaluate, find_dataset
    d = job.dataset
    dataset = find_dataset(d.images, d.labels, d.class_file, d.image_suffix, d.label_suffix, d.split)
    if d.limit is not None:
        dataset.pairs = dataset.pairs[:d.limit]
    predictor = open_predictor(job)
    background_id = d.background_id
    if background_id is None:
        background_id = next((i for i, n in enumerate(dataset.names) if n[0].lower() == "background"), None)
    mapping = class_mapping(predictor.classes, dataset.names, job.segmentation.background_classes, background_id)
    if predictor.bundle.random_weights:
        reporter.warn("this bundle has RANDOM weights: its mIoU means nothing (tests only)")
    settings = _settings(job, predictor, background_id)
    if job.ray is not None:
        from clipxai.apps.evaluate.ray import evaluate_on_ray
        del predictor  # the actors hold their own
        t0 = time.perf_counter()
        conf, skipped, info = evaluate_on_ray(job, dataset.pairs, mapping, len(dataset.names), reporter)
        settings["ray"] = info
        result = EvalResult(dataset.class_names, conf, len(dataset.pairs) - len(skipped),
                            time.perf_counter() - t0, settings, skipped)
    else:
        with reporter.progress(len(dataset.pairs), "evaluating") as advance:
            result = evaluate(predict_fn(job, predictor), dataset, mapping, d.reduce_zero_label,
                              progress=lambda: advance(1), settings=settings)
    report = result.report()
    if job.out:
        out = Path(job.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _settings(job: EvalJob, predictor, background_id: int | None) -> dict:
    d, seg, bundle = job.dataset, job.segmentation, predictor.bundle
    return {
        "bundle": str(job.bundle), "method": bundle.method, "backbone": bundle.backbone_name,
        "weights": bundle.weights_source, "images": str(d.images), "labels": str(d.labels),
        "class_names": str(d.class_file), "split": None if d.split is None else str(d.split),
        "reduce_zero_label": d.reduce_zero_label, "background_id": background_id,
        "slide": None if seg.slide is None else {"stride": seg.slide.stride, "short_side": seg.slide.short_side},
        "logit_scale": seg.logit_scale, "prob_threshold": seg.prob_threshold,
        "background_classes": list(seg.background_classes), "provider": predictor.provider,
    }
