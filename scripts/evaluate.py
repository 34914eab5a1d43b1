#!/usr/bin/env python
"""mIoU of a clipxai bundle on a segmentation dataset in the common VOC layout.

    python scripts/evaluate.py BUNDLE --images VOC2012/JPEGImages \\
        --labels VOC2012/SegmentationClass --class-names voc21.txt \\
        --split VOC2012/ImageSets/Segmentation/val.txt \\
        --slide 112 --short-side 336 --logit-scale 40 --out voc21.json

Layout, class-name file and metric: clipxai/eval/segmentation.py. Prints the
mIoU and writes a JSON report (per-class IoU, pixel accuracy, settings).
Runtime only (numpy + onnxruntime + Pillow): no torch needed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from clipxai.cluster.connect import LOCAL
from clipxai.common.cli import cli_errors
from clipxai.common.files import atomic_write_text
from clipxai.eval.job import EvalJob


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.option("--images", required=True, type=click.Path(), help="Folder of the images.")
@click.option("--labels", required=True, type=click.Path(), help="Folder of the PNG label maps (255 = ignore).")
@click.option("--class-names", "class_file", required=True, type=click.Path(),
              help="Line i names label id i (several names on a line: comma-separated).")
@click.option("--split", type=click.Path(), default=None, help="File of image stems to evaluate (one per line).")
@click.option("--image-suffix", default=".jpg", show_default=True, help="Image file = label stem + this.")
@click.option("--label-suffix", default=".png", show_default=True, help="Label files end with this.")
@click.option("--reduce-zero-label", is_flag=True, help="Label 0 is ignored, the others shift down by 1 "
              "(VOC20, Context59, ADE20K label maps).")
@click.option("--background-id", type=int, default=None,
              help="Label id given to background pixels (default: the line named 'background', if any).")
@click.option("--slide", "stride", type=int, default=None, metavar="STRIDE", help="Sliding-window stride.")
@click.option("--short-side", type=int, default=None, metavar="N", help="With --slide: resize the short side to N.")
@click.option("--logit-scale", type=float, default=None, help="softmax(scale * similarity) over classes.")
@click.option("--prob-threshold", type=float, default=None, help="Background below this probability.")
@click.option("--background-classes", default=None, help="Comma-separated bundle classes that are background.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Windows per graph run.")
@click.option("--providers", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt.")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime intra-op threads.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate the first N images only.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="JSON report path.")
@click.option("--ray", "ray_address", is_flag=False, flag_value=LOCAL, default=None, metavar="[ADDRESS]",
              help="Spread the images over Ray actors: a local Ray instance, or the cluster at ADDRESS "
                   "(or $RAY_ADDRESS). Needs clipxai[ray]; docs/scale.md.")
@click.option("--actors", type=click.IntRange(1), default=None,
              help="With --ray: actors, each with its own predictor [default: the cluster's CPUs / threads].")
def main(bundle, images, labels, class_file, split, image_suffix, label_suffix, reduce_zero_label, background_id,
         stride, short_side, logit_scale, prob_threshold, background_classes, batch_size, providers, threads,
         limit, out_path, ray_address, actors):
    """mIoU (per class and mean) of a bundle on a VOC-layout dataset."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    job = EvalJob(bundle, images, labels, class_file, split=split, image_suffix=image_suffix,
                  label_suffix=label_suffix, reduce_zero_label=reduce_zero_label, background_id=background_id,
                  stride=stride, short_side=short_side, logit_scale=logit_scale, prob_threshold=prob_threshold,
                  background_classes=background_classes, batch_size=batch_size, providers=providers,
                  threads=threads, limit=limit)
    with cli_errors():
        report = run(job, out_path, ray_address=ray_address, actors=actors)
    miou = report["mIoU"]
    click.echo(f"mIoU {miou * 100:.2f} over {report['images']} images" if miou is not None else "mIoU undefined")
    for item in report["skipped"]:
        click.echo(f"  skipped {item['image']}: {item['reason']}", err=True)
    if out_path:
        click.echo(f"report: {out_path}")


def run(job: EvalJob, out_path=None, ray_address=None, actors=None) -> dict:
    from clipxai.eval.job import open_predictor, predict_fn
    from clipxai.eval.segmentation import EvalResult, class_mapping, evaluate, find_dataset

    job.check()
    dataset = find_dataset(job.images, job.labels, job.class_file, job.image_suffix, job.label_suffix, job.split)
    if job.limit is not None:
        dataset.pairs = dataset.pairs[:job.limit]
    predictor = open_predictor(job)
    bg = job.background()
    background_id = job.background_id
    if background_id is None:
        background_id = next((i for i, n in enumerate(dataset.names) if n[0].lower() == "background"), None)
    mapping = class_mapping(predictor.classes, dataset.names, bg, background_id)
    if predictor.bundle.random_weights:
        click.secho("WARNING: this bundle has RANDOM weights: its mIoU means nothing (tests only)",
                    fg="red", bold=True, err=True)
    settings = {
        "bundle": str(job.bundle), "method": predictor.bundle.manifest.get("method"),
        "backbone": predictor.bundle.manifest.get("backbone", {}).get("name"),
        "weights": predictor.bundle.manifest.get("weights", {}).get("source"),
        "images": str(job.images), "labels": str(job.labels), "class_names": str(job.class_file),
        "split": None if job.split is None else str(job.split), "reduce_zero_label": job.reduce_zero_label,
        "background_id": background_id,
        "slide": None if job.stride is None else {"stride": job.stride, "short_side": job.short_side},
        "logit_scale": job.logit_scale, "prob_threshold": job.prob_threshold, "background_classes": list(bg),
        "provider": predictor.provider,
    }
    if ray_address is not None:
        from clipxai.cluster.evaluate import evaluate_on_ray
        del predictor  # the actors hold their own
        t0 = time.perf_counter()
        conf, skipped, info = evaluate_on_ray(job, dataset.pairs, mapping, len(dataset.names), ray_address, actors)
        settings["ray"] = info
        result = EvalResult(dataset.class_names, conf, len(dataset.pairs) - len(skipped),
                            time.perf_counter() - t0, settings, skipped)
    else:
        with click.progressbar(length=len(dataset.pairs), label="evaluating", show_pos=True, file=sys.stderr) as bar:
            result = evaluate(predict_fn(job, predictor), dataset, mapping, job.reduce_zero_label,
                              progress=lambda: bar.update(1), settings=settings)
    report = result.report()
    if out_path:
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


if __name__ == "__main__":  # pragma: no cover
    main()
