"""Multi-label evaluation (mAP) of per-class scores, numpy only (docs/evaluation.md, "Multi-label").

Metric: TaI-DPT's ``mAP`` (the one its zero-shot results and CLIP Surgery's comparison use): per
class, the images sorted by score, highest first; AP = Σ over the positives of the precision at
their rank, divided by the number of positives (+1e-8, so a class without positives has AP 0);
mAP = 100 · the mean AP over the classes. Ties keep the reversed order of a stable sort (the
reference sorts with numpy's default sort; for tied scores the two may order images differently).

Labels files: a CSV with the header ``image,labels`` (classes separated by ``|``, an empty field =
no class), or a COCO instances JSON (an image has a class if it has an annotation of it).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipxai.errors import ClipxaiError

EPSILON = 1e-8  # TaI-DPT's: the AP of a class without positives is 0, not undefined


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: scores float [N], targets bool/0-1 [N] (module docstring)."""
    order = np.argsort(scores, kind="stable")[::-1]
    hits = np.asarray(targets)[order] == 1
    ranks = np.arange(1, len(order) + 1)
    precision_at_hits = np.cumsum(hits)[hits] / ranks[hits]
    return float(precision_at_hits.sum() / (hits.sum() + EPSILON))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """(mAP in percent, AP float64 [K]) of scores [N, K] against targets 0/1 [N, K]."""
    if scores.size == 0:
        return 0.0, np.zeros(scores.shape[1] if scores.ndim == 2 else 0)
    ap = np.array([average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])])
    return float(100 * ap.mean()), ap


def precision_recall(targets: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per class (precision, recall) float64 [K] of "present = score >= threshold"; NaN where undefined
    (nothing predicted present; no positives)."""
    pred = scores >= threshold
    tp = (pred & (targets == 1)).sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / pred.sum(axis=0), tp / (targets == 1).sum(axis=0)


def best_f1_thresholds(targets: np.ndarray, scores: np.ndarray) -> list[dict | None]:
    """Per class, the threshold (one of its scores) with the highest F1, with its precision and recall;
    None for a class without positives. How to pick ``Prediction.present``'s threshold."""
    out = []
    for k in range(scores.shape[1]):
        t = targets[:, k] == 1
        if not t.any():
            out.append(None)
            continue
        order = np.argsort(scores[:, k], kind="stable")[::-1]
        tp = np.cumsum(t[order])
        n = np.arange(1, len(order) + 1)
        last = np.r_[scores[order, k][1:] != scores[order, k][:-1], True]  # a threshold keeps all tied scores
        p, r = tp / n, tp / t.sum()
        f1 = np.where(last, 2 * p * r / np.maximum(p + r, EPSILON), -1)
        i = int(np.argmax(f1))
        out.append({"threshold": float(scores[order[i], k]), "precision": float(p[i]), "recall": float(r[i]),
                    "f1": float(f1[i])})
    return out


@dataclass
class LabelSet:
    """A labels file read: ``classes`` it knows (in its order), ``images`` -> the classes present,
    ``problems``: (where, what) of the lines it could not use (listed, not fatal)."""

    classes: list[str]
    images: dict[str, set[str]]
    problems: list[tuple[str, str]] = field(default_factory=list)


def read_labels(path: str | Path) -> LabelSet:
    """A CSV (``image,labels``) or COCO instances JSON (by its suffix .json) -> LabelSet.
    ClipxaiError (one line) for a file that is missing, unreadable, or labels no image with any class."""
    p = Path(path)
    if not p.is_file():
        raise ClipxaiError(f"labels file {p} not found")
    try:
        labels = _read_coco(p) if p.suffix.lower() == ".json" else _read_csv(p)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise ClipxaiError(f"labels file {p} cannot be read: {e}") from None
    if not labels.images:
        raise ClipxaiError(f"labels file {p} lists no image")
    if not any(labels.images.values()):
        raise ClipxaiError(f"labels file {p}: no image has any class; nothing to evaluate")
    return labels


def _read_csv(p: Path) -> LabelSet:
    with open(p, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["image", "labels"]:
        raise ClipxaiError(f"labels file {p}: the first line must be the header 'image,labels'")
    images: dict[str, set[str]] = {}
    classes: dict[str, None] = {}
    problems = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip():
            problems.append((f"{p.name}:{n}", "not 'image,labels'"))
            continue
        names = {c.strip() for c in row[1].split("|") if c.strip()}
        images.setdefault(row[0].strip(), set()).update(names)
        classes.update(dict.fromkeys(sorted(names)))
    return LabelSet(list(classes), images, problems)


def _read_coco(p: Path) -> LabelSet:
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise ClipxaiError(f"labels file {p}: not a COCO instances JSON (needs 'images' and 'categories' lists)")
    try:
        cats = {c["id"]: str(c["name"]) for c in data["categories"]}
        files = {im["id"]: str(im["file_name"]) for im in data["images"]}
        images: dict[str, set[str]] = {name: set() for name in files.values()}
        problems = []
        for a in data.get("annotations") or []:
            if a["image_id"] not in files or a["category_id"] not in cats:
                problems.append((f"annotation {a.get('id')}", "unknown image_id or category_id"))
                continue
            images[files[a["image_id"]]].add(cats[a["category_id"]])
    except (KeyError, TypeError) as e:
        raise ClipxaiError(f"labels file {p}: malformed COCO entry ({e})") from None
    return LabelSet(list(dict.fromkeys(cats.values())), images, problems)


def targets_matrix(images: list[str], labels: LabelSet, classes: list[str]) -> np.ndarray:
    """uint8 [N, K]: 1 where image n is labelled with class k."""
    return np.array([[c in labels.images[im] for c in classes] for im in images], np.uint8).reshape(
        len(images), len(classes))
