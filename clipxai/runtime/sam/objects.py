"""From per-class object masks to one label map, and masks as COCO run-length encoding.

Label map (the "object segmentation", next to the heatmap argmax segmentation): each pixel gets the
class whose mask covers it with the **highest mask score** (the decoder's predicted IoU); among
classes of equal score, the one whose heatmap is higher at that pixel; -1 where no mask covers it.

RLE: ``pycocotools.mask.encode`` (the optional extra ``clipxai[sam]``), so the output loads in COCO
tools: ``{"size": [H, W], "counts": "..."}`` with the counts as a string.
"""

from __future__ import annotations

from itertools import groupby
from typing import Mapping

import numpy as np

from clipxai.errors import ClipxaiError


def label_map(masks: Mapping[str, object], prediction) -> np.ndarray:
    """int32 [H, W]: the index in ``prediction.classes`` of the winning class per pixel, -1 for none.
    masks: class name -> ObjectMask or None (``MaskPredictor.masks_for``)."""
    h, w = prediction.size
    out = np.full((h, w), -1, np.int32)
    present = [(name, m) for name, m in masks.items() if m is not None]
    present.sort(key=lambda item: -item[1].score)
    for _, group in groupby(present, key=lambda item: item[1].score):
        group = list(group)
        free = out == -1
        if len(group) == 1:
            name, m = group[0]
            out[free & m.mask] = prediction.classes.index(name)
            continue
        best = np.full((h, w), -np.inf, np.float32)  # equal scores: the higher heatmap wins
        for name, m in group:
            k = prediction.classes.index(name)
            heat = prediction.heatmap(k)
            take = free & m.mask & (heat > best)
            out[take] = k
            best[take] = heat[take]
    return out


def rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> COCO RLE {"size": [H, W], "counts": str} (pycocotools)."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise ClipxaiError("mask RLE needs pycocotools: pip install \"clipxai[sam]\"") from None
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def mask_record(m) -> dict | None:
    """The JSON of one class's mask: score, area, bbox [x, y, w, h], rle; None for no mask."""
    if m is None:
        return None
    return {"score": float(m.score), "area": int(m.area), "bbox": list(m.bbox), "rle": rle(m.mask)}
