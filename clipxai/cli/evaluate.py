"""``clipxai evaluate segmentation|faithfulness|multilabel``: parse, run the task in clipxai/apps/evaluate, report."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from clipxai.cli import options as opt
from clipxai.cli.console import ConsoleReporter, cli_errors
from clipxai.contract import DEFAULT_BATCH_SIZE, DEFAULT_FAITHFULNESS_BATCH

REPORT_FILE = "segmentation.json"  # evaluate segmentation's report in --out
MULTILABEL_REPORT_FILE = "multilabel.json"  # evaluate multilabel's report in --out


@click.group(context_settings=opt.COMMAND)
def evaluate():
    """Measure a bundle: mIoU on a segmentation dataset, mAP of its multi-label scores, or the faithfulness
    of its maps."""


@evaluate.command(context_settings=opt.COMMAND, epilog="Exit status: 0 done, 2 bad input, 130 interrupted.")
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
              help="Label id given to background pixels [default: the line named 'background', if any].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate the first N images only.")
@opt.out_dir(help=f"Folder for the JSON report ({REPORT_FILE}).", required=False)
@opt.segmentation_options
@opt.runtime_options
@opt.ray_options
def segmentation(bundle, images, labels, class_file, split, image_suffix, label_suffix, reduce_zero_label,
                 background_id, limit, out_dir, segmentation, runtime, ray):
    """mIoU (per class and mean) of BUNDLE on a dataset in the VOC layout (docs/evaluation.md)."""
    from clipxai.apps.evaluate.job import Dataset, EvalJob
    from clipxai.apps.evaluate.segmentation import run_evaluation
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    dataset = Dataset(images, labels, class_file, split, image_suffix, label_suffix, reduce_zero_label,
                      background_id, limit)
    out = str(Path(out_dir) / REPORT_FILE) if out_dir else None
    job = EvalJob(bundle, dataset, segmentation, runtime, ray, out)
    with cli_errors():
        report = run_evaluation(job, ConsoleReporter())
    miou = report["mIoU"]
    click.echo(f"mIoU {miou * 100:.2f} over {report['images']} images" if miou is not None else "mIoU undefined")
    for item in report["skipped"]:
        click.echo(f"  skipped {item['image']}: {item['reason']}", err=True)
    if out:
        click.echo(f"report: {out}")


@evaluate.command(context_settings=opt.COMMAND, epilog="Exit status: 0 done, 2 bad input, 130 interrupted.")
@click.argument("bundles", nargs=-1, required=True, type=click.Path())
@click.option("--images", required=True, type=click.Path(), help="Folder of the images.")
@click.option("--labels", type=click.Path(), default=None,
              help="File of '<image>,<class>' lines [default: the images are in IMAGES/<class>/].")
@opt.out_dir(help="Folder for the report (faithfulness.json, faithfulness.png).")
@click.option("--steps", type=click.IntRange(1), default=100, show_default=True, help="L: perturbation steps.")
@click.option("--cal-gap", type=click.IntRange(1), default=10, show_default=True, help="Classify every N steps.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Noise and random-baseline seed.")
@click.option("--classifier", type=click.Path(), default=None, help="Bundle that classifies [default: the first].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate the first N images only.")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_FAITHFULNESS_BATCH, show_default=True,
              help="Images per graph run.")
@click.option("--no-plot", is_flag=True, help="Skip the plot (it needs matplotlib: pip install 'clipxai[eval]').")
@opt.runtime_options
def faithfulness(bundles, images, labels, out_dir, steps, cal_gap, seed, classifier, limit, batch_size, no_plot,
                 runtime):
    """Deletion/insertion curves and AUCs of each bundle's maps, with a random-order baseline (docs/explain.md)."""
    from clipxai.apps.evaluate.faithfulness import FaithfulnessJob, run_faithfulness
    from clipxai.eval.explanations import summary_lines
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    job = FaithfulnessJob(tuple(bundles), images, Path(out_dir), labels, steps, cal_gap, seed, classifier, limit,
                          batch_size, not no_plot, runtime)
    with cli_errors():
        report = run_faithfulness(job, ConsoleReporter())
    for line in summary_lines(report):
        click.echo(line)
    click.echo("AUC: deletion lower = more faithful, insertion higher = more faithful")
    for name, why in report.skipped:
        click.echo(f"  skipped {name}: {why}", err=True)
    click.echo(f"report: {out_dir}")


@evaluate.command(context_settings=opt.COMMAND, epilog="Exit status: 0 done, 2 bad input, 130 interrupted.")
@click.argument("bundle", type=click.Path())
@click.option("--images", required=True, type=click.Path(), help="Folder of the images (searched recursively).")
@click.option("--labels", required=True, type=click.Path(),
              help="CSV 'image,labels' (classes separated by |, image paths relative to --images), "
                   "or a COCO instances JSON (*.json).")
@click.option("--threshold", type=float, default=None,
              help="Also report each class's precision/recall of 'labels >= THRESHOLD'.")
@click.option("--full-image", is_flag=True, help="The bundle's whole-image resize instead of TaI-DPT's "
              "resize + centre crop.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate the first N labelled images only.")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Images per graph run.")
@opt.out_dir(help=f"Folder for the JSON report ({MULTILABEL_REPORT_FILE}).", required=False)
@opt.runtime_options
@opt.ray_options
def multilabel(bundle, images, labels, threshold, full_image, limit, batch_size, out_dir, runtime, ray):
    """mAP (TaI-DPT's) of BUNDLE's multi-label scores on labelled images, per-class AP and thresholds
    (docs/evaluation.md)."""
    from clipxai.apps.evaluate.multilabel import run_multilabel, table_lines
    from clipxai.apps.evaluate.multilabel_job import MultilabelJob
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = str(Path(out_dir) / MULTILABEL_REPORT_FILE) if out_dir else None
    job = MultilabelJob(bundle, images, labels, out, threshold, full_image, limit, batch_size, runtime, ray)
    with cli_errors():
        report = run_multilabel(job, ConsoleReporter())
    for line in table_lines(report):
        click.echo(line)
    for key, what in (("missing_images", "listed but not found"), ("unlabelled_images", "not in the labels file"),
                      ("unknown_classes", "classes the bundle does not know")):
        if report[key]:
            click.echo(f"  {len(report[key])} {what}: {', '.join(report[key][:5])}"
                       f"{' ...' if len(report[key]) > 5 else ''}", err=True)
    for item in report["skipped"]:
        click.echo(f"  skipped {item['image']}: {item['reason']}", err=True)
    if out:
        click.echo(f"report: {out}")


if __name__ == "__main__":  # pragma: no cover
    evaluate()
