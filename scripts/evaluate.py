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
from pathlib import Path

import click

from clipxai.common.cli import cli_errors
from clipxai.common.files import atomic_write_text
from clipxai.errors import ClipxaiError


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
def main(bundle, images, labels, class_file, split, image_suffix, label_suffix, reduce_zero_label, background_id,
         stride, short_side, logit_scale, prob_threshold, background_classes, batch_size, providers, threads,
         limit, out_path):
    """mIoU (per class and mean) of a bundle on a VOC-layout dataset."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with cli_errors():
        report = run(bundle, images, labels, class_file, split=split, image_suffix=image_suffix,
                     label_suffix=label_suffix, reduce_zero_label=reduce_zero_label, background_id=background_id,
                     stride=stride, short_side=short_side, logit_scale=logit_scale, prob_threshold=prob_threshold,
                     background_classes=background_classes, batch_size=batch_size, providers=providers,
                     threads=threads, limit=limit, out_path=out_path)
    miou = report["mIoU"]
    click.echo(f"mIoU {miou * 100:.2f} over {report['images']} images" if miou is not None else "mIoU undefined")
    if out_path:
        click.echo(f"report: {out_path}")


def run(bundle, images, labels, class_file, split=None, image_suffix=".jpg", label_suffix=".png",
        reduce_zero_label=False, background_id=None, stride=None, short_side=None, logit_scale=None,
        prob_threshold=None, background_classes=None, batch_size=8, providers="auto", threads=None, limit=None,
        out_path=None) -> dict:
    from clipxai.eval.segmentation import class_mapping, evaluate, find_dataset
    from clipxai.runtime.predictor import Predictor
    from clipxai.vocabulary import parse_class_list

    if (stride is None) != (short_side is None):
        raise ClipxaiError("--slide and --short-side go together: give both (e.g. --slide 112 --short-side 336)")
    dataset = find_dataset(images, labels, class_file, image_suffix, label_suffix, split)
    if limit is not None:
        dataset.pairs = dataset.pairs[:limit]
    predictor = Predictor.from_bundle(bundle, providers=providers, threads=threads)
    if stride is not None:
        from clipxai.runtime.sliding import check_slide
        check_slide(stride, short_side, predictor.bundle.image_size)
    bg = tuple(parse_class_list(background_classes)) if background_classes else ()
    predictor.set_segmentation(logit_scale, prob_threshold, bg)
    if background_id is None:
        background_id = next((i for i, n in enumerate(dataset.names) if n[0].lower() == "background"), None)
    mapping = class_mapping(predictor.classes, dataset.names, bg, background_id)
    if predictor.bundle.random_weights:
        click.secho("WARNING: this bundle has RANDOM weights: its mIoU means nothing (tests only)",
                    fg="red", bold=True, err=True)

    def predict(path):
        if stride is None:
            return predictor.predict(path).segmentation
        return predictor.predict_slide(path, stride, short_side, batch_size).segmentation

    settings = {
        "bundle": str(bundle), "method": predictor.bundle.manifest.get("method"),
        "backbone": predictor.bundle.manifest.get("backbone", {}).get("name"),
        "weights": predictor.bundle.manifest.get("weights", {}).get("source"),
        "images": str(images), "labels": str(labels), "class_names": str(class_file),
        "split": None if split is None else str(split), "reduce_zero_label": reduce_zero_label,
        "background_id": background_id,
        "slide": None if stride is None else {"stride": stride, "short_side": short_side},
        "logit_scale": logit_scale, "prob_threshold": prob_threshold, "background_classes": list(bg),
        "provider": predictor.provider,
    }
    with click.progressbar(length=len(dataset.pairs), label="evaluating", show_pos=True, file=sys.stderr) as bar:
        result = evaluate(predict, dataset, mapping, reduce_zero_label, progress=lambda: bar.update(1),
                          settings=settings)
    report = result.report()
    if out_path:
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


if __name__ == "__main__":  # pragma: no cover
    main()
