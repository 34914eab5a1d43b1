"""The JSON record of one prediction: one writer for images, video frames and Ray rows alike.

    {"image": ..., "size": ..., "bundle": ..., "weights": ..., "provider": ...,   # images (source_fields)
     "frame": ..., "timestamp": ..., "dropped": ...,                              # video frames
     "top_class": ..., "scores": {class: p}, "points": {class: {coords, labels}},  # every record
     "labels": {class: logit},                                                    # bundles with labels
     "masks": {class: ...}}                                                       # with SAM

Tracks (``clipxai segment --track``) have their own frame record, ``track_record``.

Always valid JSON: non-finite numbers become null.
"""

from __future__ import annotations

import json

from clipxai.runtime.outputs import json_safe


def prediction_fields(pred, masks: dict | None = None) -> dict:
    """What every record holds: top class, scores [K] by class, labels [K] by class (bundles that have them),
    SAM points per class, SAM masks."""
    points = {}
    for k, name in enumerate(pred.classes):
        coords, labels = pred.points(k)
        points[name] = {"coords": coords.tolist(), "labels": labels.tolist()}
    fields = {"top_class": pred.classes[pred.top_class],
              "scores": {name: float(s) for name, s in zip(pred.classes, pred.scores)}, "points": points}
    if pred.labels is not None:  # multi-label logits (TaI-DPT's protocol); absent for older bundles
        fields["labels"] = {name: float(s) for name, s in zip(pred.classes, pred.labels)}
    if masks is not None:
        from clipxai.runtime.sam import mask_record
        fields["masks"] = {name: mask_record(m) for name, m in masks.items()}
    return fields


def image_record(source, pred, predictor, masks: dict | None = None) -> dict:
    """An image's record: where it came from, what ran it, then ``prediction_fields``."""
    bundle = predictor.bundle
    return {"image": str(source), "size": {"height": pred.size[0], "width": pred.size[1]},
            "bundle": str(bundle.path), "weights": bundle.weights_source, "provider": predictor.provider,
            **prediction_fields(pred, masks)}


def frame_record(pred, masks: dict | None = None) -> dict:
    """A video frame's record: index, timestamp, frames dropped before it, then ``prediction_fields``."""
    return {"frame": pred.frame_index, "timestamp": pred.timestamp, "dropped": pred.dropped,
            **prediction_fields(pred, masks)}


def track_record(frame) -> dict:
    """A tracks video frame's record (a ``TrackFrame``): index, timestamp, frames dropped before it, the
    classes prompted on it, and each track's id, class, visible, new, score, area, bbox [x, y, w, h], rle."""
    from clipxai.runtime.sam import mask_record
    dropped = getattr(frame.prediction, "dropped", 0)
    return {"frame": frame.frame_index, "timestamp": frame.timestamp, "dropped": dropped, "prompted": frame.prompted,
            "objects": [{"id": t.id, "class": t.name, "visible": t.visible, "new": t.new, **mask_record(t)}
                        for t in frame.tracks]}


def dumps(record: dict, indent: int | None = None) -> str:
    """The record as JSON text (one line without ``indent``), never NaN or Infinity."""
    return json.dumps(json_safe(record), indent=indent, ensure_ascii=False, allow_nan=False)
