"""Semantic-segmentation evaluation (mIoU) on a dataset in the common VOC layout, numpy only.

Layout: an images folder, a label-map folder of PNGs (one uint8 class id per
pixel, 255 = ignore; palette PNGs are read as their indices), and a class-name
file whose line i names label id i. A line may list several names separated by
commas (as SCLIP's class files do: "sky, wall, tree, ..." for VOC's background):
every bundle class named on line i is predicted as id i.

Labels are found recursively as ``*LABEL_SUFFIX`` under the label folder; the
image of ``LABELS/sub/x{label_suffix}`` is ``IMAGES/sub/x{image_suffix}``
(VOC: .png / .jpg; Cityscapes: _gtFine_labelTrainIds.png / _leftImg8bit.png).

Metric (as mmseg's IoUMetric): one confusion matrix summed over the dataset,
IoU_c = TP_c / (TP_c + FP_c + FN_c); a class absent from both the labels and the
predictions has no IoU (NaN, reported null) and is left out of the mean.
Pixels predicted as "no class" (background, -1, when the class file has no
background id) count as misses of their labelled class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from clipxai.errors import ClipxaiError

IGNORE = 255


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore: int = IGNORE) -> np.ndarray:
    """int64 [C, C+1]: rows = labelled class, columns = predicted class, column C = "no class".

    pred: int [H, W] in [0, C) or anything else (= no class); label: int [H, W] in
    [0, C) or ``ignore`` (pixels left out). Other label values are an error.
    """
    if pred.shape != label.shape:
        raise ClipxaiError(f"prediction {pred.shape} and label {label.shape} differ in size")
    label = label.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = label != ignore
    label, pred = label[keep], pred[keep]
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        raise ClipxaiError(f"label value {int(label[bad][0])} is neither a class id (0..{num_classes - 1}) "
                           f"nor {ignore} (ignore)")
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    return np.bincount(label * (num_classes + 1) + pred,
                       minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """[C, C+1] confusion -> float64 [C] IoU, NaN where a class is in neither labels nor predictions."""
    c = conf.shape[0]
    tp = np.diag(conf[:, :c]).astype(np.float64)
    union = conf.sum(axis=1) + conf[:, :c].sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean of the defined per-class IoUs (NaN if none is)."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(conf: np.ndarray) -> float:
    """Correct pixels / labelled pixels (NaN without labelled pixels)."""
    total = conf.sum()
    return float(np.trace(conf[:, :conf.shape[0]]) / total) if total else float("nan")


# ---- dataset ----------------------------------------------------------------------------

def read_class_names(path: str | Path) -> list[list[str]]:
    """Class file -> [names of id 0, names of id 1, ...]; a line may list names separated by commas."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ClipxaiError(f"class-name file {path}: no such file")
    except UnicodeDecodeError:
        raise ClipxaiError(f"class-name file {path}: not UTF-8; save it as UTF-8")
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        names = [n.strip() for n in line.split(",") if n.strip()]
        if not names:
            raise ClipxaiError(f"class-name file {path}: line {i + 1} is empty (one class per line, id = line - 1)")
        out.append(names)
    if not out:
        raise ClipxaiError(f"class-name file {path}: no classes")
    return out


@dataclass
class Dataset:
    """pairs: (image path, label path) sorted; names: the class file's names per id."""

    pairs: list[tuple[Path, Path]]
    names: list[list[str]]

    @property
    def class_names(self) -> list[str]:
        """One display name per id: the first name of its line."""
        return [n[0] for n in self.names]


def find_dataset(images: str | Path, labels: str | Path, class_file: str | Path, image_suffix: str = ".jpg",
                 label_suffix: str = ".png", split: str | Path | None = None) -> Dataset:
    """Pair every label map with its image (module docstring); ``split``: a file of stems to keep
    (e.g. VOC's ImageSets/Segmentation/val.txt)."""
    images, labels = Path(images), Path(labels)
    for what, p in (("images", images), ("labels", labels)):
        if not p.is_dir():
            raise ClipxaiError(f"{what} folder {p}: not a folder")
    names = read_class_names(class_file)
    found = sorted(labels.rglob(f"*{label_suffix}"))
    if split is not None:
        try:
            keep = {s.strip() for s in Path(split).read_text(encoding="utf-8").splitlines() if s.strip()}
        except FileNotFoundError:
            raise ClipxaiError(f"split file {split}: no such file")
        found = [f for f in found if f.name[:-len(label_suffix)] in keep]
        missing = keep - {f.name[:-len(label_suffix)] for f in found}
        if missing:
            raise ClipxaiError(f"split file {split}: no label map {sorted(missing)[0]}{label_suffix} under {labels}")
    if not found:
        raise ClipxaiError(f"labels folder {labels}: no *{label_suffix} files")
    pairs = []
    for f in found:
        rel = f.relative_to(labels)
        img = images / rel.parent / (f.name[:-len(label_suffix)] + image_suffix)
        if not img.is_file():
            raise ClipxaiError(f"{f}: no image {img} for this label map (check --image-suffix)")
        pairs.append((img, f))
    return Dataset(pairs, names)


def read_label(path: Path, reduce_zero_label: bool = False) -> np.ndarray:
    """uint8 [H, W] class ids (palette PNGs: their indices). reduce_zero_label: 0 -> 255,
    others - 1 (mmseg's convention for VOC20 / Context59 / ADE20K label maps)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ClipxaiError(f"{path}: label map is {im.mode}; expected one class id per pixel "
                                   "(8-bit grayscale or palette PNG)")
            lab = np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise ClipxaiError(f"{path}: not a readable label map ({e})")
    if reduce_zero_label:
        lab = np.where(lab == 0, IGNORE, np.where(lab == IGNORE, IGNORE, lab - 1)).astype(np.uint8)
    return lab


def class_mapping(bundle_classes: Sequence[str], names: list[list[str]], background_classes: Sequence[str] = (),
                  background_id: int | None = None) -> np.ndarray:
    """int64 [K + 1]: dataset id of each bundle class, last entry = id of background (-1) pixels
    (C = "no class" when background_id is None). Every bundle class must be on a line of the class
    file or be a background class; every line but background_id's must name a bundle class."""
    c = len(names)
    if background_id is not None and not 0 <= background_id < c:
        raise ClipxaiError(f"background id {background_id} is not a class id (0..{c - 1})")
    where = {}
    for i, line in enumerate(names):
        for n in line:
            if n in where and where[n] != i:
                raise ClipxaiError(f"class file: {n!r} is on lines {where[n] + 1} and {i + 1}")
            where[n] = i
    out = np.empty(len(bundle_classes) + 1, np.int64)
    for j, cls in enumerate(bundle_classes):
        if cls in where:
            out[j] = where[cls]
        elif cls in background_classes:
            out[j] = c if background_id is None else background_id  # never reached: segment marks it -1
        else:
            raise ClipxaiError(f"bundle class {cls!r} is on no line of the class file; add it to its class's line "
                               "or list it in the background classes")
    for i, line in enumerate(names):
        if i != background_id and not any(n in bundle_classes for n in line):
            raise ClipxaiError(f"class file line {i + 1} ({', '.join(line)}) names no class of the bundle, so it "
                               "could never be predicted; export the bundle with it or set it as the background id")
    out[-1] = c if background_id is None else background_id
    return out


@dataclass
class EvalResult:
    """conf: int64 [C, C+1] summed confusion (see confusion_matrix); skipped: (image, why) of the
    images that could not be read (left out of the confusion, listed in the report)."""

    class_names: list[str]
    conf: np.ndarray
    images: int
    seconds: float
    settings: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> dict:
        iou = iou_per_class(self.conf)
        return {
            "mIoU": _num(mean_iou(self.conf)),
            "aAcc": _num(pixel_accuracy(self.conf)),
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "per_class": {n: _num(v) for n, v in zip(self.class_names, iou)},
            "pixels": {n: int(v) for n, v in zip(self.class_names, self.conf.sum(axis=1))},
            "skipped": [{"image": i, "reason": r} for i, r in self.skipped],
            "settings": self.settings,
        }


def _num(x: float):
    return None if not np.isfinite(x) else round(float(x), 6)


def image_confusion(predict: Callable[[Path], np.ndarray], img: Path, lab_path: Path, mapping: np.ndarray,
                    num_classes: int, reduce_zero_label: bool = False) -> np.ndarray:
    """One image's confusion int64 [C, C+1]. An unreadable image raises ImageSkipped; a label
    problem (size, values) raises ClipxaiError, which stops an evaluation."""
    label = read_label(lab_path, reduce_zero_label)
    try:
        seg = np.asarray(predict(img))
    except ClipxaiError as e:
        raise ImageSkipped(str(e).split(": ", 1)[-1] if str(e).startswith(str(img)) else str(e)) from None
    if seg.shape != label.shape:
        raise ClipxaiError(f"{img}: image is {seg.shape[1]}x{seg.shape[0]} but its label map {lab_path} is "
                           f"{label.shape[1]}x{label.shape[0]}")
    try:
        return confusion_matrix(mapping[seg], label, num_classes)  # seg == -1 picks mapping[-1]
    except ClipxaiError as e:
        raise ClipxaiError(f"{lab_path}: {e}")


class ImageSkipped(Exception):
    """An image that could not be read: left out and listed, as clipxai segment does."""


def confusion_of(pairs, predict, mapping: np.ndarray, num_classes: int, reduce_zero_label: bool = False,
                 progress: Callable[[], None] | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Summed confusion int64 [C, C+1] of (image, label) pairs and the skipped images."""
    conf = np.zeros((num_classes, num_classes + 1), np.int64)
    skipped = []
    for img, lab_path in pairs:
        try:
            conf += image_confusion(predict, img, lab_path, mapping, num_classes, reduce_zero_label)
        except ImageSkipped as e:
            skipped.append((str(img), str(e)))
        if progress is not None:
            progress()
    return conf, skipped


def evaluate(predict: Callable[[Path], np.ndarray], dataset: Dataset, mapping: np.ndarray,
             reduce_zero_label: bool = False, progress: Callable[[], None] | None = None,
             settings: dict | None = None) -> EvalResult:
    """Run ``predict(image path) -> int [H, W]`` (bundle class ids, -1 background) on every image,
    map to dataset ids with ``mapping`` [K + 1] (class_mapping) and sum the confusion matrices.
    Images that cannot be read are skipped and listed."""
    t0 = time.perf_counter()
    conf, skipped = confusion_of(dataset.pairs, predict, mapping, len(dataset.names), reduce_zero_label, progress)
    return EvalResult(dataset.class_names, conf, len(dataset.pairs) - len(skipped), time.perf_counter() - t0,
                      settings or {}, skipped)
