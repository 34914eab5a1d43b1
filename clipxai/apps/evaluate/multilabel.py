"""``clipxai evaluate multilabel``: mAP of a bundle's ``labels`` on a multi-label set (docs/evaluation.md).

TaI-DPT's zero-shot protocol: each image resized (bicubic) so its short side is the bundle's image
size, centre-cropped to a square, then the bundle's normalisation (``full_image=True``: the bundle's
own squash of the whole image instead); one ``labels`` logit per class; mAP as TaI-DPT computes it
(clipxai/eval/multilabel.py). Images listed but missing, unreadable images, images of the folder the
labels file does not list, and label classes the bundle does not know are listed, not fatal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clipxai.common.files import atomic_write_text
from clipxai.common.images import is_image_file
from clipxai.common.report import SILENT, Reporter
from clipxai.apps.evaluate.multilabel_job import MultilabelJob, score_images
from clipxai.errors import ClipxaiError


def run_multilabel(job: MultilabelJob, reporter: Reporter = SILENT) -> dict:
    """The mAP report of ``job`` (module docstring); written as JSON when ``job.out`` is set."""
    from clipxai.eval.multilabel import read_labels
    from clipxai.runtime.predictor import Predictor
    labels = read_labels(job.labels)
    predictor = Predictor.from_bundle(job.bundle, options=job.runtime)
    if not predictor.has_labels:
        raise ClipxaiError(f"{job.bundle}: this bundle has no multi-label output (exported before it); re-export it")
    if predictor.bundle.random_weights:
        reporter.warn("this bundle has RANDOM weights: its mAP means nothing (tests only)")
    classes, unknown = _classes(predictor, labels, reporter)
    images, listing = _images(job, labels)
    scores, skipped = _scores(job, predictor, images, reporter)
    done = [im for im in images if im not in skipped]
    report = _report(job, labels, classes, done, scores, predictor)
    if job.ray is not None:
        report["settings"]["ray"] = {"address": job.ray.address, "actors": job.ray.actors}
    report.update(unknown_classes=unknown, skipped=[{"image": k, "reason": v} for k, v in skipped.items()],
                  **listing, problems=[{"where": w, "reason": r} for w, r in labels.problems])
    if job.out:
        out = Path(job.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return report


def _classes(predictor, labels, reporter: Reporter) -> tuple[list[str], list[str]]:
    """(classes evaluated, label classes the bundle does not know). A --text-encoder bundle takes the
    labels file's classes; another evaluates the bundle's classes the file names."""
    if predictor.bundle.manifest.text_encoder is not None and predictor.classes != labels.classes:
        reporter.step(f"encoding the labels file's {len(labels.classes)} classes on the device")
        predictor.set_classes(labels.classes)
        return list(labels.classes), []
    known = set(predictor.classes)
    classes = [c for c in predictor.classes if c in set(labels.classes)]
    if not classes:
        raise ClipxaiError(f"none of the labels file's classes ({', '.join(labels.classes[:5])}...) is a class of "
                           "the bundle; export it with them (or with --text-encoder)")
    return classes, [c for c in labels.classes if c not in known]


def _images(job: MultilabelJob, labels) -> tuple[list[str], dict]:
    """(labelled images found in the folder, in the file's order, first ``limit``; the listing of
    labelled images missing from the folder and folder images without labels)."""
    root = Path(job.images)
    if not root.is_dir():
        raise ClipxaiError(f"--images {root} is not a folder")
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and is_image_file(p)}
    images = [im for im in labels.images if im in found]
    missing = [im for im in labels.images if im not in found]
    if job.limit is not None:
        images = images[:job.limit]
    if not images:
        raise ClipxaiError(f"none of the labels file's images is in {root}")
    return images, {"missing_images": missing, "unlabelled_images": sorted(found - set(labels.images))}


def _scores(job: MultilabelJob, predictor, images: list[str], reporter: Reporter):
    """(labels float32 [N, K of the predictor] of the images read, in order; {image: why} of the others);
    on Ray actors with ``job.ray`` (multilabel_ray.py), the same rows."""
    if job.ray is not None:
        from clipxai.apps.evaluate.multilabel_ray import scores_on_ray
        rows, skipped, info = scores_on_ray(job, list(predictor.classes), images, reporter)
        reporter.note(f"ray: {info['actors']} actors x {info['threads']} thread(s), {info['images_per_s']} images/s")
    else:
        with reporter.progress(len(images), "evaluating") as advance:
            rows, skipped = score_images(job, predictor, images, advance)
    done = [rows[im] for im in images if im in rows]
    scores = np.stack(done) if done else np.zeros((0, len(predictor.classes)), np.float32)
    return scores, skipped


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _report(job: MultilabelJob, labels, classes: list[str], images: list[str], scores, predictor) -> dict:
    from clipxai.eval.multilabel import best_f1_thresholds, mean_average_precision, precision_recall, targets_matrix
    if not images:
        raise ClipxaiError("no image could be read; nothing to evaluate")
    targets = targets_matrix(images, labels, classes)
    if not targets.any():
        raise ClipxaiError(f"none of the {len(images)} images has any of the evaluated classes; nothing to evaluate")
    cols = [predictor.classes.index(c) for c in classes]
    scores = scores[:, cols].astype(np.float64)
    mean_ap, ap = mean_average_precision(targets, scores)
    best = best_f1_thresholds(targets, scores)
    if job.threshold is not None:
        precision, recall = precision_recall(targets, scores, job.threshold)
    per_class = []
    for k, name in enumerate(classes):
        row = {"class": name, "AP": _num(100 * ap[k]), "positives": int(targets[:, k].sum()), "best_f1": best[k]}
        if job.threshold is not None:
            row.update(precision=_num(precision[k]), recall=_num(recall[k]))
        per_class.append(row)
    bundle = predictor.bundle
    return {"mAP": round(mean_ap, 4), "images": len(images), "classes": per_class, "threshold": job.threshold,
            "settings": {"bundle": str(job.bundle), "method": bundle.method, "backbone": bundle.backbone_name,
                         "weights": bundle.weights_source, "images": str(job.images), "labels": str(job.labels),
                         "preprocess": "full-image" if job.full_image else "resize-center-crop",
                         "labels_merge_rate": bundle.manifest.labels_merge_rate, "provider": predictor.provider,
                         "metric": "TaI-DPT mAP (AP 0 for a class without positives)"}}


def table_lines(report: dict) -> list[str]:
    """The report as a readable table: class, AP, positives, best-F1 threshold (and P/R at the threshold)."""
    with_pr = report["threshold"] is not None
    head = f"{'class':<24} {'AP':>7} {'pos':>6} {'best-F1 t':>10} {'P@bestF1':>8} {'R@bestF1':>8}"
    lines = [head + (f" {'P@t':>6} {'R@t':>6}" if with_pr else "")]
    for row in report["classes"]:
        b = row["best_f1"] or {}
        line = (f"{row['class'][:24]:<24} {_fmt(row['AP'], 7)} {row['positives']:>6} {_fmt(b.get('threshold'), 10)} "
                f"{_fmt(b.get('precision'), 8)} {_fmt(b.get('recall'), 8)}")
        if with_pr:
            line += f" {_fmt(row['precision'], 6)} {_fmt(row['recall'], 6)}"
        lines.append(line)
    lines.append(f"mAP {report['mAP']:.2f} over {report['images']} images and {len(report['classes'])} classes")
    return lines


def _fmt(x, width: int) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.3f}"
