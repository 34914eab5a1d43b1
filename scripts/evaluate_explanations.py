#!/usr/bin/env python
"""Deletion and insertion faithfulness of each bundle's maps on your images (docs/explain.md).

    python scripts/evaluate_explanations.py bundles/surgery bundles/grad-eclip bundles/maskclip \\
        --images photos/ --labels labels.txt --out faithfulness/

Labels: lines ``<image>,<class>`` (or a TAB), or without --labels, DIR/<class>/x.jpg.
Writes ``faithfulness.json`` (curves, AUCs, protocol, skipped images) and
``faithfulness.png`` (the curves, every method and a random baseline on each chart).
Runtime only (numpy + onnxruntime + Pillow; matplotlib for the plot).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from clipxai.common.cli import cli_errors
from clipxai.common.files import atomic_write, atomic_write_text
from clipxai.errors import ClipxaiError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundles", nargs=-1, required=True, type=click.Path())
@click.option("--images", required=True, type=click.Path(), help="Folder of the images.")
@click.option("--labels", type=click.Path(), default=None,
              help="Lines '<image>,<class>' [default: each image's folder name is its class].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the report.")
@click.option("--steps", type=click.IntRange(1), default=100, show_default=True, help="L: perturbation steps.")
@click.option("--cal-gap", type=click.IntRange(1), default=10, show_default=True, help="Classify every N steps.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Noise and random-baseline seed.")
@click.option("--classifier", type=click.Path(), default=None, help="Bundle that classifies [default: the first].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate the first N images only.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="Images per graph run.")
@click.option("--providers", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt.")
@click.option("--threads", type=click.IntRange(1), default=None, help="onnxruntime intra-op threads.")
@click.option("--no-plot", is_flag=True, help="Skip the plot (it needs matplotlib: pip install 'clipxai[eval]').")
def main(bundles, images, labels, out_dir, steps, cal_gap, seed, classifier, limit, batch_size, providers, threads,
         no_plot):
    """Deletion/insertion curves and AUCs of each bundle's maps, with a random-order baseline."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with cli_errors():
        report = run(list(bundles), images, labels, Path(out_dir), steps=steps, cal_gap=cal_gap, seed=seed,
                     classifier=classifier, limit=limit, batch_size=batch_size, providers=providers,
                     threads=threads, plot=not no_plot)
    from clipxai.eval.explanations import summary_lines
    for line in summary_lines(report):
        click.echo(line)
    click.echo("AUC: deletion lower = more faithful, insertion higher = more faithful")
    for name, why in report.skipped:
        click.echo(f"  skipped {name}: {why}", err=True)
    click.echo(f"report: {out_dir}")


def run(bundles, images, labels, out_dir: Path, steps=100, cal_gap=10, seed=0, classifier=None, limit=None,
        batch_size=16, providers="auto", threads=None, plot=True):
    from clipxai.eval import explanations as ex
    from clipxai.eval.faithfulness import Protocol, evaluate
    from clipxai.runtime.predictor import Predictor
    from clipxai.runtime.preprocess import open_image
    from clipxai.runtime.segment_files import prepare_output

    if steps % cal_gap:
        raise ClipxaiError(f"--steps {steps} must be a multiple of --cal-gap {cal_gap}")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ClipxaiError("the plot needs matplotlib: pip install 'clipxai[eval]' (or pass --no-plot)") from None
    samples = ex.read_samples(images, labels)[:limit]
    names = sorted({s.label for s in samples})
    predictors = [Predictor.from_bundle(b, providers=providers, threads=threads) for b in bundles]
    judge = Predictor.from_bundle(classifier, providers=providers, threads=threads) if classifier else predictors[0]
    judge_index = ex.class_indices(judge.classes, names, f"the classifier bundle {classifier or bundles[0]}")
    methods = ex.method_names(bundles, [p.bundle.manifest for p in predictors])
    explainers = {m: ex.bundle_explainer(p, ex.class_indices(p.classes, names, f"the bundle {b}"), names)
                  for m, p, b in zip(methods, predictors, bundles)}
    random = any(p.bundle.random_weights for p in [*predictors, judge])
    if random:
        click.secho("WARNING: RANDOM-weight bundles: these curves mean nothing (tests only)", fg="red", err=True)
    prepare_output(out_dir)
    classify = _in_labels_order(ex.bundle_classifier(judge, batch_size), judge_index, names)
    protocol = Protocol(steps, cal_gap, seed)
    loads = [(str(s.path), (lambda p=s.path: open_image(p, judge.max_pixels)), names.index(s.label)) for s in samples]
    with click.progressbar(length=len(loads), label="deletion/insertion", show_pos=True, file=sys.stderr) as bar:
        report = evaluate(loads, explainers, classify, protocol, progress=lambda: bar.update(1))
    record = dict(report.to_json(), bundles=list(bundles), methods=methods,
                  classifier=str(classifier or bundles[0]), classes=names)
    atomic_write_text(out_dir / "faithfulness.json", json.dumps(record, indent=2) + "\n")
    if plot:
        title = f"Deletion / insertion on {report.images} images ({Path(str(images)).name})"
        title += " - RANDOM WEIGHTS: a placeholder, these curves mean nothing" if random else ""
        atomic_write(out_dir / "faithfulness.png", lambda tmp: ex.plot_report(report, tmp, title))
    return report


def _in_labels_order(classify, judge_index, names):
    """The classifier's probabilities, its target columns put in the order of ``names`` first:
    column i of the result is names[i]; the classifier's other classes follow (they still count
    for top-1/5)."""
    import numpy as np

    def run(states):
        scores = classify(states)
        first = [judge_index[n] for n in names]
        rest = [k for k in range(scores.shape[1]) if k not in set(first)]
        return np.asarray(scores)[:, first + rest]
    return run


if __name__ == "__main__":  # pragma: no cover
    main()
