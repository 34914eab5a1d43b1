"""A multi-label evaluation as data (``MultilabelJob``) and the scoring both the local run
(multilabel.py) and the Ray workers (multilabel_ray.py) share: TaI-DPT's crop, ``labels`` per image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clipxai.apps.segment.job import RayOptions
from clipxai.contract import DEFAULT_BATCH_SIZE, OUTPUT_LABELS
from clipxai.errors import ClipxaiError
from clipxai.runtime.backends import RuntimeOptions


@dataclass(frozen=True)
class MultilabelJob:
    """One evaluation: the bundle, the image folder, the labels file, the JSON report's path (None: not
    written), the threshold of the precision/recall columns (None: none), TaI-DPT's crop or the whole
    image, the first ``limit`` images only, images per graph run, how graphs run, Ray (None: here)."""

    bundle: str
    images: str
    labels: str
    out: str | None = None
    threshold: float | None = None
    full_image: bool = False
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    ray: RayOptions | None = None   # spread the images over Ray actors (None: this process)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """TaI-DPT's test transform on a PIL image: the short side to ``size`` (bicubic; the long side
    truncated as torchvision's Resize), then the centre ``size`` x ``size`` crop."""
    w, h = img.size
    if w <= h:
        w2, h2 = size, int(size * h / w)
    else:
        w2, h2 = int(size * w / h), size
    img = img.resize((w2, h2), Image.BICUBIC)
    top, left = int(round((h2 - size) / 2.0)), int(round((w2 - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def score_images(job: MultilabelJob, predictor, images: list[str], advance=lambda n=1, info=None: None):
    """({image: labels float32 [K]} of the images read, {image: why} of the others), ``job.batch_size``
    images per graph run, TaI-DPT's crop unless ``job.full_image``."""
    from clipxai.runtime.preprocess import open_image
    size = predictor.bundle.image_size
    rows, skipped, batch, names = {}, {}, [], []

    def flush():
        if batch:
            out = predictor.outputs(np.stack(batch), (OUTPUT_LABELS,))[0]
            rows.update(zip(names, out))
            batch.clear()
            names.clear()

    for im in images:
        try:
            img = open_image(Path(job.images) / im, predictor.max_pixels)
        except (ClipxaiError, OSError, ValueError) as e:
            skipped[im] = str(e).splitlines()[0] if str(e) else type(e).__name__
            advance(1)
            continue
        batch.append(predictor.preprocess(img if job.full_image else resize_center_crop(img, size)))
        names.append(im)
        if len(batch) == job.batch_size:
            flush()
        advance(1)
    flush()
    return rows, skipped
