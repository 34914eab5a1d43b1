"""Deletion/insertion evaluation of bundles on an image folder: what
``clipxai evaluate faithfulness`` does, as typed functions (runtime only, no torch).

Labels: ``--labels FILE`` lines ``<image path relative to the folder><TAB or comma><class>``
(``#`` starts a comment), or, without a file, each image's parent folder names its class
(``DIR/<class>/x.jpg``; underscores read as spaces). Class names match case-insensitively.
The first bundle (or ``classifier``) classifies the perturbed images; each bundle's own map
of the target class ranks the pixels (clipxai/eval/faithfulness.py has the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from clipxai.common.images import is_image_file
from clipxai.contract import OUTPUT_SCORES
from clipxai.errors import ClipxaiError
from clipxai.manifest import ClipManifest
from clipxai.eval.faithfulness import MODES, RANDOM, FaithfulnessReport, order_methods


def class_key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


@dataclass
class Sample:
    path: Path
    label: str


def read_samples(images: str | Path, labels: str | Path | None = None) -> list[Sample]:
    """(image, class name) pairs from a labels file, or from the folder names (module docstring)."""
    root = Path(images)
    if not root.is_dir():
        raise ClipxaiError(f"--images {root}: not a folder")
    if labels is None:
        samples = [Sample(p, p.parent.name) for p in sorted(root.rglob("*"))
                   if p.is_file() and is_image_file(p) and p.parent != root]
        if not samples:
            raise ClipxaiError(f"--images {root}: no images in class sub-folders (DIR/<class>/x.jpg); "
                               "put them there or pass --labels FILE")
        return samples
    return _read_labels(root, Path(labels))


def _read_labels(root: Path, labels: Path) -> list[Sample]:
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ClipxaiError(f"--labels {labels}: cannot be read ({e})") from None
    samples = []
    for number, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        sep = "\t" if "\t" in line else ","
        name, _, label = line.partition(sep)
        if not label.strip():
            raise ClipxaiError(f"--labels {labels}:{number}: expected '<image><TAB or comma><class>', got {line!r}")
        path = (root / name.strip())
        if ".." in Path(name.strip()).parts or Path(name.strip()).is_absolute():
            raise ClipxaiError(f"--labels {labels}:{number}: {name.strip()!r} points outside --images {root}")
        samples.append(Sample(path, label.strip()))
    if not samples:
        raise ClipxaiError(f"--labels {labels}: no '<image>,<class>' lines")
    return samples


def class_indices(classes: Sequence[str], labels: Sequence[str], where: str) -> dict[str, int]:
    """label -> index in ``classes``; ClipxaiError naming the labels the bundle does not have."""
    keys = {class_key(c): i for i, c in enumerate(classes)}
    missing = sorted({label for label in labels if class_key(label) not in keys})
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ClipxaiError(f"the labels name classes that {where} does not have: {shown} (it has {len(classes)} "
                           "classes); export it with them, or fix the labels")
    return {label: keys[class_key(label)] for label in labels}


def bundle_classifier(predictor, batch_size: int = 16) -> Callable[[np.ndarray], np.ndarray]:
    """states uint8 [M, H, W, 3] -> the bundle's zero-shot probabilities [M, K], batch_size per run."""
    s = predictor.bundle.image_size

    def classify(states: np.ndarray) -> np.ndarray:
        x = np.empty((len(states), 3, s, s), np.float32)
        for i, state in enumerate(states):
            predictor.preprocess(Image.fromarray(state), out=x[i])
        return np.concatenate([predictor.session.run([OUTPUT_SCORES], predictor.graph_feeds(x[j:j + batch_size]))[0]
                               for j in range(0, len(x), batch_size)])
    return classify


def bundle_explainer(predictor, index_of: dict[str, int], labels: Sequence[str]):
    """(image uint8 [H, W, 3], target index into ``labels``' classes) -> the bundle's map [H, W] of that class."""
    def explain(image: np.ndarray, target: int) -> np.ndarray:
        prediction = predictor.predict(image)
        k = index_of[labels[target]]
        return prediction.heatmap_rows(k, 0, image.shape[0])
    return explain


def method_names(bundles: Sequence[str], manifests: Sequence[ClipManifest]) -> list[str]:
    """Each bundle's method; the folder name is added where two bundles share a method."""
    methods = [m.method + ("" if m.precision == "fp32" else f" ({m.precision})") for m in manifests]
    return [m if methods.count(m) == 1 else f"{m} [{Path(b).name}]" for m, b in zip(methods, bundles)]


def summary_lines(report: FaithfulnessReport) -> list[str]:
    """The AUC table as text lines (deletion: lower is better; insertion: higher)."""
    lines = [f"{'method':<24} {'del top1':>9} {'del prob':>9} {'ins top1':>9} {'ins prob':>9}"]
    for m in order_methods(list(report.aucs)):
        a = report.aucs[m]
        lines.append(f"{m:<24} {a['deletion']['top1']:9.3f} {a['deletion']['prob']:9.3f} "
                     f"{a['insertion']['top1']:9.3f} {a['insertion']['prob']:9.3f}")
    return lines


def plot_report(report: FaithfulnessReport, path: Path, title: str = "") -> None:
    """Deletion and insertion curves (top-1 accuracy and target probability), every method on each chart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    x = 100 * report.fractions
    for row, mode in enumerate(MODES):
        for col, (metric, label) in enumerate((("top1", "top-1 accuracy"), ("prob", "target probability"))):
            ax = axes[row][col]
            for m in order_methods(list(report.curves)):
                style = dict(linestyle="--", color="grey") if m == RANDOM else dict(marker="o", markersize=3)
                ax.plot(x, report.curves[m][mode][metric], label=f"{m} (AUC {report.aucs[m][mode][metric]:.3f})",
                        **style)
            ax.set_title(f"{mode}: {label}" + (" (lower = more faithful)" if mode == "deletion" else
                                                " (higher = more faithful)"), fontsize=10)
            ax.set_xlabel(f"% of pixels {'deleted' if mode == 'deletion' else 'inserted'}")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title or f"Faithfulness on {report.images} images", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
