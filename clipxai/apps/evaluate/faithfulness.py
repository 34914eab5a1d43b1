"""``clipxai evaluate faithfulness``: deletion and insertion curves of each bundle's maps (docs/explain.md).

Labels: lines ``<image>,<class>`` (or a TAB), or without a labels file, IMAGES/<class>/x.jpg.
Writes ``faithfulness.json`` (curves, AUCs, protocol, skipped images) and ``faithfulness.png``
(the curves, every method and a random baseline on each chart; needs matplotlib).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clipxai.common.files import atomic_write, atomic_write_text, prepare_output_dir
from clipxai.common.report import SILENT, Reporter
from clipxai.contract import DEFAULT_FAITHFULNESS_BATCH
from clipxai.errors import ClipxaiError
from clipxai.runtime.backends import RuntimeOptions


@dataclass(frozen=True)
class FaithfulnessJob:
    """bundles: each bundle's maps are one method's curves; images / labels: the samples; out_dir: the
    report's folder; steps L, classify every ``cal_gap`` steps, ``seed`` for noise and the random
    baseline; classifier: the bundle that judges (None: the first); limit: the first N images;
    batch_size: images per classifier run; plot: write the PNG."""

    bundles: tuple[str, ...]
    images: str
    out_dir: Path
    labels: str | None = None
    steps: int = 100
    cal_gap: int = 10
    seed: int = 0
    classifier: str | None = None
    limit: int | None = None
    batch_size: int = DEFAULT_FAITHFULNESS_BATCH
    plot: bool = True
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


def run_faithfulness(job: FaithfulnessJob, reporter: Reporter = SILENT):
    """The faithfulness report of ``job`` (module docstring): clipxai.eval.faithfulness's Report."""
    from clipxai.eval import explanations as ex
    from clipxai.eval.faithfulness import Protocol, evaluate
    from clipxai.runtime.preprocess import open_image
    from clipxai.runtime.visualize import RANDOM_WEIGHTS_BANNER

    _check(job)
    samples = ex.read_samples(job.images, job.labels)[:job.limit]
    names = sorted({s.label for s in samples})
    predictors, judge = _predictors(job)
    judge_index = ex.class_indices(judge.classes, names, f"the classifier bundle {job.classifier or job.bundles[0]}")
    methods = ex.method_names(list(job.bundles), [p.bundle.manifest for p in predictors])
    explainers = {m: ex.bundle_explainer(p, ex.class_indices(p.classes, names, f"the bundle {b}"), names)
                  for m, p, b in zip(methods, predictors, job.bundles)}
    random = any(p.bundle.random_weights for p in [*predictors, judge])
    if random:
        reporter.warn("RANDOM-weight bundles: these curves mean nothing (tests only)")
    prepare_output_dir(job.out_dir)
    classify = _in_labels_order(ex.bundle_classifier(judge, job.batch_size), judge_index, names)
    loads = [(str(s.path), (lambda p=s.path: open_image(p, judge.max_pixels)), names.index(s.label)) for s in samples]
    with reporter.progress(len(loads), "deletion/insertion") as advance:
        report = evaluate(loads, explainers, classify, Protocol(job.steps, job.cal_gap, job.seed),
                          progress=lambda: advance(1))
    record = dict(report.to_json(), bundles=list(job.bundles), methods=methods,
                  classifier=str(job.classifier or job.bundles[0]), classes=names)
    atomic_write_text(job.out_dir / "faithfulness.json", json.dumps(record, indent=2) + "\n")
    if job.plot:
        title = f"Deletion / insertion on {report.images} images ({Path(str(job.images)).name})"
        title += f" - {RANDOM_WEIGHTS_BANNER}" if random else ""
        atomic_write(job.out_dir / "faithfulness.png", lambda tmp: ex.plot_report(report, tmp, title))
    return report


def _check(job: FaithfulnessJob) -> None:
    if job.steps % job.cal_gap:
        raise ClipxaiError(f"--steps {job.steps} must be a multiple of --cal-gap {job.cal_gap}")
    if job.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ClipxaiError("the plot needs matplotlib: pip install 'clipxai[eval]' (or pass --no-plot)") from None


def _predictors(job: FaithfulnessJob):
    from clipxai.runtime.predictor import Predictor
    predictors = [Predictor.from_bundle(b, options=job.runtime) for b in job.bundles]
    judge = Predictor.from_bundle(job.classifier, options=job.runtime) if job.classifier else predictors[0]
    return predictors, judge


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
